"""LRA Pathfinder and Path-X: is there a path between the two dots? Grayscale images as pixel sequences.

Expected layout (the Long Range Arena release, https://storage.googleapis.com/long-range-arena/lra_release.gz,
extracted; `data_dir` is the folder holding pathfinder32/ ..., default $LIQUID_S4_DATA/lra_release; the
archive's `lra_release/lra_release/` nesting, or data_dir pointing at one pathfinderNN/ folder, work too):

    pathfinder32/                   also pathfinder64/, pathfinder128/ (Path-X), pathfinder256/
        curv_baseline/              difficulty "easy"
        curv_contour_length_9/      "intermediate"
        curv_contour_length_14/     "hard" (the LRA task)
            imgs/0/sample_0.png ... grayscale PNGs, resolution x resolution
            metadata/0.npy ...      despite the extension, text: one line per image,
                                    "<image folder> <file name> <field> <label 0/1> ..."
                                    e.g. "imgs/0 sample_0.png 0 1 ..."

Samples are taken in the order of the metadata files (sorted numerically: 0, 1, ..., 10, ...) and of
their lines. A missing image is an error unless `skip_missing: true` (then it is left out and counted
in info.extra["skipped_missing"]). Images are decoded once (Pillow, several threads) into a uint8
cache; x is (resolution**2, 1), pixels row by row, standardized with the training split's mean/std.

Splits: the release has none; like LRA's pipelines we use a deterministic split of all samples,
`split_indices(n, val_fraction, test_fraction, seed=0)` (the presets set 0.1/0.1, i.e. 80/10/10).

Path-X is Pathfinder at resolution 128, difficulty hard (sequences of 16384 pixels).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .cifar import pixel_moments, standardizer
from .common import (
    ArrayDataset,
    DataError,
    DataInfo,
    SequenceData,
    cached,
    choose,
    data_root,
    missing,
    split_indices,
    take_options,
)

SOURCE = (
    "It is part of the Long Range Arena release: "
    "https://storage.googleapis.com/long-range-arena/lra_release.gz (extract it)."
)
LAYOUT = """    pathfinder32/   (or pathfinder64/, pathfinder128/, pathfinder256/)
        curv_baseline/ | curv_contour_length_9/ | curv_contour_length_14/
            imgs/<k>/sample_<i>.png
            metadata/<k>.npy   (text: "imgs/<k> sample_<i>.png <field> <label> ..." per line)"""
RESOLUTIONS = (32, 64, 128, 256)
DIFFICULTIES = {
    "easy": "curv_baseline",
    "intermediate": "curv_contour_length_9",
    "hard": "curv_contour_length_14",
}
DEFAULTS = {"resolution": 32, "difficulty": "hard", "skip_missing": False}
PATHX_DEFAULTS = {"difficulty": "hard", "skip_missing": False}
PATHX_RESOLUTION = 128
_THREADS = 8  # Pillow releases the GIL while decoding


def find_pathfinder(data_dir: str | None, resolution: int) -> str:
    """The pathfinder<resolution>/ folder under data_dir (or data_dir itself)."""
    root = data_root(data_dir, "lra_release")
    name = f"pathfinder{resolution}"
    given = re.fullmatch(r"pathfinder(\d+)", os.path.basename(os.path.normpath(root)))
    if given and int(given.group(1)) != resolution:
        raise ValueError(
            f"data_dir {root!r} holds Pathfinder at resolution {given.group(1)}, but resolution {resolution} "
            "was asked for"
        )
    if given or any(os.path.isdir(os.path.join(root, d)) for d in DIFFICULTIES.values()):
        if os.path.isdir(root):
            return root
    for sub in ((name,), ("lra_release", name), ("lra_release", "lra_release", name)):
        if os.path.isdir(os.path.join(root, *sub)):
            return os.path.join(root, *sub)
    raise missing(f"LRA Pathfinder folder {name}/", root, LAYOUT, SOURCE)


def metadata_files(folder: str) -> list[str]:
    """The metadata/<k>.npy files of one difficulty folder, sorted by k."""
    meta = os.path.join(folder, "metadata")
    if not os.path.isdir(meta):
        raise missing("Pathfinder metadata folder", meta, LAYOUT, SOURCE)
    numbered = [(int(f[:-4]), f) for f in os.listdir(meta) if f.endswith(".npy") and f[:-4].isdigit()]
    if not numbered:
        raise DataError(f"{meta}: no metadata files <k>.npy found")
    return [os.path.join(meta, f) for _, f in sorted(numbered)]


def read_metadata(folder: str, files: list[str]) -> tuple[list[str], np.ndarray]:
    """Image paths and labels (n,) int64 listed by the metadata files, in order."""
    paths, labels = [], []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the metadata text ({e})") from e
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4 or fields[3] not in ("0", "1"):
                raise DataError(
                    f"{path}, line {number}: expected '<image folder> <file name> <field> <label 0/1> ...', "
                    f"got {line!r}"
                )
            paths.append(os.path.join(folder, fields[0], fields[1]))
            labels.append(int(fields[3]))
    if not paths:
        raise DataError(f"{os.path.join(folder, 'metadata')}: the metadata files list no images")
    return paths, np.asarray(labels, dtype=np.int64)


def _decode(paths: list[str], out: np.ndarray, start: int, stop: int, resolution: int) -> None:
    from PIL import Image, UnidentifiedImageError

    for i in range(start, stop):
        try:
            with Image.open(paths[i], formats=("PNG",)) as im:
                size = im.size
                if size == (resolution, resolution):
                    out[i] = np.frombuffer((im if im.mode == "L" else im.convert("L")).tobytes(), np.uint8)
        except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
            raise DataError(
                f"{paths[i]}: cannot decode the PNG ({e}); the file may be truncated or corrupt"
            ) from e
        if size != (resolution, resolution):
            raise DataError(f"{paths[i]}: image is {size[0]}x{size[1]}, expected {resolution}x{resolution}")


def decode_images(paths: list[str], resolution: int, threads: int = _THREADS) -> np.ndarray:
    """Grayscale images -> (n, resolution**2) uint8, decoded by a few threads over chunks of files."""
    out = np.empty((len(paths), resolution * resolution), np.uint8)
    step = 512
    with ThreadPoolExecutor(max(1, min(threads, os.cpu_count() or 1))) as pool:
        jobs = [
            pool.submit(_decode, paths, out, i, min(i + step, len(paths)), resolution)
            for i in range(0, len(paths), step)
        ]
        try:
            for job in jobs:
                job.result()  # re-raises the first error in file order
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
    return out


def load_pathfinder(
    folder: str, files: list[str], resolution: int, skip_missing: bool
) -> dict[str, np.ndarray]:
    """x (n, L, 1) uint8, y (n,) int64, per-image pixel moments and the number of skipped missing images."""
    paths, labels = read_metadata(folder, files)
    present = np.fromiter((os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))
    if not present.all():
        first = paths[int(np.argmin(present))]
        if not skip_missing:
            raise DataError(
                f"{first}: image listed in the metadata is missing ({(~present).sum()} missing in all); set "
                "data.options.skip_missing=true to leave missing images out"
            )
        paths = [p for p, ok in zip(paths, present) if ok]
        labels = labels[present]
    x = decode_images(paths, resolution)[..., None]  # (n, L, 1)
    total, squares = pixel_moments(x)
    return {
        "x": x,
        "y": labels,
        "pixel_sum": total,
        "pixel_sumsq": squares,
        "skipped": np.array([(~present).sum()], np.int64),
    }


def _build(spec, resolution: int, difficulty: str, skip_missing: bool, title: str) -> SequenceData:
    if not isinstance(skip_missing, bool):
        raise ValueError(f"data.options.skip_missing must be true or false, got {skip_missing!r}")
    choose(difficulty, DIFFICULTIES, "data.options.difficulty")
    pf = find_pathfinder(spec.data_dir, resolution)
    folder = os.path.join(pf, DIFFICULTIES[difficulty])
    if not os.path.isdir(folder):
        raise missing(
            f"Pathfinder-{resolution} difficulty {difficulty!r} ({DIFFICULTIES[difficulty]}/)",
            folder,
            LAYOUT,
            SOURCE,
        )
    files = metadata_files(folder)
    options = {"resolution": resolution, "difficulty": difficulty, "skip_missing": skip_missing}
    sources = [os.path.join(folder, "metadata"), os.path.join(folder, "imgs")]
    a = cached(
        pf,
        f"pathfinder{resolution}-{DIFFICULTIES[difficulty]}",
        sources,
        options,
        lambda: load_pathfinder(folder, files, resolution, skip_missing),
    )
    length = resolution * resolution
    train_idx, val_idx, test_idx = split_indices(len(a["x"]), spec.val_fraction, spec.test_fraction, seed=0)
    transform = standardizer(a["pixel_sum"], a["pixel_sumsq"], length, train_idx)
    train, val, test = (
        ArrayDataset(a["x"], a["y"], index=i, transform=transform) for i in (train_idx, val_idx, test_idx)
    )
    extra = {
        "resolution": resolution,
        "difficulty": difficulty,
        "folder": folder,
        "skipped_missing": int(a["skipped"][0]),
        "pixel_mean": float(transform.mean[0]) * 255,
        "pixel_std": float(transform.std[0]) * 255,
    }
    description = f"{title}: {length}-step pixel sequences, 1 channel, {len(train)}/{len(val)}/{len(test)}"
    return SequenceData(
        train,
        val,
        test,
        DataInfo(d_input=1, d_output=2, task="classification", description=description, extra=extra),
    )


def build_pathfinder(spec) -> SequenceData:
    """LRA Pathfinder; options resolution (32, 64, 128, 256), difficulty (easy, intermediate, hard),
    skip_missing."""
    opts = take_options(spec.options, DEFAULTS, "pathfinder")
    resolution = choose(opts["resolution"], RESOLUTIONS, "data.options.resolution")
    title = f"Pathfinder-{resolution} ({opts['difficulty']})"
    return _build(spec, resolution, opts["difficulty"], opts["skip_missing"], title)


def build_pathx(spec) -> SequenceData:
    """LRA Path-X: Pathfinder at resolution 128 (16384 steps); options difficulty (default hard),
    skip_missing."""
    opts = take_options(spec.options, PATHX_DEFAULTS, "pathx")
    title = f"Path-X (Pathfinder-128, {opts['difficulty']})"
    return _build(spec, PATHX_RESOLUTION, opts["difficulty"], opts["skip_missing"], title)
