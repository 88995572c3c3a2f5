import torch

from liquid_s4.utils import is_positive_int, lengths_mask


def test_is_positive_int():
    assert all(is_positive_int(v) for v in (1, 2, 10**9))
    assert not any(is_positive_int(v) for v in (0, -1, 1.0, 2.5, True, "3", None, torch.tensor(3)))


def test_lengths_mask_marks_the_unpadded_positions():
    lengths = torch.tensor([0, 3, 5])
    expected = torch.tensor([[t < n for t in range(5)] for n in lengths.tolist()])
    assert torch.equal(lengths_mask(lengths, 5), expected)


def test_atomic_directory_replaces_the_folder_whole_or_not_at_all(tmp_path):
    import pytest

    from liquid_s4.fileio import atomic_directory

    target = tmp_path / "entry"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target, prefix=".entry-") as tmp:
            (tmp_path / tmp / "new.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_directory(target, prefix=".entry-") as tmp:
        (tmp_path / tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]
