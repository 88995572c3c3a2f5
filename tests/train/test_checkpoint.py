"""Training checkpoints: the sha256 stored in every .ckpt, the errors for damaged files, and failed writes."""

import errno
import os

import numpy as np
import pytest
import torch

from liquid_s4.train import checkpoint as ckpt_mod
from liquid_s4.train.checkpoint import (
    CHECKSUM_KEY,
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointWriteError,
    state_digest,
    verify_checkpoint,
)


def fake_checkpoint(seed=0):
    """The parts of a Lightning checkpoint that matter here: weights, optimizer moments, counters."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(64, 64, generator=g)
    return {
        "epoch": 3,
        "global_step": 40,
        "state_dict": {
            "model.w": w,
            "model.b": torch.zeros(64, dtype=torch.float64),
            "model.n": torch.tensor(7),
        },
        "optimizer_states": [
            {
                "state": {0: {"exp_avg": w * 0.5, "step": torch.tensor(40.0)}},
                "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": None, "params": [0]}],
            }
        ],
        "torch_rng_state": torch.randint(0, 255, (16,), dtype=torch.uint8, generator=g),
        "hyper_parameters": {"config": {"model": {"d_model": 16}}, "info": {"task": "classification"}},
    }


def tensor_offset(path, t: torch.Tensor) -> int:
    """Where the bytes of tensor `t` lie in the checkpoint file (to damage the data, not the archive)."""
    data, raw = path.read_bytes(), t.contiguous().numpy().tobytes()
    i = data.find(raw)
    assert i > 0 and data.find(raw, i + 1) < 0
    return i + len(raw) // 2


def test_checksum_is_stored_and_verified(tmp_path):
    io, c = AtomicCheckpointIO(), fake_checkpoint()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(c, path)
    assert CHECKSUM_KEY not in c  # the caller's dict is not changed
    assert torch.load(path, weights_only=True)[CHECKSUM_KEY] == state_digest(c)
    loaded = io.load_checkpoint(path)
    assert CHECKSUM_KEY not in loaded and state_digest(loaded) == state_digest(c)
    verify_checkpoint(path)
    assert [f for f in os.listdir(tmp_path)] == ["last.ckpt"]  # no temporary file left


def test_digest_covers_every_tensor_and_value():
    base = state_digest(fake_checkpoint())
    assert state_digest(fake_checkpoint()) == base
    changes = [
        lambda c: c["state_dict"]["model.w"].view(-1)[100].add_(1e-6),
        lambda c: c["optimizer_states"][0]["state"][0]["exp_avg"].view(-1)[0].mul_(-1),
        lambda c: c.update(global_step=41),
        lambda c: c["optimizer_states"][0]["param_groups"][0].update(lr=1.0000001e-3),
        lambda c: c["state_dict"].update(
            {"model.b": c["state_dict"]["model.b"].float()}
        ),  # same values, other dtype
        lambda c: c["state_dict"].update(
            {"model.w": c["state_dict"]["model.w"].reshape(32, 128)}
        ),  # same bytes, other shape
        lambda c: c["torch_rng_state"].__setitem__(0, 1 - int(c["torch_rng_state"][0]) % 2),
    ]
    for change in changes:
        c = fake_checkpoint()
        change(c)
        assert state_digest(c) != base


def test_digest_survives_save_and_load_of_any_dtype(tmp_path):
    c = {
        "state_dict": {
            "h": torch.randn(3, dtype=torch.bfloat16),
            "z": torch.randn(4, dtype=torch.complex64),
            "s": torch.tensor(2.5),
            "a": np.arange(3.0),
        },
        "t": (1, None, "x", 2.5, True),
    }
    torch.save(c, tmp_path / "c.pt")
    assert state_digest(torch.load(tmp_path / "c.pt", weights_only=False)) == state_digest(c)


def test_changed_bytes_inside_a_tensor_are_detected(tmp_path):
    """Zeroed bytes inside the weights' data: the archive still reads (this loaded silently before)."""
    io, c = AtomicCheckpointIO(), fake_checkpoint()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(c, path)
    data = bytearray(path.read_bytes())
    i = tensor_offset(path, c["state_dict"]["model.w"])
    data[i : i + 8] = bytes(8)
    path.write_bytes(bytes(data))
    assert not torch.equal(
        torch.load(path, weights_only=True)["state_dict"]["model.w"], c["state_dict"]["model.w"]
    )  # loads
    with pytest.raises(
        CheckpointError, match=r"last.ckpt is corrupt or truncated: its contents do not match the sha256"
    ):
        io.load_checkpoint(path)


def test_damaged_last_names_an_intact_best_and_what_to_do(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint(fake_checkpoint(), tmp_path / "best.ckpt")
    io.save_checkpoint(fake_checkpoint(1), tmp_path / "last.ckpt")
    last = tmp_path / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError) as e:
        verify_checkpoint(last)
    msg = str(e.value)
    assert "last.ckpt is corrupt or truncated: it cannot be read" in msg
    assert (
        "Intact: best.ckpt (epoch 3, step 40)" in msg
        and f"cp {tmp_path / 'best.ckpt'} {last}" in msg
        and "--resume" in msg
    )
    best = tmp_path / "best.ckpt"
    best.write_bytes(bytes(100))
    with pytest.raises(CheckpointError, match=r"damaged too \(best.ckpt\): start a new run"):
        verify_checkpoint(last)
    best.unlink()
    with pytest.raises(CheckpointError, match="no other checkpoint in that folder: start a new run"):
        verify_checkpoint(last)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read"):
        verify_checkpoint(tmp_path / "notes.ckpt")
    torch.save(torch.zeros(3), tmp_path / "tensor.ckpt")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        verify_checkpoint(tmp_path / "tensor.ckpt")
    with pytest.raises(FileNotFoundError, match="not found"):
        verify_checkpoint(tmp_path / "missing.ckpt")


def test_checkpoints_without_checksum_load_unchecked(tmp_path):
    """Written before the checksum existed: loaded as they are."""
    torch.save(fake_checkpoint(), tmp_path / "old.ckpt")
    assert AtomicCheckpointIO().load_checkpoint(tmp_path / "old.ckpt")["global_step"] == 40


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a real ENOSPC")
def test_full_disk_names_the_path_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The write hits a real ENOSPC (/dev/full): a CheckpointWriteError (an OSError and a ValueError)
    naming the path; last.ckpt keeps its previous contents."""
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(fake_checkpoint(), path)
    before = path.read_bytes()
    real_atomic_write = ckpt_mod.atomic_write
    monkeypatch.setattr(
        ckpt_mod, "atomic_write", lambda p, write: real_atomic_write(p, lambda tmp: write("/dev/full"))
    )
    with pytest.raises(CheckpointWriteError) as e:
        io.save_checkpoint(fake_checkpoint(1), path)
    assert isinstance(e.value, OSError) and isinstance(e.value, ValueError) and e.value.errno == errno.ENOSPC
    assert f"could not write checkpoint {path} (No space left on device)" in str(e.value)
    assert "the previous checkpoints there (last.ckpt) are intact" in str(e.value) and "--resume" in str(
        e.value
    )
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_failed_write_is_a_clear_error(tmp_path, monkeypatch, code):
    def fail(obj, f):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ckpt_mod.torch, "save", fail)
    path = tmp_path / "checkpoints" / "best.ckpt"
    with pytest.raises(
        CheckpointWriteError,
        match=(
            rf"could not write checkpoint {path} \({os.strerror(code)}\); no earlier "
            r"checkpoint was written there.*then start the run again"
        ),
    ) as e:
        AtomicCheckpointIO().save_checkpoint(fake_checkpoint(), path)
    assert e.value.errno == code and os.listdir(path.parent) == []
