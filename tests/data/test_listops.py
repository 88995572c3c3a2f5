"""LRA ListOps: the TSV reader on fixture files written in the release's format, and the generator."""

import os
import random
import types

import numpy as np
import pytest
import torch

from liquid_s4.data import listops
from liquid_s4.data.common import CACHE_DIR, DataError
from liquid_s4.data.listops import VOCAB, build_listops, build_listops_generated, generate_listops
from liquid_s4.data.registry import build_dataset

# expressions in the release's format with their values, written by hand
HAND = [
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),
    ("( ( ( ( ( [MIN 7 ) 3 ) 5 ) 4 ) ] )", 3),
    ("( ( ( ( ( [MED 1 ) 2 ) 3 ) 4 ) ] )", 2),  # even count: (2 + 3) // 2, as int(np.median)
    ("( ( ( [MED 2 ) 9 ) ] )", 5),  # 5.5 rounds down
    ("( ( ( ( [MED 8 ) 1 ) 5 ) ] )", 5),
    ("( ( ( ( [SM 9 ) 9 ) 9 ) ] )", 7),
    ("( ( ( [MAX ( ( ( [SM 5 ) 6 ) ] ) ) ( ( ( ( [MIN 4 ) 8 ) 6 ) ] ) ) ] )", 4),  # max(1, 4)
    ("7", 7),
]


def spec(data_dir=None, name="listops", **options):
    return types.SimpleNamespace(
        name=name,
        data_dir=None if data_dir is None else str(data_dir),
        val_fraction=0.1,
        test_fraction=0.0,
        options=options,
    )


def write_tsv(path, rows, header="Source\tTarget"):
    """An LRA ListOps TSV file: a header line, then `Source<TAB>Target` rows."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        if header is not None:
            f.write(header + "\n")
        for source, target in rows:
            f.write(f"{source}\t{target}\n")


def write_listops(root, n=(12, 4, 5), seed=0):
    """listops-1000/basic_{train,val,test}.tsv under root; returns {split: [(source, target)]}."""
    folder = os.path.join(root, "listops-1000")
    os.makedirs(folder, exist_ok=True)
    data = generate_listops(sum(n), seed, min_length=5, max_length=60)
    data[:3] = HAND[:3]
    splits, start = {}, 0
    for split, k in zip(("train", "val", "test"), n):
        splits[split] = data[start : start + k]
        write_tsv(os.path.join(folder, f"basic_{split}.tsv"), splits[split])
        start += k
    return splits


def ids(source):
    return [VOCAB[t] for t in source.replace("(", " ").replace(")", " ").split()]


def evaluate(source):
    """An independent evaluator of the release's text: every "( A B )" is a pair, read as in the LRA
    construction: (operator, arg) opens a partial application, (partial, arg) adds an argument and
    (partial, "]") applies it."""
    words = source.split()

    def parse(i):  # -> (node, next index)
        if words[i] != "(":
            return words[i], i + 1
        left, i = parse(i + 1)
        right, i = parse(i)
        assert words[i] == ")"
        return (left, right), i + 1

    def value(node):
        if isinstance(node, str):
            return node if node.startswith("[") or node == "]" else int(node)
        left, right = value(node[0]), value(node[1])
        if isinstance(left, str):
            return (left, [right])
        if right == "]":
            op, args = left
            return {
                "[MIN": min,
                "[MAX": max,
                "[MED": lambda a: int(np.median(a)),
                "[SM": lambda a: sum(a) % 10,
            }[op](args)
        return (left[0], left[1] + [right])

    tree, end = parse(0)
    assert end == len(words)
    return value(tree)


def test_tokenizer_and_hand_written_values():
    assert listops.tokenize("( ( ( [MAX 2 ) 9 ) ] )") == ["[MAX", "2", "9", "]"]
    assert listops.encode("( ( ( [MAX 2 ) 9 ) ] )").tolist() == [12, 3, 10, 15]
    assert sorted(VOCAB.values()) == list(range(1, 16)) and listops.VOCAB_SIZE == 16
    for source, target in HAND:
        assert evaluate(source) == target, source
    assert (
        listops._median([1, 2, 3, 4]) == 2
        and listops._median([2, 9]) == 5
        and listops._median([8, 1, 5]) == 5
    )
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.integers(0, 10, rng.integers(2, 11)).tolist()
        assert listops._median(v) == int(np.median(v))


def test_generator_values_lengths_format_and_determinism():
    data = generate_listops(150, seed=3, min_length=10, max_length=80)
    assert len({t for t, _ in data}) == 150  # distinct expressions
    for text, value in data:
        assert 10 <= len(listops.tokenize(text)) <= 80
        assert evaluate(text) == value  # the release's grouping, evaluated independently
        assert text.count("(") == text.count(")")
    assert len({v for _, v in data}) > 5
    assert generate_listops(150, seed=3, min_length=10, max_length=80) == data
    assert generate_listops(150, seed=random.Random(3), min_length=10, max_length=80) == data
    assert generate_listops(150, seed=4, min_length=10, max_length=80) != data
    deep = generate_listops(20, seed=0, min_length=2, max_length=400, max_depth=3, max_args=3)
    for text, value in deep:  # depth 3: at most two operator levels, at most 3 arguments each
        assert evaluate(text) == value and len(listops.tokenize(text)) <= 2 + 3 * (2 + 3)
    with pytest.raises(ValueError, match="only 0 of 5 distinct expressions"):
        generate_listops(5, seed=0, min_length=2, max_length=10, max_depth=1, max_tries=1000)
    with pytest.raises(ValueError, match="min_length <= max_length"):
        generate_listops(5, min_length=50, max_length=10)


def test_generated_text_round_trips_through_the_tsv_reader(tmp_path):
    splits = write_listops(tmp_path)
    d = build_listops(spec(tmp_path, max_length=40))
    assert (len(d.train), len(d.val), len(d.test)) == (12, 4, 5)
    assert d.official == {"train": 96000, "val": 2000, "test": 2000}
    assert d.info.vocab_size == 16 and d.info.d_output == 10
    for split, ds in (("train", d.train), ("val", d.val), ("test", d.test)):
        for (source, target), (x, y, length) in zip(splits[split], ds):
            expected = ids(source)[:40]
            assert x.dtype == torch.int64 and x.shape == (40,) and y.dtype == torch.int64
            assert int(length) == len(expected) and x[: len(expected)].tolist() == expected
            assert not x[len(expected) :].any() and int(y) == int(target)
    assert any(
        len(ids(s)) > 40 for s, _ in splits["train"] + splits["val"] + splits["test"]
    )  # truncation was exercised
    assert d.train[0][0][:4].tolist() == [12, 3, 10, 15]  # HAND[0] kept its place


def test_layouts_registry_and_cache(tmp_path, monkeypatch):
    write_listops(tmp_path / "lra_release")
    calls = []
    real = listops.read_tsv
    monkeypatch.setattr(listops, "read_tsv", lambda *a: calls.append(a[0]) or real(*a))
    d = build_dataset(spec(tmp_path, max_length=64))  # data_dir holding lra_release/listops-1000
    assert len(calls) == 3 and os.path.isdir(tmp_path / "lra_release" / "listops-1000" / CACHE_DIR)
    first = [tuple(t.tolist() for t in d.test[i]) for i in range(len(d.test))]
    for data_dir in (tmp_path / "lra_release", tmp_path / "lra_release" / "listops-1000"):
        again = build_listops(spec(data_dir, max_length=64))
        assert (
            isinstance(again.train.x, np.memmap)
            and [tuple(t.tolist() for t in it) for it in again.test] == first
        )
    monkeypatch.setenv(
        "LIQUID_S4_DATA", str(tmp_path)
    )  # no data_dir: $LIQUID_S4_DATA/lra_release/listops-1000
    build_listops(spec(None, max_length=64))
    assert len(calls) == 3  # all from the cache
    path = tmp_path / "lra_release" / "listops-1000" / "basic_test.tsv"
    write_tsv(path, [("( ( ( [SM 4 ) 5 ) ] )", 9)])
    d = build_listops(spec(tmp_path / "lra_release", max_length=64))
    assert (
        len(calls) == 6
        and len(d.test) == 1
        and d.test[0][0][:4].tolist() == [14, 5, 6, 15]
        and int(d.test[0][1]) == 9
    )
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))  # touched: rebuilt
    build_listops(spec(tmp_path / "lra_release", max_length=64))
    assert len(calls) == 9
    build_listops(spec(tmp_path / "lra_release", max_length=32))  # other options: rebuilt
    assert len(calls) == 12


def test_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="(?s)LRA ListOps folder not found.*basic_train.tsv.*lra_release.gz"
    ):
        build_listops(spec(tmp_path / "nowhere"))
    write_listops(tmp_path)
    folder = tmp_path / "listops-1000"
    os.remove(folder / "basic_val.tsv")
    with pytest.raises(FileNotFoundError, match="basic_val.tsv not found.*Expected layout"):
        build_listops(spec(tmp_path))
    h = "Source\tTarget"
    cases = [
        (
            [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( [MAX 2 ) 19 ) ] )", 9)],
            h,
            r"basic_val.tsv, line 3: unknown ListOps token '19'",
        ),
        ([("( ( ( [FIRST 2 ) 9 ) ] )", 2)], h, r"line 2: unknown ListOps token '\[FIRST'"),
        (
            [("( ( ( [MAX 2 ) 9 ) ] )", "x")],
            h,
            r"basic_val.tsv, line 2: Target must be a digit 0-9, found 'x'",
        ),
        ([("( ( ( [MAX 2 ) 9 ) ] )", "10")], h, "Target must be a digit"),
        ([("( ( ( [MAX 2 ) 9 ) ] )", "9\textra")], h, "line 2: expected 2 tab-separated fields"),
        ([("( ( ( [MAX 2 ) 9 ) ] )", 9)], None, "line 1: expected the header"),
        ([], h, "basic_val.tsv: no examples"),
    ]
    for rows, header, message in cases:
        write_tsv(folder / "basic_val.tsv", rows, header)
        with pytest.raises(DataError, match=message):
            build_listops(spec(tmp_path))
    with pytest.raises(ValueError, match="unknown data.options.*max_length"):
        build_listops(spec(tmp_path, max_len=10))
    with pytest.raises(ValueError, match="max_length must be an integer >= 1, got 0"):
        build_listops(spec(tmp_path, max_length=0))


def test_build_listops_generated():
    s = spec(name="listops-generated", n_train=60, n_val=10, n_test=15, min_length=8, max_length=40, seed=1)
    d = build_dataset(s)
    assert (len(d.train), len(d.val), len(d.test)) == (60, 10, 15) and d.info.vocab_size == 16
    texts = generate_listops(85, 1, 8, 40)
    items = [*d.train, *d.val, *d.test]
    seqs = set()
    for (text, value), (x, y, length) in zip(texts, items):
        assert x.shape == (40,) and x.dtype == torch.int64 and 8 <= int(length) <= 40
        assert (
            x[: int(length)].tolist() == ids(text)
            and not x[int(length) :].any()
            and int(y) == value == evaluate(text)
        )
        seqs.add(tuple(x.tolist()))
    assert len(seqs) == 85  # train, val and test share no expression
    again = build_listops_generated(s)
    assert all(torch.equal(a[0], b[0]) and int(a[1]) == int(b[1]) for a, b in zip(again.test, d.test))
    other = build_listops_generated(
        spec(name="listops-generated", n_train=60, n_val=0, n_test=15, min_length=8, max_length=40, seed=2)
    )
    assert other.val is None and not all(torch.equal(a[0], b[0]) for a, b in zip(other.test, d.test))
    with pytest.raises(ValueError, match="unknown data.options.*n_train \\(default 2000\\)"):
        build_listops_generated(spec(name="listops-generated", n_training=5))
    with pytest.raises(ValueError, match="n_train must be an integer >= 1"):
        build_listops_generated(spec(name="listops-generated", n_train=0))
    with pytest.raises(ValueError, match="max_args must be an integer >= 2"):
        build_listops_generated(spec(name="listops-generated", max_args=1))
