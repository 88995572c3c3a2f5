"""CIFAR-10 as pixel sequences: sequential CIFAR (RGB, 3 channels) and the LRA Image task (grayscale).

Expected layout (the python version of CIFAR-10, https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz):

    cifar-10-batches-py/
        data_batch_1 ... data_batch_5    pickles {b"data": (10000, 3072) uint8, b"labels": [int] * 10000}
        test_batch                       the same, the official test set
        batches.meta                     {b"label_names": [...]} (optional here: only the class names)

`data_dir` is that folder or a folder holding it (default $LIQUID_S4_DATA/cifar-10-batches-py). Each
row of b"data" is 1024 red, 1024 green then 1024 blue values of a 32x32 image in row-major order.
The pickles are read with a restricted unpickler (numpy arrays and plain Python values only).

Preprocessing: an image becomes its 1024 pixels row by row, x (1024, 3) for RGB, or (1024, 1) with
`grayscale: true` (LRA Image), luminance L = 0.299 R + 0.587 G + 0.114 B rounded to an integer
exactly as Pillow's convert("L") does it. Pixels are cached as uint8 and standardized per item
with the per-channel mean/std of the training split (on the 0..1 scale).

Splits: the official test_batch is the test set; validation is carved from the 50000 official
training images with `split_indices(50000, val_fraction, 0, seed=0)` (test_fraction is not used).
`official` reports {"train": 50000, "test": 10000}, where train is train + validation before that split.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from .common import (
    ArrayDataset,
    DataError,
    DataInfo,
    SequenceData,
    Standardize,
    cached,
    data_root,
    missing,
    split_indices,
    take_options,
)

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
SOURCE = (
    "It is the python version of CIFAR-10: https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract "
    "it)."
)
LAYOUT = (
    f"    {FOLDER}/\n        {' '.join(TRAIN_FILES)}\n        {TEST_FILE}\n        {META_FILE} (optional)"
)
DEFAULTS = {"grayscale": False}
SIDE = 32
PIXELS = SIDE * SIDE  # sequence length

# numpy moved numpy.core to numpy._core in 2.0; pickles name whichever wrote them
_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
_ALLOWED = {
    (f"{_CORE}.multiarray", "_reconstruct"),
    (f"{_CORE}.multiarray", "scalar"),
    (f"{_CORE}.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/strings/numbers and numpy arrays, nothing that could run other code."""

    def find_class(self, module, name):
        for old in ("numpy._core", "numpy.core"):
            if module == old or module.startswith(old + "."):
                module = _CORE + module[len(old) :]
                break
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"unexpected object {module}.{name} (only numpy arrays and plain values are read)"
            )
        return super().find_class(module, name)


def read_pickle(path: str):
    """The object in one CIFAR pickle (bytes keys kept as bytes, as in the official files)."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except (
        Exception
    ) as e:  # pickle raises many types on corrupt input (UnpicklingError, EOFError, ValueError, ...)
        raise DataError(
            f"{path}: cannot unpickle ({type(e).__name__}: {e}); the file may be truncated or corrupt"
        ) from e


def _get(d: dict, key: str):
    return d.get(
        key.encode(), d.get(key)
    )  # official files have bytes keys; accept str keys of re-pickled copies


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images (n, 3072) uint8 (R, G, B planes) and labels (n,) int64 in 0..9."""
    d = read_pickle(path)
    if not isinstance(d, dict) or _get(d, "data") is None or _get(d, "labels") is None:
        raise DataError(f"{path}: expected a dict with b'data' and b'labels', got {type(d).__name__}")
    data = _get(d, "data")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * PIXELS
    ):
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{path}: b'data' is {type(data).__name__} {shape} {getattr(data, 'dtype', '')}, expected (n, "
            "3072) uint8"
        )
    try:
        labels = np.asarray(_get(d, "labels"), dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: b'labels' is not a list of integers ({e})") from e
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but b'labels' has shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    return data, labels


def to_sequences(data: np.ndarray, grayscale: bool) -> np.ndarray:
    """(n, 3072) R/G/B planes -> (n, 1024, 3) pixels row by row, or (n, 1024, 1) luminance."""
    x = data.reshape(len(data), 3, PIXELS).transpose(0, 2, 1)  # (n, L, 3)
    if not grayscale:
        return np.ascontiguousarray(x)
    rgb = x.astype(np.uint32)
    gray = (
        rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
    ) >> 16  # Pillow's ITU-R 601-2 "L"
    return gray.astype(np.uint8)[..., None]  # (n, L, 1)


def pixel_moments(x: np.ndarray, rows: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Per-image, per-channel sums and sums of squares of uint8 pixels x (n, L, C): two (n, C) int64
    arrays (exact), from which `standardizer` gets the statistics of any split without rereading x."""
    n, length, channels = x.shape
    total, squares = np.zeros((n, channels), np.int64), np.zeros((n, channels), np.int64)
    step = max(1, rows // (length * channels))
    for i in range(0, n, step):
        block = np.asarray(x[i : i + step], dtype=np.int64)  # (b, L, C)
        total[i : i + step] = block.sum(axis=1)
        squares[i : i + step] = (block * block).sum(axis=1)
    return total, squares


def standardizer(total: np.ndarray, squares: np.ndarray, length: int, index) -> Standardize:
    """Standardize pixels/255 with the per-channel mean and std of the rows `index` (the training split)."""
    index = np.asarray(index, dtype=np.int64)
    if len(index) == 0:
        raise ValueError("the training split is empty: lower data.val_fraction / data.test_fraction")
    count = len(index) * length
    mean = total[index].sum(axis=0) / count
    var = np.maximum(squares[index].sum(axis=0) / count - mean**2, 0.0)
    std = np.where(var > 0, np.sqrt(var), 1.0)
    return Standardize(mean / 255.0, std / 255.0, scale=1.0 / 255.0)


def find_cifar(data_dir: str | None) -> str:
    root = data_root(data_dir, FOLDER)
    if os.path.isdir(os.path.join(root, FOLDER)):
        root = os.path.join(root, FOLDER)
    if not os.path.isdir(root):
        raise missing("CIFAR-10 folder", root, LAYOUT, SOURCE)
    for name in (*TRAIN_FILES, TEST_FILE):
        if not os.path.isfile(os.path.join(root, name)):
            raise missing(f"CIFAR-10 file {name!r}", os.path.join(root, name), LAYOUT, SOURCE)
    return root


def load_cifar(root: str, grayscale: bool) -> dict[str, np.ndarray]:
    """Read the six batches: train_x (50000, 1024, C) uint8, train_y, test_x, test_y, and the train
    pixel moments (see `pixel_moments`)."""
    train = [read_batch(os.path.join(root, name)) for name in TRAIN_FILES]
    test_data, test_y = read_batch(os.path.join(root, TEST_FILE))
    train_x = to_sequences(np.concatenate([d for d, _ in train]), grayscale)  # (n, L, C)
    total, squares = pixel_moments(train_x)
    return {
        "train_x": train_x,
        "train_y": np.concatenate([y for _, y in train]),
        "test_x": to_sequences(test_data, grayscale),
        "test_y": test_y,
        "train_sum": total,
        "train_sumsq": squares,
    }


def class_names(root: str) -> list[str] | None:
    path = os.path.join(root, META_FILE)
    if not os.path.isfile(path):
        return None
    meta = read_pickle(path)
    names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{path}: expected b'label_names' with 10 class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def build_cifar(spec) -> SequenceData:
    """sCIFAR (RGB) or LRA Image (`grayscale: true`) from the official python pickles."""
    opts = take_options(spec.options, DEFAULTS, "cifar")
    grayscale = opts["grayscale"]
    if not isinstance(grayscale, bool):
        raise ValueError(f"data.options.grayscale must be true or false, got {grayscale!r}")
    root = find_cifar(spec.data_dir)
    sources = [os.path.join(root, name) for name in (*TRAIN_FILES, TEST_FILE)]
    mode = "gray" if grayscale else "rgb"
    a = cached(root, f"cifar10-{mode}", sources, opts, lambda: load_cifar(root, grayscale))
    train_idx, val_idx, _ = split_indices(len(a["train_x"]), spec.val_fraction, 0.0, seed=0)
    transform = standardizer(a["train_sum"], a["train_sumsq"], PIXELS, train_idx)
    train = ArrayDataset(a["train_x"], a["train_y"], index=train_idx, transform=transform)
    val = ArrayDataset(a["train_x"], a["train_y"], index=val_idx, transform=transform)
    test = ArrayDataset(a["test_x"], a["test_y"], transform=transform)
    channels = a["train_x"].shape[-1]
    name = "LRA Image (grayscale CIFAR-10)" if grayscale else "sCIFAR (RGB)"
    sizes = f"{channels} channel{'s' * (channels > 1)}, {len(train)}/{len(val)}/{len(test)}"
    extra = {"pixel_mean": (transform.mean * 255).tolist(), "pixel_std": (transform.std * 255).tolist()}
    names = class_names(root)
    if names:
        extra["classes"] = names
    description = f"{name}: {PIXELS}-step pixel sequences, {sizes}"
    info = DataInfo(
        d_input=channels, d_output=10, task="classification", description=description, extra=extra
    )
    return SequenceData(train, val, test, info, official={"train": 50000, "test": 10000})
