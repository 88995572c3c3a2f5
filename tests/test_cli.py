"""The `liquid-s4` command on datasets: `data check`/`data list`, `train --data PATH` (your own arrays),
and the generated tasks training from the command line."""

import json

import numpy as np
import pytest

from liquid_s4.cli import main

TINY = [
    "--set",
    "model.d_model=8",
    "--set",
    "model.n_layers=1",
    "--set",
    "model.layer_args.d_state=4",
    "--quiet",
]


def test_data_list_and_check(tmp_path, capsys):
    from .data.test_listops import write_listops

    assert main(["data", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"listops", "speech-commands", "bidmc", "copying", "arrays"} <= set(names)
    write_listops(str(tmp_path))
    assert main(["data", "check", "lra-listops", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "splits: train 12, val 4, test 5" in out and "vocabulary 16" in out
    assert "train: 12 items, the official release has 96000" in out and "ok: every split was read" in out
    assert main(["data", "check", "lra-listops", "--data-dir", str(tmp_path / "none")]) == 2
    assert "Expected layout" in capsys.readouterr().err
    assert (
        main(["data", "check", "lra-listops", "--data-dir", str(tmp_path), "--set", "data.options.maxlen=5"])
        == 2
    )
    assert "valid options: max_length" in capsys.readouterr().err


def test_train_on_your_own_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 12, 2)).astype(np.float32)
    y = (x.sum((1, 2)) > 0).astype(np.int64)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tmp_path / "mine.npz"),
        "--max-steps",
        "2",
        "--output-dir",
        str(out),
        *TINY[:-1],
    ]
    assert main(args + ["--set", "trainer.progress=false"]) == 0
    printed = capsys.readouterr().out
    assert (
        "x (12, 2) float32" in printed and "2 classes" in printed
    )  # shapes and classes reported before training
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and 0 <= metrics["test/acc"] <= 1
    assert main(["train", "--data", str(tmp_path / "mine.npz"), "--data-dir", str(tmp_path), "--quiet"]) == 2
    assert "not both" in capsys.readouterr().err


def test_per_step_targets_need_pool_none(tmp_path, capsys):
    args = [
        "train",
        "copying",
        "--output-dir",
        str(tmp_path / "run"),
        "--set",
        "model.pool=mean",
        "--set",
        "data.options.n_train=8",
    ]
    assert main(args + TINY) == 2
    assert "targets are per step, but model.pool is 'mean'; set model.pool=none" in capsys.readouterr().err


@pytest.mark.slow
def test_generated_delay_task_is_learned_from_the_cli(tmp_path):
    """`liquid-s4 train delay` (no files): 150 steps of a 2-layer Liquid-S4 solve a 5-step delay."""
    out = tmp_path / "run"
    sets = [
        "data.options.length=40",
        "data.options.delay=5",
        "data.options.n_train=4800",
        "data.options.n_val=200",
        "data.options.n_test=200",
        "model.d_model=32",
        "model.layer_args.d_state=16",
        "model.layer_args.dt_min=0.01",
        "model.layer_args.dt_max=0.5",
        "optim.lr=0.01",
        "model.layer_args.lr=0.01",
    ]
    args = ["train", "delay", "--max-steps", "150", "--output-dir", str(out), "--quiet"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.95
