"""Long Range Arena ListOps: the official TSV files, and a generator following the same procedure.

Expected layout (folder `listops-1000/` of the LRA release
https://storage.googleapis.com/long-range-arena/lra_release.gz):

    listops-1000/basic_train.tsv   96000 rows
    listops-1000/basic_val.tsv      2000 rows
    listops-1000/basic_test.tsv     2000 rows

Each file is tab-separated with the header line `Source<TAB>Target`; Source is a nested expression
such as `( ( ( [MAX 2 ) 9 ) ] )` and Target its value, a digit 0-9 (10 classes). The parentheses are
structural noise (the brackets already determine the tree) and are dropped; the remaining
whitespace-separated tokens are read with a FIXED vocabulary shared by the official and the generated
data: 0 = padding, "0".."9" -> 1..10, "[MIN" 11, "[MAX" 12, "[MED" 13, "[SM" 14, "]" 15 (vocab_size 16).
Sequences longer than `max_length` (default 2048) are truncated; all are right-padded to `max_length`
and their valid lengths kept. The official train/val/test splits are used as they are.

`listops-generated` makes fresh data in memory with `generate_listops` (nothing to download).
"""

from __future__ import annotations

import os
import random

import numpy as np

from .common import (
    ArrayDataset,
    DataError,
    DataInfo,
    SequenceData,
    cached,
    data_root,
    int_option,
    missing,
    take_options,
    tokens,
)

URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
SOURCE = f"ListOps is part of the Long Range Arena release {URL} (folder listops-1000/ after extracting it)."
FOLDER = "listops-1000"
SPLITS = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
LAYOUT = "\n".join(f"    {FOLDER}/{f}   (TSV, header 'Source<TAB>Target')" for f in SPLITS.values())
HEADER = ["Source", "Target"]

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
VOCAB = {**{str(d): d + 1 for d in range(10)}, MIN: 11, MAX: 12, MED: 13, SUM_MOD: 14, END: 15}  # 0 = padding
VOCAB_SIZE = 16
_DROP_PARENS = str.maketrans("", "", "()")


# ---- locating LRA folders (shared with the AAN reader) -------------------------------------------


def lra_folder(data_dir: str | None, folder: str, required: list[str]) -> str | None:
    """The folder holding `required` files of LRA folder `folder`: data_dir itself, data_dir/<folder>,
    data_dir/lra_release/<folder> (or lra_release/lra_release/<folder>); without data_dir, the same
    under $LIQUID_S4_DATA/<folder> and $LIQUID_S4_DATA (default ./data). The first candidate holding
    the most of the files (the caller then names any missing one); None when no candidate exists."""
    roots = (
        [data_root(data_dir, folder)]
        if data_dir
        else [data_root(None, folder), os.path.dirname(data_root(None, folder))]
    )
    subfolders = (
        "",
        folder,
        os.path.join("lra_release", folder),
        os.path.join("lra_release", "lra_release", folder),
    )
    candidates = [os.path.join(r, sub) if sub else r for r in roots for sub in subfolders]
    existing = [c for c in candidates if os.path.isdir(c)]
    if not existing:
        return None
    return max(
        existing, key=lambda c: sum(os.path.isfile(os.path.join(c, f)) for f in required)
    )  # the first of the fullest


def need_file(folder: str, name: str, what: str, layout: str, source: str) -> str:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{what} file {name} not found in {folder!r}. Expected layout:\n{layout}\n{source}"
        )
    return path


# ---- tokenizer -----------------------------------------------------------------------------------


def tokenize(source: str) -> list[str]:
    """The tokens of one ListOps expression: parentheses removed, split on whitespace."""
    return source.translate(_DROP_PARENS).split()


def encode(source: str, where: str = "") -> np.ndarray:
    """Token ids (uint8, VOCAB) of one expression; an unknown token raises DataError naming `where`."""
    words = tokenize(source)
    try:
        return np.fromiter(map(VOCAB.__getitem__, words), dtype=np.uint8, count=len(words))
    except KeyError as e:
        raise DataError(
            f"{where}: unknown ListOps token {e.args[0]!r} (expected digits 0-9, {', '.join(OPERATORS)} or "
            "']')"
        ) from None


def _pack(rows: list[np.ndarray], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, max_length) uint8 ids right-padded with 0 (longer rows truncated) and (n,) int32 valid lengths."""
    x = np.zeros((len(rows), max_length), dtype=np.uint8)
    lengths = np.zeros(len(rows), dtype=np.int32)
    for i, r in enumerate(rows):
        n = min(len(r), max_length)
        x[i, :n], lengths[i] = r[:n], n
    return x, lengths


def read_tsv(path: str, max_length: int) -> dict[str, np.ndarray]:
    """One LRA ListOps TSV file -> {'x': (n, max_length) uint8, 'y': (n,) int64, 'lengths': (n,) int32}."""
    rows, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        if header != HEADER:
            raise DataError(
                f"{path}, line 1: expected the header 'Source<TAB>Target', found "
                f"{'<TAB>'.join(header)[:80]!r}"
            )
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(
                    f"{path}, line {lineno}: expected 2 tab-separated fields (Source, Target), found "
                    f"{len(fields)}"
                )
            source, target = fields
            target = target.strip()
            if len(target) != 1 or target not in "0123456789":
                raise DataError(f"{path}, line {lineno}: Target must be a digit 0-9, found {target[:20]!r}")
            rows.append(encode(source, f"{path}, line {lineno}"))
            labels.append(int(target))
    if not rows:
        raise DataError(f"{path}: no examples after the header (empty or truncated file)")
    x, lengths = _pack(rows, max_length)  # (n, max_length), (n,)
    return {"x": x, "y": np.asarray(labels, dtype=np.int64), "lengths": lengths}


def _datasets(arrays: dict[str, dict[str, np.ndarray]]) -> list[ArrayDataset]:
    return [ArrayDataset(a["x"], a["y"], lengths=a["lengths"], transform=tokens) for a in arrays.values()]


def build_listops(spec) -> SequenceData:
    """LRA ListOps from the official TSV files (official train/val/test splits; val_fraction and
    test_fraction are not used). Items: x int64 (max_length,) token ids, y int64 in 0..9, lengths."""
    opts = take_options(spec.options, {"max_length": 2048}, "listops")
    max_length = int_option(opts["max_length"], "listops option max_length")
    folder = lra_folder(spec.data_dir, FOLDER, list(SPLITS.values()))
    if folder is None:
        raise missing("LRA ListOps folder", data_root(spec.data_dir, FOLDER), LAYOUT, SOURCE)
    paths = {s: need_file(folder, f, "LRA ListOps", LAYOUT, SOURCE) for s, f in SPLITS.items()}

    def build():
        out = {}
        for split, path in paths.items():
            out.update({f"{split}_{k}": v for k, v in read_tsv(path, max_length).items()})
        return out

    a = cached(folder, "listops", list(paths.values()), {"max_length": max_length}, build)
    train, val, test = _datasets({s: {k: a[f"{s}_{k}"] for k in ("x", "y", "lengths")} for s in SPLITS})
    info = DataInfo(
        d_input=1,
        d_output=10,
        vocab_size=VOCAB_SIZE,
        extra={"vocab": dict(VOCAB)},
        description=f"ListOps (LRA): token sequences up to {max_length}, 10 classes, "
        f"{len(train)}/{len(val)}/{len(test)}",
    )
    return SequenceData(train, val, test, info, official={"train": 96000, "val": 2000, "test": 2000})


# ---- generator -----------------------------------------------------------------------------------
#
# The procedure of the LRA release (lra_benchmarks/data/listops.py), written here from its description:
# a node at depth < max_depth becomes an operator with probability value_p = 0.25 (else a digit 0-9
# drawn uniformly); the root has depth 1 and nodes at max_depth are always digits. An operator
# (MIN, MAX, MED or SUM_MOD, uniformly) takes 2..max_args arguments (uniformly), each a new node one
# level deeper. Trees are drawn until `n` distinct ones have a length (tokens without parentheses:
# 1 per digit, 2 per operator for its name and "]") in [min_length, max_length]; LRA used 500 < length
# < 2000, max_depth 10, max_args 10. MED is int(np.median(args)) as in LRA: for an even count, the mean
# of the two middle values rounded down (values are >= 0). SUM_MOD is the sum modulo 10. The text is
# written like the release: an operator with arguments a1..ak as "( ( ... ( OP a1 ) a2 ) ... ak ) ] )".


class _TooLong(Exception):
    pass


def _median(values: list[int]) -> int:
    s = sorted(values)
    k = len(s) // 2
    return s[k] if len(s) % 2 else (s[k - 1] + s[k]) // 2


APPLY = {MIN: min, MAX: max, MED: _median, SUM_MOD: lambda v: sum(v) % 10}
_DIGITS = [str(d) for d in range(10)]


def _tree(
    rnd, depth: int, out: list[str], budget: list[int], max_depth: int, max_args: int, value_p: float
) -> int:
    """Appends the text pieces of a random subtree to `out` and returns its value. `budget[0]` counts
    down the tokens still allowed; a tree longer than that is abandoned early (it would be rejected
    anyway, so the accepted trees keep the same distribution)."""
    if depth < max_depth and rnd() < value_p:
        k = 2 + int(rnd() * (max_args - 1))  # 2..max_args arguments
        op = OPERATORS[int(rnd() * len(OPERATORS))]
        budget[0] -= 2  # the operator and its "]"
        out.append("( " * (k + 1) + op)
        values = []
        for _ in range(k):
            values.append(_tree(rnd, depth + 1, out, budget, max_depth, max_args, value_p))
            out.append(")")
        out.append("] )")
        return APPLY[op](values)
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLong
    v = int(rnd() * 10)
    out.append(_DIGITS[v])
    return v


def generate_listops(
    n: int,
    seed: int | random.Random = 0,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    value_p: float = 0.25,
    max_tries: int | None = None,
) -> list[tuple[str, int]]:
    """`n` distinct ListOps expressions as (text in the release's format, value 0..9), following the
    LRA procedure described above; deterministic given `seed` (an int or a `random.Random`).
    Defaults are LRA's lengths; rejection gives up with ValueError after `max_tries` draws (default
    1000 * n + 100000) when the length window is (nearly) impossible."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    if not 1 <= min_length <= max_length or max_depth < 1 or max_args < 2:
        raise ValueError(
            "generate_listops: need 1 <= min_length <= max_length, max_depth >= 1, max_args >= 2; got "
            f"min_length={min_length}, max_length={max_length}, max_depth={max_depth}, max_args={max_args}"
        )
    max_tries = 1000 * n + 100_000 if max_tries is None else max_tries
    out, seen = [], set()
    for _ in range(max_tries):
        if len(out) == n:
            break
        budget, pieces = [max_length], []
        try:
            value = _tree(rng.random, 1, pieces, budget, max_depth, max_args, value_p)
        except _TooLong:
            continue
        if max_length - budget[0] < min_length:
            continue
        text = " ".join(pieces)
        if text not in seen:
            seen.add(text)
            out.append((text, value))
    if len(out) < n:
        raise ValueError(
            f"generate_listops: only {len(out)} of {n} distinct expressions with length in [{min_length}, "
            f"{max_length}] after {max_tries} draws; widen the length window or raise max_depth/max_args"
        )
    return out


GENERATED_DEFAULTS = {
    "n_train": 2000,
    "n_val": 500,
    "n_test": 500,
    "min_length": 50,
    "max_length": 500,
    "max_depth": 10,
    "max_args": 10,
    "seed": 0,
}


def build_listops_generated(spec) -> SequenceData:
    """ListOps generated in memory with `generate_listops` (no files; val_fraction/test_fraction unused).
    Options: n_train/n_val/n_test (default 2000/500/500), min_length/max_length (default 50/500 tokens,
    quick to generate; the LRA release used 500/2000), max_depth/max_args (10/10, as LRA) and
    seed. One stream of distinct expressions is drawn and split in order (train, val, test), so the
    splits never share an expression; x is padded to max_length with the official reader's vocabulary."""
    o = take_options(spec.options, GENERATED_DEFAULTS, "listops-generated")
    for k in ("n_val", "n_test", "seed"):
        int_option(o[k], f"listops-generated option {k}", low=0)
    for k, minimum in (
        ("n_train", 1),
        ("min_length", 1),
        ("max_length", 1),
        ("max_depth", 1),
        ("max_args", 2),
    ):
        int_option(o[k], f"listops-generated option {k}", minimum)
    sizes = [o["n_train"], o["n_val"], o["n_test"]]
    data = generate_listops(
        sum(sizes), o["seed"], o["min_length"], o["max_length"], o["max_depth"], o["max_args"]
    )
    x, lengths = _pack([encode(t, "generated") for t, _ in data], o["max_length"])  # (n, max_length)
    y = np.asarray([v for _, v in data], dtype=np.int64)
    bounds = np.cumsum([0, *sizes])
    sets = [
        ArrayDataset(x[a:b], y[a:b], lengths=lengths[a:b], transform=tokens)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    info = DataInfo(
        d_input=1,
        d_output=10,
        vocab_size=VOCAB_SIZE,
        extra={"vocab": dict(VOCAB)},
        description=(
            f"ListOps (generated, seed {o['seed']}): {o['min_length']}-{o['max_length']} tokens, 10 classes, "
            f"{sizes[0]}/{sizes[1]}/{sizes[2]}"
        ),
    )
    return SequenceData(sets[0], sets[1] if sizes[1] else None, sets[2] if sizes[2] else None, info)
