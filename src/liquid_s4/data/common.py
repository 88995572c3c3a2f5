"""Shared pieces of the dataset readers: errors, where data lives, the on-disk cache, compact
datasets, deterministic splits and option checking.

Every dataset is built by a function `build(spec) -> SequenceData` (see `data/registry.py`), where
`spec` has the fields of `train.config.DataConfig`: name, data_dir, val_fraction, test_fraction,
options (a dict of dataset-specific options, checked with `take_options`).

Items are tuples, in this order:
    (x, y)                          fixed-length sequences
    (x, y, lengths)                 right-padded sequences with their valid lengths
    (x, y, lengths, x2, lengths2)   two-sequence tasks (the retrieval head)
or dicts keyed by `Batch` field names (x and y, plus any of lengths, x2, lengths2, dt), the form of
items that carry per-step time gaps dt (L,) (irregularly sampled sequences). `collate` stacks them
into a `Batch`, whose fields are read by name (absent ones are None).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..fileio import atomic_directory

ENV_VAR = "LIQUID_S4_DATA"
NO_CACHE_ENV = "LIQUID_S4_NO_CACHE"
CACHE_DIR = ".liquid_s4_cache"
IGNORE_INDEX = -100  # per-step classification targets that are not scored


class DataError(ValueError):
    """A dataset file is missing, truncated or not in the expected format."""


def data_root(data_dir: str | None, name: str) -> str:
    """The directory of dataset `name`: data_dir if given, else $LIQUID_S4_DATA/name, else ./data/name."""
    if data_dir:
        return data_dir
    return os.path.join(os.environ.get(ENV_VAR, "data"), name)


def missing(what: str, path: str, layout: str, source: str) -> FileNotFoundError:
    """The error for a dataset that is not where it is expected: the expected layout and where to get it."""
    return FileNotFoundError(
        f"{what} not found at {path!r}. Expected layout:\n{layout}\n{source}\nPass the folder with "
        f"--data-dir (data.data_dir), or set ${ENV_VAR} to a folder holding it."
    )


# ---- dataset options --------------------------------------------------------------------------


def take_options(options: dict[str, Any] | None, defaults: dict[str, Any], dataset: str) -> dict[str, Any]:
    """`defaults` updated with `options`; unknown keys raise an error listing the valid ones."""
    options = dict(options or {})
    bad = sorted(set(options) - set(defaults))
    if bad:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in defaults.items()) or "none"
        raise ValueError(f"unknown data.options {bad} for dataset {dataset!r}; valid options: {valid}")
    return {**defaults, **options}


def int_option(value, name: str, low: int = 1, high: int | None = None) -> int:
    """`value` as an int in [low, high] (a Python or numpy integer, not a bool), else a ValueError
    "`name` must be an integer >= low [and <= high], got value"."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Integral)
        or value < low
        or (high is not None and value > high)
    ):
        expected = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def choose(value, allowed: Iterable, name: str):
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


# ---- items and batches ------------------------------------------------------------------------


class Batch(NamedTuple):
    """A batch as the model reads it: inputs x and targets y; lengths (B,), the valid lengths of
    right-padded sequences; x2 and lengths2, the second sequence of two-sequence tasks (the
    retrieval head); dt (B, L) float32, the per-step time gaps of irregularly sampled sequences
    (the time since the previous sample in units of the nominal step, passed to the model as its
    per-step `rate`). Fields a dataset does not have are None."""

    x: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor | None = None
    x2: torch.Tensor | None = None
    lengths2: torch.Tensor | None = None
    dt: torch.Tensor | None = None


def collate(items: list[tuple | dict]) -> Batch:
    """The DataLoader's collate_fn: items (x, y), (x, y, lengths) or (x, y, lengths, x2, lengths2),
    or dicts keyed by `Batch` field names (every item with the same keys), stacked field by field
    (torch's default_collate, which also uses shared memory in workers)."""
    if items and isinstance(items[0], dict):
        keys = set(items[0])
        if not {"x", "y"} <= keys or not keys <= set(Batch._fields):
            raise ValueError(
                f"collate: dict items need the keys x and y and may have {list(Batch._fields[2:])}, got "
                f"{sorted(keys)}"
            )
        if any(set(item) != keys for item in items):
            raise ValueError("collate: every dict item of a batch must have the same keys")
        return Batch(**default_collate(items))
    return Batch(*default_collate(items))


def token_dtype(vocab_size: int):
    """The smallest numpy integer type that holds the token ids 0 .. vocab_size - 1 (compact storage;
    `tokens` widens them for the embedding)."""
    return (
        np.uint8
        if vocab_size <= 256
        else np.int16
        if vocab_size <= 32768
        else np.int32
        if vocab_size < 2**31
        else np.int64
    )


# ---- compact datasets -------------------------------------------------------------------------


class Standardize:
    """x -> (x - mean) / std as float32, per channel (mean/std broadcast against the item's last axis)."""

    def __init__(self, mean, std, scale: float = 1.0):
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        self.std = torch.as_tensor(np.asarray(std, dtype=np.float32))
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.scale - self.mean) / self.std


def tokens(x: torch.Tensor) -> torch.Tensor:
    """Integer token ids (stored compactly as uint8/int16/int32) as int64 for the embedding."""
    return x.long()


def _tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a)  # memory-mapped cache files are read-only; copy the (small) row
    return torch.from_numpy(a)


class ArrayDataset(Dataset):
    """Rows of compact arrays (numpy, possibly memory-mapped cache files, or tensors), converted per item.

    x: (n, L) or (n, L, C); y: (n,) labels/targets, or (n, L) per-step targets; lengths: (n,) valid
    lengths; x2/lengths2: the second sequence of two-sequence tasks; dt: (n, L) per-step time gaps
    (irregular sampling; items are then dicts keyed by `Batch` field names, with dt as float32).
    `index` selects rows (a split) without copying. `transform` maps one x row to the model's input
    (e.g. `Standardize`, `tokens`); `target_transform` does the same for y.
    """

    def __init__(
        self,
        x,
        y,
        lengths=None,
        x2=None,
        lengths2=None,
        index=None,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        dt=None,
    ):
        n = len(x)
        for name, a in (("y", y), ("lengths", lengths), ("x2", x2), ("lengths2", lengths2), ("dt", dt)):
            if a is not None and len(a) != n:
                raise ValueError(f"ArrayDataset: {name} has {len(a)} rows, x has {n}")
        if (x2 is None) != (lengths2 is None) or (x2 is not None and lengths is None):
            raise ValueError("ArrayDataset: two-sequence data needs lengths, x2 and lengths2")
        if dt is not None and (len(dt.shape) != 2 or dt.shape[1] != x.shape[1]):
            raise ValueError(
                f"ArrayDataset: dt must be (n, L) with L = {x.shape[1]} steps like x, got {tuple(dt.shape)}"
            )
        self.x, self.y, self.lengths, self.x2, self.lengths2 = x, y, lengths, x2, lengths2
        self.dt = dt
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.transform, self.target_transform = transform, target_transform

    def __len__(self) -> int:
        return len(self.x) if self.index is None else len(self.index)

    def __getitem__(self, i: int):
        j = int(i if self.index is None else self.index[i])
        x = _tensor(self.x[j])
        x = self.transform(x) if self.transform else x
        y = _tensor(self.y[j])
        y = self.target_transform(y) if self.target_transform else y
        if self.lengths is None:
            out = (x, y)
        else:
            out = (x, y, torch.as_tensor(int(self.lengths[j])))
            if self.x2 is not None:
                x2 = _tensor(self.x2[j])
                x2 = self.transform(x2) if self.transform else x2
                out = (*out, x2, torch.as_tensor(int(self.lengths2[j])))
        if self.dt is None:
            return out
        item = dict(zip(Batch._fields, out))
        item["dt"] = _tensor(self.dt[j]).float()
        return item

    def subset(self, index) -> ArrayDataset:
        base = np.arange(len(self.x)) if self.index is None else self.index
        return ArrayDataset(
            self.x,
            self.y,
            self.lengths,
            self.x2,
            self.lengths2,
            base[np.asarray(index, dtype=np.int64)],
            self.transform,
            self.target_transform,
            self.dt,
        )


@dataclass
class DataInfo:
    """What the model needs to know: input features (or vocabulary), outputs, the task."""

    d_input: int
    d_output: int
    task: str = "classification"  # or "regression"
    vocab_size: int | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. class names, target normalization


@dataclass
class SequenceData:
    """The splits of one dataset plus its `DataInfo`. `extra_tests` are further test sets reported
    beside the main one (e.g. Speech Commands resampled to 8 kHz), each with the model's `rate`.
    `official`: the split sizes of the official release, compared by `liquid-s4 data check`."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    info: DataInfo
    extra_tests: dict[str, tuple[Dataset, float]] = field(default_factory=dict)
    official: dict[str, int] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        out = {
            k: len(d) if d is not None else 0
            for k, d in (("train", self.train), ("val", self.val), ("test", self.test))
        }
        out.update({k: len(d) for k, (d, _) in self.extra_tests.items()})
        return out

    def summary(self) -> str:
        """Shapes, classes and split sizes, printed before training and by `liquid-s4 data check`."""
        i = self.info
        first = self.train[0]
        fields = first if isinstance(first, dict) else dict(zip(Batch._fields, first))
        x, y = fields["x"], fields["y"]
        shapes = f"x {tuple(x.shape)} {str(x.dtype).replace('torch.', '')}, y {tuple(y.shape)}"
        if "lengths" in fields:
            shapes += " (padded; lengths kept)"
        if "x2" in fields:
            shapes += " (pairs of sequences)"
        if "dt" in fields:
            shapes += " (with per-step time gaps dt)"
        inputs = f"tokens, vocabulary {i.vocab_size}" if i.vocab_size else f"{i.d_input} feature(s) per step"
        outputs = (
            f"{i.d_output} classes" if i.task == "classification" else f"{i.d_output} regression target(s)"
        )
        sizes = ", ".join(f"{k} {v}" for k, v in self.sizes().items())
        lines = [
            i.description,
            f"  input: {inputs}; output: {outputs}",
            f"  first training item: {shapes}",
            f"  splits: {sizes}",
        ]
        return "\n".join(line for line in lines if line)


# ---- statistics ------------------------------------------------------------------------------


def channel_stats(x, index, lengths=None, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of x (n, L, C) over the rows `index` (the training split), counting
    only steps < lengths when given; float64, two passes, a chunk of rows at a time (x may be a
    memory-mapped cache file). A constant channel gets std 1 (it is only centered)."""
    index = np.sort(np.asarray(index, dtype=np.int64))
    steps = np.arange(x.shape[1])

    def blocks():
        for s in range(0, len(index), chunk):
            rows = index[s : s + chunk]
            block = np.asarray(x[rows], dtype=np.float64)  # (b, L, C)
            if lengths is not None:
                block = block[steps < np.asarray(lengths)[rows][:, None]]  # (valid steps, C)
            yield block.reshape(-1, x.shape[-1])

    total, count = np.zeros(x.shape[-1]), 0
    for block in blocks():
        total += block.sum(0)
        count += len(block)
    mean = total / max(count, 1)
    sq = sum(((block - mean) ** 2).sum(0) for block in blocks())
    std = np.sqrt(sq / max(count, 1))
    return mean, np.where(std > 1e-8, std, 1.0)


# ---- deterministic splits ---------------------------------------------------------------------


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int = 0):
    """Deterministic train/val/test index split (a fixed permutation of range(n))."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


# ---- the cache next to the data ---------------------------------------------------------------


def list_files(paths: Iterable[str]) -> list[str]:
    """Files under `paths` (files, or folders walked recursively, skipping the cache), sorted."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            for d, dirs, files in os.walk(p):
                dirs[:] = sorted(x for x in dirs if x != CACHE_DIR)
                out.extend(os.path.join(d, f) for f in files)
        elif os.path.exists(p):
            out.append(p)
    return sorted(out)


def fingerprint(root: str, sources: Iterable[str], options: dict[str, Any], version: int) -> str:
    """A hash of the source files' relative paths, sizes and modification times, the options and the
    reader's format version: any change to the data or the preprocessing gives a new cache entry."""
    h = hashlib.sha256(
        json.dumps({"version": version, "options": options}, sort_keys=True, default=str).encode()
    )
    prefix = os.path.join(os.path.abspath(root), "")
    for path in list_files(os.path.abspath(p) for p in sources):
        st = os.stat(path)
        # the prefix cut, not os.path.relpath, which is slow over the many files of a dataset
        rel = path[len(prefix) :] if path.startswith(prefix) else path
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cached(
    root: str,
    key: str,
    sources: Iterable[str],
    options: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
    version: int = 1,
) -> dict[str, np.ndarray]:
    """Preprocessed arrays of dataset `key`, built once by `build()` and stored as .npy files in
    `root/.liquid_s4_cache/<key>-<fingerprint>/`; later calls memory-map them. The entry is written to a
    temporary folder and renamed into place (a crash leaves no half-written cache); stale entries of the
    same key are removed. Set $LIQUID_S4_NO_CACHE=1, or use a read-only data folder, to skip caching.

    manifest.json records each file's size and sha256, and every load checks both (reading each file
    once, which also brings it into the page cache the first epoch reads from): a
    damaged entry, or one written before the checksums existed, is rebuilt with a warning, never used."""
    sources = list(sources)
    fp = fingerprint(root, sources, options, version)
    base = os.path.join(root, CACHE_DIR)
    entry = os.path.join(base, f"{key}-{fp}")
    if os.path.isfile(os.path.join(entry, "manifest.json")):
        try:
            return _load_entry(entry)
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(
                f"the preprocessing cache {entry} is damaged or unreadable ({e}); rebuilding it", stacklevel=2
            )
    arrays = build()
    if os.environ.get(NO_CACHE_ENV):
        return arrays
    try:
        os.makedirs(base, exist_ok=True)
        with atomic_directory(entry, prefix=f".{key}-") as tmp:
            files = {}
            for n, a in arrays.items():
                path = os.path.join(tmp, f"{n}.npy")
                np.save(path, np.ascontiguousarray(a), allow_pickle=False)
                files[n] = {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}
            manifest = {"arrays": list(arrays), "key": key, "options": options, "version": version}
            with open(os.path.join(tmp, "manifest.json"), "w") as f:
                json.dump({**manifest, "files": files}, f, default=str)
        for old in os.listdir(base):
            rest = old[len(key) + 1 :]
            if (
                old.startswith(f"{key}-")
                and len(rest) == 16
                and "-" not in rest
                and old != os.path.basename(entry)
            ):
                shutil.rmtree(os.path.join(base, old), ignore_errors=True)
    except OSError as e:
        warnings.warn(
            f"could not write the preprocessing cache under {base} ({e}); continuing without it", stacklevel=2
        )
    return arrays


def file_sha256(path: str, chunk: int = 1 << 24) -> str:
    """sha256 of a file's bytes, read a chunk at a time."""
    h, buf = hashlib.sha256(), bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _load_entry(entry: str) -> dict[str, np.ndarray]:
    """The memory-mapped arrays of a cache entry after checking every file's size and sha256 against
    the manifest; a ValueError says what is wrong."""
    with open(os.path.join(entry, "manifest.json")) as f:
        manifest = json.load(f)
    if "files" not in manifest:
        raise ValueError("written by an older liquid_s4, without checksums")
    out = {}
    for n in manifest["arrays"]:
        path, want = os.path.join(entry, f"{n}.npy"), manifest["files"][n]
        size = os.path.getsize(path)
        if size != want["bytes"]:
            raise ValueError(f"{n}.npy has {size} bytes, {want['bytes']} were written")
        if file_sha256(path) != want["sha256"]:
            raise ValueError(f"{n}.npy does not match the sha256 recorded when it was written")
        out[n] = np.load(path, mmap_mode="r")
    return out
