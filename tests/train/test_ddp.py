"""Exact evaluation metrics in multi-process (DDP) runs: every item of a validation or test split is
evaluated once (no padded duplicates) and the metrics are summed over processes before dividing."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from liquid_s4.train.data import EvalShard
from liquid_s4.train.run import evaluate


@pytest.mark.parametrize("n,world", [(7, 2), (19, 2), (10, 3), (3, 3)])
def test_eval_shards_cover_every_item_once(n, world):
    shards = [list(EvalShard(range(n), rank, world)) for rank in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(EvalShard(range(n), rank, world)) for rank in range(world)] == list(map(len, shards))


def test_split_smaller_than_the_processes_is_refused():
    with pytest.raises(
        ValueError,
        match="the validation set has 1 items, fewer than the 2 processes of this run.*use fewer --devices",
    ):
        EvalShard(range(1), 0, 2, "validation")


@pytest.mark.slow
def test_two_process_test_metrics_equal_one_process_evaluation(tmp_path):
    """`liquid-s4 train --devices 2` (CPU, gloo) on 47 items, 19 of them in the test split (odd: the
    default distributed sampler would evaluate 20, one twice): the test loss and accuracy in
    metrics.json equal a single-process evaluation of the same checkpoint."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((47, 12, 2)).astype(np.float32)
    np.savez(tmp_path / "odd.npz", x=x, y=(x.sum((1, 2)) > 0).astype(np.int64))
    sets = [
        "data.batch_size=4",
        "data.test_fraction=0.4",
        "model.d_model=8",
        "model.n_layers=1",
        "model.layer_args.d_state=4",
    ]
    flags = [
        "--data",
        str(tmp_path / "odd.npz"),
        "--devices",
        "2",
        "--accelerator",
        "cpu",
        "--max-steps",
        "3",
        "--output-dir",
        "run",
    ]
    cmd = [sys.executable, "-m", "liquid_s4.cli", "train", *flags, "--quiet"] + [
        a for s in sets for a in ("--set", s)
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    single = evaluate(str(tmp_path / metrics["checkpoint"]), quiet=True)  # an absolute path stays as it is
    assert metrics["test/loss"] == pytest.approx(single["test/loss"], rel=1e-6)
    assert metrics["test/acc"] == pytest.approx(single["test/acc"], abs=1e-7)
    assert round(single["test/acc"] * 19) == pytest.approx(
        single["test/acc"] * 19, abs=1e-4
    )  # a multiple of 1/19: 19 items
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
