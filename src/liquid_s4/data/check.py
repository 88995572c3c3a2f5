"""`liquid-s4 data check`: build a dataset from its local files (parsing and caching every file),
read the first and last item of every split, and report split sizes and shapes against the official
release, without training."""

from __future__ import annotations

from collections.abc import Callable

from .common import SequenceData
from .registry import build_dataset


def official_differences(data: SequenceData) -> list[tuple[str, int, int]]:
    """(split, found, official) where a split's size differs from the official release. "train" counts
    train + val when the release has no validation split (validation is then carved from train)."""
    sizes, official, out = data.sizes(), data.official, []
    for split, n in official.items():
        if split == "all":
            have = sizes["train"] + sizes["val"] + sizes["test"]
        elif split == "train" and "val" not in official:
            have = sizes["train"] + sizes["val"]
        else:
            have = sizes.get(split, 0)
        if have != n:
            out.append((split, have, n))
    return out


def shape_differences(data: SequenceData) -> list[tuple[str, int, int]]:
    """(what, found, published) where the data's shape differs from the published one: the keys of
    info.extra["published"] (e.g. dimensions, length, classes) against info.extra["found"], for
    datasets that record them."""
    extra = data.info.extra
    published, found = extra.get("published") or {}, extra.get("found") or {}
    return [(k, found[k], v) for k, v in published.items() if k in found and found[k] != v]


def check_dataset(spec, write: Callable[[str], object] = print, seed: int | None = None) -> SequenceData:
    """Build the dataset `spec` describes (the fields of `train.config.DataConfig`), read every
    split's first and last item, and `write` the report line by line as it goes: what was read, the
    summary, any split whose size differs from the official release, and the final "ok" line.
    Datasets that record their published shape (info.extra "published" and "found") are compared with
    it too. `seed`: the run's seed (for datasets whose split depends on it). Returns the dataset; a
    missing or damaged file raises the reader's error."""
    data = build_dataset(spec, seed=seed)
    write(f"dataset {spec.name!r}" + (f" from {spec.data_dir}" if spec.data_dir else ""))
    write(data.summary())
    problems = [
        f"{split}: {have} items, the official release has {n}"
        for split, have, n in official_differences(data)
    ]
    problems += [f"{what}: {have}, the official release has {n}" for what, have, n in shape_differences(data)]
    for ds in [data.train, data.val, data.test] + [d for d, _ in data.extra_tests.values()]:
        if ds is not None and len(ds):
            ds[0], ds[len(ds) - 1]  # noqa: B018 - reads the first and last item of every split
    if problems:
        write(
            "differs from the official release (fine for a subset, otherwise an incomplete copy):\n  "
            + "\n  ".join(problems)
        )
    write("ok: every split was read" + ("" if not problems else " (with the differences above)"))
    return data
