"""The generated tasks on which input-dependent dynamics matter: selective copying, MQAR and the
irregularly sampled integral (their published structure, determinism, splits, scoring, options)."""

import math
import types

import numpy as np
import pytest
import torch

from liquid_s4.data.common import IGNORE_INDEX, collate
from liquid_s4.data.registry import build_dataset
from liquid_s4.data.selective import irregular_integral, mqar, selective_copying


def spec(name, **options):
    return types.SimpleNamespace(
        name=name, data_dir=None, val_fraction=0.1, test_fraction=0.2, options=options
    )


SMALL = {"n_train": 40, "n_val": 8, "n_test": 8}


# ---- selective copying ------------------------------------------------------------------------


def test_selective_copying_structure():
    noise, m, alphabet = 30, 5, 6
    x, y = selective_copying(200, noise, m, alphabet, seed=1)
    L = noise + 2 * m
    assert x.shape == y.shape == (200, L) and y.dtype == np.int64
    context = x[:, : noise + m].astype(np.int64)
    assert (x[:, noise + m :] == alphabet + 1).all()  # the markers
    assert ((context == 0) | ((context >= 1) & (context <= alphabet))).all()
    assert ((context != 0).sum(1) == m).all()  # exactly m symbols, the rest noise
    for row in range(200):
        symbols = context[row][context[row] != 0]  # in the order they appear
        assert np.array_equal(y[row, noise + m :], symbols)
    assert (y[:, : noise + m] == IGNORE_INDEX).all()
    # the positions are random (not a fixed lag as in the copying task): many distinct position sets
    positions = {tuple(np.flatnonzero(r)) for r in context}
    assert len(positions) > 150
    first = np.array([np.flatnonzero(r)[0] for r in context])
    last = np.array([np.flatnonzero(r)[-1] for r in context])
    assert first.min() == 0 and last.max() == noise + m - 1  # every context position is used


def test_selective_copying_positions_are_uniform():
    noise, m = 20, 3
    x, _ = selective_copying(20000, noise, m, 4, seed=0)
    counts = (x[:, : noise + m] != 0).sum(0)  # how often each context step holds a symbol
    expected = 20000 * m / (noise + m)
    assert np.abs(counts - expected).max() < 5 * math.sqrt(expected)


def test_selective_copying_dataset():
    data = build_dataset(spec("selective-copying", noise=10, tokens=3, alphabet=5, **SMALL))
    info = data.info
    assert (info.d_input, info.d_output, info.vocab_size, info.task) == (1, 6, 7, "classification")
    assert info.extra["pool"] == "none" and info.extra["sequence_length"] == 16
    assert info.extra["chance_loss"] == pytest.approx(math.log(5))
    assert data.sizes() == {"train": 40, "val": 8, "test": 8}
    b = collate([data.train[i] for i in range(4)])
    assert b.x.shape == b.y.shape == (4, 16) and b.x.dtype == b.y.dtype == torch.int64
    assert b.dt is None and b.lengths is None
    assert ((b.y != IGNORE_INDEX).sum(1) == 3).all()


# ---- MQAR -------------------------------------------------------------------------------------


def test_mqar_structure():
    vocab, length, kv = 64, 32, 4
    x, y = mqar(300, vocab, length, kv, random_non_queries=False, seed=2)
    x = x.astype(np.int64)
    assert x.shape == y.shape == (300, length)
    half = vocab // 2
    keys, values = x[:, 0 : 2 * kv : 2], x[:, 1 : 2 * kv : 2]
    assert ((keys >= 1) & (keys < half)).all() and ((values >= half) & (values < vocab)).all()
    for row in range(300):
        assert len(set(keys[row])) == kv and len(set(values[row])) == kv  # distinct keys and values
        pairs = dict(zip(keys[row], values[row]))
        scored = np.flatnonzero(y[row] != IGNORE_INDEX)
        assert len(scored) == kv and (scored >= 2 * kv).all() and ((scored - 2 * kv) % 2 == 0).all()
        assert sorted(x[row, scored]) == sorted(keys[row])  # each key is queried once
        for step in scored:
            assert y[row, step] == pairs[x[row, step]]  # the answer is the value paired with the key
        rest = np.setdiff1d(np.arange(2 * kv, length), scored)
        assert (x[row, rest] == 0).all()
    assert (y[:, : 2 * kv] == IGNORE_INDEX).all()


def test_mqar_query_gaps_follow_the_power_law():
    vocab, length, kv, a = 256, 128, 4, 0.01
    _, y = mqar(4000, vocab, length, kv, power_a=a, random_non_queries=False, seed=0)
    gaps = (np.nonzero(y != IGNORE_INDEX)[1] - 2 * kv) // 2
    space = (length - 2 * kv) // 2
    assert gaps.min() >= 0 and gaps.max() < space
    # most queries come soon after the pairs: the gap 0 is the most frequent, far above uniform
    hist = np.bincount(gaps, minlength=space)
    assert hist.argmax() == 0 and hist[:4].sum() > 4 * hist[-4:].sum()
    _, y_uniform = mqar(4000, vocab, length, kv, power_a=1.0, random_non_queries=False, seed=0)
    g = (np.nonzero(y_uniform != IGNORE_INDEX)[1] - 2 * kv) // 2
    assert abs(g.mean() - (space - 1) / 2) < 1.0  # power_a 1: uniform gaps


def test_mqar_random_non_queries():
    x0, y0 = mqar(50, 64, 32, 4, random_non_queries=False, seed=3)
    x1, y1 = mqar(50, 64, 32, 4, random_non_queries=True, seed=3)
    assert np.array_equal(y0, y1)  # same pairs and queries
    kept = (x0 != 0) | (np.arange(32) < 8)
    assert np.array_equal(x0[kept], x1[kept])
    assert (x1[~kept] != 0).mean() > 0.9  # the empty steps get random tokens of the whole vocabulary


def test_mqar_dataset():
    data = build_dataset(spec("mqar", vocab_size=40, length=24, kv_pairs=3, **SMALL))
    info = data.info
    assert (info.d_input, info.d_output, info.vocab_size) == (1, 40, 40)
    assert info.extra["pool"] == "none" and info.extra["chance_loss"] == pytest.approx(math.log(20))
    b = collate([data.test[i] for i in range(3)])
    assert b.x.shape == (3, 24) and ((b.y != IGNORE_INDEX).sum(1) == 3).all()


# ---- irregular integral -----------------------------------------------------------------------


def test_irregular_integral_target_is_the_integral_of_the_held_signal():
    u, dt, y = irregular_integral(5, 20, spread=0.7, seed=4)
    assert u.shape == dt.shape == y.shape == (5, 20) and (dt > 0).all()
    scale = math.sqrt(20 * math.exp(2 * 0.7**2))
    expected = np.cumsum(dt.astype(np.float64) * u, 1) / scale
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_irregular_integral_gaps_matter():
    """Same values, other gaps: the target changes; the gap-blind error is the documented baseline."""
    u, dt, y = irregular_integral(4000, 64, spread=1.0, seed=5)
    u2, dt2, y2 = irregular_integral(4000, 64, spread=1.0, seed=6)
    scale = math.sqrt(64 * math.e**2)
    y_other_gaps = np.cumsum(dt2 * u, 1) / scale
    assert np.abs(y_other_gaps - y).mean() > 0.1
    data = build_dataset(spec("irregular-integral", length=64, spread=1.0, n_train=4000, n_val=0, n_test=0))
    # the best predictor that does not see the gaps: E[dt] * running sum of the values
    blind = math.exp(0.5) * np.cumsum(u, 1) / scale
    mse = float(((blind - y) ** 2).mean())
    assert mse == pytest.approx(data.info.extra["baseline_mse"], rel=0.1)
    assert float((y**2).mean()) == pytest.approx(data.info.extra["zero_mse"], rel=0.1)
    assert data.info.extra["baseline_mse"] > 0.3  # a gap-blind model must fail


@pytest.mark.parametrize("gaps", ["rate", "input", "both", "none"])
def test_irregular_integral_dataset(gaps):
    data = build_dataset(spec("irregular-integral", length=12, gaps=gaps, **SMALL))
    info = data.info
    assert info.task == "regression" and info.d_output == 1 and info.extra["pool"] == "none"
    assert info.d_input == (2 if gaps in ("input", "both") else 1)
    assert info.extra["time_gaps"] == gaps
    b = collate([data.train[i] for i in range(5)])
    assert b.x.shape == (5, 12, info.d_input) and b.y.shape == (5, 12, 1) and b.x.dtype == torch.float32
    if gaps in ("rate", "both"):
        assert b.dt.shape == (5, 12) and b.dt.dtype == torch.float32 and (b.dt > 0).all()
        assert "per-step time gaps" in data.summary()
    else:
        assert b.dt is None
    if gaps in ("input", "both"):
        ref = build_dataset(spec("irregular-integral", length=12, gaps="rate", **SMALL))
        r = collate([ref.train[i] for i in range(5)])
        assert torch.equal(b.x[..., 1], r.dt) and torch.equal(b.x[..., :1], r.x)


# ---- shared: determinism, splits, errors ------------------------------------------------------

TASKS = {
    "selective-copying": {"noise": 12, "tokens": 3},
    "mqar": {"vocab_size": 40, "length": 24, "kv_pairs": 3},
    "irregular-integral": {"length": 10},
}


def _rows(ds):
    items = [ds[i] for i in range(len(ds))]
    b = collate(items)
    return [t for t in (b.x, b.y, b.dt) if t is not None]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_deterministic_and_independent_splits(name):
    a = build_dataset(spec(name, **TASKS[name], **SMALL))
    b = build_dataset(spec(name, **TASKS[name], **SMALL))
    for split in ("train", "val", "test"):
        for s, t in zip(_rows(getattr(a, split)), _rows(getattr(b, split))):
            assert torch.equal(s, t)
    # the training set does not depend on the size of the other splits
    c = build_dataset(spec(name, **TASKS[name], n_train=40, n_val=3, n_test=0))
    assert c.test is None and len(c.val) == 3
    for s, t in zip(_rows(a.train), _rows(c.train)):
        assert torch.equal(s, t)
    # the splits are different draws, and another seed gives other data
    assert not torch.equal(_rows(a.val)[0], _rows(a.test)[0])
    d = build_dataset(spec(name, **TASKS[name], **SMALL, seed=1))
    assert not torch.equal(_rows(a.train)[0], _rows(d.train)[0])


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("selective-copying", {"tokens": 0}, "tokens .* must be an integer >= 1"),
        ("selective-copying", {"alphabet": 1}, "alphabet .* must be an integer >= 2"),
        ("selective-copying", {"noise": -1}, "noise .* must be an integer >= 0"),
        ("selective-copying", {"length": 5}, "unknown data.options"),
        ("mqar", {"length": 25, "vocab_size": 40}, "must be even"),
        ("mqar", {"length": 64, "vocab_size": 64}, "vocab_size .* must be an integer >= 65"),
        ("mqar", {"length": 24, "vocab_size": 40, "kv_pairs": 7}, "kv_pairs .* <= 6"),
        ("mqar", {"power_a": 0}, "power_a .* must be a number in"),
        ("mqar", {"random_non_queries": "yes"}, "true or false"),
        ("irregular-integral", {"spread": 0}, "spread .* must be a number in"),
        ("irregular-integral", {"gaps": "time"}, "gaps .* must be one of"),
        ("irregular-integral", {"n_train": 0}, "n_train .* must be an integer >= 1"),
        ("irregular-integral", {"seed": -1}, "seed .* must be an integer >= 0"),
    ],
)
def test_option_errors(name, options, match):
    with pytest.raises(ValueError, match=match):
        build_dataset(spec(name, **options))


def test_generator_errors():
    with pytest.raises(ValueError, match="selective copying needs"):
        selective_copying(2, 5, 0, 4)
    with pytest.raises(ValueError, match="mqar needs an even length"):
        mqar(2, 16, 16, 2)
    with pytest.raises(ValueError, match="irregular integral needs"):
        irregular_integral(2, 0)
