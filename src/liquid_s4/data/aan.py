"""Long Range Arena Retrieval: pairs of ACL Anthology Network (AAN) papers, read byte by byte; the
label says whether one paper cites the other.

Expected layout (folder `tsv_data/` of the LRA release https://storage.googleapis.com/long-range-arena/lra_release.gz):

    tsv_data/new_aan_pairs.train.tsv   train
    tsv_data/new_aan_pairs.eval.tsv    validation
    tsv_data/new_aan_pairs.test.tsv    test

Each line has 5 tab-separated columns and there is no header: label (0 or 1, possibly written as a
float such as 1.0), id1, id2, text1, text2. The texts are taken as raw bytes (quotes are ordinary
characters, no CSV quoting). Each text becomes tokens byte + 1 with 0 the padding (vocab_size 257),
truncated and right-padded to `max_length` (default 4000, as LRA) with its valid length kept; an item
is (x1, y, lengths1, x2, lengths2) for the retrieval head. The official splits are used as given
(eval = validation; val_fraction and test_fraction are not used).
"""

from __future__ import annotations

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
    take_options,
    tokens,
)
from .imdb import BYTE_VOCAB, ByteRows
from .listops import URL, lra_folder, need_file

FOLDER = "tsv_data"
SPLITS = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
LAYOUT = "\n".join(
    f"    {FOLDER}/{f}   (5 tab-separated columns: label, id1, id2, text1, text2; no header)"
    for f in SPLITS.values()
)
SOURCE = (
    f"AAN retrieval is part of the Long Range Arena release {URL} (folder tsv_data/ after extracting it)."
)
OFFICIAL = {
    "train": 147086,
    "val": 18090,
    "test": 17437,
}  # the split sizes as commonly reported for LRA Retrieval


def _count_lines(path: str) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n, last = n + chunk.count(b"\n"), chunk[-1:]
    return n + (last != b"\n")  # a last line without a newline


def _label(field: bytes, path: str, lineno: int) -> int:
    try:
        value = float(field)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise DataError(
            f"{path}, line {lineno}: label must be 0 or 1, found {field[:20].decode('utf-8', 'replace')!r}"
        )
    return int(value)


def read_pairs(path: str, max_length: int) -> dict[str, np.ndarray]:
    """One AAN pairs TSV -> {'x1', 'x2': (n, max_length) byte tokens, 'lengths1', 'lengths2': (n,) int32,
    'y': (n,) int64}. Blank lines are skipped; a line without 5 columns raises DataError."""
    upper = _count_lines(path)
    rows1, rows2 = ByteRows(upper, max_length), ByteRows(upper, max_length)
    labels = np.zeros(upper, dtype=np.int64)
    n = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise DataError(
                    f"{path}, line {lineno}: expected 5 tab-separated columns (label, id1, id2, text1, "
                    f"text2), found {len(fields)}"
                )
            labels[n] = _label(fields[0], path, lineno)
            rows1.set(n, fields[3])
            rows2.set(n, fields[4])
            n += 1
    if n == 0:
        raise DataError(f"{path}: no document pairs (empty file)")
    (x1, lengths1), (x2, lengths2) = rows1.arrays(n), rows2.arrays(n)  # (n, L), (n,)
    return {"x1": x1, "lengths1": lengths1, "x2": x2, "lengths2": lengths2, "y": labels[:n]}


def build_aan(spec) -> SequenceData:
    """LRA Retrieval (AAN). Items: (x1 int64 (max_length,), y int64 0/1, lengths1, x2, lengths2)."""
    opts = take_options(spec.options, {"max_length": 4000}, "aan")
    max_length = int_option(opts["max_length"], "aan option max_length")
    folder = lra_folder(spec.data_dir, FOLDER, list(SPLITS.values()))
    if folder is None:
        raise missing("LRA AAN retrieval folder", data_root(spec.data_dir, FOLDER), LAYOUT, SOURCE)
    paths = {s: need_file(folder, f, "LRA AAN retrieval", LAYOUT, SOURCE) for s, f in SPLITS.items()}

    def build():
        return {f"{s}_{k}": v for s, path in paths.items() for k, v in read_pairs(path, max_length).items()}

    a = cached(folder, "aan", list(paths.values()), {"max_length": max_length}, build)
    train, val, test = (
        ArrayDataset(
            a[f"{s}_x1"], a[f"{s}_y"], a[f"{s}_lengths1"], a[f"{s}_x2"], a[f"{s}_lengths2"], transform=tokens
        )
        for s in SPLITS
    )
    info = DataInfo(
        d_input=1,
        d_output=2,
        vocab_size=BYTE_VOCAB,
        description=(
            f"AAN (LRA Retrieval): byte-level document pairs up to {max_length} bytes each, 2 classes, "
            f"{len(train)}/{len(val)}/{len(test)}"
        ),
    )
    return SequenceData(train, val, test, info, official=dict(OFFICIAL))
