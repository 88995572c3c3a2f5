"""End-to-end runs of the training pipeline on the embedded digits data (tiny model, few steps)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from liquid_s4 import SequenceModel
from liquid_s4.cli import main
from liquid_s4.train.config import load_config
from liquid_s4.train.module import L
from liquid_s4.train.run import evaluate, train

TINY = [
    "model.d_model=16",
    "model.n_layers=2",
    "model.layer_args.d_state=8",
    "data.batch_size=128",
    "trainer.progress=false",
]


def test_run_writes_its_outputs(tmp_path):
    out = tmp_path / "run"
    metrics = train(load_config(None, TINY + ["trainer.max_epochs=2"]), output_dir=str(out), quiet=True)
    for name in (
        "run.json",
        "config.yaml",
        "metrics.json",
        "curves.png",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "logs/metrics.csv",
        "model/config.json",
        "model/model.safetensors",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test/acc"] == metrics["test/acc"] and 0 <= saved["test/acc"] <= 1
    assert saved["global_step"] == 2 * 10  # 1258 training examples / 128 per batch
    assert not [f for f in os.listdir(out / "checkpoints") if ".tmp" in f]
    model = SequenceModel.from_pretrained(out / "model")
    assert model.config.layer == "liquid_s4" and model.config.d_output == 10
    assert evaluate(str(out / "checkpoints" / "best.ckpt"), quiet=True)["test/acc"] == pytest.approx(
        metrics["test/acc"]
    )
    with pytest.raises(FileExistsError, match="--resume"):
        train(load_config(None, TINY), output_dir=str(out), quiet=True)


class Interrupt(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:  # epoch 0 and its checkpoint are complete
            raise KeyboardInterrupt


def test_resume_ends_with_the_same_weights(tmp_path):
    """Interrupted after epoch 1 and resumed to epoch 3 == 3 epochs straight (optimizer, scheduler,
    data order and dropout RNG all restored)."""
    cfg = load_config(None, TINY + ["model.dropout=0.2", "trainer.max_epochs=3"])
    train(cfg, output_dir=str(tmp_path / "a"), quiet=True)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(cfg, output_dir=str(tmp_path / "b"), quiet=True, callbacks=[Interrupt()])
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 10
    train(cfg, output_dir=str(tmp_path / "b"), resume=True, quiet=True)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 30
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(cfg, output_dir=str(tmp_path / "c"), resume=True, quiet=True)


def test_last_checkpoint_is_written_after_every_epoch(tmp_path):
    """last.ckpt follows training even when the monitored metric stops improving (best.ckpt does not),
    so --resume never repeats epochs."""
    cfg = load_config(None, TINY + ["trainer.max_epochs=3", "optim.lr=1e-12", "model.layer_args.lr=1e-12"])
    train(cfg, output_dir=str(tmp_path), quiet=True)
    load = lambda name: torch.load(tmp_path / "checkpoints" / name, weights_only=False)  # noqa: E731
    assert load("best.ckpt")["global_step"] == 10  # val/acc never improved after the first epoch
    assert load("last.ckpt")["global_step"] == 30


def test_cli(tmp_path, capsys):
    assert main(["presets"]) == 0
    assert "digits" in capsys.readouterr().out.split()
    assert main(["presets", "show", "digits"]) == 0
    assert "layer: liquid_s4" in capsys.readouterr().out
    assert main(["train", "--set", "optim.lrr=1"]) == 2
    assert "valid keys in optim" in capsys.readouterr().err
    out = tmp_path / "cli"
    args = ["train", "--max-steps", "3", "--output-dir", str(out), "--quiet"] + [
        a for t in TINY for a in ("--set", t)
    ]
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 3


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    """Lightning DDP with 2 CPU processes (gloo), launched from the command line as a user would,
    without --output-dir: the second process writes to the folder the first one created."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "liquid_s4.cli",
        "train",
        "--devices",
        "2",
        "--accelerator",
        "cpu",
        "--max-steps",
        "4",
        "--quiet",
    ]
    cmd += [a for t in TINY for a in ("--set", t)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 4


def test_a_run_shows_its_own_output_and_real_warnings(tmp_path):
    """`liquid-s4 train` as a user sees it: our data and model summary, progress and summary table, and
    genuine warnings (here Lightning's about a logging interval longer than the epoch), but none of
    Lightning's informational lines, advertisements, model-summary table or its internal
    deprecation warning."""
    cmd = [
        sys.executable,
        "-m",
        "liquid_s4.cli",
        "train",
        "--output-dir",
        str(tmp_path / "run"),
        "--max-epochs",
        "1",
    ]
    cmd += [a for t in [*TINY, "data.batch_size=512"] for a in ("--set", t)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "default"}
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    for ours in ("sklearn digits", "model: liquid_s4 x 2 layers, d_model 16", "summary", "test/acc"):
        assert ours in text, ours
    assert "smaller than the logging interval" in text  # a real warning still reaches the user
    for noise in (
        "Tip:",
        "GPU available",
        "TPU available",
        "Loading `train_dataloader`",
        "LeafSpec",
        "Total FLOPs",
        "Restoring states",
    ):
        assert noise not in text, noise
