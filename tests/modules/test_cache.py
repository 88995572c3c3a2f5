"""TensorCache: one value kept while its arguments and tensors are unchanged."""

import torch

from liquid_s4.modules.cache import TensorCache


def test_value_is_kept_until_arguments_or_tensors_change():
    a = torch.randn(4)
    b = torch.randn(3)
    tensors = [a, b]
    cache = TensorCache()
    live = lambda: tuple(tensors)  # noqa: E731
    calls = []

    def compute(tag):
        calls.append(tag)
        return (tag, a.sum().item())

    assert cache.get(1, live, lambda: compute("x")) == cache.get(1, live, lambda: compute("y"))
    assert calls == ["x"] and cache.is_valid(live)
    cache.get(2, live, lambda: compute("z"))  # other arguments: recomputed, and replaces the entry
    cache.get(1, live, lambda: compute("w"))
    assert calls == ["x", "z", "w"]
    a.data.add_(1.0)  # an edit no version counter sees
    assert not cache.is_valid(live)
    assert cache.get(1, live, lambda: compute("v"))[0] == "v"
    tensors[1] = b.clone()  # another tensor object with the same values
    assert not cache.is_valid(live)
    cache.clear()
    assert cache.peek() is None and not cache.is_valid(live)


def test_snapshot_is_taken_after_compute():
    """A computation that updates its own tensors (S4 rescales C~ for a longer kernel) is kept."""
    a = torch.zeros(2)
    cache = TensorCache()
    live = lambda: (a,)  # noqa: E731

    def compute():
        a.add_(1.0)
        return a.clone()

    first = cache.get("L", live, compute)
    assert cache.get("L", live, compute) is first and cache.is_valid(live)


def test_layer_and_its_cached_kernels_are_freed_with_the_layer():
    """No reference cycle through the caches: dropping a layer frees its cached kernels at once
    (without waiting for the cyclic garbage collector)."""
    import gc
    import weakref

    from liquid_s4 import S4D

    gc.disable()
    try:
        layer = S4D(4, 8).eval()
        with torch.no_grad():
            layer(torch.randn(1, 16, 4))
        kernel = weakref.ref(layer._kernel_cache.peek()[0])
        ref = weakref.ref(layer)
        del layer
        assert ref() is None and kernel() is None
    finally:
        gc.enable()
