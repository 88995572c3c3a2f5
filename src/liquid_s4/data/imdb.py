"""Long Range Arena Text: IMDB movie reviews classified from their bytes.

Expected layout (the Large Movie Review Dataset, https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz,
extracted):

    aclImdb/train/pos/<id>_<rating>.txt   12500 reviews
    aclImdb/train/neg/<id>_<rating>.txt   12500
    aclImdb/test/pos/<id>_<rating>.txt    12500
    aclImdb/test/neg/<id>_<rating>.txt    12500

(`train/unsup/`, the .feat/.vocab/urls files and anything not named <id>_<rating>.txt are ignored.)
Preprocessing: the bytes of each file (UTF-8 text, unchanged) become tokens byte + 1, with 0 the
padding (vocab_size 257), truncated and right-padded to `max_length` (default 4096, as LRA) with the
valid lengths kept. Label: pos = 1, neg = 0. Within a split the neg reviews come first, then the pos
ones, each sorted by numeric id. Validation is carved from the official training set with
`split_indices(25000, val_fraction, 0, seed=0)`; the official test set is the test split (LRA reports
test accuracy and has no separate validation set).
"""

from __future__ import annotations

import os
import re

import numpy as np

from .common import (
    ArrayDataset,
    DataError,
    DataInfo,
    SequenceData,
    cached,
    data_root,
    int_option,
    missing,
    split_indices,
    take_options,
    tokens,
)

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
SOURCE = f"Download and extract {URL} (the LRA Text task reads these reviews byte by byte)."
FOLDER = "aclImdb"
CLASSES = ("neg", "pos")  # label 0, 1
SPLITS = ("train", "test")
LAYOUT = "\n".join(f"    {FOLDER}/{s}/{c}/<id>_<rating>.txt" for s in SPLITS for c in reversed(CLASSES))
BYTE_VOCAB = 257  # 0 = padding, byte b -> b + 1
_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")


# ---- byte-level token rows (shared with the AAN reader) ---------------------------------------------


class ByteRows:
    """Fills an (n, max_length) array of byte tokens (byte b -> b + 1, 0 = padding) row by row, with
    the valid lengths. Rows are stored as uint8 (valid UTF-8 never contains the byte 0xFF, so token 256
    does not occur in text); if some row does contain 0xFF the result is widened to int16."""

    def __init__(self, n: int, max_length: int):
        self.max_length = max_length
        self.x = np.zeros((n, max_length), dtype=np.uint8)  # (n, L)
        self.lengths = np.zeros(n, dtype=np.int32)
        self.wide: list[int] = []  # rows holding a 0xFF byte (token 256)

    def set(self, i: int, data: bytes) -> None:
        data = data[: self.max_length]
        self.x[i, : len(data)] = np.frombuffer(data, dtype=np.uint8) + np.uint8(
            1
        )  # 0xFF wraps to 0, fixed in arrays()
        self.lengths[i] = len(data)
        if b"\xff" in data:
            self.wide.append(i)

    def arrays(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(x, lengths) of the first n rows (all by default): x uint8, or int16 when token 256 occurs."""
        n = len(self.x) if n is None else n
        x, lengths = self.x[:n], self.lengths[:n]
        if self.wide:
            x = x.astype(np.int16)
            valid = np.arange(self.max_length)
            for i in self.wide:
                x[i][(x[i] == 0) & (valid < lengths[i])] = 256
        return x, lengths


def byte_tokens(texts: list[bytes], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Byte tokens (n, max_length) and valid lengths (n,) of `texts` (see `ByteRows`)."""
    rows = ByteRows(len(texts), max_length)
    for i, t in enumerate(texts):
        rows.set(i, t)
    return rows.arrays()


# ---- IMDB -------------------------------------------------------------------------------------------


def review_files(folder: str) -> list[str]:
    """The <id>_<rating>.txt files of one class folder, sorted by numeric id."""
    found = []
    for name in os.listdir(folder):
        m = _NAME.match(name)
        if m and os.path.isfile(os.path.join(folder, name)):
            found.append((int(m.group(1)), name))
    if not found:
        raise DataError(f"{folder}: no reviews named <id>_<rating>.txt (empty or incomplete extraction)")
    return [os.path.join(folder, name) for _, name in sorted(found)]


def read_split(root: str, split: str, max_length: int) -> dict[str, np.ndarray]:
    """One split -> {'x': (n, max_length) uint8 tokens, 'y': (n,) int64, 'lengths': (n,) int32}."""
    files, labels = [], []
    for label, cls in enumerate(CLASSES):
        paths = review_files(os.path.join(root, split, cls))
        files += paths
        labels += [label] * len(paths)
    rows = ByteRows(len(files), max_length)
    for i, path in enumerate(files):
        try:
            with open(path, "rb") as f:
                rows.set(i, f.read(max_length))
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e})") from e
    x, lengths = rows.arrays()
    return {"x": x, "y": np.asarray(labels, dtype=np.int64), "lengths": lengths}


def _imdb_folder(data_dir: str | None) -> str:
    root = data_root(data_dir, FOLDER)
    for candidate in (root, os.path.join(root, FOLDER)):
        if os.path.isdir(os.path.join(candidate, "train")) or os.path.isdir(os.path.join(candidate, "test")):
            return candidate
    raise missing("IMDB reviews folder (aclImdb)", root, LAYOUT, SOURCE)


def build_imdb(spec) -> SequenceData:
    """LRA Text (IMDB, byte level). Items: x int64 (max_length,) byte tokens, y int64 (neg 0 / pos 1),
    lengths. Splits: train minus val_fraction of it (seed 0) / that validation part / official test."""
    opts = take_options(spec.options, {"max_length": 4096}, "imdb")
    max_length = int_option(opts["max_length"], "imdb option max_length")
    root = _imdb_folder(spec.data_dir)
    folders = [os.path.join(root, s, c) for s in SPLITS for c in CLASSES]
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"IMDB folder {folder!r} not found. Expected layout:\n{LAYOUT}\n{SOURCE}")

    def build():
        return {f"{s}_{k}": v for s in SPLITS for k, v in read_split(root, s, int(max_length)).items()}

    a = cached(root, "imdb", folders, {"max_length": int(max_length)}, build)
    train = ArrayDataset(a["train_x"], a["train_y"], lengths=a["train_lengths"], transform=tokens)
    test = ArrayDataset(a["test_x"], a["test_y"], lengths=a["test_lengths"], transform=tokens)
    tr, va, _ = (i.numpy() for i in split_indices(len(train), spec.val_fraction, 0.0, seed=0))
    info = DataInfo(
        d_input=1,
        d_output=2,
        vocab_size=BYTE_VOCAB,
        extra={"classes": list(CLASSES)},
        description=f"IMDB (LRA Text): byte-level reviews up to {max_length} bytes, 2 classes, "
        f"{len(tr)}/{len(va)}/{len(test)}",
    )
    return SequenceData(
        train.subset(tr),
        train.subset(va) if len(va) else None,
        test,
        info,
        official={"train": 25000, "test": 25000},
    )
