"""SequenceModel: shapes, pooling with lengths, whole-model step == forward, and checkpoints."""

import copy
import json
import math
import os

import pytest
import torch

from liquid_s4 import ModelConfig, SequenceModel
from liquid_s4.models.sequence import Norm, masked_batch_norm

STACKS = [
    dict(layer="liquid_s4", layer_args=dict(d_state=8, liquid_kernel="pb", liquid_degree=3)),
    dict(layer="s4d", layer_args=dict(d_state=8, liquid_kernel="kb")),
    dict(layer="lssl", layer_args=dict(d_state=5)),
]


def model(dtype=torch.float64, **kw):
    cfg = dict(d_input=3, d_output=4, d_model=8, n_layers=2)
    cfg.update(kw)
    return SequenceModel(**cfg).to(dtype).eval()


def stream(m, x):
    state, ys = m.default_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y, state = m.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1)


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: s["layer"])
@pytest.mark.parametrize("pool", ["mean", "last", "none"])
@pytest.mark.parametrize("norm,prenorm", [("layer", True), ("batch", False)])
def test_step_equals_forward(stack, pool, norm, prenorm):
    m = model(pool=pool, norm=norm, prenorm=prenorm, **stack)
    if norm == "batch":  # non-trivial running statistics
        m.train()
        m(torch.randn(4, 30, 3, dtype=torch.float64))
        m.eval()
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    y_step = stream(m, x)
    if pool == "none":
        assert torch.allclose(y_step, m(x), atol=1e-9)
    else:  # at every t, the streamed output is the prediction for the prefix x[:, :t+1]
        for t in (0, 11, 29):
            assert torch.allclose(y_step[:, t], m(x[:, : t + 1]), atol=1e-9)


@pytest.mark.parametrize("pool", ["mean", "last", "none"])
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_lengths_equal_unpadded(pool, norm):
    m = model(pool=pool, norm=norm, **STACKS[0])
    x = torch.randn(3, 25, 3, dtype=torch.float64)
    lengths = torch.tensor([25, 9, 1])
    padded = x.clone()
    padded[1, 9:], padded[2, 1:] = 30.0, -5.0
    y = m(padded, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        y_b = m(x[b : b + 1, :n])[0]
        if pool == "none":
            assert torch.allclose(y[b, :n], y_b, atol=1e-10)
        else:
            assert torch.allclose(y[b], y_b, atol=1e-10)


def test_batchnorm_statistics_ignore_padding():
    m = model(norm="batch", **STACKS[1]).train()
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    padded = x.clone()
    padded[1, 5:] = 1e3
    m(padded, lengths=torch.tensor([20, 5]))
    stats = m.blocks[0].norm.norm.running_mean.clone()
    m2 = model(norm="batch", **STACKS[1]).train()
    m2.load_state_dict(
        {k: v for k, v in m.state_dict().items() if "running" not in k and "num_batches" not in k},
        strict=False,
    )
    m2(x, lengths=torch.tensor([20, 5]))
    assert torch.allclose(stats, m2.blocks[0].norm.norm.running_mean)
    assert stats.abs().max() < 10  # the 1e3 padding did not enter


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_equals_norm_of_the_gathered_valid_positions(momentum):
    """The channels-first masked BatchNorm == BatchNorm1d on the (n_valid, H) gather of the valid
    positions (zeros elsewhere): outputs, gradients and running statistics over two training calls,
    then eval mode."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(5, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    ref = copy.deepcopy(bn)
    mask = torch.arange(11) < torch.tensor([11, 4, 7])[:, None]  # (B, L)
    for training in (True, True, False):
        bn.train(training), ref.train(training)
        x = (3 * torch.randn(3, 5, 11, dtype=torch.float64) + 1).requires_grad_()
        out = masked_batch_norm(bn, x, mask)
        out_ref = torch.zeros(3, 11, 5, dtype=torch.float64)
        out_ref[mask] = ref(x.transpose(1, 2)[mask])
        out_ref = out_ref.transpose(1, 2)
        assert torch.allclose(out, out_ref, atol=1e-12) and (out[~mask[:, None].expand_as(out)] == 0).all()
        w = torch.randn_like(out)
        grads = torch.autograd.grad((out * w).sum(), [x, bn.weight, bn.bias])
        grads_ref = torch.autograd.grad((out_ref * w).sum(), [x, ref.weight, ref.bias])
        for g, g_ref in zip(grads, grads_ref, strict=True):
            assert torch.allclose(g, g_ref, atol=1e-10)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.allclose(getattr(bn, name).double(), getattr(ref, name).double(), atol=1e-12), name
    with pytest.raises(ValueError, match="more than 1 valid position"):
        one_valid = torch.tensor([[True, False, False], [False, False, False]])
        masked_batch_norm(bn.train(), torch.randn(2, 5, 3, dtype=torch.float64), one_valid)


def test_norms_run_channels_first():
    """Norm takes the blocks' (B, H, L) layout: the same as LayerNorm / BatchNorm1d over the channels
    of (B, L, H)."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, dtype=torch.float64)
    ln = Norm("layer", 6).double()
    with torch.no_grad():
        ln.norm.weight.normal_()
    y = ln(x)
    assert y.is_contiguous() and torch.allclose(y, ln.norm(x.transpose(1, 2)).transpose(1, 2), atol=1e-12)
    bn = Norm("batch", 6).double().train()
    assert torch.allclose(
        bn(x),
        torch.nn.functional.batch_norm(x.transpose(1, 2).reshape(-1, 6), None, None, training=True)
        .view(2, 9, 6)
        .transpose(1, 2),
        atol=1e-12,
    )


def test_linear_encoder_channels_first_equals_the_module():
    """The plain linear encoder is applied as one batched product; with a hook it runs as the module."""
    m = model(**STACKS[2])
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    calls = []
    y = m(x)
    handle = m.encoder.register_forward_hook(lambda mod, i, o: calls.append(tuple(o.shape)))
    assert torch.allclose(m(x), y, atol=1e-12) and calls == [(2, 9, 8)]
    handle.remove()
    assert torch.allclose(m._encode_channels_first(x), m.encoder(x).transpose(1, 2), atol=1e-12)


def test_token_inputs_and_output_shapes():
    m = model(vocab_size=11, pool="last", **STACKS[0])
    tokens = torch.randint(0, 11, (2, 17))
    assert m(tokens).shape == (2, 4)
    assert model(pool="none", **STACKS[2])(torch.randn(2, 9, 3, dtype=torch.float64)).shape == (2, 9, 4)
    assert model(d_input=1, **STACKS[2])(torch.randn(2, 9, dtype=torch.float64)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\)"):
        m(torch.full((1, 4), 11))
    with pytest.raises(ValueError, match="integer tensor"):
        m(torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"expected inputs \(B, L, 3\)"):
        model(**STACKS[2])(torch.randn(2, 9, 4, dtype=torch.float64))


def test_retrieval_head_combines_two_pooled_sequences():
    m = model(vocab_size=11, head="retrieval", **STACKS[0])
    a, b = torch.randint(0, 11, (2, 13)), torch.randint(0, 11, (2, 9))
    y = m(a, x2=b)
    assert y.shape == (2, 4)
    pa, pb = m._pool(m._features(a), None), m._pool(m._features(b), None)
    assert torch.allclose(y, m.decoder(torch.cat([pa, pb, pa * pb, pa - pb], -1)))
    with pytest.raises(ValueError, match="needs a second sequence"):
        m(a)
    with pytest.raises(ValueError, match="retrieval head compares pooled vectors"):
        ModelConfig(head="retrieval", pool="none")


def test_tied_dropout_is_constant_across_length():
    m = model(dropout=0.5, tie_dropout=True, **STACKS[2]).train()
    z = torch.ones(4, 8, 50, dtype=torch.float64)  # (B, H, L): the blocks run channels-first
    out = m.blocks[0]._dropout(z)
    assert torch.equal(out, out[..., :1].expand_as(out))
    assert (out == 0).any() and (out == 2).any()


def test_config_errors():
    with pytest.raises(
        ValueError, match=r"unknown layer 'mamba'; expected one of \('s4', 's4d', 'lssl', 'liquid_s4'\)"
    ):
        ModelConfig(layer="mamba")
    with pytest.raises(ValueError, match="unknown keys \\['dmodel'\\]; valid keys"):
        ModelConfig.from_dict({"dmodel": 3})
    with pytest.raises(ValueError, match="bad layer_args for layer 's4'"):
        SequenceModel(layer="s4", layer_args={"d_stat": 4})
    with pytest.raises(ValueError, match="may not set 'd_model'"):
        ModelConfig(layer_args={"d_model": 4})


def test_save_and_load_pretrained(tmp_path):
    m = model(**STACKS[0])
    x = torch.randn(2, 40, 3, dtype=torch.float64)
    y = m(x)  # sets the S4 kernel length buffer, which must be saved too
    m.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temporary files left
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["model"]["layer"] == "liquid_s4" and meta["format_version"] == 1
    loaded = SequenceModel.from_pretrained(tmp_path).eval()
    assert torch.allclose(loaded(x), y, atol=1e-12)
    assert int(loaded.blocks[0].layer.ssm.l_kernel) == 40
    assert SequenceModel.from_pretrained(tmp_path, dropout=0.3).config.dropout == 0.3


def test_pretrained_errors(tmp_path):
    m = model(**STACKS[1])
    m.save_pretrained(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"does not fit this model config \(.*shape mismatch.*Build the model with the config",
    ):
        SequenceModel.from_pretrained(tmp_path, d_model=16)
    with pytest.raises(ValueError, match=r"missing \['blocks.2"):
        SequenceModel.from_pretrained(tmp_path, n_layers=3)
    with pytest.raises(ValueError, match="unknown keys"):
        SequenceModel.from_pretrained(tmp_path, n_layer=3)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="truncated or corrupt"):
        SequenceModel.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        SequenceModel.from_pretrained(tmp_path)


def damage_safetensors_data(path):
    """Zero 16 bytes in the middle of the tensor data (after the 8-byte length and the JSON header)."""
    b = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(b[:8], "little")
    mid = (start + len(b)) // 2
    b[mid : mid + 16] = bytes(16) if any(b[mid : mid + 16]) else b"\xff" * 16
    path.write_bytes(bytes(b))


def test_pretrained_checksums_detect_changed_weights_and_config(tmp_path):
    """Bytes changed inside the tensor data, or a config.json value changed so that it still parses
    and fits the weights, are refused with a ValueError; without the checksums both loaded silently."""
    from safetensors import safe_open

    m = model(**STACKS[0])
    m.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert set(f.metadata()) >= {"weights_sha256", "config_sha256"}
    pristine = {name: (tmp_path / name).read_bytes() for name in ("config.json", "model.safetensors")}
    damage_safetensors_data(tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"model.safetensors is corrupt: its tensors do not match the sha256"
    ):
        SequenceModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(pristine["model.safetensors"])
    meta = json.loads(pristine["config.json"])
    meta["model"]["prenorm"] = False  # still valid JSON, and the weights still fit
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        ValueError,
        match=r"config.json does not match the model config saved with the weights.*from_pretrained\(",
    ):
        SequenceModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_bytes(pristine["config.json"])
    assert (
        SequenceModel.from_pretrained(tmp_path, dropout=0.25).config.dropout == 0.25
    )  # overrides are not a changed file


def test_pretrained_without_checksums_loads_unchecked(tmp_path):
    """A model.safetensors without the checksum header (saved before the checksums existed) still loads."""
    from safetensors.torch import save_file

    m = model(**STACKS[1])
    m.save_pretrained(tmp_path)
    save_file(
        {k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "model.safetensors")
    )  # no metadata
    loaded = SequenceModel.from_pretrained(tmp_path)
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_pretrained_from_before_log_A_real_gap_loads_converted(tmp_path):
    """A model saved when S4/S4D stored Re A as `log_A_real` (Re A = -max(exp(x), 1e-4); no checksum
    header) loads into the current parametrization and computes the same outputs."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    for layer in ("s4", "s4d"):
        m = (
            SequenceModel(
                d_input=2, d_output=3, d_model=8, n_layers=2, layer=layer, layer_args={"d_state": 8}
            )
            .double()
            .eval()
        )
        m.save_pretrained(tmp_path / layer)
        old = {}
        for k, v in m.state_dict().items():
            if k.endswith("log_A_real_gap"):  # the same Re A, stored the old way
                k, v = k[: -len("_gap")], torch.log(1e-4 + torch.exp(v))
            old[k] = v.contiguous()
        assert any(k.endswith("log_A_real") for k in old)
        save_file(old, str(tmp_path / layer / "model.safetensors"))
        loaded = SequenceModel.from_pretrained(tmp_path / layer).eval()
        x = torch.randn(2, 16, 2, dtype=torch.float64)
        torch.testing.assert_close(loaded(x), m(x), rtol=1e-6, atol=1e-6)


def test_pretrained_half_precision_keeps_its_dtype(tmp_path):
    """A bfloat16 model (SSM parameters kept in float32 by the layers) is rebuilt in bfloat16."""
    torch.manual_seed(0)
    m = (
        SequenceModel(d_input=2, d_output=3, d_model=8, n_layers=2, layer="s4d", layer_args={"d_state": 8})
        .bfloat16()
        .eval()
    )
    m.save_pretrained(tmp_path)
    loaded = SequenceModel.from_pretrained(tmp_path).eval()
    assert loaded.decoder.weight.dtype == torch.bfloat16
    for k, v in m.state_dict().items():
        assert loaded.state_dict()[k].dtype == v.dtype and torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(2, 16, 2).bfloat16()
    assert torch.equal(loaded(x), m(x))


def test_step_errors():
    m = model(norm="batch", **STACKS[2]).train()
    with pytest.raises(RuntimeError, match="eval mode"):
        m.step(torch.randn(2, 3, dtype=torch.float64), m.default_state(2))
    with pytest.raises(RuntimeError, match="no step mode"):
        model(head="retrieval", **STACKS[2]).default_state(2)


@pytest.mark.parametrize("layer", ["s4", "s4d", "liquid_s4"])
def test_rate_scales_every_layers_step(layer):
    """forward(x, rate=r) is the same model with every SSM step size dt multiplied by r (used to run
    a model trained on 16 kHz audio on 8 kHz input)."""
    torch.manual_seed(0)
    m = (
        SequenceModel(d_input=2, d_output=3, d_model=8, n_layers=2, layer=layer, layer_args={"d_state": 4})
        .double()
        .eval()
    )
    x = torch.randn(2, 32, 2, dtype=torch.float64)
    fast = m(x, rate=2.0)
    slow = copy.deepcopy(m)
    with torch.no_grad():
        for block in slow.blocks:
            block.layer.ssm.log_dt += math.log(2.0)
    assert torch.allclose(fast, slow(x), atol=1e-10) and not torch.allclose(fast, m(x), atol=1e-3)


def test_config_sizes_left_to_the_data():
    """A config may leave d_input/d_output to the dataset (None); with_data_sizes completes a copy,
    and a model is built only from a complete config."""
    partial = ModelConfig(d_input=None, d_output=None, d_model=8, n_layers=1, layer_args={"d_state": 4})
    with pytest.raises(ValueError, match="d_input and d_output not set"):
        SequenceModel(partial)
    full = partial.with_data_sizes(3, 5)
    assert (full.d_input, full.d_output, full.vocab_size, full.d_model) == (3, 5, None, 8)
    assert partial.d_input is None and full.layer_args == partial.layer_args
    assert full.layer_args is not partial.layer_args
    assert SequenceModel(full)(torch.randn(2, 7, 3)).shape == (2, 5)
    tokens = partial.with_data_sizes(1, 4, vocab_size=11)
    assert SequenceModel(tokens)(torch.randint(0, 11, (2, 7))).shape == (2, 4)
    with pytest.raises(ValueError, match="d_output must be a positive integer"):
        partial.with_data_sizes(3, 0)


# ---- per-step rate (irregular sampling) -------------------------------------------------------

SCAN = dict(layer="s4d", layer_args=dict(d_state=4, liquid_kernel="scan"))


def capture_rates(m):
    """Replace every block's SSM layer by one that records the rate it gets and returns its input."""
    seen = []

    def layer(z, lengths=None, rate=None):
        seen.append(rate)
        return z, None

    for block in m.blocks:
        block.layer.forward = layer
    return seen


def test_per_step_rate_reaches_every_block():
    m = model(pool="none", **STACKS[1])
    seen = capture_rates(m)
    x, rate = torch.randn(2, 7, 3, dtype=torch.float64), torch.rand(2, 7, dtype=torch.float64) + 0.5
    m(x, rate=rate)
    assert len(seen) == 2 and all(r is rate for r in seen)  # unchanged, to every block
    seen.clear()
    m.features(x, rate=rate)
    assert len(seen) == 2 and all(r is rate for r in seen)
    seen.clear()
    m(x, rate=2.0)  # a number as before
    assert seen == [2.0, 2.0]


def test_per_step_rate_at_padded_steps():
    """Only valid steps are checked; padded steps that are not a positive number reach the layers as 1."""
    m = model(pool="mean", **STACKS[1])
    seen = capture_rates(m)
    x, lengths = torch.randn(2, 5, 3, dtype=torch.float64), torch.tensor([5, 3])
    rate = torch.full((2, 5), 0.5, dtype=torch.float64)
    rate[1, 3:] = torch.tensor([0.0, float("nan")])
    m(x, lengths=lengths, rate=rate)
    expected = rate.clone()
    expected[1, 3:] = 1.0
    assert all(torch.equal(r, expected) for r in seen)
    rate[1, 3:] = 7.0  # positive padded values pass as they are
    seen.clear()
    m(x, lengths=lengths, rate=rate)
    assert all(r is rate for r in seen)


def test_per_step_rate_errors():
    m = model(pool="none", **STACKS[1])
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"shape \(B, L\) = \(2, 6\) like the inputs.*\(2, 5\)"):
        m(x, rate=torch.ones(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"floating tensor .*torch.int64"):
        m(x, rate=torch.ones(2, 6, dtype=torch.long))
    bad = torch.ones(2, 6, dtype=torch.float64)
    bad[1, 4] = 0.0
    with pytest.raises(ValueError, match="finite and > 0 at every valid step .*0.0 at sequence 1, step 4"):
        m(x, rate=bad)
    bad[1, 4] = float("inf")
    with pytest.raises(ValueError, match="finite and > 0"):
        m(x, rate=bad)
    with pytest.raises(ValueError, match=r"finite and > 0 .*sequence 1, step 4"):
        m(x, lengths=torch.tensor([6, 5]), rate=bad)  # step 4 of sequence 1 is valid
    r = model(head="retrieval", pool="mean", **STACKS[1])
    with pytest.raises(ValueError, match="with a second sequence x2 .* pass rate as a number"):
        r(x, torch.tensor([6, 6]), x, torch.tensor([6, 6]), rate=torch.ones(2, 6, dtype=torch.float64))
    # convolution layers need one step size for the whole sequence: they refuse a per-step rate
    for stack in STACKS:
        with pytest.raises(ValueError, match="rate"):
            model(pool="none", **stack)(x, rate=torch.ones(2, 6, dtype=torch.float64))


def test_constant_per_step_rate_equals_the_number():
    torch.manual_seed(0)
    m = model(pool="none", **SCAN)
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    for r in (1.0, 0.5):
        per_step = m(x, rate=torch.full((2, 16), r, dtype=torch.float64))
        assert torch.allclose(per_step, m(x, rate=r), atol=1e-10)
    varying = torch.rand(2, 16, dtype=torch.float64) + 0.5
    assert not torch.allclose(m(x, rate=varying), m(x), atol=1e-4)
    # the rate of a step changes the outputs from that step on, never before it (causal)
    later = varying.clone()
    later[:, 10] *= 3
    a, b = m(x, rate=varying), m(x, rate=later)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-12) and not torch.allclose(a[:, 10:], b[:, 10:])
