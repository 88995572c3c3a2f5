"""CIFAR-10 reader (sCIFAR RGB and LRA Image grayscale) on tiny pickles written in the official format."""

import os
import pickle
import types

import numpy as np
import pytest
import torch
from PIL import Image

from liquid_s4.data import cifar
from liquid_s4.data.common import CACHE_DIR, DataError
from liquid_s4.data.registry import build_dataset

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def dump_official(path, obj):
    """Pickle like the official (Python 2, numpy < 2) files: protocol 2, numpy referred to as numpy.core."""
    raw = pickle.dumps(obj, protocol=2).replace(b"numpy._core", b"numpy.core")
    with open(path, "wb") as f:
        f.write(raw)


def write_cifar(root, per_batch=6, n_test=4, meta=True, seed=0):
    """cifar-10-batches-py/ under root with 5 training batches and a test batch; returns the arrays
    written."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, :1024] //= 1 + i  # batches differ in their red statistics
        labels = [int(v) for v in rng.integers(0, 10, n)]
        dump_official(
            os.path.join(folder, name),
            {
                b"batch_label": name.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{j}.png".encode() for j in range(n)],
            },
        )
        written[name] = (data, np.array(labels))
    if meta:
        dump_official(
            os.path.join(folder, "batches.meta"),
            {
                b"num_cases_per_batch": per_batch,
                b"label_names": [n.encode() for n in NAMES],
                b"num_vis": 3072,
            },
        )
    return folder, written


def spec(data_dir, val_fraction=0.2, **options):
    return types.SimpleNamespace(
        name="cifar",
        data_dir=None if data_dir is None else str(data_dir),
        val_fraction=val_fraction,
        test_fraction=0.3,
        options=options,
    )


def train_arrays(written):
    data = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{k}"][1] for k in range(1, 6)])
    return data, labels


def unstandardize(ds, i):
    t = ds.transform
    x = ds[i][0]
    return torch.round((x * t.std + t.mean) / t.scale).numpy().astype(np.int64)


def test_rgb_round_trip_official_splits(tmp_path):
    folder, written = write_cifar(tmp_path)
    d = build_dataset(spec(folder))
    assert d.sizes() == {
        "train": 24,
        "val": 6,
        "test": 4,
    }  # 30 official training images, val 0.2; test_fraction unused
    assert d.official == {"train": 50000, "test": 10000}
    assert d.info.d_input == 3 and d.info.d_output == 10 and d.info.vocab_size is None
    assert d.info.extra["classes"] == NAMES
    assert d.info.description == "sCIFAR (RGB): 1024-step pixel sequences, 3 channels, 24/6/4"
    data, labels = train_arrays(written)
    index = np.concatenate([d.train.index, d.val.index])
    assert sorted(index.tolist()) == list(range(30))  # train and val partition the official training set
    for ds in (d.train, d.val):
        for i in range(len(ds)):
            j = ds.index[i]
            x, y = ds[i]
            assert (
                x.dtype == torch.float32 and x.shape == (1024, 3) and y.dtype == torch.int64 and y.shape == ()
            )
            assert int(y) == labels[j]
            assert np.array_equal(
                unstandardize(ds, i), data[j].reshape(3, 1024).T
            )  # pixel k, channel c = data[c * 1024 + k]
    test_data, test_labels = written["test_batch"]
    assert [int(d.test[i][1]) for i in range(4)] == test_labels.tolist()
    assert np.array_equal(unstandardize(d.test, 2), test_data[2].reshape(3, 1024).T)
    # the pixel at row 1, column 2 of image 0, green channel, is sequence step 34
    assert unstandardize(d.test, 0)[1 * 32 + 2, 1] == test_data[0][1024 + 1 * 32 + 2]


def test_standardized_with_training_statistics_only(tmp_path):
    folder, written = write_cifar(tmp_path)
    d = cifar.build_cifar(spec(folder))
    data, _ = train_arrays(written)
    rgb = data.reshape(-1, 3, 1024).astype(np.float64) / 255
    train = rgb[np.asarray(d.train.index)]
    mean, std = train.mean(axis=(0, 2)), train.std(axis=(0, 2))
    assert np.allclose(d.train.transform.mean.numpy(), mean, atol=1e-6)
    assert np.allclose(d.train.transform.std.numpy(), std, atol=1e-6)
    assert not np.allclose(rgb.mean(axis=(0, 2)), mean, atol=1e-4)  # including validation would differ
    assert d.val.transform is d.train.transform and d.test.transform is d.train.transform
    xs = torch.stack([d.train[i][0] for i in range(len(d.train))])  # (n, L, 3)
    assert torch.allclose(xs.mean(dim=(0, 1)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(xs.std(dim=(0, 1), unbiased=False), torch.ones(3), atol=1e-4)
    assert np.allclose(d.info.extra["pixel_mean"], mean * 255, atol=1e-4)


def test_grayscale_matches_pillow_luminance(tmp_path):
    folder, written = write_cifar(tmp_path)
    d = cifar.build_cifar(spec(folder, grayscale=True))
    assert d.info.d_input == 1 and d.info.description.startswith(
        "LRA Image (grayscale CIFAR-10): 1024-step pixel sequences, 1 channel,"
    )
    data, labels = train_arrays(written)
    gray = np.stack(
        [np.asarray(Image.fromarray(img.reshape(3, 32, 32).transpose(1, 2, 0)).convert("L")) for img in data]
    )
    for i in range(len(d.train)):
        j = d.train.index[i]
        x, y = d.train[i]
        assert x.shape == (1024, 1) and int(y) == labels[j]
        assert np.array_equal(unstandardize(d.train, i)[:, 0], gray[j].reshape(-1))
    train = gray[np.asarray(d.train.index)].astype(np.float64) / 255
    assert np.allclose(d.train.transform.mean.numpy(), [train.mean()], atol=1e-6)
    assert np.allclose(d.train.transform.std.numpy(), [train.std()], atol=1e-6)


def test_folder_lookup_and_deterministic_split(tmp_path, monkeypatch):
    folder, _ = write_cifar(tmp_path, meta=False)
    a = cifar.build_cifar(spec(tmp_path))  # a folder holding cifar-10-batches-py/
    assert "classes" not in a.info.extra  # batches.meta is optional
    monkeypatch.setenv("LIQUID_S4_DATA", str(tmp_path))
    b = cifar.build_cifar(spec(None, val_fraction=0.2))  # default: $LIQUID_S4_DATA/cifar-10-batches-py
    c = cifar.build_cifar(spec(None, val_fraction=0.5))
    assert np.array_equal(a.train.index, b.train.index) and np.array_equal(a.val.index, b.val.index)
    assert c.sizes() == {"train": 15, "val": 15, "test": 4}
    assert torch.equal(a.train[3][0], b.train[3][0])


def test_cache_reused_and_invalidated(tmp_path, monkeypatch):
    folder, written = write_cifar(tmp_path)
    calls = []
    real = cifar.load_cifar
    monkeypatch.setattr(cifar, "load_cifar", lambda *a: calls.append(a) or real(*a))
    first = cifar.build_cifar(spec(folder))
    assert len(calls) == 1 and any(
        e.startswith("cifar10-rgb-") for e in os.listdir(os.path.join(folder, CACHE_DIR))
    )
    second = cifar.build_cifar(spec(folder))
    assert len(calls) == 1  # read from the cache
    assert (
        isinstance(second.train.x, np.memmap)
        and second.train.x.dtype == np.uint8
        and second.train.x.shape == (30, 1024, 3)
    )
    assert torch.equal(first.test[1][0], second.test[1][0])
    cifar.build_cifar(spec(folder, grayscale=True))  # other options: another cache entry
    assert len(calls) == 2
    cifar.build_cifar(spec(folder))
    assert len(calls) == 2  # the RGB entry is still there
    data, labels = written["test_batch"]
    data = data.copy()
    data[1] = 255 - data[1]
    dump_official(os.path.join(folder, "test_batch"), {b"labels": [9, 9, 9, 9], b"data": data})
    st = os.stat(os.path.join(folder, "test_batch"))
    os.utime(os.path.join(folder, "test_batch"), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = cifar.build_cifar(spec(folder))
    assert len(calls) == 3  # a changed source file rebuilds
    assert [int(third.test[i][1]) for i in range(4)] == [9, 9, 9, 9]
    assert np.array_equal(unstandardize(third.test, 1), data[1].reshape(3, 1024).T)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"CIFAR-10 folder not found(.|\n)*data_batch_1(.|\n)*cifar-10-python\.tar\.gz",
    ):
        cifar.build_cifar(spec(tmp_path / "nowhere"))
    folder, _ = write_cifar(tmp_path)
    os.remove(os.path.join(folder, "data_batch_3"))
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 file 'data_batch_3' not found at .*data_batch_3"):
        cifar.build_cifar(spec(folder))


def corrupt(folder, name, content):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(content)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("data_batch_2", "truncated", r"data_batch_2: cannot unpickle .*truncated or corrupt"),
        ("test_batch", b"this is not a pickle", r"test_batch: cannot unpickle"),
        (
            "data_batch_4",
            {b"data": np.zeros((6, 1024), np.uint8), b"labels": [0] * 6},
            r"data_batch_4: b'data' .*\(6, 1024\).*expected \(n, 3072\) uint8",
        ),
        (
            "data_batch_1",
            {b"data": np.zeros((6, 3072), np.float32), b"labels": [0] * 6},
            r"data_batch_1: b'data' .*float32, expected",
        ),
        (
            "data_batch_5",
            {b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 5},
            r"data_batch_5: 6 images but b'labels' has shape \(5,\)",
        ),
        (
            "data_batch_5",
            {b"data": np.zeros((6, 3072), np.uint8), b"labels": [0, 1, 2, 3, 4, 10]},
            r"data_batch_5: labels must be in 0..9",
        ),
        (
            "data_batch_5",
            {b"data": np.zeros((6, 3072), np.uint8), b"labels": ["a"] * 6},
            r"data_batch_5: b'labels' is not a list of integers",
        ),
        ("data_batch_3", [1, 2, 3], r"data_batch_3: expected a dict with b'data' and b'labels', got list"),
        ("data_batch_3", {b"data": os.system}, r"data_batch_3: cannot unpickle .*unexpected object .*system"),
        (
            "batches.meta",
            {b"label_names": [b"cat"]},
            r"batches.meta: expected b'label_names' with 10 class names",
        ),
        ("batches.meta", "truncated", r"batches.meta: cannot unpickle"),
    ],
)
def test_corrupt_files(tmp_path, monkeypatch, name, content, message):
    monkeypatch.setenv("LIQUID_S4_NO_CACHE", "1")
    folder, _ = write_cifar(tmp_path)
    if content == "truncated":
        with open(os.path.join(folder, name), "rb") as f:
            content = f.read()[:-40]
    elif not isinstance(content, bytes):
        content = pickle.dumps(content, protocol=2)
    corrupt(folder, name, content)
    with pytest.raises(DataError, match=message):
        cifar.build_cifar(spec(folder))


def test_options_checked(tmp_path):
    folder, _ = write_cifar(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"unknown data.options \['greyscale'\] for dataset 'cifar'; valid options: grayscale",
    ):
        cifar.build_cifar(spec(folder, greyscale=True))
    with pytest.raises(ValueError, match="grayscale must be true or false, got 'yes'"):
        cifar.build_cifar(spec(folder, grayscale="yes"))
    with pytest.raises(ValueError, match="training split is empty"):
        cifar.build_cifar(spec(folder, val_fraction=1.0))
