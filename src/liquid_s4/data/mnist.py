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

from .common import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
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
        raise DataError(f"{path}: expected {expected} data bytes for shape {tuple(dims)}, found {len(raw) - header} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(root: str, name: str) -> str:
    for candidate in (os.path.join(root, name), os.path.join(root, name + ".gz")):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"MNIST file {name}[.gz] not found in {root!r}. Expected layout:\n{LAYOUT}\n"
        "Get the four files from http://yann.lecun.com/exdb/mnist/ (or any mirror) and pass --data-dir, "
        "or set LIQUID_S4_DATA to a folder holding mnist/."
    )


def load_mnist(root: str) -> dict[str, torch.Tensor]:
    """{'train_x': (60000, 28, 28) uint8, 'train_y': (60000,), 'test_x', 'test_y'} from the IDX files."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"MNIST directory {root!r} does not exist. Expected layout:\n{LAYOUT}\n"
                                "Get the files from http://yann.lecun.com/exdb/mnist/ and pass --data-dir.")  # fmt: skip
    arrays = {key: read_idx(_find(root, name)) for key, name in FILES.items()}
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"MNIST {split}: images {x.shape} and labels {y.shape} do not match (expected (n, 28, 28) and (n,))")
        out[f"{split}_x"] = torch.from_numpy(x.copy())
        out[f"{split}_y"] = torch.from_numpy(y.astype(np.int64))
    return out
