"""The .ts reader (UEA/UCR/Monash archive format) on real archive files and on files the tests write."""

import os

import numpy as np
import pytest

from liquid_s4.data.ts import read_ts

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ts")


def fixture(name: str, split: str = "TRAIN") -> str:
    return os.path.join(FIXTURES, name, f"{name}_{split}.ts")


# ---- real archive files ------------------------------------------------------------------------

# problem -> (task, (train cases, test cases), dimensions, (min length, max length), classes or None)
PUBLISHED = {
    "ArrowHead": ("classification", (36, 175), 1, (251, 251), ["0", "1", "2"]),
    "BasicMotions": (
        "classification",
        (40, 40),
        6,
        (100, 100),
        ["Standing", "Running", "Walking", "Badminton"],
    ),
    "JapaneseVowels": ("classification", (270, 370), 12, (7, 29), [str(i) for i in range(1, 10)]),
    "PickupGestureWiimoteZ": ("classification", (50, 50), 1, (29, 361), [str(i) for i in range(1, 11)]),
    "Covid3Month": ("regression", (140, 61), 1, (84, 84), None),
    "CardanoSentiment": ("regression", (74, 33), 2, (24, 24), None),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_real_files_have_their_published_sizes(name):
    task, cases, dims, (short, long), classes = PUBLISHED[name]
    lengths = []
    for split, n in zip(("TRAIN", "TEST"), cases):
        data = read_ts(fixture(name, split))
        assert data.task == task and data.problem_name == name and data.classes == classes
        assert data.x.dtype == np.float32 and data.x.shape[0] == n and data.x.shape[2] == dims
        assert data.lengths.dtype == np.int64 and data.lengths.shape == (n,)
        assert data.x.shape[1] == data.lengths.max() and data.times is None
        assert np.isfinite(data.x).all()
        steps = np.arange(data.x.shape[1])
        assert (data.x[steps[None, :] >= data.lengths[:, None]] == 0).all()  # 0 after each length
        if task == "classification":
            assert data.y.dtype == np.int64 and set(data.y.tolist()) == set(range(len(classes)))
        else:
            assert data.y.dtype == np.float32 and data.y.shape == (n,) and np.isfinite(data.y).all()
        lengths.append(data.lengths)
    lengths = np.concatenate(lengths)
    assert (lengths.min(), lengths.max()) == (short, long)
