"""Fault injection: training killed with SIGKILL at several points, then `liquid-s4 train --resume
--output-dir RUN` (nothing else), ends with exactly the weights and logged values of an
uninterrupted run.

The kills come from a driver script written here (no test hooks in the library): it patches, in
its own process only, the training step (a kill mid-epoch), torch.save (a kill while last.ckpt's
temporary file is half written) or os.replace (a kill just before, or just after, last.ckpt is
replaced), then runs the command line."""

import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

DRIVER = r"""
import os, signal, sys
import torch
from liquid_s4.train.module import LitSequenceModel

kind, _, n = os.environ.get("KILL", "").partition(":")
n, seen = int(n or 0), [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def count(path):
    if str(path).endswith("last.ckpt"):
        seen[0] += 1
        return seen[0] == n
    return False

if kind == "step":  # mid-epoch, before optimizer step n
    step = LitSequenceModel.training_step
    def training_step(self, batch, idx):
        if self.global_step == n:
            die()
        return step(self, batch, idx)
    LitSequenceModel.training_step = training_step
elif kind == "write":  # the n-th last.ckpt of this process: its temporary file half written
    save = torch.save
    def patched(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)
        if count(getattr(f, "name", f)):
            f.flush()
            os.ftruncate(f.fileno(), f.tell() // 2)
            die()
    torch.save = patched
elif kind in ("before", "after"):  # the n-th last.ckpt: killed just before / just after the rename
    replace = os.replace
    def patched(src, dst, *args, **kwargs):
        kill = count(dst)
        if kill and kind == "before":
            die()
        replace(src, dst, *args, **kwargs)
        if kill:
            die()
    os.replace = patched

from liquid_s4.cli import main
sys.exit(main(sys.argv[1:]))
"""

SETS = [
    "model.d_model=8",
    "model.n_layers=1",
    "model.layer_args.d_state=4",
    "model.dropout=0.1",
    "data.batch_size=16",
    "trainer.progress=false",
    "trainer.log_every_n_steps=1",
    "trainer.max_epochs=4",
]
STEPS = 4  # per epoch: 56 training items of 80, batches of 16


def rows(run) -> list[dict[str, str]]:
    with open(run / "logs" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_result(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 12, 2)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x.sum((1, 2)) > 0).astype(np.int64))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def launch(out, *args, kill=""):
        cmd = [
            sys.executable,
            str(tmp_path / "driver.py"),
            "train",
            "--output-dir",
            str(out),
            "--quiet",
            *args,
        ]
        return subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env={**env, "KILL": kill},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    new = ["--data", "d.npz"] + [a for s in SETS for a in ("--set", s)]
    ref = launch(tmp_path / "ref", *new)  # the uninterrupted run, alongside
    run = tmp_path / "run"
    steps = lambda: torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]  # noqa: E731
    # (kill, last.ckpt's step afterwards): mid-epoch 1; the first last.ckpt half written (epoch 1's:
    # the old one stays); epoch 1's written, epoch 2's killed before its rename; epoch 2's renamed, then
    # killed
    for i, (kill, after) in enumerate(
        [("step:6", STEPS), ("write:1", STEPS), ("before:2", 2 * STEPS), ("after:1", 3 * STEPS)]
    ):
        proc = launch(run, *(new if i == 0 else ["--resume"]), kill=kill)
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == -signal.SIGKILL, output[-3000:]
        assert steps() == after, kill
        if kill.startswith("write"):  # the half-written temporary file is left, last.ckpt is intact
            assert [f for f in os.listdir(run / "checkpoints") if f.startswith(".tmp-")]
    final = subprocess.run(
        [sys.executable, "-m", "liquid_s4.cli", "train", "--resume", "--output-dir", str(run), "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    assert ref.communicate(timeout=300)[0] is not None and ref.returncode == 0
    assert not [f for f in os.listdir(run / "checkpoints") if f.startswith(".tmp-")]  # removed by the resume

    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 4 * STEPS
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for k, v in load_file(tmp_path / "ref" / "model" / "model.safetensors").items():
        assert torch.equal(v, load_file(run / "model" / "model.safetensors")[k]), k
    # every logged value as in the uninterrupted run, each once; the one row no resume can restore:
    # epoch 2's training averages, logged after its last.ckpt was renamed (the process died in between)
    lost = [r for r in rows(tmp_path / "ref") if r["epoch"] == "2" and r["train/loss_epoch"]]
    assert len(lost) == 1
    assert rows(run) == [r for r in rows(tmp_path / "ref") if r != lost[0]]
    assert sorted(int(r["step"]) for r in rows(run) if r["train/loss_step"]) == list(range(4 * STEPS))
    assert [int(r["epoch"]) for r in rows(run) if r["val/acc"]][:4] == [0, 1, 2, 3]
