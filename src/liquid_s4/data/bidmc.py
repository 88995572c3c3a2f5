"""BIDMC vital-sign regression (BIDMC32HR, BIDMC32RR, BIDMC32SpO2) from the Monash/UEA Time Series
Extrinsic Regression archive (Tan, Bergmeir, Petitjean & Webb, 2020), in its `.ts` text format.

Expected layout of the data directory (the three archive folders; the folder of one of them, or its two
.ts files directly, also work as the data directory):

    BIDMC32HR/BIDMC32HR_TRAIN.ts      BIDMC32HR/BIDMC32HR_TEST.ts
    BIDMC32RR/BIDMC32RR_TRAIN.ts      BIDMC32RR/BIDMC32RR_TEST.ts
    BIDMC32SpO2/BIDMC32SpO2_TRAIN.ts  BIDMC32SpO2/BIDMC32SpO2_TEST.ts

Official archive: http://tseregression.org/ (Zenodo, e.g. https://zenodo.org/record/3902651 for BIDMC32HR;
RR and SpO2 are the neighbouring records). Each case: 2 channels of 4000 steps (32 s at 125 Hz) and one
real-valued target (heart rate, respiratory rate or oxygen saturation).

The .ts format (read by `liquid_s4.data.ts`): `#` comment lines; `@` header lines (@problemName,
@timeStamps, @missing, @univariate, @dimensions, @equalLength, @seriesLength, @targetLabel,
case-insensitive); then `@data` and one case per line: the dimensions separated by `:`, each a
comma-separated list of numbers (`?` = missing), then the target as the last `:`-separated field.

Preprocessing: the TRAIN file is split into train/validation with `split_indices(n, val_fraction, 0,
seed=0)` (the archive has no validation split); the TEST file is the test set. Inputs are standardized
per channel and targets (option `normalize_target`, default true) standardized, both with the training
split's statistics; `info.extra` records target_mean/target_std, so RMSE in original units
= RMSE * target_std.
"""

from __future__ import annotations

import os

import numpy as np

from . import common, ts
from .common import (
    ArrayDataset,
    DataError,
    DataInfo,
    SequenceData,
    Standardize,
    cached,
    choose,
    data_root,
    missing,
    take_options,
)

TARGETS = {
    "hr": ("BIDMC32HR", "heart rate", "bpm"),
    "rr": ("BIDMC32RR", "respiratory rate", "breaths/min"),
    "spo2": ("BIDMC32SpO2", "SpO2", "%"),
}
DEFAULTS = {"target": "hr", "normalize_target": True}
SOURCE = (
    "Get BIDMC32HR.zip, BIDMC32RR.zip and BIDMC32SpO2.zip of the Monash time series extrinsic regression "
    "archive (http://tseregression.org/, Zenodo record 3902651 and neighbours) and unzip them into that "
    "folder."
)
LAYOUT = "\n".join(f"    {f}/{f}_TRAIN.ts   {f}/{f}_TEST.ts" for f, _, _ in TARGETS.values())
OFFICIAL = {
    "train": 5550,
    "test": 2399,
}  # every BIDMC32 problem, per the archive's dataset table (Tan et al. 2020)


# ---- the .ts files -----------------------------------------------------------------------------


def read_ts(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A regression `.ts` file (Monash/UEA archive format, read by `liquid_s4.data.ts.read_ts`) as x
    float32 (n, L, C) and y float32 (n,). Every series must have the same length L and no time stamps;
    `?` values become NaN unless the header says @missing false."""
    header = ts.read_header(path)
    if header.timestamps:
        raise DataError(
            f"{path}: time-stamped series (@timeStamps true) are not supported; expected @timeStamps false"
        )
    if header.class_label:
        raise DataError(
            f"{path}: a classification file (@classLabel true); read_ts reads regression files (@targetLabel "
            "true)"
        )
    if header.target_label is False:
        raise DataError(
            f"{path}: no targets (@targetLabel false); read_ts reads regression files (@targetLabel true)"
        )
    data = ts.read_ts(path, task="regression")
    if (data.lengths != data.lengths[0]).any():
        i = int(np.argmax(data.lengths != data.lengths[0]))
        raise DataError(
            f"{path}: case {i + 1} has {data.lengths[i]} values per dimension, the first case "
            f"{data.lengths[0]} (read_ts needs equal-length series)"
        )
    return data.x, data.y


# ---- the BIDMC32 datasets ---------------------------------------------------------------------


def _find(root: str, folder: str) -> tuple[str, str]:
    """(TRAIN, TEST) .ts paths in root/folder/ or in root itself, matching names case-insensitively."""
    if not os.path.isdir(root):
        raise missing("BIDMC data folder", root, LAYOUT, SOURCE)
    for d in (os.path.join(root, folder), root):
        files = {n.lower(): os.path.join(d, n) for n in os.listdir(d)} if os.path.isdir(d) else {}
        train, test = files.get(f"{folder}_train.ts".lower()), files.get(f"{folder}_test.ts".lower())
        if train or test:
            for name, path in ((f"{folder}_TRAIN.ts", train), (f"{folder}_TEST.ts", test)):
                if path is None:
                    raise FileNotFoundError(
                        f"BIDMC file {name} not found in {d!r}. Expected layout:\n{LAYOUT}\n{SOURCE}"
                    )
            return train, test
    raise FileNotFoundError(
        f"BIDMC file {folder}/{folder}_TRAIN.ts not found in {root!r} (nor {folder}_TRAIN.ts directly in "
        f"it). Expected layout:\n{LAYOUT}\n{SOURCE}"
    )


def _parse(train_path: str, test_path: str) -> dict[str, np.ndarray]:
    out = {}
    for split, path in (("train", train_path), ("test", test_path)):
        x, y = read_ts(path)
        if not np.isfinite(x).all():
            raise DataError(
                f"{path}: missing or non-finite values in the series; the BIDMC files have none (corrupt "
                "copy?)"
            )
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    if out["train_x"].shape[1:] != out["test_x"].shape[1:]:
        raise DataError(
            f"{test_path}: series of shape {out['test_x'].shape[1:]} (length, channels), but the TRAIN file "
            f"has {out['train_x'].shape[1:]}"
        )
    return out


def build_bidmc(spec) -> SequenceData:
    """BIDMC32 regression: x float32 (4000, 2) standardized per channel, y float32 (1,). Options:
    `target` (hr, rr or spo2; default hr), `normalize_target` (default true). Validation is carved from
    the TRAIN file (split_indices, seed 0); the TEST file is the test set."""
    opts = take_options(spec.options, DEFAULTS, "bidmc")
    target = choose(opts["target"], tuple(TARGETS), "data.options.target")
    if not isinstance(opts["normalize_target"], bool):
        raise ValueError(
            f"data.options.normalize_target must be true or false, got {opts['normalize_target']!r}"
        )
    folder, what, units = TARGETS[target]
    train_path, test_path = _find(data_root(spec.data_dir, "bidmc"), folder)
    root = os.path.dirname(train_path)
    a = cached(root, folder, [train_path, test_path], {}, lambda: _parse(train_path, test_path))
    tr, va, _ = (i.numpy() for i in common.split_indices(len(a["train_x"]), spec.val_fraction, 0.0, seed=0))
    if len(tr) == 0:
        raise ValueError(
            f"data.val_fraction={spec.val_fraction} leaves no training cases out of {len(a['train_x'])}"
        )
    mean, std = common.channel_stats(a["train_x"], tr)
    norm = Standardize(mean, std)
    y_train = np.asarray(a["train_y"], dtype=np.float64)[tr]
    y_mean, y_std = float(y_train.mean()), float(y_train.std()) or 1.0
    target_norm = Standardize(y_mean, y_std) if opts["normalize_target"] else None
    train = ArrayDataset(
        a["train_x"], a["train_y"][:, None], transform=norm, target_transform=target_norm
    )  # y (n, 1)
    test = ArrayDataset(a["test_x"], a["test_y"][:, None], transform=norm, target_transform=target_norm)
    steps, channels = a["train_x"].shape[1:]
    description = (
        f"{folder} ({what}, {units}): {steps}-step series, {channels} channels, "
        f"{len(tr)}/{len(va)}/{len(test)}; "
        + (
            f"targets standardized (mean {y_mean:.4g}, std {y_std:.4g}): RMSE in {units} = RMSE x {y_std:.4g}"
            if opts["normalize_target"]
            else "raw targets"
        )
    )
    extra = {
        "target": target,
        "units": units,
        "target_mean": y_mean,
        "target_std": y_std,
        "target_normalized": opts["normalize_target"],
        "channel_mean": mean.tolist(),
        "channel_std": std.tolist(),
    }
    info = DataInfo(
        d_input=int(channels), d_output=1, task="regression", description=description, extra=extra
    )
    return SequenceData(
        train.subset(tr), train.subset(va) if len(va) else None, test, info, official=dict(OFFICIAL)
    )
