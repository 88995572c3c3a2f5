"""TensorCache: one value kept while its arguments and tensors are unchanged."""

import torch

from liquid_s4.modules.cache import TensorCache


def test_value_is_kept_until_arguments_or_tensors_change():
    a = torch.randn(4)
    b = torch.randn(3)
    tensors = [a, b]
    cache = TensorCache(lambda: tuple(tensors))
    calls = []

    def compute(tag):
        calls.append(tag)
        return (tag, a.sum().item())

    assert cache.get(1, lambda: compute("x")) == cache.get(1, lambda: compute("y"))
    assert calls == ["x"] and cache.is_valid()
    cache.get(2, lambda: compute("z"))  # other arguments: recomputed, and replaces the entry
    cache.get(1, lambda: compute("w"))
    assert calls == ["x", "z", "w"]
    a.data.add_(1.0)  # an edit no version counter sees
    assert not cache.is_valid()
    assert cache.get(1, lambda: compute("v"))[0] == "v"
    tensors[1] = b.clone()  # another tensor object with the same values
    assert not cache.is_valid()
    cache.clear()
    assert cache.peek() is None and not cache.is_valid()


def test_snapshot_is_taken_after_compute():
    """A computation that updates its own tensors (S4 rescales C~ for a longer kernel) is kept."""
    a = torch.zeros(2)
    cache = TensorCache(lambda: (a,))

    def compute():
        a.add_(1.0)
        return a.clone()

    first = cache.get("L", compute)
    assert cache.get("L", compute) is first and cache.is_valid()
