"""The layers on a CUDA device against the same layers on CPU (float64): outputs, every parameter
gradient, recurrent steps (single and batched streams), state passing, evaluation's kernel cache and
a model's training step. These need a GPU and are skipped without one (CI has none); run them where
one is available: `python -m pytest tests/test_cuda.py`."""

from __future__ import annotations

import copy

import pytest
import torch

import liquid_s4
from liquid_s4 import LSSL, S4, S4D

from .reference import run_steps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CONFIGS = {
    "S4D": (S4D, {}),
    "S4D-bilinear-inv": (S4D, dict(disc="bilinear", init="inv")),
    "S4": (S4, {}),
    "LSSL": (LSSL, {}),
    "S4D-PB2": (S4D, dict(liquid_kernel="pb")),
    "S4-PB2": (S4, dict(liquid_kernel="pb")),
    "S4D-KB3": (S4D, dict(liquid_kernel="kb", liquid_degree=3)),
    "S4-KB2": (S4, dict(liquid_kernel="kb")),
    "S4-bidirectional-channels2": (S4, dict(bidirectional=True, channels=2)),
}


def _pair(name, dtype=torch.float64):
    """The same layer on CPU (float64) and on CUDA (`dtype`)."""
    cls, kw = CONFIGS[name]
    torch.manual_seed(0)
    cpu = cls(8, 16, **kw).double()
    return cpu, copy.deepcopy(cpu).to("cuda", dtype)


def _grads(layer, u):
    layer.zero_grad(set_to_none=True)
    y, _ = layer(u)
    (y.square().mean() + y.mean()).backward()
    return y, {n: p.grad for n, p in layer.named_parameters()}


def _rel(a, b):
    """max |a - b| / max |b|, with a moved to b's device and dtype (complex states stay complex)."""
    return ((a.to(b.device, b.dtype) - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize(
    "dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)], ids=["float64", "float32"]
)
def test_cuda_forward_and_gradients_match_cpu(name, dtype, tol):
    cpu, gpu = _pair(name, dtype)
    u = torch.randn(2, 300, 8, dtype=torch.float64)
    y_cpu, g_cpu = _grads(cpu, u)
    y_gpu, g_gpu = _grads(gpu, u.to("cuda", dtype))
    assert y_gpu.device.type == "cuda" and y_gpu.dtype == dtype
    assert _rel(y_gpu, y_cpu) < tol
    assert g_gpu.keys() == g_cpu.keys()
    for n in g_cpu:
        assert _rel(g_gpu[n], g_cpu[n]) < tol, n


@pytest.mark.parametrize("name", [n for n in CONFIGS if "bidirectional" not in n])
@pytest.mark.parametrize("batch", [2, 32], ids=["step", "batched"])
def test_cuda_steps_equal_the_convolution(name, batch):
    """Fast steps (and, from advance_from_batch on, batched ones) == reference steps == forward."""
    _, gpu = _pair(name)
    gpu.eval()
    u = torch.randn(batch, 40, 8, dtype=torch.float64, device="cuda")
    y_step, state = run_steps(gpu, u)
    with torch.no_grad():
        y_conv, _ = gpu(u)
    assert state.device.type == "cuda"
    assert _rel(y_step, y_conv.cpu()) < 1e-9
    u2 = torch.randn_like(u)  # the stepped state continues a chunked forward
    with torch.no_grad():
        assert _rel(gpu(u2, state)[0], run_steps(gpu, u2, state)[0].cpu()) < 1e-9


@pytest.mark.parametrize("name", ["S4D", "S4", "S4-PB2", "S4D-KB3"])
def test_cuda_state_passing_and_kernel_cache(name):
    _, gpu = _pair(name)
    gpu.eval()
    u = torch.randn(2, 64, 8, dtype=torch.float64, device="cuda")
    with torch.no_grad():
        y_full, _ = gpu(u)
        y1, s = gpu(u[:, :40], gpu.default_state(2))
        y2, _ = gpu(u[:, 40:], s)
        assert _rel(torch.cat([y1, y2], 1), y_full.cpu()) < 1e-10
        assert gpu._kernel_cache.peek() is not None  # evaluation kept the kernels ...
        assert _rel(gpu(u)[0], y_full.cpu()) == 0.0  # ... and reuses them exactly


@pytest.mark.parametrize("layer", ["s4d", "liquid_s4"])
def test_cuda_model_training_step_matches_cpu(layer):
    torch.manual_seed(0)
    cfg = dict(
        d_input=1, d_output=5, d_model=8, n_layers=2, layer=layer, layer_args=dict(d_state=16), norm="batch"
    )
    cpu = liquid_s4.SequenceModel(**cfg).double()
    gpu = copy.deepcopy(cpu).cuda()
    x, y = torch.randn(4, 200, 1, dtype=torch.float64), torch.randint(0, 5, (4,))
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        loss = torch.nn.functional.cross_entropy(model(x.to(dev)), y.to(dev))
        loss.backward()
    scale = max(
        p.grad.abs().max() for p in cpu.parameters()
    )  # some gradients are 0 up to rounding (a bias before BatchNorm)
    for (n, a), (_, b) in zip(gpu.named_parameters(), cpu.named_parameters(), strict=True):
        assert (a.grad.cpu() - b.grad).abs().max() <= 1e-9 * scale, n
    gpu.eval()
    with torch.no_grad():  # whole-model recurrent inference on the device
        state = gpu.default_state(4)
        for t in range(x.shape[1]):
            out, state = gpu.step(x[:, t].cuda(), state)
        assert _rel(out, gpu(x.cuda()).cpu()) < 1e-9


@pytest.mark.parametrize("name", ["S4D", "S4", "S4D-PB2", "S4-PB2", "S4-KB2", "LSSL"])
@pytest.mark.parametrize("batch", [1, 32])
def test_cuda_graph_step_equals_layer_step(name, batch):
    """Replaying the captured step == stepping the layer; reset; stale parameters are refused."""
    _, gpu = _pair(name)
    gpu.eval()
    u = torch.randn(batch, 30, 8, dtype=torch.float64, device="cuda")
    graphed = liquid_s4.CUDAGraphStep(gpu, batch)
    with torch.no_grad():
        y_ref, s_ref = run_steps(gpu, u, path="fast")
    for _ in range(2):
        ys = torch.stack([graphed(u[:, t]) for t in range(u.shape[1])], 1)
        assert _rel(ys, y_ref.cpu()) < 1e-12 and _rel(graphed.state, s_ref.cpu()) < 1e-12
        graphed.reset()  # the second round starts from zero again
    with torch.no_grad():
        gpu.D.add_(1.0)
    with pytest.raises(RuntimeError, match="parameters changed"):
        graphed(u[:, 0])


@pytest.mark.parametrize(
    "layer,args", [("liquid_s4", dict(d_state=8, liquid_kernel="pb")), ("s4d", dict(d_state=64))]
)
def test_cuda_model_step_and_stream_match_cpu(layer, args):
    """A whole model on CUDA: `step` (through its step program) and chunked `stream` equal the CPU
    model's steps (float64)."""
    torch.manual_seed(0)
    cpu = (
        liquid_s4.SequenceModel(
            d_input=1, d_output=3, d_model=8, n_layers=2, layer=layer, layer_args=args, norm="batch"
        )
        .double()
        .eval()
    )
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(2, 40, dtype=torch.float64)
    with torch.no_grad():
        s_cpu, s_gpu, ys_cpu, ys_gpu = cpu.default_state(2), gpu.default_state(2), [], []
        for t in range(40):
            y, s_cpu = cpu.step(x[:, t], s_cpu)
            ys_cpu.append(y)
            y, s_gpu = gpu.step(x[:, t].cuda(), s_gpu)
            ys_gpu.append(y.cpu())
        y_stream, _ = gpu.stream(x.cuda()[:, :25])
    ref = torch.stack(ys_cpu, 1)
    torch.testing.assert_close(torch.stack(ys_gpu, 1), ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(y_stream.cpu(), ref[:, :25], rtol=1e-9, atol=1e-10)
