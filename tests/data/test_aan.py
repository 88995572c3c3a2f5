"""LRA Retrieval (AAN pairs, byte level) on tsv_data/ fixtures written in the release's format."""

import os
import types

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from liquid_s4.data import aan
from liquid_s4.data.aan import build_aan
from liquid_s4.data.common import CACHE_DIR, DataError
from liquid_s4.data.registry import build_dataset

FILES = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}


def spec(data_dir=None, **options):
    return types.SimpleNamespace(
        name="aan",
        data_dir=None if data_dir is None else str(data_dir),
        val_fraction=0.1,
        test_fraction=0.0,
        options=options,
    )


def write_pairs(path, rows, final_newline=True):
    """One AAN pairs file: `label<TAB>id1<TAB>id2<TAB>text1<TAB>text2` lines, no header, no quoting."""
    lines = [
        b"\t".join(v if isinstance(v, bytes) else v.encode() for v in row) for row in rows
    ]  # (label, id1, id2, text1, text2)
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + (b"\n" if final_newline else b""))


def ascii_bytes(rng, most):
    return bytes(rng.integers(32, 127, int(rng.integers(0, most)), dtype=np.uint8))


def write_aan(root, n=(6, 3, 4), seed=0):
    """tsv_data/new_aan_pairs.{train,eval,test}.tsv under root; returns {split: [(label, text1, text2)]}."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "tsv_data")
    os.makedirs(folder, exist_ok=True)
    out = {}
    for (split, name), k in zip(FILES.items(), n):
        rows = []
        for i in range(k):
            label = int(rng.integers(0, 2))
            t1 = f"paper {split} {i}: \"a quoted title\" and 'single' quotes, ".encode() + ascii_bytes(
                rng, 60
            )
            t2 = "Zürich — naïve “curly” ".encode() + ascii_bytes(rng, 30)
            rows.append(
                (["0", "1"][label] if i % 2 else f"{label}.0", f"P{i:02d}-{split}", f"W{i:02d}-1001", t1, t2)
            )
        write_pairs(os.path.join(folder, name), rows, final_newline=split != "test")
        out[split] = [(int(float(r[0])), r[3], r[4]) for r in rows]
    return out


def check_items(ds, expected, max_length):
    assert len(ds) == len(expected)
    for (x1, y, l1, x2, l2), (label, t1, t2) in zip(ds, expected):
        assert int(y) == label and y.dtype == torch.int64
        for x, length, text in ((x1, l1, t1), (x2, l2, t2)):
            want = [b + 1 for b in text[:max_length]]
            assert x.dtype == torch.int64 and x.shape == (max_length,)
            assert int(length) == len(want) and x[: len(want)].tolist() == want and not x[len(want) :].any()


def test_pairs_round_trip_and_batches(tmp_path):
    expected = write_aan(tmp_path)
    d = build_dataset(spec(tmp_path, max_length=48))
    assert (len(d.train), len(d.val), len(d.test)) == (6, 3, 4)
    assert d.official == {"train": 147086, "val": 18090, "test": 17437}
    assert d.info.vocab_size == 257 and d.info.d_output == 2
    for split in ("train", "val", "test"):
        check_items(getattr(d, split), expected[split], 48)
    assert any(len(t) > 48 for rows in expected.values() for _, t, _ in rows)  # truncation exercised
    x1, y, l1, x2, l2 = next(iter(DataLoader(d.train, batch_size=4)))
    assert x1.shape == x2.shape == (4, 48) and y.shape == l1.shape == l2.shape == (4,)
    from liquid_s4.models import SequenceModel

    model = SequenceModel(
        d_output=2,
        vocab_size=d.info.vocab_size,
        d_model=8,
        n_layers=1,
        layer="s4d",
        layer_args={"d_state": 4},
        head="retrieval",
    )
    assert model(x1, l1, x2, l2).shape == (4, 2)


def test_layouts_and_cache(tmp_path, monkeypatch):
    expected = write_aan(tmp_path / "lra_release")
    calls = []
    real = aan.read_pairs
    monkeypatch.setattr(aan, "read_pairs", lambda *a: calls.append(a[0]) or real(*a))
    build_aan(spec(tmp_path, max_length=32))  # data_dir holding lra_release/tsv_data
    assert len(calls) == 3 and os.path.isdir(tmp_path / "lra_release" / "tsv_data" / CACHE_DIR)
    for data_dir in (tmp_path / "lra_release", tmp_path / "lra_release" / "tsv_data"):
        d = build_aan(spec(data_dir, max_length=32))
        assert isinstance(d.test.x2, np.memmap)
        check_items(d.test, expected["test"], 32)
    monkeypatch.setenv("LIQUID_S4_DATA", str(tmp_path))
    build_aan(spec(None, max_length=32))
    assert len(calls) == 3
    path = tmp_path / "lra_release" / "tsv_data" / FILES["val"]
    write_pairs(path, [("1", "A", "B", b"x\xffy", b"")])  # not UTF-8: token 256; an empty text
    d = build_aan(spec(tmp_path, max_length=32))
    assert len(calls) == 6 and len(d.val) == 1
    check_items(d.val, [(1, b"x\xffy", b"")], 32)
    assert d.val.x.dtype == np.int16 and d.val.x2.dtype == np.uint8
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    build_aan(spec(tmp_path, max_length=32))
    assert len(calls) == 9


def test_blank_lines_and_crlf(tmp_path):
    write_aan(tmp_path)
    path = tmp_path / "tsv_data" / FILES["test"]
    path.write_bytes(b"1.0\ta\tb\tfirst text\tsecond\r\n\n0\tc\td\tthird\tfourth 'x' \"y\"\n\n")
    d = build_aan(spec(tmp_path, max_length=16))
    check_items(d.test, [(1, b"first text", b"second"), (0, b"third", b"fourth 'x' \"y\"")], 16)


def test_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match="(?s)LRA AAN retrieval folder not found.*new_aan_pairs.eval.tsv.*lra_release.gz",
    ):
        build_aan(spec(tmp_path / "nowhere"))
    write_aan(tmp_path)
    folder = tmp_path / "tsv_data"
    os.remove(folder / FILES["val"])
    with pytest.raises(FileNotFoundError, match="new_aan_pairs.eval.tsv not found in .*tsv_data"):
        build_aan(spec(tmp_path))
    good = ("1", "a", "b", b"t1", b"t2")
    cases = [
        (
            [good, ("0", "a", "b", b"t1", b"t2\tmore")],
            r"new_aan_pairs.eval.tsv, line 2: expected 5 tab-separated columns .* found 6",
        ),
        ([good, good, ("1", "a", "b", b"only four")], "line 3: expected 5 tab-separated columns"),
        ([("2", "a", "b", b"t1", b"t2")], r"eval.tsv, line 1: label must be 0 or 1, found '2'"),
        ([("yes", "a", "b", b"t1", b"t2")], "label must be 0 or 1, found 'yes'"),
        ([], "new_aan_pairs.eval.tsv: no document pairs"),
    ]
    for rows, message in cases:
        write_pairs(folder / FILES["val"], rows)
        with pytest.raises(DataError, match=message):
            build_aan(spec(tmp_path))
    with pytest.raises(ValueError, match="unknown data.options.*max_length \\(default 4000\\)"):
        build_aan(spec(tmp_path, maxlen=4))
    with pytest.raises(ValueError, match="max_length must be an integer >= 1, got True"):
        build_aan(spec(tmp_path, max_length=True))
