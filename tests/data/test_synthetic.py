"""Generated tasks (copying, adding, delay): targets against a loop over the inputs, seeding, options."""

import types

import numpy as np
import pytest
import torch

from liquid_s4.data import synthetic
from liquid_s4.data.common import IGNORE_INDEX
from liquid_s4.data.registry import build_dataset


def spec(name, **options):
    return types.SimpleNamespace(
        name=name, data_dir=None, val_fraction=0.1, test_fraction=0.2, options=options
    )


def rows(ds):
    """All items of a dataset stacked: (x, y) tensors."""
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


# ---- targets computed independently, one step at a time ---------------------------------------


def expected_copying(x, length, delay, alphabet, score_all=False):
    L = len(x)
    assert L == 2 * length + delay
    y = []
    for t in range(L):
        if t >= length + delay:
            y.append(int(x[t - length - delay]))
        else:
            y.append(0 if score_all else IGNORE_INDEX)
    return y


def test_copying_inputs_and_targets():
    length, gap, alphabet = 4, 7, 5
    x, y = synthetic.copying(30, length, gap, alphabet, seed=3)
    assert x.shape == y.shape == (30, 2 * length + gap) and y.dtype == np.int64
    for xi, yi in zip(x, y):
        for t, v in enumerate(xi):
            if t < length:
                assert 1 <= v <= alphabet
            elif t == length + gap - 1:
                assert v == alphabet + 1  # the marker, once, right before recall
            else:
                assert v == 0
        assert list(yi) == expected_copying(xi, length, gap, alphabet)
    assert len(np.unique(x[:, :length])) == alphabet  # every symbol is drawn
    _, y_all = synthetic.copying(5, length, gap, alphabet, seed=3, score_all=True)
    assert list(y_all[0]) == expected_copying(x[0], length, gap, alphabet, score_all=True)


def test_adding_inputs_and_targets():
    L = 13
    x, y = synthetic.adding(200, L, seed=1)
    assert x.shape == (200, L, 2) and y.shape == (200, 1) and x.dtype == y.dtype == np.float32
    firsts, seconds = set(), set()
    for xi, yi in zip(x, y):
        assert ((xi[:, 0] >= 0) & (xi[:, 0] < 1)).all()
        marks = [t for t in range(L) if xi[t, 1] == 1.0]
        assert len(marks) == 2 and sum(xi[:, 1]) == 2.0
        assert marks[0] < L // 2 <= marks[1]
        firsts.add(marks[0])
        seconds.add(marks[1])
        assert yi[0] == pytest.approx(xi[marks[0], 0] + xi[marks[1], 0], abs=1e-6)
    assert firsts == set(range(L // 2)) and seconds == set(range(L // 2, L))  # both halves fully covered


def test_delay_inputs_and_targets():
    L, gap, alphabet = 12, 5, 3
    x, y = synthetic.delay(40, L, gap, alphabet, seed=2)
    assert x.shape == y.shape == (40, L)
    for xi, yi in zip(x, y):
        assert all(1 <= v <= alphabet for v in xi)
        for t in range(L):
            assert yi[t] == (int(xi[t - gap]) - 1 if t >= gap else IGNORE_INDEX)
    _, y0 = synthetic.delay(3, L, 0, alphabet, seed=2)
    assert (y0 >= 0).all()  # delay 0: every step is scored (the identity)


def test_adding_baseline():
    """The sum of two U(0,1) has variance 1/6: the MSE of always predicting 1."""
    _, y = synthetic.adding(20000, 20, seed=0)
    assert float(((y - 1.0) ** 2).mean()) == pytest.approx(1 / 6, abs=0.01)


# ---- the builders -----------------------------------------------------------------------------


def test_copying_dataset_items_and_info():
    d = build_dataset(spec("copying", length=3, delay=6, alphabet=4, n_train=20, n_val=5, n_test=7))
    assert d.sizes() == {"train": 20, "val": 5, "test": 7}
    x, y = d.train[0]
    assert x.shape == (12,) and x.dtype == torch.int64 and y.shape == (12,) and y.dtype == torch.int64
    i = d.info
    assert (i.task, i.vocab_size, i.d_output, i.extra["pool"]) == ("classification", 6, 5, "none")
    X, Y = rows(d.test)
    assert int(X.max()) < i.vocab_size and int(Y.max()) < i.d_output
    assert [list(map(int, yi)) for yi in Y] == [expected_copying(xi, 3, 6, 4) for xi in X.numpy()]
    assert "Copying" in i.description and "20/5/7" in i.description


def test_adding_dataset_items_and_info():
    d = build_dataset(spec("adding", length=10, n_train=8, n_val=0, n_test=4))
    assert d.val is None and d.sizes() == {"train": 8, "val": 0, "test": 4}
    x, y = d.train[0]
    assert x.shape == (10, 2) and x.dtype == torch.float32 and y.shape == (1,) and y.dtype == torch.float32
    assert (d.info.task, d.info.d_input, d.info.d_output, d.info.vocab_size) == ("regression", 2, 1, None)
    assert d.info.extra["pool"] == "mean" and d.info.extra["baseline_mse"] == pytest.approx(1 / 6)
    marks = x[:, 1].nonzero().flatten()
    assert float(y) == pytest.approx(float(x[marks, 0].sum()))  # raw values: not standardized


def test_delay_dataset_items_and_info():
    d = build_dataset(spec("delay", length=9, delay=4, alphabet=6, n_train=10, n_val=3, n_test=3))
    x, y = rows(d.train)
    assert x.shape == y.shape == (10, 9) and x.dtype == y.dtype == torch.int64
    assert (d.info.vocab_size, d.info.d_output, d.info.extra["pool"]) == (7, 6, "none")
    assert (y[:, :4] == IGNORE_INDEX).all() and torch.equal(y[:, 4:], x[:, :5] - 1)


@pytest.mark.parametrize("name", ["copying", "adding", "delay"])
def test_seeding(name):
    small = {
        "n_train": 16,
        "n_val": 8,
        "n_test": 8,
        "length": 12,
        **({"delay": 5} if name != "adding" else {}),
    }
    a, b = build_dataset(spec(name, **small)), build_dataset(spec(name, **small))
    for split in ("train", "val", "test"):
        assert all(torch.equal(u, v) for u, v in zip(rows(getattr(a, split)), rows(getattr(b, split))))
    other = build_dataset(spec(name, **small, seed=1))
    assert not torch.equal(rows(a.train)[0], rows(other.train)[0])
    assert not torch.equal(rows(a.val)[0], rows(a.test)[0])  # splits are drawn independently
    assert not torch.equal(rows(a.train)[0][:8], rows(a.val)[0])
    bigger_val = build_dataset(spec(name, **{**small, "n_val": 20, "n_test": 0}))
    assert torch.equal(
        rows(a.train)[0], rows(bigger_val.train)[0]
    )  # train does not depend on the other sizes
    assert len(bigger_val.val) == 20 and bigger_val.test is None


def test_defaults_are_small():
    d = build_dataset(spec("copying"))
    assert d.sizes() == {"train": 10000, "val": 1000, "test": 1000}
    assert d.train[0][0].shape == (120,)
    assert d.train.x.dtype == np.uint8  # compact storage, int64 per item
    assert build_dataset(spec("delay")).train[0][0].shape == (200,)
    assert build_dataset(spec("adding")).train[0][0].shape == (200, 2)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("copying", {"alphabet": 1}, "alphabet .* integer >= 2"),
        ("copying", {"delay": 0}, "delay .* integer >= 1"),
        ("copying", {"length": 2.5}, "length .* integer"),
        ("copying", {"score_all": "yes"}, "score_all .* true or false"),
        ("copying", {"n_train": 0}, "n_train .* integer >= 1"),
        ("copying", {"blank": 5}, r"unknown data.options \['blank'\].*valid options: length"),
        ("adding", {"length": 1}, "length .* integer >= 2"),
        ("adding", {"n_val": -1}, "n_val .* integer >= 0"),
        ("adding", {"seed": True}, "seed .* integer"),
        ("adding", {"alphabet": 3}, "unknown data.options"),
        ("delay", {"length": 10, "delay": 10}, r"delay .* smaller than length \(10\)"),
        ("delay", {"delay": -1}, "delay .* integer >= 0"),
        ("delay", {"alphabet": 1}, "alphabet .* integer >= 2"),
    ],
)
def test_options_are_validated(name, options, match):
    with pytest.raises(ValueError, match=match):
        build_dataset(spec(name, **options))


def test_generators_validate_arguments():
    with pytest.raises(ValueError, match="alphabet >= 2"):
        synthetic.copying(2, alphabet=1)
    with pytest.raises(ValueError, match="0 <= delay < length"):
        synthetic.delay(2, length=5, delay=5)
    with pytest.raises(ValueError, match="length >= 2"):
        synthetic.adding(2, length=1)
