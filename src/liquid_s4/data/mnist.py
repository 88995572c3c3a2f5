"""MNIST in its official IDX format (gzipped or not).

Expected layout of the data directory (the four files of http://yann.lecun.com/exdb/mnist/):

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch

from .common import (
    ArrayDataset,
    DataError,
    DataInfo,
    SequenceData,
    Standardize,
    channel_stats,
    data_root,
    missing,
    split_indices,
    take_options,
)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SOURCE = "Get the four files from http://yann.lecun.com/exdb/mnist/ (or any mirror)."
LAYOUT = "\n".join(f"    {f}[.gz]" for f in FILES.values())
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (magic 0x0000 TT DD, DD big-endian int32 dims, then the data)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); the file may be truncated or corrupt") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() if raw else 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: expected {expected} data bytes for shape {tuple(dims)}, found {len(raw) - header} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(root: str, name: str) -> str:
    for candidate in (os.path.join(root, name), os.path.join(root, name + ".gz")):
        if os.path.isfile(candidate):
            return candidate
    raise missing(f"MNIST file {name}[.gz]", root, LAYOUT, SOURCE)


def load_mnist(root: str) -> dict[str, torch.Tensor]:
    """{'train_x': (60000, 28, 28) uint8, 'train_y': (60000,), 'test_x', 'test_y'} from the IDX files."""
    if not os.path.isdir(root):
        raise missing("MNIST directory", root, LAYOUT, SOURCE)
    arrays = {key: read_idx(_find(root, name)) for key, name in FILES.items()}
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"MNIST {split}: images {x.shape} and labels {y.shape} do not match (expected (n, 28, 28) "
                "and (n,))"
            )
        out[f"{split}_x"] = torch.from_numpy(x.copy())
        out[f"{split}_y"] = torch.from_numpy(y.astype(np.int64))
    return out


def _build(spec, permute: bool) -> SequenceData:
    """Sequential MNIST: 784-step pixel sequences (row by row), standardized with the training split's
    statistics; psMNIST applies one fixed random permutation (seed 0) to the pixel order. The
    validation set is `val_fraction` of the official training set; the test set is the official one."""
    name = "psmnist" if permute else "smnist"
    take_options(spec.options, {}, name)
    d = load_mnist(data_root(spec.data_dir, "mnist"))
    x_tr, x_te = (d[k].flatten(1).numpy()[..., None] for k in ("train_x", "test_x"))  # (n, 784, 1) uint8
    if permute:
        perm = torch.randperm(784, generator=torch.Generator().manual_seed(0)).numpy()
        x_tr, x_te = x_tr[:, perm], x_te[:, perm]
    tr, va, _ = (i.numpy() for i in split_indices(len(x_tr), spec.val_fraction, 0.0, seed=0))
    mean, std = channel_stats(x_tr, tr)  # (1,) each, in pixel values 0..255
    norm = Standardize(mean / 255.0, std / 255.0, scale=1 / 255.0)
    train = ArrayDataset(x_tr, d["train_y"].numpy(), transform=norm)
    test = ArrayDataset(x_te, d["test_y"].numpy(), transform=norm)
    info = DataInfo(
        d_input=1,
        d_output=10,
        description=f"{'psMNIST' if permute else 'sMNIST'}: 784-step pixel sequences, "
        f"{len(tr)}/{len(va)}/{len(test)}",
    )
    return SequenceData(
        train.subset(tr),
        train.subset(va) if len(va) else None,
        test,
        info,
        official={"train": 60000, "test": 10000},
    )


def build_smnist(spec) -> SequenceData:
    return _build(spec, permute=False)


def build_psmnist(spec) -> SequenceData:
    return _build(spec, permute=True)
