"""MNIST IDX reader and the smnist/psmnist presets on fixture files written in the official format."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from liquid_s4.data import DataError, load_mnist, read_idx
from liquid_s4.train.config import load_config
from liquid_s4.train.data import build_datamodule


def write_idx(path, array: np.ndarray, gz: bool):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    data = header + array.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def write_mnist(root, n_train=40, n_test=12, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        write_idx(os.path.join(root, name), a, gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_read_official_layout(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    d = load_mnist(str(tmp_path))
    assert d["train_x"].shape == (40, 28, 28) and d["test_y"].shape == (12,)
    assert np.array_equal(d["train_x"].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(d["test_y"].numpy(), arrays["t10k-labels-idx1-ubyte"])
    wide = np.arange(6, dtype=">i4").reshape(2, 3)
    write_idx(tmp_path / "wide", wide, gz=False)
    assert np.array_equal(read_idx(str(tmp_path / "wide")), wide)


def test_errors_name_the_file_and_the_layout(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="(?s)MNIST directory not found.*Expected layout:.*train-images-idx3-ubyte"
    ):
        load_mnist(str(tmp_path / "nowhere"))
    write_mnist(tmp_path, gz=False)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*not found"):
        load_mnist(str(tmp_path))
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: expected 31360 data bytes.*truncated"):
        load_mnist(str(tmp_path))
    path.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        load_mnist(str(tmp_path))
    write_mnist(tmp_path / "gz", gz=True)
    gzpath = tmp_path / "gz" / "t10k-images-idx3-ubyte.gz"
    gzpath.write_bytes(gzpath.read_bytes()[:50])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_mnist(str(tmp_path / "gz"))


@pytest.mark.parametrize("name", ["smnist", "psmnist"])
def test_presets_load_and_train_on_fixtures(tmp_path, name):
    arrays = write_mnist(tmp_path / "mnist")
    tiny = [
        f"data.data_dir={tmp_path / 'mnist'}",
        "data.val_fraction=0.25",
        "data.batch_size=8",
        "model.d_model=8",
        "model.n_layers=1",
        "model.layer_args.d_state=4",
        "trainer.max_steps=2",
        "trainer.progress=false",
    ]
    cfg = load_config(name, tiny)
    dm = build_datamodule(cfg.data)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 12)
    x, y = dm.test_set[0]
    assert x.shape == (784, 1) and int(y) == arrays["t10k-labels-idx1-ubyte"][0]
    raw = torch.tensor(arrays["t10k-images-idx3-ubyte"][0].reshape(-1), dtype=torch.float32)
    order = torch.argsort(x[:, 0])  # standardization is monotone: the pixel order is recoverable
    if name == "smnist":
        assert (
            torch.equal(raw[order], raw.sort().values)
            and torch.corrcoef(torch.stack([x[:, 0], raw]))[0, 1] > 0.999
        )
    else:
        assert torch.corrcoef(torch.stack([x[:, 0], raw]))[0, 1] < 0.5  # a fixed permutation was applied
    from liquid_s4.train.run import train

    metrics = train(cfg, output_dir=str(tmp_path / "run"), quiet=True)
    assert metrics["global_step"] == 2 and 0 <= metrics["test/acc"] <= 1


def test_missing_data_dir_message_from_cli(tmp_path, capsys, monkeypatch):
    from liquid_s4.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "smnist", "--data-dir", str(tmp_path / "none"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Expected layout" in err and "yann.lecun.com" in err
    assert not os.path.exists(tmp_path / "runs")  # no empty run directory left behind
