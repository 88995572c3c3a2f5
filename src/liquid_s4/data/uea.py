"""Time-series classification and regression from the UEA/UCR/Monash archives' `.ts` files (read by
`liquid_s4.data.ts.read_ts`): the `uea` dataset.

Expected layout of the data directory (the archive's own: one folder per problem), for
`data.options.dataset=EigenWorms`:

    EigenWorms/EigenWorms_TRAIN.ts   EigenWorms/EigenWorms_TEST.ts

The two files directly in the data directory also work, and `data.data_dir` may be the `_TRAIN.ts`
file itself (what `liquid-s4 train --data PATH/Name_TRAIN.ts` sets; the `_TEST.ts` file beside it is
found by name). File and folder names are matched case-insensitively. Official archives:
https://www.timeseriesclassification.com (UEA/UCR classification, Bagnall et al. 2018) and
http://tseregression.org (Monash regression, Tan et al. 2020).

The task comes from the files: `@classLabel true ...` is classification (the classes in the order the
TRAIN header lists them; the TEST file's labels are matched by name), `@targetLabel true` regression.

Options (`--set data.options.KEY=VALUE`):

    dataset           the problem name, e.g. EigenWorms (the folder and the files' prefix)
    split             "archive" (default): the TRAIN file is split into train/validation with
                      `split_indices(n, data.val_fraction, 0, seed=0)` and the TEST file is the test set;
                      "random": TRAIN and TEST merged and split 70/15/15 (train/validation/test) with
                      `split_indices(n, 0.15, 0.15, seed)`, the protocol of Log-NCDE and LinOSS
    seed              the random split's seed (default: the run's trainer.seed)
    time_gaps         files with time stamps (@timeStamps true): pass the per-step gaps to the model as
                      `Batch.dt` (its per-step rate; default true), or ignore them (false)
    nominal_step      the unit of those gaps, in the time stamps' units (default: the median gap between
                      consecutive steps of the training split)
    normalize_target  regression only: standardize the target with training statistics (default true)

Preprocessing:

- Inputs are standardized per channel with the mean and standard deviation of the training split's
  observed values (missing values and the padding after each series' length left out).
- Missing values ('?' or NaN in the file) are filled item by item: forward fill along time within
  each series and channel (the last observed value), then any value still missing (before a
  channel's first observation, or a channel with none) becomes the training mean, i.e. 0 after
  standardization. No NaN reaches the model.
- Series of different lengths are right-padded with 0 and carry their `lengths` (the model masks the
  padding); equal-length files carry none.
- Time stamps become per-step gaps (`time_gaps` of the reader): (t_k - t_{k-1}) / nominal_step, 1 at
  each series' first step and on the padding. Only S4D layers with liquid_kernel="scan" take a
  per-step rate.

Parsing happens once; the arrays are cached in `.liquid_s4_cache/` next to the files (see `cached`).
`liquid-s4 data check` compares the split sizes, the number of channels, the (longest) length and the
number of classes with the archive's published table (`PUBLISHED`) where the problem is listed there.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch

from .common import (
    ArrayDataset,
    DataError,
    DataInfo,
    SequenceData,
    Standardize,
    cached,
    choose,
    data_root,
    int_option,
    missing,
    split_indices,
    take_options,
)

DEFAULTS = {
    "dataset": None,
    "split": "archive",
    "seed": None,
    "time_gaps": True,
    "nominal_step": None,
    "normalize_target": True,
}
SPLITS = ("archive", "random")
RANDOM_FRACTIONS = (0.7, 0.15, 0.15)  # train, validation, test of the merged files (split "random")
SOURCE = (
    "Get the problem's zip from https://www.timeseriesclassification.com (UEA/UCR classification) or "
    "http://tseregression.org (Monash regression) and unzip it into that folder."
)
# The archive's published sizes: train cases, test cases, dimensions (channels), series length (the
# longest, for variable-length problems) and classes. Source: the UEA multivariate archive paper
# (Bagnall et al., "The UEA multivariate time series classification archive, 2018", arXiv:1811.00075,
# Table 2); BasicMotions and JapaneseVowels also checked against the archive's files shipped in aeon
# 1.6.0 (tests/fixtures/ts).
PUBLISHED = {
    "BasicMotions": {"train": 40, "test": 40, "dimensions": 6, "length": 100, "classes": 4},
    "EigenWorms": {"train": 128, "test": 131, "dimensions": 6, "length": 17984, "classes": 5},
    "EthanolConcentration": {"train": 261, "test": 263, "dimensions": 3, "length": 1751, "classes": 4},
    "Heartbeat": {"train": 204, "test": 205, "dimensions": 61, "length": 405, "classes": 2},
    "JapaneseVowels": {"train": 270, "test": 370, "dimensions": 12, "length": 29, "classes": 9},
    "MotorImagery": {"train": 278, "test": 100, "dimensions": 64, "length": 3000, "classes": 2},
    "SelfRegulationSCP1": {"train": 268, "test": 293, "dimensions": 6, "length": 896, "classes": 2},
    "SelfRegulationSCP2": {"train": 200, "test": 180, "dimensions": 7, "length": 1152, "classes": 2},
}
SHAPE_KEYS = ("dimensions", "length", "classes")


def layout(name: str = "NAME") -> str:
    return f"    {name}/{name}_TRAIN.ts   {name}/{name}_TEST.ts   (or the two files directly in the folder)"


# ---- finding the files ------------------------------------------------------------------------


def _lookup(folder: str, filename: str) -> str | None:
    """The path of `filename` in `folder`, matched case-insensitively (None if absent)."""
    if not os.path.isdir(folder):
        return None
    files = {n.lower(): n for n in os.listdir(folder)}
    hit = files.get(filename.lower())
    return os.path.join(folder, hit) if hit is not None else None


def train_test_files(train_path: str) -> tuple[str, str, str]:
    """(TRAIN path, TEST path, problem name) for a `NAME_TRAIN.ts` file: the `NAME_TEST.ts` file is
    looked up beside it; a clear error if the name does not end in `_TRAIN.ts` or the TEST file is
    missing."""
    path = os.path.normpath(os.path.expanduser(str(train_path)))
    base = os.path.basename(path)
    m = re.fullmatch(r"(.+)_train\.ts", base, flags=re.IGNORECASE)
    if m is None:
        raise ValueError(
            f"{path}: expected the TRAIN file of an archive problem, NAME_TRAIN.ts (its NAME_TEST.ts "
            "beside it); got a file named otherwise"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the TRAIN file {path!r} does not exist")
    name, folder = m.group(1), os.path.dirname(path) or "."
    test = _lookup(folder, f"{name}_TEST.ts")
    if test is None:
        raise FileNotFoundError(
            f"{name}_TEST.ts not found beside {path!r}: the archive's problems come as NAME_TRAIN.ts and "
            f"NAME_TEST.ts in one folder. {SOURCE}"
        )
    return path, test, name


def find_files(data_dir: str | None, dataset: str | None) -> tuple[str, str, str]:
    """(TRAIN path, TEST path, problem name) of the problem `dataset` under data_dir (see the module
    docstring for the layouts); data_dir may also be the TRAIN file itself."""
    if data_dir and os.path.isfile(os.path.expanduser(str(data_dir))):
        train, test, name = train_test_files(data_dir)
        if dataset is not None and str(dataset).lower() != name.lower():
            raise ValueError(
                f"data.options.dataset={dataset!r} but the data file {train!r} is problem {name!r}; drop "
                "the option or pass that problem's file"
            )
        return train, test, name
    if dataset is None:
        raise ValueError(
            "dataset 'uea' needs the problem's name: --set data.options.dataset=NAME (e.g. EigenWorms), "
            "with --data-dir the folder holding\n" + layout() + "\nor pass the TRAIN file: --data "
            "PATH/NAME_TRAIN.ts"
        )
    if not isinstance(dataset, str) or not dataset or os.sep in dataset:
        raise ValueError(f"data.options.dataset must be a problem name such as EigenWorms, got {dataset!r}")
    root = data_root(data_dir, "uea")
    if not os.path.isdir(root):
        raise missing("UEA archive folder", root, layout(dataset), SOURCE)
    folders = {n.lower(): n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))}
    candidates = ([os.path.join(root, folders[dataset.lower()])] if dataset.lower() in folders else []) + [
        root
    ]
    for folder in candidates:
        train = _lookup(folder, f"{dataset}_TRAIN.ts")
        test = _lookup(folder, f"{dataset}_TEST.ts")
        if train or test:
            for name, path in ((f"{dataset}_TRAIN.ts", train), (f"{dataset}_TEST.ts", test)):
                if path is None:
                    raise FileNotFoundError(
                        f"{name} not found in {folder!r}. Expected layout:\n{layout(dataset)}\n{SOURCE}"
                    )
            return train, test, dataset
    raise FileNotFoundError(
        f"{dataset}/{dataset}_TRAIN.ts not found in {root!r} (nor {dataset}_TRAIN.ts directly in it). "
        f"Expected layout:\n{layout(dataset)}\n{SOURCE}"
    )


# ---- parsing (cached) -------------------------------------------------------------------------


def _parse(train_path: str, test_path: str) -> dict[str, np.ndarray]:
    """Both files as flat arrays for the cache: `<part>_x` (n, L, C) float32 with NaN where missing,
    `<part>_lengths`, `<part>_y`, `<part>_t` (time stamps, if any), `classes`, `task`, `problem`."""
    from .ts import read_ts

    files = {"train": read_ts(train_path), "test": read_ts(test_path)}
    tr, te = files["train"], files["test"]
    for d in (tr, te):
        if d.task == "unlabelled":
            raise DataError(
                f"{d.path}: no labels (neither @classLabel true nor @targetLabel true); the uea dataset "
                "trains on labelled files"
            )
    if tr.task != te.task:
        raise DataError(f"{test_path}: a {te.task} file, but the TRAIN file {train_path} is {tr.task}")
    if tr.x.shape[2] != te.x.shape[2]:
        raise DataError(
            f"{test_path}: {te.x.shape[2]} dimension(s), but the TRAIN file {train_path} has {tr.x.shape[2]}"
        )
    if (tr.times is None) != (te.times is None):
        with_t = train_path if tr.times is not None else test_path
        raise DataError(f"{with_t} has time stamps and the other file of the problem has none")
    out: dict[str, np.ndarray] = {}
    for part, d in files.items():
        out[f"{part}_x"] = np.asarray(d.x, dtype=np.float32)
        out[f"{part}_lengths"] = np.asarray(d.lengths, dtype=np.int64)
        if d.times is not None:
            out[f"{part}_t"] = np.asarray(d.times, dtype=np.float64)
    out["train_y"] = np.asarray(tr.y)
    if tr.task == "classification":
        classes = [str(c) for c in tr.classes]
        index = {c: i for i, c in enumerate(classes)}
        unknown = [str(c) for c in te.classes if str(c) not in index]
        if unknown:
            raise DataError(
                f"{test_path}: class label(s) {unknown} that the TRAIN file's header does not list "
                f"({classes})"
            )
        remap = np.array([index[str(c)] for c in te.classes], dtype=np.int64)
        out["train_y"] = np.asarray(tr.y, dtype=np.int64)
        out["test_y"] = remap[np.asarray(te.y, dtype=np.int64)] if len(te.y) else np.asarray(te.y, np.int64)
        out["classes"] = np.array(classes, dtype=str)
    else:
        out["train_y"] = np.asarray(tr.y, dtype=np.float32)
        out["test_y"] = np.asarray(te.y, dtype=np.float32)
    out["task"] = np.array([tr.task])
    name = tr.problem_name or re.sub(r"_train\.ts$", "", os.path.basename(train_path), flags=re.I)
    out["problem"] = np.array([str(name)])
    return out


# ---- preprocessing ----------------------------------------------------------------------------


def observed_stats(x, index, lengths, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float64) of x (n, L, C) over the rows `index`, counting only observed
    values: steps < lengths and not NaN. A channel with no observed value gets mean 0, and a constant
    one std 1 (it is only centered)."""
    index = np.sort(np.asarray(index, dtype=np.int64))
    steps = np.arange(x.shape[1])

    def blocks():
        for s in range(0, len(index), chunk):
            rows = index[s : s + chunk]
            block = np.asarray(x[rows], dtype=np.float64)  # (b, L, C)
            yield block[steps < np.asarray(lengths)[rows][:, None]]  # (valid steps, C), NaN where missing

    total, count = np.zeros(x.shape[-1]), np.zeros(x.shape[-1])
    for block in blocks():
        total += np.nansum(block, 0)
        count += (~np.isnan(block)).sum(0)
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    sq = np.zeros(x.shape[-1])
    for block in blocks():
        sq += np.nansum((block - mean) ** 2, 0)
    std = np.sqrt(sq / np.maximum(count, 1))
    return mean, np.where(std > 1e-8, std, 1.0)


def forward_fill(x: torch.Tensor) -> torch.Tensor:
    """x (L, C) with each NaN replaced by the last non-NaN value before it in its channel (NaN stays
    where nothing precedes it)."""
    nan = torch.isnan(x)
    if not bool(nan.any()):
        return x
    idx = torch.arange(x.shape[0]).unsqueeze(1).expand_as(x).clone()
    idx[nan] = 0
    idx = torch.cummax(idx, dim=0).values
    return torch.gather(x, 0, idx)


class FillStandardize(Standardize):
    """`Standardize` for series with missing values: forward fill along time (`forward_fill`), then
    (x - mean) / std, then what is still missing -> 0 (the training mean)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(super().__call__(forward_fill(x.float())), nan=0.0)


def _pad(a: np.ndarray, L: int) -> np.ndarray:
    """a (n, L0, ...) right-padded with zeros to L steps."""
    a = np.asarray(a)
    if a.shape[1] == L:
        return a
    out = np.zeros((a.shape[0], L, *a.shape[2:]), dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _merge(a: dict) -> dict[str, np.ndarray]:
    """TRAIN and TEST as one part "all" (the random split), padded to the longer length."""
    L = max(a["train_x"].shape[1], a["test_x"].shape[1])
    out = {"all_x": np.concatenate([_pad(a["train_x"], L), _pad(a["test_x"], L)])}
    out["all_lengths"] = np.concatenate([a["train_lengths"], a["test_lengths"]])
    out["all_y"] = np.concatenate([a["train_y"], a["test_y"]])
    if "train_t" in a:
        out["all_t"] = np.concatenate([_pad(a["train_t"], L), _pad(a["test_t"], L)])
    return out


def _published(name: str) -> dict[str, int] | None:
    lower = {k.lower(): v for k, v in PUBLISHED.items()}
    return lower.get(name.lower())


def _check_options(o: dict, run_seed: int | None) -> tuple[str, int]:
    split = choose(o["split"], SPLITS, "data.options.split")
    seed = o["seed"] if o["seed"] is not None else (run_seed if run_seed is not None else 0)
    seed = int_option(seed, "data.options.seed", low=0)
    for key in ("time_gaps", "normalize_target"):
        if not isinstance(o[key], bool):
            raise ValueError(f"data.options.{key} must be true or false, got {o[key]!r}")
    step = o["nominal_step"]
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, (int, float)) or not (np.isfinite(step) and step > 0)
    ):
        raise ValueError(f"data.options.nominal_step must be a number > 0, got {step!r}")
    if o["seed"] is not None and split != "random":
        raise ValueError("data.options.seed applies to the random split: set data.options.split=random")
    return split, seed


def build_uea(spec, seed: int | None = None) -> SequenceData:
    """A UEA/UCR/Monash archive problem from its `.ts` files (module docstring). `seed`: the run's
    seed, the default of the random split's seed (option `seed`)."""
    from .arrays import _median_gap
    from .ts import time_gaps

    o = take_options(spec.options, DEFAULTS, "uea")
    split, split_seed = _check_options(o, seed)
    train_path, test_path, name = find_files(spec.data_dir, o["dataset"])
    root = os.path.dirname(train_path) or "."
    key = "uea-" + re.sub(r"[^\w.]", "_", name)
    a = cached(root, key, [train_path, test_path], {}, lambda: _parse(train_path, test_path), version=1)
    task = str(a["task"][0])
    problem = str(a["problem"][0])
    n_files = {"train": len(a["train_x"]), "test": len(a["test_x"])}
    if split == "archive":
        parts = {k: a[k] for k in a if k.startswith(("train_", "test_"))}
        tr, va, _ = (i.numpy() for i in split_indices(n_files["train"], spec.val_fraction, 0.0, seed=0))
        splits = {"train": ("train", tr), "val": ("train", va), "test": ("test", np.arange(n_files["test"]))}
        how = f"the archive's split, validation {spec.val_fraction:g} of TRAIN (seed 0)"
    else:
        parts = _merge(a)
        _, vf, tf = RANDOM_FRACTIONS
        tr, va, te = (i.numpy() for i in split_indices(len(parts["all_x"]), vf, tf, seed=split_seed))
        splits = {"train": ("all", tr), "val": ("all", va), "test": ("all", te)}
        how = f"TRAIN and TEST merged, random 70/15/15 split (seed {split_seed})"
    part, index = splits["train"]
    if len(index) == 0:
        raise ValueError(
            f"no training cases left: {n_files} cases with data.val_fraction={spec.val_fraction}"
        )
    x_train = parts[f"{part}_x"]
    mean, std = observed_stats(x_train, index, parts[f"{part}_lengths"])
    n_missing = int(sum(np.isnan(np.asarray(a[f"{p}_x"])).sum() for p in ("train", "test")))
    transform = FillStandardize(mean, std) if n_missing else Standardize(mean, std)
    all_lengths = np.concatenate([a["train_lengths"], a["test_lengths"]])
    L_max = int(all_lengths.max())
    variable = bool((all_lengths != L_max).any()) or a["train_x"].shape[1] != a["test_x"].shape[1]
    extra: dict = {
        "problem": problem,
        "source": train_path,
        "split": split,
        "channel_mean": mean.tolist(),
        "channel_std": std.tolist(),
        "missing_values": n_missing,
    }
    gaps = {}
    if "train_t" in a and o["time_gaps"]:
        step = float(o["nominal_step"] or _median_gap(parts, part, index))
        for p in {p for p, _ in splits.values()}:
            gaps[p] = time_gaps(parts[f"{p}_t"], parts[f"{p}_lengths"], step)
        extra.update(time_gaps="rate", nominal_step=step)
    target_transform = None
    if task == "classification":
        classes = [str(c) for c in a["classes"]]
        d_output = len(classes)
        extra["classes"] = classes
    else:
        d_output = 1
        y_train = np.asarray(parts[f"{part}_y"], dtype=np.float64)[index]
        y_mean, y_std = float(y_train.mean()), float(y_train.std()) or 1.0
        if o["normalize_target"]:
            target_transform = Standardize(y_mean, y_std)
        extra.update(target_mean=y_mean, target_std=y_std, target_normalized=o["normalize_target"])
    datasets = {}
    for s, (p, i) in splits.items():
        if len(i) == 0:
            datasets[s] = None
            continue
        y = parts[f"{p}_y"]
        datasets[s] = ArrayDataset(
            parts[f"{p}_x"],
            y if task == "classification" else np.asarray(y, dtype=np.float32)[:, None],
            parts[f"{p}_lengths"] if variable else None,
            index=i,
            transform=transform,
            target_transform=target_transform,
            dt=gaps.get(p),
        )
    channels = int(a["train_x"].shape[2])
    found = {"dimensions": channels, "length": L_max}
    if task == "classification":
        found["classes"] = d_output
    extra["found"] = found
    published = _published(problem) or _published(name)
    official = {}
    if published is not None:
        extra["published"] = {k: published[k] for k in SHAPE_KEYS if k in found}
        official = (
            {"train": published["train"], "test": published["test"]}
            if split == "archive"
            else {"all": published["train"] + published["test"]}
        )
    lengths = (
        f"lengths {int(all_lengths.min())}..{L_max} (padded, lengths kept)" if variable else f"length {L_max}"
    )
    if task == "classification":
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        outputs = f"{d_output} classes ({shown})"
    else:
        outputs = "regression" + (
            f", target standardized (mean {extra['target_mean']:.4g}, std {extra['target_std']:.4g})"
            if o["normalize_target"]
            else ""
        )
    notes = []
    if n_missing:
        notes.append(f"{n_missing} missing values (forward-filled, then the training mean)")
    if gaps:
        notes.append(f"per-step time gaps (nominal step {extra['nominal_step']:g})")
    sizes = "/".join(
        str(len(datasets[s]) if datasets[s] is not None else 0) for s in ("train", "val", "test")
    )
    description = (
        f"{problem} ({task}): {n_files['train']} TRAIN + {n_files['test']} TEST cases, "
        f"{channels} channel(s), {lengths}, {outputs}"
        + "".join(f"; {n}" for n in notes)
        + f"; {how}; train/val/test {sizes}"
    )
    info = DataInfo(d_input=channels, d_output=d_output, task=task, description=description, extra=extra)
    return SequenceData(datasets["train"], datasets["val"], datasets["test"], info, official=official)
