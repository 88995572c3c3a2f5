"""Per-step time gaps through training: batches with `dt` run the model at that per-step rate in
every split (a test set's own rate multiplies it), and the generated tasks' presets train."""

import numpy as np
import pytest
import torch

from liquid_s4 import SequenceModel
from liquid_s4.data.common import ArrayDataset, Batch, DataInfo, SequenceData
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
SMALL = ["data.options.n_train=8", "data.options.n_val=2", "data.options.n_test=2", "data.batch_size=4"]
REGRESSION = DataInfo(d_input=1, d_output=1, task="regression", extra={"pool": "none"})


def test_batch_dt_is_the_models_rate():
    lit = LitSequenceModel(load_config(None, TINY + ["model.pool=none"]), REGRESSION)
    seen = []

    def forward(x, lengths=None, x2=None, lengths2=None, rate=None):
        seen.append(rate)
        return torch.zeros(*x.shape[:2], 1)

    lit.model.forward = forward
    x, y, dt = torch.randn(2, 5), torch.randn(2, 5, 1), torch.rand(2, 5) + 0.5
    lit._forward_metrics(Batch(x, y, dt=dt))
    lit._forward_metrics(Batch(x, y, dt=dt), rate=2.0)  # a test set's rate multiplies the gaps
    lit._forward_metrics(Batch(x, y), rate=2.0)
    lit._forward_metrics(Batch(x, y))
    assert seen[0] is dt and torch.equal(seen[1], 2.0 * dt) and seen[2:] == [2.0, None]


def test_training_validation_and_tests_get_the_gaps(tmp_path, monkeypatch):
    """A run on a dataset with dt: every forward pass of training, validation and both test sets gets
    the batch's gaps (times 2 on the extra test set at rate 2)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 6, 1)).astype(np.float32), rng.standard_normal((12, 6, 1))
    dt = (rng.random((12, 6)) + 0.5).astype(np.float32)
    ds = ArrayDataset(x, y.astype(np.float32), dt=dt)
    data = SequenceData(
        ds.subset(range(8)),
        ds.subset(range(8, 10)),
        ds.subset(range(10, 12)),
        REGRESSION,
        extra_tests={"test_half": (ds.subset(range(10, 12)), 2.0)},
    )
    monkeypatch.setattr("liquid_s4.train.data.build_dataset", lambda config: data)
    seen, real = [], SequenceModel.forward

    def spy(self, x, lengths=None, x2=None, lengths2=None, rate=None):
        seen.append(rate)
        return real(self, x, lengths, x2, lengths2)  # layers without a per-step rate: run them at 1

    monkeypatch.setattr(SequenceModel, "forward", spy)
    cfg = load_config(None, TINY + ["model.pool=none", "data.batch_size=4", "model.layer=s4d"])
    train(cfg, output_dir=str(tmp_path / "run"), quiet=True)
    # 2 training steps, validation after them and after restoring best.ckpt, then the two test sets
    assert len(seen) == 6 and all(isinstance(r, torch.Tensor) and r.shape[1] == 6 for r in seen)
    rows = {tuple(r.tolist()) for rate in seen[:2] for r in rate}
    assert rows == {tuple(r) for r in torch.tensor(dt[:8]).tolist()}
    assert torch.equal(seen[-2], torch.tensor(dt[10:])) and torch.equal(seen[-1], 2 * torch.tensor(dt[10:]))


@pytest.mark.parametrize("name", ["selective-copying", "mqar", "irregular-integral"])
def test_generated_preset_trains_without_the_scan_layer(tmp_path, name):
    """The generated tasks with a plain S4D (the irregular task without the gaps as rate)."""
    extra = ["model.layer_args.liquid_kernel=null"]
    if name == "irregular-integral":
        extra += ["data.options.gaps=input", "data.options.length=16"]
    metrics = train(load_config(name, TINY + SMALL + extra), output_dir=str(tmp_path / "run"), quiet=True)
    assert metrics["global_step"] == 2
    assert (0 <= metrics["test/acc"] <= 1) if name != "irregular-integral" else metrics["test/mse"] >= 0


@pytest.mark.parametrize("name", ["selective-copying", "mqar", "irregular-integral"])
def test_generated_preset_trains(tmp_path, name):
    extra = ["data.options.length=16"] if name == "irregular-integral" else []
    metrics = train(load_config(name, TINY + SMALL + extra), output_dir=str(tmp_path / "run"), quiet=True)
    assert metrics["global_step"] == 2
    assert (0 <= metrics["test/acc"] <= 1) if name != "irregular-integral" else metrics["test/mse"] >= 0


def test_irregular_fit_end_to_end(tmp_path):
    """A tiny fit with per-step gaps: the logged test error equals the saved model run on the test
    batches at their gaps, and differs from the model run without them."""
    from liquid_s4.data.registry import build_dataset

    cfg = load_config("irregular-integral", TINY + SMALL + ["data.options.length=16", "trainer.max_steps=4"])
    metrics = train(cfg, output_dir=str(tmp_path / "run"), quiet=True)
    model = SequenceModel.from_pretrained(tmp_path / "run" / "model").eval()
    test = build_dataset(cfg.data).test
    items = [test[i] for i in range(len(test))]
    x, y, dt = (torch.stack([it[k] for it in items]) for k in ("x", "y", "dt"))
    with torch.no_grad():
        mse = ((model(x, rate=dt) - y) ** 2).mean().item()
        blind = ((model(x) - y) ** 2).mean().item()
    assert metrics["test/mse"] == pytest.approx(mse, rel=1e-5) and abs(mse - blind) > 1e-7
