import torch

from liquid_s4.utils import is_positive_int, lengths_mask


def test_is_positive_int():
    assert all(is_positive_int(v) for v in (1, 2, 10**9))
    assert not any(is_positive_int(v) for v in (0, -1, 1.0, 2.5, True, "3", None, torch.tensor(3)))


def test_lengths_mask_marks_the_unpadded_positions():
    lengths = torch.tensor([0, 3, 5])
    expected = torch.tensor([[t < n for t in range(5)] for n in lengths.tolist()])
    assert torch.equal(lengths_mask(lengths, 5), expected)
