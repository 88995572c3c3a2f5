"""--resume continues a run with its own recorded configuration and appends to its history; new runs
never write into a folder holding files they did not create (tiny model on a small .npz)."""

import csv
import json
import os
from datetime import datetime

import numpy as np
import pytest
import torch

from liquid_s4.cli import main
from liquid_s4.train import rundir
from liquid_s4.train.config import load_config
from liquid_s4.train.module import L
from liquid_s4.train.run import train

SETS = [
    "model.d_model=8",
    "model.n_layers=1",
    "model.layer_args.d_state=4",
    "data.batch_size=16",
    "trainer.progress=false",
]
TINY = [a for s in SETS for a in ("--set", s)] + ["--quiet"]
STEPS_PER_EPOCH = 4  # 80 items: 56 train (val_fraction 0.1, test_fraction 0.2), batches of 16


def write_npz(path, seed=0, n=80):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 12, 2)).astype(np.float32)
    np.savez(path, x=x, y=(x.sum((1, 2)) > 0).astype(np.int64))


def snapshot(folder) -> dict[str, bytes]:
    """Every file under `folder` (except the TensorBoard event files each segment adds) and its bytes."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            if not f.startswith("events.out.tfevents"):
                path = os.path.join(root, f)
                out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def epoch_rows(run) -> list[int]:
    """The epoch of every row of logs/metrics.csv that holds an end-of-epoch training loss."""
    with open(run / "logs" / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")]


def start(tmp_path, epochs=1, name="run"):
    write_npz(tmp_path / "mine.npz")
    run = tmp_path / name
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "mine.npz"),
                "--max-epochs",
                str(epochs),
                "--output-dir",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    return run


def test_resume_continues_on_the_runs_own_data_from_another_directory(tmp_path, monkeypatch):
    """A run given `--data mine.npz` (relative) resumes with nothing but --output-dir and --max-epochs,
    from another working directory: same data, same model settings."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_npz(tmp_path / "a" / "mine.npz")
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "--data", "mine.npz", "--max-epochs", "1", "--output-dir", "run", *TINY]) == 0
    run = tmp_path / "a" / "run"
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["data"] == {
        **record["config"]["data"],
        "name": "arrays",
        "data_dir": str(tmp_path / "a" / "mine.npz"),
    }
    assert record["finished"] == {"epochs": 1, "global_step": STEPS_PER_EPOCH}
    monkeypatch.chdir(tmp_path / "b")
    assert main(["train", "--resume", "--output-dir", str(run), "--max-epochs", "2", "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * STEPS_PER_EPOCH and metrics["epochs"] == 2
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["model"]["d_model"] == 8 and record["config"]["trainer"]["max_epochs"] == 2
    assert (
        "max_epochs: 2" in (run / "config.yaml").read_text()
        and "name: arrays" in (run / "config.yaml").read_text()
    )


def test_resume_refuses_conflicting_settings_and_changes_nothing(tmp_path, capsys):
    run = start(tmp_path)
    write_npz(tmp_path / "other.npz", seed=1)
    before = snapshot(run)
    args = ["train", "--resume", "--output-dir", str(run), "--max-epochs", "3", "--quiet"]
    assert main(args + ["--set", "model.d_model=16", "--data", str(tmp_path / "other.npz")]) == 2
    err = capsys.readouterr().err
    assert "model.d_model: 8 (stored) vs 16 (given)" in err
    assert f"data.data_dir: '{tmp_path / 'mine.npz'}' (stored) vs '{tmp_path / 'other.npz'}' (given)" in err
    assert (
        "trainer.max_epochs" not in err.split("--resume may change only")[0]
    )  # an allowed change is no conflict
    assert (
        main(["train", "digits", "--resume", "--output-dir", str(run), "--quiet"]) == 2
    )  # a preset's settings are compared too
    assert "data.name: 'arrays' (stored) vs 'digits' (given)" in capsys.readouterr().err
    assert (
        main(["train", "--resume", "--output-dir", str(run), "--quiet"]) == 2
    )  # finished: nothing more to train
    assert "already finished (1 epochs, 4 steps" in capsys.readouterr().err
    assert main(["train", "--resume", "--quiet"]) == 2
    assert "--resume needs the run's folder" in capsys.readouterr().err
    assert snapshot(run) == before


def test_resume_appends_to_the_history(tmp_path):
    """metrics.csv keeps the rows of the first segment (every epoch once), metrics.json's wall time
    is the sum of both segments."""
    run = start(tmp_path, epochs=2)
    first = json.loads((run / "metrics.json").read_text())
    assert epoch_rows(run) == [0, 1] and len(first["segments"]) == 1
    assert main(["train", "--resume", "--output-dir", str(run), "--max-epochs", "4", "--quiet"]) == 0
    assert epoch_rows(run) == [0, 1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    segments = metrics["segments"]
    assert [s["steps"] for s in segments] == [
        [0, 2 * STEPS_PER_EPOCH],
        [2 * STEPS_PER_EPOCH, 4 * STEPS_PER_EPOCH],
    ]
    assert segments[0] == first["segments"][0]
    assert (
        metrics["wall_time_s"]
        == round(sum(s["wall_time_s"] for s in segments), 2)
        > first["segments"][0]["wall_time_s"]
    )


class Fail(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        raise RuntimeError("failed during training")


def test_a_failed_resume_changes_nothing_on_disk(tmp_path):
    run = start(tmp_path, epochs=1)
    before = snapshot(run)
    config = rundir.resume_config(str(run), ["trainer.max_epochs=3"])
    with pytest.raises(RuntimeError, match="failed during training"):
        train(config, output_dir=str(run), resume=True, quiet=True, callbacks=[Fail()])
    assert snapshot(run) == before


def test_a_new_run_never_overwrites_files_it_did_not_create(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = (
        "# my own configuration\n"
        + open(os.path.join(os.path.dirname(rundir.__file__), "..", "presets", "digits.yaml")).read()
    )
    (tmp_path / "config.yaml").write_text(mine)
    assert main(["train", "config.yaml", "--output-dir", ".", *TINY]) == 2
    assert "already holds config.yaml, which a run would overwrite" in capsys.readouterr().err
    assert (tmp_path / "config.yaml").read_text() == mine and sorted(os.listdir(tmp_path)) == ["config.yaml"]
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "notes.txt").write_text("mine")
    write_npz(tmp_path / "shared" / "d.npz")
    assert (
        main(["train", "--data", "shared/d.npz", "--max-steps", "1", "--output-dir", "shared", *TINY]) == 0
    )  # no clash: fine
    assert (tmp_path / "shared" / "notes.txt").read_text() == "mine" and (
        tmp_path / "shared" / "run.json"
    ).is_file()
    assert main(["train", "--data", "shared/d.npz", "--max-steps", "1", "--output-dir", "shared", *TINY]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "pass --resume to continue it" in err


def test_a_finished_run_without_last_ckpt_is_left_alone(tmp_path, capsys):
    run = start(tmp_path)
    os.remove(run / "checkpoints" / "last.ckpt")
    before = snapshot(run)
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "mine.npz"),
                "--max-epochs",
                "1",
                "--output-dir",
                str(run),
                *TINY,
            ]
        )
        == 2
    )
    assert "holds a finished run whose checkpoints/last.ckpt is gone" in capsys.readouterr().err
    assert main(["train", "--resume", "--output-dir", str(run), "--max-epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "finished but its" in err
        and f"copy {run / 'checkpoints' / 'best.ckpt'} to {run / 'checkpoints' / 'last.ckpt'}" in err
    )
    assert snapshot(run) == before


def test_default_folders_are_unique_and_claimed_once(tmp_path, monkeypatch):
    """Runs started in the same second get different folders; a folder is claimed by one run only."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir, "datetime", Frozen)
    config = load_config(None, SETS)
    names = {rundir.create_run_dir(None, config) for _ in range(20)}
    assert len(names) == 20 and all(
        n.startswith(os.path.join("runs", "digits-20260102-030405-")) for n in names
    )
    hexes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(rundir.secrets, "token_hex", lambda n: next(hexes))
    assert rundir.create_run_dir(None, config).endswith("-aaaaaa")
    assert rundir.create_run_dir(None, config).endswith("-bbbbbb")  # collision: a new suffix
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "run.json").touch()  # another run claimed it between its check and ours
    monkeypatch.setattr(rundir, "check_new_output_dir", lambda out: None)
    with pytest.raises(FileExistsError, match="claimed by another run"):
        rundir.create_run_dir(str(tmp_path / "x"), config)


def test_a_run_from_before_run_json_resumes_from_its_checkpoint(tmp_path):
    """Runs written before run.json existed resume with the configuration saved in last.ckpt."""
    run = start(tmp_path, epochs=1)
    os.remove(run / "run.json")
    config = rundir.resume_config(str(run), ["trainer.max_epochs=2"])
    assert config.data.name == "arrays" and config.model.d_model == 8
    train(config, output_dir=str(run), resume=True, quiet=True)
    assert (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        == 2 * STEPS_PER_EPOCH
    )
    assert json.loads((run / "run.json").read_text())["finished"] == {
        "epochs": 2,
        "global_step": 2 * STEPS_PER_EPOCH,
    }


def test_a_run_that_died_before_its_first_checkpoint_says_what_to_do(tmp_path, capsys):
    run = tmp_path / "run"
    rundir.create_run_dir(str(run), load_config(None, SETS))  # what a run writes before its first epoch ends
    before = snapshot(run)
    assert main(["train", "--output-dir", str(run), *TINY]) == 2
    assert f"stopped before its first checkpoint; remove that folder (rm -r {run})" in capsys.readouterr().err
    assert main(["train", "--resume", "--output-dir", str(run), "--quiet"]) == 2
    assert "there is nothing to continue. Remove that folder" in capsys.readouterr().err
    assert snapshot(run) == before


class Interrupt(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:  # epoch 0 and its checkpoint are complete
            raise KeyboardInterrupt


def test_resume_continues_a_plateau_schedule_exactly(tmp_path):
    """The ReduceLROnPlateau step at the end of the epoch a run resumes after is not lost (Lightning
    skips it on restart). lr 1e-6: the validation loss does not improve by the scheduler's threshold, so
    the learning rate is halved after the second epoch."""
    write_npz(tmp_path / "d.npz")
    sets = SETS + [
        "data.name=arrays",
        f"data.data_dir={tmp_path / 'd.npz'}",
        "trainer.max_epochs=3",
        "optim.scheduler=plateau",
        "optim.patience=0",
        "optim.lr=1e-6",
        "model.layer_args.lr=1e-6",
    ]
    config = load_config(None, sets)
    train(config, output_dir=str(tmp_path / "a"), quiet=True)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(config, output_dir=str(tmp_path / "b"), quiet=True, callbacks=[Interrupt()])
    train(config, output_dir=str(tmp_path / "b"), resume=True, quiet=True)
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=False) for r in ("a", "b"))
    assert a["lr_schedulers"][0]["_last_lr"][0] == 1e-6 * 0.5  # reduced once (after the second epoch)
    assert b["lr_schedulers"] == a["lr_schedulers"]
    assert [g["lr"] for g in b["optimizer_states"][0]["param_groups"]] == [
        g["lr"] for g in a["optimizer_states"][0]["param_groups"]
    ]
