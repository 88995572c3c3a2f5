"""Generated long-memory tasks: copying, adding and delay. Nothing is read from disk.

Each task is generated in memory, deterministically from `options.seed`; the train, val and test
sets are drawn independently, each from its own generator seeded with (seed, split number 0/1/2),
so changing `n_val` leaves the training set unchanged. `spec.val_fraction`, `spec.test_fraction` and
`spec.data_dir` are not used: the split sizes are the options `n_train`, `n_val`, `n_test`
(0 for val/test gives no such split). The default sizes are small enough that a small model learns
each task in a few hundred CPU steps.

Copying (Hochreiter & Schmidhuber 1997; the form of Arjovsky et al. 2016, "Unitary evolution RNNs"):
    tokens: 0 blank, 1..alphabet the symbols, alphabet+1 the marker ("start recall").
    input  (L,) with L = length + delay + length:
        steps 0 .. length-1                  `length` random symbols (uniform over 1..alphabet)
        steps length .. length+delay-2       blank
        step  length+delay-1                 the marker
        steps length+delay .. L-1            blank (the model writes the symbols here)
    target (L,) int64: the symbols, in order, at the last `length` steps (class id = symbol id,
    1..alphabet; d_output = alphabet + 1, class 0 = blank). The other steps are IGNORE_INDEX (not
    scored), or blank (0) with `score_all: true` as in Arjovsky et al. (then a model that only
    predicts blanks already scores well: prefer the default). A memoryless model's best cross-entropy
    on the scored steps is log(alphabet).

Adding (Hochreiter & Schmidhuber 1997; the form of Arjovsky et al. 2016 and Li et al. 2018, IndRNN):
    input  (L, 2) float32: channel 0 uniform [0, 1) values, channel 1 a marker that is 1 at exactly
    two steps, one uniform in the first half [0, L//2) and one in the second half [L//2, L), else 0.
    target (1,) float32: the sum of the two marked values (regression, raw: no standardization of
    inputs or target). Always predicting 1 gives MSE 1/6 (the variance of the sum), the usual baseline.

Delay: output the token seen `delay` steps earlier.
    input  (L,) tokens 1..alphabet uniform at random (vocab_size alphabet + 1; 0 is the padding id);
    target (L,) int64: x[t - delay] - 1 (classes 0..alphabet-1) for t >= delay, IGNORE_INDEX before.

Copying and delay are scored per step: the model should run with pool="none" (info.extra["pool"]).
Adding has one output per sequence; info.extra["pool"] = "mean" (with the defaults a small model
learns it with mean pooling but stays at the 1/6 baseline with pool="last"; copying and delay are
learned with pool="none").
"""

from __future__ import annotations

import math

import numpy as np

from .common import (
    IGNORE_INDEX,
    ArrayDataset,
    DataInfo,
    SequenceData,
    int_option,
    take_options,
    token_dtype,
    tokens,
)

SPLITS = ("train", "val", "test")
SIZES = {"n_train": 10000, "n_val": 1000, "n_test": 1000, "seed": 0}
COPYING = {"length": 10, "delay": 100, "alphabet": 8, "score_all": False, **SIZES}
ADDING = {"length": 200, **SIZES}
DELAY = {"length": 200, "delay": 50, "alphabet": 8, **SIZES}


def _int(options: dict, key: str, low: int, dataset: str, high: int | None = None) -> int:
    """options[key] as an int in [low, high], else a ValueError naming the option and the range."""
    return int_option(options[key], f"data.options.{key} for dataset {dataset!r}", low, high)


# ---- the generators ---------------------------------------------------------------------------


def copying(n: int, length: int = 10, delay: int = 100, alphabet: int = 8, seed=0, score_all: bool = False):
    """`n` copying sequences: x (n, L) tokens (uint8 when they fit), y (n, L) int64 targets, with
    L = 2 * length + delay (see the module docstring). `seed`: an int, a sequence of ints or a
    numpy Generator."""
    if length < 1 or delay < 1 or alphabet < 2:
        raise ValueError(
            f"copying needs length >= 1, delay >= 1 and alphabet >= 2, got {length}, {delay}, {alphabet}"
        )
    rng = np.random.default_rng(seed)
    L = 2 * length + delay
    symbols = rng.integers(1, alphabet + 1, size=(n, length))  # (n, length)
    x = np.zeros((n, L), dtype=token_dtype(alphabet + 2))
    x[:, :length] = symbols
    x[:, length + delay - 1] = alphabet + 1  # the marker
    y = np.full((n, L), 0 if score_all else IGNORE_INDEX, dtype=np.int64)
    y[:, L - length :] = symbols
    return x, y


def adding(n: int, length: int = 200, seed=0):
    """`n` adding-problem sequences: x (n, length, 2) float32 (values, marker), y (n, 1) float32
    the sum of the two marked values."""
    if length < 2:
        raise ValueError(f"adding needs length >= 2 (one marker in each half), got {length}")
    rng = np.random.default_rng(seed)
    half = length // 2
    values = rng.random((n, length), dtype=np.float32)  # (n, L)
    first = rng.integers(0, half, size=n)  # marker in [0, L//2)
    second = rng.integers(half, length, size=n)  # marker in [L//2, L)
    marker = np.zeros((n, length), dtype=np.float32)
    rows = np.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    x = np.stack([values, marker], axis=-1)  # (n, L, 2)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)  # (n, 1)
    return x, y


def delay(n: int, length: int = 200, delay: int = 50, alphabet: int = 8, seed=0):
    """`n` delay sequences: x (n, length) tokens 1..alphabet, y (n, length) int64 with
    y[:, t] = x[:, t - delay] - 1 for t >= delay and IGNORE_INDEX before."""
    if alphabet < 2 or not 0 <= delay < length:
        raise ValueError(
            f"delay needs alphabet >= 2 and 0 <= delay < length, got alphabet {alphabet}, delay {delay}, "
            f"length {length}"
        )
    rng = np.random.default_rng(seed)
    x = rng.integers(1, alphabet + 1, size=(n, length)).astype(token_dtype(alphabet + 1))  # (n, L)
    y = np.full((n, length), IGNORE_INDEX, dtype=np.int64)
    y[:, delay:] = x[:, : length - delay].astype(np.int64) - 1
    return x, y


# ---- the builders -----------------------------------------------------------------------------


def _sizes(o: dict, dataset: str) -> dict[str, int]:
    _int(o, "seed", 0, dataset)
    return {s: _int(o, f"n_{s}", 1 if s == "train" else 0, dataset) for s in SPLITS}


def _splits(make, sizes: dict[str, int], seed: int, transform=None, target_transform=None):
    """One dataset per split, each generated by make(n, rng_seed) with its own seed (seed, k)."""
    out = []
    for k, split in enumerate(SPLITS):
        if sizes[split] == 0:
            out.append(None)
            continue
        x, y = make(sizes[split], [seed, k])
        out.append(ArrayDataset(x, y, transform=transform, target_transform=target_transform))
    return out


def _counts(sizes: dict[str, int], seed: int) -> str:
    return f"{sizes['train']}/{sizes['val']}/{sizes['test']} (seed {seed})"


def build_copying(spec) -> SequenceData:
    """The copying memory task (module docstring); options length, delay, alphabet, score_all, n_*, seed."""
    o = take_options(spec.options, COPYING, "copying")
    sizes = _sizes(o, "copying")
    length, gap = _int(o, "length", 1, "copying"), _int(o, "delay", 1, "copying")
    alphabet = _int(o, "alphabet", 2, "copying", high=32000)
    if not isinstance(o["score_all"], bool):
        raise ValueError(
            f"data.options.score_all for dataset 'copying' must be true or false, got {o['score_all']!r}"
        )
    splits = _splits(
        lambda n, s: copying(n, length, gap, alphabet, s, o["score_all"]), sizes, o["seed"], tokens, tokens
    )
    L = 2 * length + gap
    info = DataInfo(
        d_input=1,
        d_output=alphabet + 1,
        task="classification",
        vocab_size=alphabet + 2,
        description=(
            f"Copying: {length} symbols (alphabet {alphabet}) recalled after a {gap}-step delay, {L}-step "
            f"token sequences, {_counts(sizes, o['seed'])}"
        ),
        extra={"pool": "none", "sequence_length": L, "chance_loss": math.log(alphabet)},
    )
    return SequenceData(*splits, info=info)


def build_adding(spec) -> SequenceData:
    """The adding problem (module docstring); options length, n_*, seed."""
    o = take_options(spec.options, ADDING, "adding")
    sizes = _sizes(o, "adding")
    length = _int(o, "length", 2, "adding")
    splits = _splits(lambda n, s: adding(n, length, s), sizes, o["seed"])
    info = DataInfo(
        d_input=2,
        d_output=1,
        task="regression",
        description=(
            f"Adding problem: {length}-step sequences of (value, marker), target the sum of the 2 marked "
            f"values, {_counts(sizes, o['seed'])}"
        ),
        extra={"pool": "mean", "sequence_length": length, "baseline_mse": 1 / 6},
    )
    return SequenceData(*splits, info=info)


def build_delay(spec) -> SequenceData:
    """The delay task (module docstring); options length, delay, alphabet, n_*, seed."""
    o = take_options(spec.options, DELAY, "delay")
    sizes = _sizes(o, "delay")
    length = _int(o, "length", 1, "delay")
    gap = _int(o, "delay", 0, "delay")
    if gap >= length:
        raise ValueError(
            f"data.options.delay for dataset 'delay' must be smaller than length ({length}), got {gap}"
        )
    alphabet = _int(o, "alphabet", 2, "delay", high=32000)
    splits = _splits(lambda n, s: delay(n, length, gap, alphabet, s), sizes, o["seed"], tokens, tokens)
    info = DataInfo(
        d_input=1,
        d_output=alphabet,
        task="classification",
        vocab_size=alphabet + 1,
        description=(
            f"Delay: output the token seen {gap} steps earlier, {length}-step token sequences (alphabet "
            f"{alphabet}), {_counts(sizes, o['seed'])}"
        ),
        extra={"pool": "none", "sequence_length": length, "chance_loss": math.log(alphabet)},
    )
    return SequenceData(*splits, info=info)
