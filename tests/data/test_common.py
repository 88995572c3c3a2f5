"""The shared dataset machinery: the cache next to the data, options, compact datasets, summaries."""

import json
import os
import types
import warnings

import numpy as np
import pytest
import torch

from liquid_s4.data.common import (
    CACHE_DIR,
    ArrayDataset,
    DataInfo,
    SequenceData,
    Standardize,
    cached,
    split_indices,
    take_options,
    tokens,
)


def _source(root, name="a.txt", text="hello"):
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_cache_is_reused_and_invalidated(tmp_path):
    root = str(tmp_path)
    src = _source(root)
    calls = []

    def build():
        calls.append(1)
        with open(src) as f:
            return {"x": np.frombuffer(f.read().encode(), dtype=np.uint8).copy(), "n": np.array([len(calls)])}

    a = cached(root, "demo", [src], {"k": 1}, build)
    b = cached(root, "demo", [src], {"k": 1}, build)
    assert len(calls) == 1 and bytes(b["x"]) == b"hello" and isinstance(b["x"], np.memmap)
    assert np.array_equal(a["x"], b["x"])
    cached(root, "demo", [src], {"k": 2}, build)  # other options: another entry
    assert len(calls) == 2
    _source(root, text="hello world")  # the source changed (size and mtime)
    c = cached(root, "demo", [src], {"k": 2}, build)
    assert len(calls) == 3 and bytes(c["x"]) == b"hello world"
    st = os.stat(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, touched
    cached(root, "demo", [src], {"k": 2}, build)
    assert len(calls) == 4
    entries = sorted(os.listdir(os.path.join(root, CACHE_DIR)))
    assert len(entries) == 1 and entries[0].startswith("demo-")  # stale entries of the key are removed


def test_cache_of_a_folder_sees_new_files_and_keeps_other_keys(tmp_path):
    root = str(tmp_path)
    os.makedirs(tmp_path / "d")
    _source(tmp_path / "d", "1.txt")
    n = []

    def build():
        n.append(1)
        return {"count": np.array([len(os.listdir(tmp_path / "d"))])}

    cached(root, "k", [str(tmp_path / "d")], {}, build)
    cached(root, "k-gray", [str(tmp_path / "d")], {}, build)  # a key that extends another is not "stale"
    assert int(cached(root, "k", [str(tmp_path / "d")], {}, build)["count"][0]) == 1 and len(n) == 2
    _source(tmp_path / "d", "2.txt")
    assert int(cached(root, "k", [str(tmp_path / "d")], {}, build)["count"][0]) == 2 and len(n) == 3
    assert len(os.listdir(tmp_path / CACHE_DIR)) == 2


def test_cache_can_be_disabled_or_unwritable(tmp_path, monkeypatch):
    src = _source(str(tmp_path))
    monkeypatch.setenv("LIQUID_S4_NO_CACHE", "1")
    out = cached(str(tmp_path), "demo", [src], {}, lambda: {"x": np.arange(3)})
    assert np.array_equal(out["x"], np.arange(3)) and not os.path.exists(tmp_path / CACHE_DIR)
    monkeypatch.delenv("LIQUID_S4_NO_CACHE")
    (tmp_path / CACHE_DIR).write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the preprocessing cache"):
        out = cached(str(tmp_path), "demo", [src], {}, lambda: {"x": np.arange(3)})
    assert np.array_equal(out["x"], np.arange(3))


def test_corrupt_cache_is_rebuilt(tmp_path):
    src = _source(str(tmp_path))
    cached(str(tmp_path), "demo", [src], {}, lambda: {"x": np.arange(3)})
    (entry,) = os.listdir(tmp_path / CACHE_DIR)
    (tmp_path / CACHE_DIR / entry / "x.npy").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="cache .* is damaged or unreadable"):
        out = cached(str(tmp_path), "demo", [src], {}, lambda: {"x": np.arange(4)})
    assert np.array_equal(out["x"], np.arange(4))


def _entry_file(root, key, name):
    (entry,) = [
        e
        for e in os.listdir(os.path.join(root, CACHE_DIR))
        if e.startswith(key + "-") and len(e) == len(key) + 17
    ]
    return os.path.join(root, CACHE_DIR, entry, name)


@pytest.mark.parametrize("damage", ["bytes", "truncate", "old"])
def test_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path, damage):
    """A cache file with bytes changed (same size: it still memory-maps, and was used silently before),
    a truncated one, or an entry without checksums (older version) is rebuilt with a warning; other
    keys' entries are untouched, and the rebuilt entry is used again without a rebuild."""
    root, src, calls = str(tmp_path), _source(str(tmp_path)), []

    def build():
        calls.append(1)
        return {"x": np.arange(1000, dtype=np.float32), "y": np.arange(5)}

    cached(root, "demo", [src], {}, build)
    cached(root, "other", [src], {}, build)
    other = open(_entry_file(root, "other", "x.npy"), "rb").read()
    path = _entry_file(root, "demo", "x.npy")
    data = bytearray(open(path, "rb").read())
    if damage == "bytes":
        data[-100:-96] = b"\xff\xff\xff\xff"
        expected = "x.npy does not match the sha256"
    elif damage == "truncate":
        data = data[:-100]
        expected = r"x.npy has \d+ bytes, \d+ were written"
    else:
        manifest = _entry_file(root, "demo", "manifest.json")
        with open(manifest) as f:
            m = json.load(f)
        del m["files"]
        with open(manifest, "w") as f:
            json.dump(m, f)
        expected = "written by an older liquid_s4, without checksums"
    with open(path, "wb") as f:
        f.write(data)
    with pytest.warns(
        UserWarning, match=f"cache .*demo-.* is damaged or unreadable \\({expected}.*rebuilding it"
    ):
        out = cached(root, "demo", [src], {}, build)
    assert len(calls) == 3 and np.array_equal(out["x"], np.arange(1000, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            np.array_equal(cached(root, "demo", [src], {}, build)["x"], np.arange(1000)) and len(calls) == 3
        )
    assert open(_entry_file(root, "other", "x.npy"), "rb").read() == other


def test_options_are_checked():
    assert take_options({"b": 3}, {"a": 1, "b": 2}, "demo") == {"a": 1, "b": 3}
    with pytest.raises(
        ValueError, match=r"unknown data.options \['c'\] for dataset 'demo'; valid options: a \(default 1\)"
    ):
        take_options({"c": 1}, {"a": 1}, "demo")


def test_array_dataset_items_and_subsets():
    x = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)
    y = np.array([0, 1, 2, 3])
    ds = ArrayDataset(x, y, transform=Standardize([1.0, 2.0], [2.0, 4.0]))
    xi, yi = ds[1]
    ref = (torch.tensor(x[1], dtype=torch.float32) - torch.tensor([1.0, 2.0])) / torch.tensor([2.0, 4.0])
    assert xi.dtype == torch.float32 and torch.equal(xi, ref)
    sub = ds.subset([3, 0]).subset([1])
    assert len(sub) == 1 and int(sub[0][1]) == 0
    t = np.array([[1, 2, 0], [3, 0, 0]], dtype=np.uint8)
    pairs = ArrayDataset(
        t, np.array([1, 0]), np.array([2, 1]), t[::-1].copy(), np.array([1, 2]), transform=tokens
    )
    a, label, la, b, lb = pairs[0]
    assert (
        a.dtype == torch.int64
        and a.tolist() == [1, 2, 0]
        and b.tolist() == [3, 0, 0]
        and (int(la), int(lb)) == (2, 1)
    )
    with pytest.raises(ValueError, match="y has 3 rows, x has 4"):
        ArrayDataset(x, y[:3])
    with pytest.raises(ValueError, match="two-sequence data needs lengths, x2 and lengths2"):
        ArrayDataset(t, np.array([1, 0]), x2=t)


def test_summary_and_official_sizes():
    from liquid_s4.data.check import official_differences

    ds = ArrayDataset(np.zeros((10, 5, 2), np.float32), np.zeros(10, np.int64))
    data = SequenceData(
        ds.subset(range(8)),
        ds.subset([8]),
        ds.subset([9]),
        DataInfo(2, 3, description="demo data"),
        official={"train": 9, "test": 2},
    )
    text = data.summary()
    assert (
        "demo data" in text
        and "x (5, 2) float32" in text
        and "train 8, val 1, test 1" in text
        and "3 classes" in text
    )
    assert official_differences(data) == [
        ("test", 1, 2)
    ]  # train counts train + val when the release has no val split


def test_split_indices_are_a_fixed_partition():
    a = [t.tolist() for t in split_indices(50, 0.2, 0.1, seed=0)]
    b = [t.tolist() for t in split_indices(50, 0.2, 0.1, seed=0)]
    assert a == b and [len(t) for t in a] == [35, 10, 5] and sorted(sum(a, [])) == list(range(50))


def test_registry_lists_every_preset_dataset():
    from liquid_s4.data.registry import build_dataset, dataset_names
    from liquid_s4.train.config import load_config, preset_names

    assert {load_config(p).data.name for p in preset_names()} <= set(dataset_names())
    with pytest.raises(ValueError, match=r"unknown data.name 'nope'; available: \['aan'"):
        build_dataset(types.SimpleNamespace(name="nope"))
    with pytest.raises(ValueError, match=r"unknown data.name 'nope'"):
        load_config(None, ["data.name=nope"])


def test_collate_gives_batches_with_named_fields():
    """Every item form becomes a Batch whose absent fields are None."""
    from torch.utils.data import DataLoader

    from liquid_s4.data.common import Batch, collate

    x, y, n = np.zeros((4, 5, 2), np.float32), np.arange(4), np.array([5, 4, 3, 2])
    forms = {
        "fixed": ArrayDataset(x, y),
        "padded": ArrayDataset(x, y, lengths=n),
        "pairs": ArrayDataset(x, y, lengths=n, x2=x + 1, lengths2=n - 1),
    }
    for name, ds in forms.items():
        batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
        assert type(batch) is Batch, name
        assert batch.x.shape == (3, 5, 2) and batch.y.tolist() == [0, 1, 2]
        assert (batch.lengths is None) == (name == "fixed")
        assert (batch.x2 is None) == (batch.lengths2 is None) == (name != "pairs")
    assert batch.lengths.tolist() == [5, 4, 3] and batch.lengths2.tolist() == [4, 3, 2]
    assert torch.equal(batch.x2, batch.x + 1)
    assert batch.dt is None


def test_items_with_time_gaps_are_dicts_and_collate_to_batch_dt():
    from torch.utils.data import DataLoader

    from liquid_s4.data.common import Batch, collate

    x, y, n = np.zeros((4, 5, 2), np.float32), np.arange(4), np.array([5, 4, 3, 2])
    dt = np.linspace(0.5, 2.0, 20).reshape(4, 5)  # float64: items give float32
    for lengths in (None, n):
        ds = ArrayDataset(x, y, lengths=lengths, dt=dt)
        item = ds[1]
        assert set(item) == ({"x", "y", "dt"} if lengths is None else {"x", "y", "lengths", "dt"})
        assert item["dt"].dtype == torch.float32 and torch.allclose(item["dt"], torch.tensor(dt[1]).float())
        batch = next(iter(DataLoader(ds.subset([3, 1]), batch_size=2, collate_fn=collate)))
        assert type(batch) is Batch and batch.dt.shape == (2, 5) and batch.y.tolist() == [3, 1]
        assert torch.allclose(batch.dt, torch.tensor(dt[[3, 1]]).float())
        assert (batch.lengths is None) == (lengths is None) and batch.x2 is None
    pairs = ArrayDataset(x, y, lengths=n, x2=x + 1, lengths2=n, dt=dt)
    assert set(pairs[0]) == {"x", "y", "lengths", "x2", "lengths2", "dt"}
    with pytest.raises(ValueError, match=r"dt must be \(n, L\) with L = 5 steps like x, got \(4, 3\)"):
        ArrayDataset(x, y, dt=dt[:, :3])
    with pytest.raises(ValueError, match="dt has 3 rows, x has 4"):
        ArrayDataset(x, y, dt=dt[:3])
    with pytest.raises(ValueError, match="dict items need the keys x and y"):
        collate([{"x": torch.zeros(2), "dt": torch.ones(2)}])
    with pytest.raises(ValueError, match="same keys"):
        collate(
            [
                {"x": torch.zeros(2), "y": torch.zeros(())},
                {"x": torch.zeros(2), "y": torch.zeros(()), "dt": 1},
            ]
        )
    data = SequenceData(ArrayDataset(x, y, lengths=n, dt=dt), None, None, DataInfo(2, 4))
    assert "(padded; lengths kept) (with per-step time gaps dt)" in data.summary()


def test_token_dtype_is_the_smallest_that_holds_the_ids():
    from liquid_s4.data.common import token_dtype

    assert [token_dtype(v) for v in (2, 256, 257, 32768, 32769, 2**31 - 1, 2**31)] == [
        np.uint8,
        np.uint8,
        np.int16,
        np.int16,
        np.int32,
        np.int32,
        np.int64,
    ]
