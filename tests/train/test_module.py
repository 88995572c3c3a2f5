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

TINY = ["model.d_model=8", "model.n_layers=1", "model.layer_args.d_state=4", "trainer.progress=false", "trainer.max_steps=2"]


def _lit(overrides, info):
    cfg = load_config(None, TINY + overrides)
    return LitSequenceModel(cfg.to_dict(), info.__dict__)


def test_per_step_classification_ignores_unscored_steps():
    lit = _lit(["model.pool=none"], DataInfo(d_input=1, d_output=3, extra={"pool": "none"}))
    out = torch.randn(2, 5, 3)
    y = torch.tensor([[IGNORE_INDEX, 0, 1, IGNORE_INDEX, 2], [2, IGNORE_INDEX, IGNORE_INDEX, 1, 1]])
    m = lit._metrics(out, y, None)
    scored = y != IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(out[scored], y[scored])
    assert torch.allclose(m["loss"], ref)
    assert torch.allclose(m["acc"], (out.argmax(-1)[scored] == y[scored]).float().mean())


def test_per_step_regression_is_masked_by_lengths():
    lit = _lit(["model.pool=none"], DataInfo(d_input=1, d_output=1, task="regression", extra={"pool": "none"}))
    out, y = torch.randn(2, 4, 1), torch.randn(2, 4, 1)
    m = lit._metrics(out, y, torch.tensor([4, 2]))
    err = (out - y) ** 2
    assert torch.allclose(m["loss"], torch.cat([err[0].flatten(), err[1, :2].flatten()]).mean())


def _fake_build(data):
    return lambda config: data


def test_pairs_extra_test_rates_and_original_units(tmp_path, monkeypatch):
    """A regression dataset with standardized targets and an extra test set at rate 2: the logged
    metrics equal a direct evaluation of the saved model."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 16, 2, generator=g).numpy()
    y = torch.randn(12, 1, generator=g).numpy()
    ds = ArrayDataset(x, y)
    info = DataInfo(d_input=2, d_output=1, task="regression", extra={"target_normalized": True, "target_std": 3.0, "target_mean": 1.0})
    data = SequenceData(ds.subset(range(8)), ds.subset(range(8, 10)), ds.subset(range(10, 12)), info,
                        extra_tests={"test_half": (ds.subset(range(10, 12)), 2.0)})  # fmt: skip
    monkeypatch.setattr("liquid_s4.train.data.build_dataset", _fake_build(data))
    metrics = train(load_config(None, TINY + ["data.batch_size=4"]), output_dir=str(tmp_path / "run"), quiet=True)
    model = SequenceModel.from_pretrained(tmp_path / "run" / "model").eval()
    xt, yt = torch.tensor(x[10:]), torch.tensor(y[10:])
    with torch.no_grad():
        mse1 = ((model(xt) - yt) ** 2).mean().item()
        mse2 = ((model(xt, rate=2.0) - yt) ** 2).mean().item()
    assert metrics["test/loss"] == pytest.approx(mse1, rel=1e-5) and metrics["test_half/loss"] == pytest.approx(mse2, rel=1e-5)
    assert abs(mse1 - mse2) > 1e-6  # the rate changed the model's output
    assert metrics["test/rmse_orig"] == pytest.approx(3.0 * mse1**0.5, rel=1e-5)
    assert "test_half/rmse" in json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_retrieval_pairs_train(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 9, (10, 12)).astype(np.uint8), rng.integers(1, 9, (10, 12)).astype(np.uint8)
    la, lb = rng.integers(3, 13, 10), rng.integers(3, 13, 10)
    ds = ArrayDataset(a, rng.integers(0, 2, 10), la, b, lb, transform=tokens)
    data = SequenceData(ds.subset(range(6)), ds.subset(range(6, 8)), ds.subset(range(8, 10)), DataInfo(1, 2, vocab_size=9))
    monkeypatch.setattr("liquid_s4.train.data.build_dataset", _fake_build(data))
    cfg = load_config(None, TINY + ["model.head=retrieval", "model.norm=batch", "data.batch_size=3"])
    metrics = train(cfg, output_dir=str(tmp_path / "run"), quiet=True)
    model = SequenceModel.from_pretrained(tmp_path / "run" / "model").eval()
    batch = [torch.stack([ds[i][k] for i in range(8, 10)]) for k in range(5)]
    with torch.no_grad():
        out = model(batch[0], batch[2], batch[3], batch[4])
    ref = torch.nn.functional.cross_entropy(out, batch[1]).item()
    assert metrics["global_step"] == 2 and metrics["test/loss"] == pytest.approx(ref, rel=1e-5)
