"""Fault injection, corruption half: damage each file a finished run wrote and check that using it gives a
clear error (or, for the preprocessing cache, a rebuild with a warning) and that no other file changes.

One tiny run on a tiny --data npz is made once per module; every case works on its own copy."""

import errno
import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

from liquid_s4 import SequenceModel
from liquid_s4.cli import main
from liquid_s4.data.common import CACHE_DIR

pytestmark = pytest.mark.slow  # one tiny training run (about 10 s on 2 CPU cores), then seconds per case

TINY = [
    "model.d_model=8",
    "model.n_layers=1",
    "model.layer_args.d_state=4",
    "data.batch_size=16",
    "trainer.progress=false",
]


def cli_args(base, *extra):
    args = [
        "train",
        "--data",
        str(base / "data" / "d.npz"),
        "--output-dir",
        str(base / "run"),
        "--quiet",
        "--max-epochs",
        "2",
    ]
    return args + [a for t in TINY for a in ("--set", t)] + list(extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("corrupt") / "base"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype(np.float32)
    os.makedirs(base / "data")
    np.savez(base / "data" / "d.npz", x=x, y=(x.mean(1) > 0).astype(np.int64))
    assert main(cli_args(base)) == 0
    return base


@pytest.fixture
def run(finished_run, tmp_path):
    """A copy of the finished run and its data, made in the same place (the config names the data's
    absolute path, so the copy is moved to where the original was only for the duration of a case)."""
    shutil.copytree(finished_run, tmp_path / "saved")
    yield finished_run
    shutil.rmtree(finished_run)
    shutil.copytree(tmp_path / "saved", finished_run)


def snapshot(root):
    """sha256 of every file under root, by relative path."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def zero_inside_tensor(path, tensor):
    """Zero 8 bytes in the middle of `tensor`'s data in the checkpoint file (the archive still reads)."""
    data, raw = bytearray(path.read_bytes()), tensor.contiguous().numpy().tobytes()
    start = data.find(raw)
    assert start > 0 and any(raw[len(raw) // 2 : len(raw) // 2 + 8])
    data[start + len(raw) // 2 : start + len(raw) // 2 + 8] = bytes(8)
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def largest_weight(ckpt_path):
    sd = torch.load(ckpt_path, weights_only=True)["state_dict"]
    return max((v for v in sd.values() if v.is_floating_point()), key=lambda v: v.numel())


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_damaged_last_checkpoint_refuses_resume_and_names_intact_best(run, capsys, damage):
    last = run / "run" / "checkpoints" / "last.ckpt"
    zero_inside_tensor(last, largest_weight(last)) if damage == "zeroed" else truncate(last)
    before = snapshot(run)
    assert main(cli_args(run, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {last} is corrupt or truncated" in err
    assert "do not match the sha256" in err if damage == "zeroed" else "cannot be read" in err
    assert re.search(
        r"Intact: best.ckpt \(epoch \d+, step \d+\)\. To continue from there, copy it over last.ckpt \(cp ",
        err,
    )
    assert snapshot(run) == before


def test_damaged_best_checkpoint_is_refused_by_eval(run, capsys):
    best = run / "run" / "checkpoints" / "best.ckpt"
    zero_inside_tensor(best, largest_weight(best))
    before = snapshot(run)
    assert main(["eval", str(best)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {best} is corrupt or truncated" in err and "Intact: last.ckpt" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["changed", "truncated"])
def test_damaged_saved_model_is_refused(run, damage):
    weights = run / "run" / "model" / "model.safetensors"
    if damage == "changed":
        data = bytearray(weights.read_bytes())
        mid = (
            8 + int.from_bytes(data[:8], "little") + len(data)
        ) // 2  # inside the tensor data, after the header
        data[mid : mid + 8] = b"\x7f" * 8
        weights.write_bytes(bytes(data))
    else:
        truncate(weights)
    before = snapshot(run)
    with pytest.raises(
        ValueError,
        match="is corrupt: its tensors do not match" if damage == "changed" else "truncated or corrupt",
    ):
        SequenceModel.from_pretrained(run / "run" / "model")
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["value", "truncated"])
def test_damaged_model_config_is_refused(run, damage):
    config = run / "run" / "model" / "config.json"
    if damage == "value":
        meta = json.loads(config.read_text())
        meta["model"]["layer_args"]["d_state"] = 4.0000001  # parses, and still a number
        config.write_text(json.dumps(meta))
    else:
        truncate(config)
    before = snapshot(run)
    expected = (
        "does not match the model config saved" if damage == "value" else "is not a liquid_s4 model config"
    )
    with pytest.raises(ValueError, match=expected):
        SequenceModel.from_pretrained(run / "run" / "model")
    assert snapshot(run) == before


def test_damaged_cache_entry_is_rebuilt_with_a_warning(run, capsys):
    (entry,) = os.listdir(run / "data" / CACHE_DIR)
    npy = run / "data" / CACHE_DIR / entry / "all_x.npy"
    data = bytearray(npy.read_bytes())
    data[-40:-32] = b"\x7f" * 8  # same size: it still memory-maps
    npy.write_bytes(bytes(data))
    before = snapshot(run)
    with pytest.warns(UserWarning, match=r"all_x.npy does not match the sha256.*rebuilding it"):
        assert main(["data", "check", "--data", str(run / "data" / "d.npz")]) == 0
    after = snapshot(run)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {os.path.join("data", CACHE_DIR, entry, "all_x.npy")} and set(after) == set(before)
    x = np.load(run / "data" / "d.npz")["x"]
    assert np.array_equal(np.load(npy), x[..., None])  # rebuilt from the source


def test_damaged_run_record_refuses_resume(run, capsys):
    record = run / "run" / "run.json"
    truncate(record)
    before = snapshot(run)
    assert main(cli_args(run, "--resume", "--max-epochs", "3")) == 2
    err = capsys.readouterr().err
    assert f"{record} cannot be read" in err and "Restore it, or start a new run" in err
    assert snapshot(run) == before


def test_damaged_config_yaml_is_not_used_and_is_rewritten_by_resume(run):
    """config.yaml is for reading only (--resume uses run.json): a damaged one does not change what the
    resumed run trains, and is written again from the record when the resumed run saves."""
    import yaml

    config = run / "run" / "config.yaml"
    config.write_text(config.read_text()[:40] + "\n\t: [broken")
    assert main(cli_args(run, "--resume", "--max-epochs", "3")) == 0
    stored = json.loads((run / "run" / "run.json").read_text())["config"]
    assert yaml.safe_load(config.read_text()) == stored and stored["trainer"]["max_epochs"] == 3
    assert torch.load(run / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


def test_full_disk_during_training_names_the_path_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
):
    """The disk fills up when the second epoch's checkpoints are written: exit code 2 with a message
    naming the file and saying the earlier checkpoints are intact, which they are (verified)."""
    from liquid_s4.train import checkpoint

    rng = np.random.default_rng(1)
    x = rng.normal(size=(48, 12)).astype(np.float32)
    os.makedirs(tmp_path / "data")
    np.savez(tmp_path / "data" / "d.npz", x=x, y=(x.mean(1) > 0).astype(np.int64))
    real_save, calls = torch.save, []

    def save(obj, f):
        calls.append(1)
        if len(calls) > 2:  # epoch 0 wrote best.ckpt and last.ckpt
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    assert main(cli_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert re.search(
        rf"could not write checkpoint {tmp_path / 'run' / 'checkpoints'}/(best|last).ckpt \(No space left "
        r"on device\); "
        r"the previous checkpoints there \(best.ckpt, last.ckpt\) are intact",
        err,
    )
    monkeypatch.undo()
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint.verify_checkpoint(tmp_path / "run" / "checkpoints" / name)
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == [
        "best.ckpt",
        "last.ckpt",
    ]  # no temporary file left
