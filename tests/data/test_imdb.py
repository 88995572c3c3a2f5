"""LRA Text (IMDB, byte level) on an aclImdb fixture written in the official layout."""

import os
import types

import numpy as np
import pytest
import torch

from liquid_s4.data import imdb
from liquid_s4.data.common import CACHE_DIR, DataError, split_indices
from liquid_s4.data.imdb import build_imdb, byte_tokens
from liquid_s4.data.registry import build_dataset


def spec(data_dir=None, val_fraction=0.25, **options):
    return types.SimpleNamespace(
        name="imdb",
        data_dir=None if data_dir is None else str(data_dir),
        val_fraction=val_fraction,
        test_fraction=0.0,
        options=options,
    )


def write_review(root, split, cls, id_, rating, text: bytes):
    folder = os.path.join(root, "aclImdb", split, cls)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{id_}_{rating}.txt"), "wb") as f:
        f.write(text)


def write_imdb(root, seed=0):
    """aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt plus the files the reader must ignore (unsup/,
    .feat, urls, vocab). Returns {split: [(text, label)]} in the expected order: neg then pos, by
    numeric id."""
    rng = np.random.default_rng(seed)
    expected = {}
    for split, ids in (("train", [10, 2, 0, 7, 1]), ("test", [3, 11, 0])):
        expected[split] = []
        for label, cls in enumerate(("neg", "pos")):
            reviews = []
            for id_ in ids:
                n = int(rng.integers(1, 50))
                text = f"{cls} review {split} #{id_}: ".encode() + bytes(
                    rng.integers(32, 127, n, dtype=np.uint8)
                )
                if id_ == 2:
                    text += '  <br /><br />Café crème, naïve ☃ "quoted"\n'.encode()
                reviews.append((id_, text))
                write_review(root, split, cls, id_, 1 + 6 * label + id_ % 4, text)  # neg 1-4, pos 7-10
            expected[split] += [(t, label) for _, t in sorted(reviews)]
    base = os.path.join(root, "aclImdb")
    write_review(root, "train", "unsup", 0, 0, b"unlabelled")
    for extra in (
        "imdb.vocab",
        "imdbEr.txt",
        "README",
        "train/labeledBow.feat",
        "train/urls_pos.txt",
        "test/pos/notes.txt",
    ):
        with open(os.path.join(base, extra), "w") as f:
            f.write("ignored\n")
    return expected


def check_items(ds, expected, max_length):
    assert len(ds) == len(expected)
    for (x, y, length), (text, label) in zip(ds, expected):
        want = [b + 1 for b in text[:max_length]]
        assert x.dtype == torch.int64 and x.shape == (max_length,) and y.dtype == torch.int64
        assert int(length) == len(want) and x[: len(want)].tolist() == want and not x[len(want) :].any()
        assert int(y) == label


def test_byte_tokens_widen_only_for_0xff():
    x, lengths = byte_tokens([b"ab", b"", "é".encode()], 4)
    assert x.dtype == np.uint8 and lengths.tolist() == [2, 0, 2]
    assert x.tolist() == [[98, 99, 0, 0], [0, 0, 0, 0], [0xC3 + 1, 0xA9 + 1, 0, 0]]
    x, lengths = byte_tokens([b"\xff\x00a", b"\x00\xfe\xff\xff\xff"], 4)
    assert (
        x.dtype == np.int16
        and x.tolist() == [[256, 1, 98, 0], [1, 255, 256, 256]]
        and lengths.tolist() == [3, 4]
    )


def test_reviews_round_trip(tmp_path):
    expected = write_imdb(tmp_path)
    d = build_imdb(spec(tmp_path, max_length=40))
    assert d.official == {"train": 25000, "test": 25000}
    assert d.info.vocab_size == 257 and d.info.d_output == 2 and d.info.extra["classes"] == ["neg", "pos"]
    tr, va, _ = (i.tolist() for i in split_indices(10, 0.25, 0.0, seed=0))
    assert (len(d.train), len(d.val), len(d.test)) == (len(tr), len(va), 6) == (8, 2, 6)
    check_items(d.train, [expected["train"][i] for i in tr], 40)
    check_items(d.val, [expected["train"][i] for i in va], 40)
    check_items(d.test, expected["test"], 40)
    assert any(len(t) > 40 for t, _ in expected["train"])  # truncation exercised
    assert d.test[0][0][:10].tolist() == [b + 1 for b in b"neg review"]
    full = build_dataset(
        spec(tmp_path / "aclImdb", val_fraction=0.0)
    )  # data_dir = aclImdb itself; default max_length
    assert full.val is None and full.train[0][0].shape == (4096,)
    order = split_indices(10, 0.0, 0.0, seed=0)[
        0
    ].tolist()  # the training items come in the split's (permuted) order
    check_items(full.train, [expected["train"][i] for i in order], 4096)
    write_review(tmp_path, "test", "pos", 12, 10, b"\xff\xfe latin-1 \xe9")  # not UTF-8: token 256 appears
    d = build_imdb(spec(tmp_path, max_length=40))
    check_items(d.test, expected["test"] + [(b"\xff\xfe latin-1 \xe9", 1)], 40)
    assert d.test.x.dtype == np.int16 and d.train.x.dtype == np.uint8


def test_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    expected = write_imdb(tmp_path)
    calls = []
    real = imdb.read_split
    monkeypatch.setattr(imdb, "read_split", lambda *a: calls.append(a[1]) or real(*a))
    build_imdb(spec(tmp_path, max_length=64))
    assert calls == ["train", "test"] and os.path.isdir(tmp_path / "aclImdb" / CACHE_DIR)
    d = build_imdb(spec(tmp_path, max_length=64))
    assert len(calls) == 2 and isinstance(d.test.x, np.memmap)
    check_items(d.test, expected["test"], 64)
    monkeypatch.setenv("LIQUID_S4_DATA", str(tmp_path))  # default folder $LIQUID_S4_DATA/aclImdb
    build_imdb(spec(None, max_length=64))
    assert len(calls) == 2
    path = tmp_path / "aclImdb" / "test" / "neg" / "3_4.txt"
    path.write_bytes(b"rewritten")
    d = build_imdb(spec(tmp_path, max_length=64))
    assert len(calls) == 4 and d.test[1][0][:9].tolist() == [b + 1 for b in b"rewritten"]
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    build_imdb(spec(tmp_path, max_length=64))
    assert len(calls) == 6
    build_imdb(spec(tmp_path, max_length=65))
    assert len(calls) == 8


def test_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match="(?s)IMDB reviews folder.*not found.*train/pos/<id>_<rating>.txt.*aclImdb_v1.tar.gz",
    ):
        build_imdb(spec(tmp_path / "nowhere"))
    write_imdb(tmp_path)
    base = tmp_path / "aclImdb"
    for name in os.listdir(base / "test" / "neg"):
        os.remove(base / "test" / "neg" / name)
    with pytest.raises(DataError, match="test/neg: no reviews named <id>_<rating>.txt"):
        build_imdb(spec(tmp_path))
    os.rmdir(base / "test" / "neg")
    with pytest.raises(FileNotFoundError, match="(?s)IMDB folder .*test/neg' not found.*Expected layout"):
        build_imdb(spec(tmp_path))
    with pytest.raises(ValueError, match="unknown data.options.*max_length \\(default 4096\\)"):
        build_imdb(spec(tmp_path, length=10))
    with pytest.raises(ValueError, match="max_length must be an integer >= 1, got 'long'"):
        build_imdb(spec(tmp_path, max_length="long"))
