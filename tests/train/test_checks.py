"""Clear errors instead of tracebacks (`liquid-s4 train` / `eval` exit with status 2 and a message
that says what was expected and what to do): bad trainer settings, a missing GPU, malformed YAML,
invalid layer_args, an unwritable output folder, files that are not checkpoints, and `eval` of a
`--data` run from another folder. Most of them fail before any data is loaded or file is written."""

import errno
import os
import tempfile

import numpy as np
import pytest
import torch

from liquid_s4.cli import main
from liquid_s4.train import checks
from liquid_s4.train.checkpoint import AtomicCheckpointIO

TINY = [
    "--set",
    "model.d_model=8",
    "--set",
    "model.n_layers=1",
    "--set",
    "model.layer_args.d_state=4",
    "--quiet",
]


@pytest.fixture
def no_data(monkeypatch):
    """Loading a dataset fails the test: these errors must come before the data is read."""

    def build(config):
        raise AssertionError("the dataset was loaded before the error")

    monkeypatch.setattr("liquid_s4.train.data.build_dataset", build)


def _fails(capsys, args, *expected):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize(
    "flags,expected",
    [
        (
            ["--max-steps", "0"],
            "trainer.max_steps (--max-steps) must be a positive integer, or -1 for no limit; got 0",
        ),
        (["--max-steps", "-3"], "got -3"),
        (["--max-epochs", "0"], "trainer.max_epochs (--max-epochs) must be a positive integer"),
        (
            ["--devices", "0"],
            "trainer.devices (--devices) must be a positive number of devices (e.g. --devices 2)",
        ),
        (["--devices", "abc"], "got 'abc'"),
        (
            ["--devices", "[0, 1]", "--accelerator", "cpu"],
            "selects GPUs by index, but training runs on the CPU",
        ),
        (["--accelerator", "tpu"], "unknown trainer.accelerator (--accelerator) 'tpu'"),
        (
            ["--set", "model.layer_args.foo=1"],
            "unknown model.layer_args ['foo'] for layer 'liquid_s4' (LiquidS4); valid keys: ['d_state'",
        ),
        (
            ["--set", "model.layer_args.d_state=0"],
            "invalid model.layer_args for layer 'liquid_s4': LiquidS4: d_state must be a positive",
        ),
        (
            ["--set", "model.layer=s4d", "--set", "model.layer_args.init=nope"],
            "invalid model.layer_args for layer 's4d'",
        ),
    ],
)
def test_bad_settings_fail_before_data_and_run_folder(tmp_path, capsys, no_data, flags, expected):
    out = tmp_path / "run"
    _fails(capsys, ["train", "--output-dir", str(out), *TINY, *flags], expected)
    assert not out.exists()


def test_gpu_without_a_gpu(tmp_path, capsys, no_data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    _fails(
        capsys,
        ["train", "--accelerator", "gpu", "--output-dir", str(out), *TINY],
        "--accelerator gpu",
        "finds no CUDA GPU",
        "Use --accelerator cpu",
    )
    assert not out.exists()


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys, no_data):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  name: digits\n  batch_size: [1, 2\nmodel: {}\n")
    err = _fails(
        capsys,
        ["train", str(path), "--output-dir", str(tmp_path / "run")],
        f"{path} is not valid YAML at line 4, column 6",
    )
    assert "model: {}" in err  # the offending line is shown
    _fails(
        capsys,
        ["train", "--set", "model.layer_args=[1,", "--output-dir", str(tmp_path / "run")],
        "override 'model.layer_args=[1,'",
    )
    path.write_text("- 1\n- 2\n")
    _fails(capsys, ["train", str(path)], "a config is a mapping of sections")
    path.write_text("trainer: [1, 2]\n")
    _fails(capsys, ["train", str(path)], "config section 'trainer' must be a mapping")
    assert not (tmp_path / "run").exists()


def _unwritable_folder(tmp_path, monkeypatch):
    """A folder this process cannot create files in: read-only permissions, or (as root, where
    permissions do not stop a write) a write test that fails as it would on a read-only mount."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except PermissionError:
        return folder
    os.close(fd)
    os.remove(probe)
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if os.path.abspath(dir) == str(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(checks.tempfile, "mkstemp", mkstemp)
    return folder


def test_unwritable_output_folder_fails_before_training(tmp_path, capsys, no_data, monkeypatch):
    folder = _unwritable_folder(tmp_path, monkeypatch)
    try:
        _fails(
            capsys,
            ["train", "--output-dir", str(folder / "run"), *TINY],
            f"cannot write the run's files to {folder / 'run'}",
            f"{folder} is not writable",
            "Choose another --output-dir",
        )
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)
    (tmp_path / "file").write_text("mine")
    _fails(
        capsys, ["train", "--output-dir", str(tmp_path / "file" / "run"), *TINY], "is a file, not a folder"
    )
    assert (tmp_path / "file").read_text() == "mine"


def test_eval_of_files_that_are_not_checkpoints(tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    _fails(capsys, ["eval", str(text)], f"{text} is not a training checkpoint", "RUN/checkpoints/best.ckpt")
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    _fails(capsys, ["eval", str(other)], "not one written by liquid-s4 train (it holds no run configuration)")
    _fails(capsys, ["eval", str(tmp_path / "missing.ckpt")], "not found")


def test_eval_of_a_data_run_from_another_folder(tmp_path, capsys, monkeypatch):
    """A run trained with `--data mine.npz` (a relative path) is evaluated from another folder: its
    stored path is absolute and found; a checkpoint with a relative path (an older run) gives an error
    naming `eval --data`, and `eval --data PATH` evaluates it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 12, 2)).astype(np.float32)
    np.savez(tmp_path / "mine.npz", x=x, y=(x.sum((1, 2)) > 0).astype(np.int64))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "mine.npz", "--max-steps", "1", "--output-dir", "run", *TINY]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    best = str(tmp_path / "run" / "checkpoints" / "best.ckpt")
    capsys.readouterr()
    assert main(["eval", best]) == 0
    expected = capsys.readouterr().out
    assert '"test/acc"' in expected
    old = str(
        tmp_path / "old.ckpt"
    )  # the same checkpoint as a run from before data paths were stored absolute
    ckpt = torch.load(best, weights_only=True)
    ckpt.pop("liquid_s4_sha256")
    ckpt["hyper_parameters"]["config"]["data"]["data_dir"] = "mine.npz"
    AtomicCheckpointIO().save_checkpoint(ckpt, old)
    _fails(
        capsys,
        ["eval", old],
        "read its data from 'mine.npz', a path relative to the folder it was started from",
        f"liquid-s4 eval {old} --data PATH",
    )
    assert main(["eval", old, "--data", "../mine.npz"]) == 0
    assert capsys.readouterr().out.split("\n{", 1)[-1] == expected.split("\n{", 1)[-1]
    _fails(capsys, ["eval", old, "--data", "../mine.npz", "--data-dir", ".."], "not both")
