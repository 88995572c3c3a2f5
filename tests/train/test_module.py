"""Losses and metrics for every batch form: per-step targets with ignored positions, sequence pairs
(retrieval), extra test sets run at another sampling rate, and standardized regression targets."""

import json

import numpy as np
import pytest
import torch

from liquid_s4 import SequenceModel
from liquid_s4.data.common import IGNORE_INDEX, ArrayDataset, DataInfo, SequenceData, tokens
from liquid_s4.train.config import load_config
from liquid_s4.train.module import LitSequenceModel
from liquid_s4.train.run import train

TINY = [
    "model.d_model=8",
    "model.n_layers=1",
    "model.layer_args.d_state=4",
    "trainer.progress=false",
    "trainer.max_steps=2",
]


def _lit(overrides, info):
    cfg = load_config(None, TINY + overrides)
    return LitSequenceModel(cfg, info)


def test_per_step_classification_ignores_unscored_steps():
    lit = _lit(["model.pool=none"], DataInfo(d_input=1, d_output=3, extra={"pool": "none"}))
    out = torch.randn(2, 5, 3)
    y = torch.tensor([[IGNORE_INDEX, 0, 1, IGNORE_INDEX, 2], [2, IGNORE_INDEX, IGNORE_INDEX, 1, 1]])
    m, n = lit._metrics(out, y, None)
    scored = y != IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(out[scored], y[scored])
    assert torch.allclose(m["loss"], ref) and n == 6
    assert torch.allclose(m["acc"], (out.argmax(-1)[scored] == y[scored]).float().mean())


def test_per_step_regression_is_masked_by_lengths():
    lit = _lit(
        ["model.pool=none"], DataInfo(d_input=1, d_output=1, task="regression", extra={"pool": "none"})
    )
    out, y = torch.randn(2, 4, 1), torch.randn(2, 4, 1)
    m, n = lit._metrics(out, y, torch.tensor([4, 2]))
    err = (out - y) ** 2
    assert torch.allclose(m["loss"], torch.cat([err[0].flatten(), err[1, :2].flatten()]).mean()) and n == 6


def _fake_build(data):
    return lambda config: data


def test_pairs_extra_test_rates_and_original_units(tmp_path, monkeypatch):
    """A regression dataset with standardized targets and an extra test set at rate 2: the logged
    metrics equal a direct evaluation of the saved model."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 16, 2, generator=g).numpy()
    y = torch.randn(12, 1, generator=g).numpy()
    ds = ArrayDataset(x, y)
    info = DataInfo(
        d_input=2,
        d_output=1,
        task="regression",
        extra={"target_normalized": True, "target_std": 3.0, "target_mean": 1.0},
    )
    data = SequenceData(
        ds.subset(range(8)),
        ds.subset(range(8, 10)),
        ds.subset(range(10, 12)),
        info,
        extra_tests={"test_half": (ds.subset(range(10, 12)), 2.0)},
    )
    monkeypatch.setattr("liquid_s4.train.data.build_dataset", _fake_build(data))
    metrics = train(
        load_config(None, TINY + ["data.batch_size=4"]), output_dir=str(tmp_path / "run"), quiet=True
    )
    model = SequenceModel.from_pretrained(tmp_path / "run" / "model").eval()
    xt, yt = torch.tensor(x[10:]), torch.tensor(y[10:])
    with torch.no_grad():
        mse1 = ((model(xt) - yt) ** 2).mean().item()
        mse2 = ((model(xt, rate=2.0) - yt) ** 2).mean().item()
    assert metrics["test/loss"] == pytest.approx(mse1, rel=1e-5) and metrics[
        "test_half/loss"
    ] == pytest.approx(mse2, rel=1e-5)
    assert abs(mse1 - mse2) > 1e-6  # the rate changed the model's output
    assert metrics["test/rmse_orig"] == pytest.approx(3.0 * mse1**0.5, rel=1e-5)
    assert "test_half/rmse" in json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_retrieval_pairs_train(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 9, (10, 12)).astype(np.uint8), rng.integers(1, 9, (10, 12)).astype(np.uint8)
    la, lb = rng.integers(3, 13, 10), rng.integers(3, 13, 10)
    ds = ArrayDataset(a, rng.integers(0, 2, 10), la, b, lb, transform=tokens)
    data = SequenceData(
        ds.subset(range(6)), ds.subset(range(6, 8)), ds.subset(range(8, 10)), DataInfo(1, 2, vocab_size=9)
    )
    monkeypatch.setattr("liquid_s4.train.data.build_dataset", _fake_build(data))
    cfg = load_config(None, TINY + ["model.head=retrieval", "model.norm=batch", "data.batch_size=3"])
    metrics = train(cfg, output_dir=str(tmp_path / "run"), quiet=True)
    model = SequenceModel.from_pretrained(tmp_path / "run" / "model").eval()
    batch = [torch.stack([ds[i][k] for i in range(8, 10)]) for k in range(5)]
    with torch.no_grad():
        out = model(batch[0], batch[2], batch[3], batch[4])
    ref = torch.nn.functional.cross_entropy(out, batch[1]).item()
    assert metrics["global_step"] == 2 and metrics["test/loss"] == pytest.approx(ref, rel=1e-5)


def _npz(path, n=40, nan_at=None):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 12, 2)).astype(np.float32)
    y = (x.sum((1, 2)) > 0).astype(np.int64)
    if nan_at is not None:
        x[nan_at, 3, 0] = np.nan
    np.savez(path, x=x, y=y)
    return str(path)


CLI_TINY = [a for t in TINY[:3] for a in ("--set", t)] + ["--quiet"]


def test_diverging_run_stops_at_the_first_nan_loss(tmp_path, capsys):
    """The learning rate jumps by 1e30 after epoch 0 (multistep): step 5 (the first of epoch 1) blows
    the weights up, step 6 gives a NaN loss, and training stops there with status 1, naming the step
    and the intact checkpoints of epoch 0; no metrics.json or saved model is written."""
    from liquid_s4.cli import main

    out = tmp_path / "run"
    sets = [
        "optim.scheduler=multistep",
        "optim.milestones=[1]",
        "optim.gamma=1e30",
        "model.layer_args.lr=null",
        "data.batch_size=8",
    ]
    args = [
        "train",
        "--data",
        _npz(tmp_path / "mine.npz"),
        "--max-epochs",
        "3",
        "--output-dir",
        str(out),
        *CLI_TINY,
    ]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "training stopped: the training loss is nan in epoch 1 at step 6 (batch 1 of the epoch)" in err, (
        err
    )
    assert f"{out / 'checkpoints' / 'last.ckpt'} (saved in epoch 0 after step 4)" in err
    assert "the largest learning rate was 5e+27" in err and "metrics.json was not written" in err
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_nan_in_the_training_data_stops_at_its_batch(tmp_path, monkeypatch):
    from liquid_s4.train.checks import NonFiniteLossError

    x = torch.randn(12, 16, 2)
    x[5, 7, 1] = float("nan")  # batch 1 (items 4..7) of an unshuffled epoch
    ds = ArrayDataset(x.numpy(), (x.nan_to_num().sum((1, 2)) > 0).long().numpy())
    data = SequenceData(
        ds.subset(range(8)),
        ds.subset(range(8, 10)),
        ds.subset(range(10, 12)),
        DataInfo(d_input=2, d_output=2),
    )
    monkeypatch.setattr("liquid_s4.train.data.build_dataset", _fake_build(data))
    monkeypatch.setattr("liquid_s4.train.data.EpochSampler.__iter__", lambda self: iter(range(self.n)))
    expected = (
        r"the training loss is nan in epoch 0 at step 2 \(batch 1 of the epoch\).*Last good "
        r"checkpoint\(s\): none \(no checkpoint"
    )
    with pytest.raises(NonFiniteLossError, match=expected):
        train(
            load_config(None, TINY + ["data.batch_size=4", "trainer.max_steps=-1"]),
            output_dir=str(tmp_path / "run"),
            quiet=True,
        )
    assert (
        not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.json").exists()
    )


def test_nan_validation_loss_stops_before_any_checkpoint(tmp_path, monkeypatch):
    """A NaN in the validation data: training stops after epoch 0's validation, before that epoch's
    checkpoints are written (they would hold a model whose validation loss is NaN)."""
    from liquid_s4.train.checks import NonFiniteLossError

    x = torch.randn(12, 16, 2)
    x[9, 0, 0] = float("inf")
    ds = ArrayDataset(x.numpy(), (x.nan_to_num().sum((1, 2)) > 0).long().numpy())
    data = SequenceData(
        ds.subset(range(8)),
        ds.subset(range(8, 10)),
        ds.subset(range(10, 12)),
        DataInfo(d_input=2, d_output=2),
    )
    monkeypatch.setattr("liquid_s4.train.data.build_dataset", _fake_build(data))
    with pytest.raises(
        NonFiniteLossError,
        match=r"the validation loss is nan after epoch 0 \(step 2\).*no checkpoint of this epoch",
    ):
        train(
            load_config(None, TINY + ["data.batch_size=4", "trainer.max_steps=-1"]),
            output_dir=str(tmp_path / "run"),
            quiet=True,
        )
    assert (
        not list((tmp_path / "run").glob("checkpoints/*.ckpt"))
        and not (tmp_path / "run" / "metrics.json").exists()
    )


def test_evaluation_metrics_are_exact_over_uneven_batches(tmp_path, monkeypatch):
    """Per-step classification with ignored steps, 7 test items in batches of 3: the logged test loss
    and accuracy are the cross-entropy and accuracy over all scored steps of the split (float64
    reference), not a mean of batch means weighted by items."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(15, 10, 2, generator=g)
    y = torch.randint(0, 3, (15, 10), generator=g)
    y[torch.rand(15, 10, generator=g) < torch.linspace(0.05, 0.9, 15)[:, None]] = (
        IGNORE_INDEX  # scored steps vary per item
    )
    ds = ArrayDataset(x.numpy(), y.numpy())
    info = DataInfo(d_input=2, d_output=3, extra={"pool": "none"})
    data = SequenceData(ds.subset(range(6)), ds.subset(range(6, 8)), ds.subset(range(8, 15)), info)
    monkeypatch.setattr("liquid_s4.train.data.build_dataset", _fake_build(data))
    metrics = train(
        load_config(None, TINY + ["model.pool=none", "data.batch_size=3"]),
        output_dir=str(tmp_path / "run"),
        quiet=True,
    )
    model = SequenceModel.from_pretrained(tmp_path / "run" / "model").eval().double()
    with torch.no_grad():
        out = model(x[8:].double())
    scored = y[8:] != IGNORE_INDEX
    ref_loss = torch.nn.functional.cross_entropy(out[scored], y[8:][scored]).item()
    ref_acc = (out.argmax(-1)[scored] == y[8:][scored]).double().mean().item()
    assert metrics["test/loss"] == pytest.approx(ref_loss, rel=1e-5) and metrics["test/acc"] == pytest.approx(
        ref_acc, abs=1e-7
    )


def test_the_module_keeps_the_typed_config_and_reads_batches_by_name():
    """The module works on the RunConfig it is given (no round trip through plain values); the
    checkpoint's hyperparameters are the plain values. Every loader of the data module yields
    `Batch`es, and a pair batch is scored with both sequences."""
    from dataclasses import asdict

    from liquid_s4.data.common import Batch
    from liquid_s4.train.data import SequenceDataModule

    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 9, (10, 12)).astype(np.uint8), rng.integers(1, 9, (10, 12)).astype(np.uint8)
    la, lb = rng.integers(3, 13, 10), rng.integers(3, 13, 10)
    ds = ArrayDataset(a, rng.integers(0, 2, 10), la, b, lb, transform=tokens)
    info = DataInfo(1, 2, vocab_size=9)
    data = SequenceData(ds.subset(range(6)), ds.subset(range(6, 8)), ds.subset(range(8, 10)), info)
    cfg = load_config(None, TINY + ["model.head=retrieval", "data.batch_size=3"])
    lit = LitSequenceModel(cfg, info).eval()
    assert lit.run_config is cfg and cfg.model.d_input is None  # the run's config is not filled in
    assert (lit.model.config.vocab_size, lit.model.config.d_output) == (9, 2)
    assert dict(lit.hparams) == {"config": cfg.to_dict(), "info": asdict(info)}
    dm = SequenceDataModule(data, cfg.data)
    loaders = [dm.train_dataloader(), dm.val_dataloader(), *dm.test_dataloader()]
    batches = [next(iter(loader)) for loader in loaders]
    assert all(type(batch) is Batch and batch.x2 is not None for batch in batches)
    batch = batches[-1]
    with torch.no_grad():
        metrics, n = lit._forward_metrics(batch)
        out = lit.model(batch.x, batch.lengths, batch.x2, batch.lengths2)
    assert n == 2 and torch.allclose(metrics["loss"], torch.nn.functional.cross_entropy(out, batch.y))


def test_load_from_checkpoint_rebuilds_the_typed_module(tmp_path):
    """Lightning's usual entry point works on our checkpoints: verified, rebuilt from the stored
    configuration, with the trained weights."""
    cfg = load_config(None, TINY + ["trainer.max_epochs=1", "data.batch_size=128"])
    train(cfg, str(tmp_path / "run"), quiet=True)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    lit = LitSequenceModel.load_from_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert lit.run_config.model.d_model == 8
    assert all(torch.equal(v, state[k]) for k, v in lit.state_dict().items())
    with pytest.raises(ValueError, match="not a training checkpoint"):
        (tmp_path / "bad.ckpt").write_bytes(b"not a zip")
        LitSequenceModel.load_from_checkpoint(tmp_path / "bad.ckpt")
