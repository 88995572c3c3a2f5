"""Generated tasks on which input-dependent dynamics matter: selective copying, multi-query associative
recall (MQAR) and an irregularly sampled integral. Nothing is read from disk.

The conventions are those of `data/synthetic.py`: each task is generated in memory, deterministically
from `options.seed`; the train, val and test sets are drawn independently, each from its own generator
seeded with (seed, split number 0/1/2), so changing `n_val` leaves the training set unchanged; the
split sizes are the options `n_train`, `n_val`, `n_test` (0 for val/test gives no such split) and
`spec.val_fraction`, `spec.test_fraction`, `spec.data_dir` are not used. Every task is scored per step
(info.extra["pool"] = "none"): the model should run with pool="none". The defaults are CPU-sized.

Selective copying (Gu & Dao 2023, "Mamba", sec. 4.1.1; the `variable` form of the copying generator of
the S4 repository that the paper uses): the tokens to copy are scattered at random positions, so a
model has to select them by their content, not by a fixed time lag (a convolution cannot).
    tokens: 0 noise (blank), 1..alphabet the symbols, alphabet+1 the marker ("recall now").
    input  (L,) with L = noise + 2 * tokens:
        steps 0 .. noise+tokens-1       `tokens` random symbols (uniform over 1..alphabet) at `tokens`
                                        distinct positions drawn uniformly, in increasing order, the
                                        other `noise` steps 0
        steps noise+tokens .. L-1       the marker (`tokens` times)
    target (L,) int64: the symbols, in the order they appeared, at the last `tokens` steps (class id =
    symbol id, d_output = alphabet + 1); the other steps are IGNORE_INDEX (not scored). The paper's
    setting is noise 4096, tokens 16, vocabulary 16 (alphabet 14 here: the vocabulary counts the noise
    and marker tokens); there LTI S4 reaches 18.3% accuracy and the selective S6 layer 97.0% (Mamba,
    Table 1, without gating). A model that ignores the input scores 1/alphabet (cross-entropy
    log(alphabet)).

MQAR, multi-query associative recall (Arora et al. 2023, "Zoology", sec. 3; as their generator):
    the vocabulary 0..vocab_size-1 is split into keys 1..vocab_size//2-1 and values
    vocab_size//2..vocab_size-1. An input of `length` steps starts with `kv_pairs` key-value pairs
    (k_1 v_1 k_2 v_2 ..., distinct keys and distinct values, uniformly drawn); then each key occurs once
    more as a query, at an even offset 2 g from the end of the pairs, the gaps g drawn without
    replacement from {0, .., (length - 2 kv_pairs)//2 - 1} with probability proportional to
    power_a * (g + 1)^(power_a - 1) (a power law: most queries come soon after the pairs). The target
    at a query step is the value paired with that key (class id = token id, d_output = vocab_size);
    every other step is IGNORE_INDEX. With `random_non_queries` (the default, as Zoology's) the steps
    after the pairs that hold no query get uniformly random tokens of the whole vocabulary instead of
    0. Zoology requires vocab_size > length, length even and 4 kv_pairs <= length (checked). Chance on
    the scored steps: 1/(vocab_size - vocab_size//2).

Irregular integral: a signal observed at random times; the time gaps are part of the data, and the
target depends on them.
    gaps  dt_k = exp(spread * z_k), z_k standard normal (log-normal, median 1: the nominal step is 1)
    input (L, 1) float32: u_k ~ N(0, 1), the signal's value over the interval (t_{k-1}, t_k] of length
        dt_k that ends at the k-th observation (the signal is held between observations);
    target (L, 1) float32: the running integral y_k = sum_{j <= k} dt_j u_j / sqrt(L exp(2 spread^2))
        (normalized so that the last step has unit variance), scored at every step (regression).
    `gaps` decides what the model is given: "rate" (default) the gaps as the per-step rate of the SSM
    layers (items are dicts with a `dt` field; only S4D layers with liquid_kernel="scan" accept a
    per-step rate, every other layer raises an error), "input" the gaps as a second input channel
    x[..., 1] = dt_k (for any model), "both", or "none" (the values only).
    Since u and dt are independent, the best predictor that does not see the gaps is
    E[y_k | u] = E[dt] sum_{j <= k} u_j / sqrt(L E[dt^2]); its mean squared error, averaged over the
    steps, is (1 - exp(-spread^2)) (L + 1) / (2 L) (0.316 for spread 1 at large L; always predicting 0
    gives (L + 1) / (2 L)), while the gaps determine the target exactly (error 0). Both are in
    info.extra ("baseline_mse", "zero_mse").
"""

from __future__ import annotations

import math

import numpy as np

from .common import (
    IGNORE_INDEX,
    ArrayDataset,
    DataInfo,
    SequenceData,
    choose,
    int_option,
    take_options,
    token_dtype,
    tokens,
)

SPLITS = ("train", "val", "test")
SIZES = {"n_train": 10000, "n_val": 1000, "n_test": 1000, "seed": 0}
SELECTIVE_COPYING = {"noise": 128, "tokens": 8, "alphabet": 8, **SIZES}
MQAR = {"vocab_size": 128, "length": 64, "kv_pairs": 4, "power_a": 0.01, "random_non_queries": True, **SIZES}
IRREGULAR = {"length": 128, "spread": 1.0, "gaps": "rate", **SIZES}
GAPS = ("rate", "input", "both", "none")


def _int(options: dict, key: str, low: int, dataset: str, high: int | None = None) -> int:
    """options[key] as an int in [low, high], else a ValueError naming the option and the range."""
    return int_option(options[key], f"data.options.{key} for dataset {dataset!r}", low, high)


def _float(options: dict, key: str, dataset: str, low: float, high: float) -> float:
    """options[key] as a float in (low, high], else a ValueError naming the option and the range."""
    v = options[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (low < v <= high):
        raise ValueError(
            f"data.options.{key} for dataset {dataset!r} must be a number in ({low}, {high}], got {v!r}"
        )
    return float(v)


def _bool(options: dict, key: str, dataset: str) -> bool:
    if not isinstance(options[key], bool):
        raise ValueError(
            f"data.options.{key} for dataset {dataset!r} must be true or false, got {options[key]!r}"
        )
    return options[key]


def _subsets(rng: np.random.Generator, n: int, size: int, k: int, logits=None) -> np.ndarray:
    """(n, k) draws without replacement from range(size), one row per example, in the order drawn:
    uniform, or proportional to exp(logits) (size,) (the largest k of logits + Gumbel noise, which has
    the distribution of k successive draws without replacement)."""
    keys = rng.gumbel(size=(n, size)) if logits is not None else rng.random((n, size))
    if logits is not None:
        keys = keys + logits
    return np.argsort(-keys, axis=1, kind="stable")[:, :k]


# ---- the generators ---------------------------------------------------------------------------


def selective_copying(n: int, noise: int = 128, n_tokens: int = 8, alphabet: int = 8, seed=0):
    """`n` selective-copying sequences: x (n, L) tokens, y (n, L) int64 targets, with
    L = noise + 2 * n_tokens (see the module docstring). `seed`: an int, a sequence of ints or a
    numpy Generator."""
    if noise < 0 or n_tokens < 1 or alphabet < 2:
        raise ValueError(
            f"selective copying needs noise >= 0, tokens >= 1 and alphabet >= 2, got {noise}, {n_tokens}, "
            f"{alphabet}"
        )
    rng = np.random.default_rng(seed)
    context, L = noise + n_tokens, noise + 2 * n_tokens
    symbols = rng.integers(1, alphabet + 1, size=(n, n_tokens))  # (n, M)
    positions = np.sort(_subsets(rng, n, context, n_tokens), axis=1)  # (n, M) increasing
    x = np.zeros((n, L), dtype=token_dtype(alphabet + 2))
    np.put_along_axis(x, positions, symbols, axis=1)
    x[:, context:] = alphabet + 1  # the markers
    y = np.full((n, L), IGNORE_INDEX, dtype=np.int64)
    y[:, context:] = symbols
    return x, y


def mqar(
    n: int,
    vocab_size: int = 128,
    length: int = 64,
    kv_pairs: int = 4,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    seed=0,
):
    """`n` multi-query associative recall sequences: x (n, length) tokens, y (n, length) int64 targets
    (the value at each query step, IGNORE_INDEX elsewhere; see the module docstring)."""
    if length % 2 or vocab_size <= length or 4 * kv_pairs > length or kv_pairs < 1:
        raise ValueError(
            "mqar needs an even length, vocab_size > length and 1 <= kv_pairs <= length / 4, got length "
            f"{length}, vocab_size {vocab_size}, kv_pairs {kv_pairs}"
        )
    if not 0 < power_a <= 1:
        raise ValueError(f"mqar needs 0 < power_a <= 1, got {power_a}")
    rng = np.random.default_rng(seed)
    half = vocab_size // 2
    keys = 1 + _subsets(rng, n, half - 1, kv_pairs)  # (n, K) distinct keys in 1..half-1
    values = half + _subsets(rng, n, vocab_size - half, kv_pairs)  # (n, K) distinct values
    context = 2 * kv_pairs
    space = (length - context) // 2
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    gaps = _subsets(rng, n, space, kv_pairs, logits=np.log(p / p.sum()))  # (n, K), gap of query i
    x = np.zeros((n, length), dtype=np.int64)
    x[:, 0:context:2], x[:, 1:context:2] = keys, values
    queries = context + 2 * gaps  # (n, K) the steps where key i is asked again
    np.put_along_axis(x, queries, keys, axis=1)
    y = np.full((n, length), IGNORE_INDEX, dtype=np.int64)
    np.put_along_axis(y, queries, values, axis=1)
    if random_non_queries:
        filler = rng.integers(0, vocab_size, size=(n, length))
        empty = x == 0
        empty[:, :context] = False
        x[empty] = filler[empty]
    return x.astype(token_dtype(vocab_size)), y


def irregular_integral(n: int, length: int = 128, spread: float = 1.0, seed=0):
    """`n` irregularly sampled sequences: values u (n, length) float32, gaps dt (n, length) float32
    and the running integral y (n, length) float32 (see the module docstring)."""
    if length < 1 or not spread > 0:
        raise ValueError(f"irregular integral needs length >= 1 and spread > 0, got {length}, {spread}")
    rng = np.random.default_rng(seed)
    dt = np.exp(spread * rng.standard_normal((n, length)))  # float64 (n, L)
    u = rng.standard_normal((n, length))
    y = np.cumsum(dt * u, axis=1) / math.sqrt(length * math.exp(2 * spread**2))
    return u.astype(np.float32), dt.astype(np.float32), y.astype(np.float32)


# ---- the builders -----------------------------------------------------------------------------


def _sizes(o: dict, dataset: str) -> dict[str, int]:
    _int(o, "seed", 0, dataset)
    return {s: _int(o, f"n_{s}", 1 if s == "train" else 0, dataset) for s in SPLITS}


def _splits(make, sizes: dict[str, int], seed: int, transform=None, target_transform=None):
    """One dataset per split, each generated by make(n, rng_seed) -> dict of ArrayDataset arguments,
    with its own seed (seed, k)."""
    out = []
    for k, split in enumerate(SPLITS):
        if sizes[split] == 0:
            out.append(None)
            continue
        arrays = make(sizes[split], [seed, k])
        out.append(ArrayDataset(**arrays, transform=transform, target_transform=target_transform))
    return out


def _counts(sizes: dict[str, int], seed: int) -> str:
    return f"{sizes['train']}/{sizes['val']}/{sizes['test']} (seed {seed})"


def build_selective_copying(spec) -> SequenceData:
    """Selective copying (module docstring); options noise, tokens, alphabet, n_*, seed."""
    name = "selective-copying"
    o = take_options(spec.options, SELECTIVE_COPYING, name)
    sizes = _sizes(o, name)
    noise, m = _int(o, "noise", 0, name), _int(o, "tokens", 1, name)
    alphabet = _int(o, "alphabet", 2, name, high=32000)

    def make(n, s):
        x, y = selective_copying(n, noise, m, alphabet, s)
        return {"x": x, "y": y}

    splits = _splits(make, sizes, o["seed"], tokens, tokens)
    L = noise + 2 * m
    info = DataInfo(
        d_input=1,
        d_output=alphabet + 1,
        task="classification",
        vocab_size=alphabet + 2,
        description=(
            f"Selective copying: {m} symbols (alphabet {alphabet}) at random positions among {noise} noise "
            f"tokens, recalled in order after {m} markers, {L}-step token sequences, "
            f"{_counts(sizes, o['seed'])}"
        ),
        extra={"pool": "none", "sequence_length": L, "chance_loss": math.log(alphabet)},
    )
    return SequenceData(*splits, info=info)


def build_mqar(spec) -> SequenceData:
    """Multi-query associative recall (module docstring); options vocab_size, length, kv_pairs,
    power_a, random_non_queries, n_*, seed."""
    name = "mqar"
    o = take_options(spec.options, MQAR, name)
    sizes = _sizes(o, name)
    length = _int(o, "length", 4, name)
    vocab = _int(o, "vocab_size", length + 1, name)
    kv = _int(o, "kv_pairs", 1, name, high=length // 4)
    if length % 2:
        raise ValueError(f"data.options.length for dataset 'mqar' must be even, got {length}")
    power_a = _float(o, "power_a", name, 0.0, 1.0)
    random_fill = _bool(o, "random_non_queries", name)

    def make(n, s):
        x, y = mqar(n, vocab, length, kv, power_a, random_fill, s)
        return {"x": x, "y": y}

    splits = _splits(make, sizes, o["seed"], tokens, tokens)
    values = vocab - vocab // 2
    info = DataInfo(
        d_input=1,
        d_output=vocab,
        task="classification",
        vocab_size=vocab,
        description=(
            f"MQAR: {kv} key-value pairs then a query of each key, vocabulary {vocab}, {length}-step token "
            f"sequences, {_counts(sizes, o['seed'])}"
        ),
        extra={"pool": "none", "sequence_length": length, "chance_loss": math.log(values)},
    )
    return SequenceData(*splits, info=info)


def build_irregular_integral(spec) -> SequenceData:
    """The irregularly sampled integral (module docstring); options length, spread, gaps, n_*, seed."""
    name = "irregular-integral"
    o = take_options(spec.options, IRREGULAR, name)
    sizes = _sizes(o, name)
    length = _int(o, "length", 1, name)
    spread = _float(o, "spread", name, 0.0, 3.0)
    gaps = choose(o["gaps"], GAPS, f"data.options.gaps for dataset {name!r}")

    def make(n, s):
        u, dt, y = irregular_integral(n, length, spread, s)
        x = np.stack([u, dt], -1) if gaps in ("input", "both") else u[:, :, None]
        return {"x": x, "y": y[:, :, None], "dt": dt if gaps in ("rate", "both") else None}

    splits = _splits(make, sizes, o["seed"])
    zero = (length + 1) / (2 * length)
    given = {"rate": "as the per-step rate", "input": "as an input channel", "both": "as rate and input"}
    info = DataInfo(
        d_input=2 if gaps in ("input", "both") else 1,
        d_output=1,
        task="regression",
        description=(
            f"Irregular integral: running integral of a signal observed at log-normal time gaps (spread "
            f"{spread:g}; gaps {given.get(gaps, 'not given')}), {length} steps, {_counts(sizes, o['seed'])}"
        ),
        extra={
            "pool": "none",
            "sequence_length": length,
            "time_gaps": gaps,
            "baseline_mse": (1 - math.exp(-(spread**2))) * zero,
            "zero_mse": zero,
        },
    )
    return SequenceData(*splits, info=info)
