"""Bring your own data: sequences from an .npz file, a folder of .npz files, or a CSV / Parquet table.

PATH (`--data PATH`, i.e. data.name=arrays, data.data_dir=PATH) takes one of these forms:

    PATH.npz        arrays x (n, L) or (n, L, C), y (n,) or (n, d), optional lengths (n,);
                    split into train/val/test by data.val_fraction / data.test_fraction
                    (a fixed permutation, `split_indices(n, val_fraction, test_fraction, seed=0)`)
    PATH/           a folder holding train.npz and optionally val.npz, test.npz (each x, y, optional
                    lengths). Without val.npz, val_fraction of train.npz becomes the validation set;
                    without test.npz there is no test set, unless test_fraction > 0 (then that
                    fraction of train.npz is held out as the test set). Both with `split_indices(seed=0)`.
    PATH.csv        a table, split like an .npz file, in one of two shapes:
    PATH.parquet      WIDE (default): one row per sequence; the label column (option label_column,
                      default "y", else "label") and every other column, in file order, is one time
                      step of a single channel. Shorter sequences may leave their last cells empty
                      (NaN): they are padded with 0 and their lengths kept. Empty cells in the middle
                      of a row are an error.
                      LONG (option id_column set): one row per time step; rows with the same id form
                      one sequence, in order of first appearance of the id; within a sequence rows are
                      ordered by time_column if given, else by file order. Features: feature_columns
                      (default every numeric column except id, time and label). The label must be the
                      same on every row of an id. Sequences of different lengths are right-padded
                      with 0 to the longest and their lengths kept.

Targets: integer (or boolean) y means classification with classes 0..max(y) (labels must be >= 0);
string labels (CSV/Parquet, or fixed-width strings in an npz) are mapped to the ids of their sorted
unique values and the names kept in info.extra["classes"]; float y means regression with y (n,) one
target or y (n, d) d targets, not standardized. Option task ("auto", "classification", "regression")
overrides the detection (classification needs integer-valued y). All splits' y must be of one kind
(integers, floats or strings; integers and floats may mix only with an explicit task), classification
needs at least 2 classes in the training split, and a validation or test class that never occurs in
training gets a warning.

Inputs: real values are standardized per channel with the mean/std of the TRAINING split (padded
steps excluded when lengths are given; the statistics are in info.extra["mean"/"std"]). Integer x
with option `tokens: true` are token ids for an embedding instead (vocab_size = max id + 1; keep id 0
for padding when sequences are padded). NaN or inf inputs are an error.

Time stamps (irregular sampling): with option `timestamps: true` every sequence also has the time of
each step: an array t (n, L) in the npz files (beside x), or, for a LONG table, the (numeric or
datetime) time_column. They become per-step time gaps dt (Batch.dt, the model's per-step `rate`) in
units of a nominal step: option `nominal_step` (in the units of t; datetimes in seconds), by default
the median gap between consecutive valid steps of the training split. dt_k = (t_k - t_{k-1}) /
nominal_step; the first step's gap is 1 (nothing precedes it), and padded steps beyond `lengths` get
1. The time stamps must be finite and strictly increasing along each sequence's valid steps. Only S4D
layers with liquid_kernel="scan" take a per-step rate (the others raise an error); the gaps are not
an input feature (add them to x yourself for other models).

Parsing happens once; the arrays are cached in `.liquid_s4_cache/` next to the data (see `cached`).
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

from .common import (
    ArrayDataset,
    DataError,
    DataInfo,
    SequenceData,
    Standardize,
    cached,
    channel_stats,
    choose,
    split_indices,
    take_options,
    token_dtype,
    tokens,
)

DEFAULTS = {
    "task": "auto",
    "label_column": None,
    "id_column": None,
    "time_column": None,
    "feature_columns": None,
    "tokens": False,
    "timestamps": False,
    "nominal_step": None,
}
TABLE_OPTIONS = ("label_column", "id_column", "time_column", "feature_columns")
TABLES = (".csv", ".parquet", ".pq")
SPLITS = ("train", "val", "test")
FORMS = """\
    PATH.npz                            arrays x (n, L) or (n, L, C), y (n,) or (n, d), optional lengths (n,)
                                        and time stamps t (n, L) (with data.options.timestamps=true)
    PATH/train.npz [val.npz] [test.npz]  the same arrays, one file per split
    PATH.csv or PATH.parquet            one row per sequence (label column + one column per step),
                                        or one row per step with data.options.id_column set"""
SOURCE = "(the formats are described in liquid_s4/data/arrays.py; options via --set data.options.KEY=VALUE)"


# ---- options ----------------------------------------------------------------------------------


def _check_options(o: dict, table: bool) -> None:
    choose(o["task"], ("auto", "classification", "regression"), "data.options.task")
    if not isinstance(o["tokens"], bool):
        raise ValueError(f"data.options.tokens must be true or false, got {o['tokens']!r}")
    if not isinstance(o["timestamps"], bool):
        raise ValueError(f"data.options.timestamps must be true or false, got {o['timestamps']!r}")
    step = o["nominal_step"]
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, (int, float)) or not (np.isfinite(step) and step > 0)
    ):
        raise ValueError(f"data.options.nominal_step must be a number > 0, got {step!r}")
    if step is not None and not o["timestamps"]:
        raise ValueError("data.options.nominal_step applies to time stamps: set data.options.timestamps=true")
    if o["timestamps"] and table and o["id_column"] is None:
        raise ValueError(
            "data.options.timestamps needs the time of every step: in a table, the long format with "
            "data.options.id_column and time_column"
        )
    if o["timestamps"] and table and o["time_column"] is None:
        raise ValueError(
            "data.options.timestamps reads the time stamps from data.options.time_column: set it"
        )
    for key in ("label_column", "id_column", "time_column"):
        if o[key] is not None and not isinstance(o[key], str):
            raise ValueError(f"data.options.{key} must be a column name, got {o[key]!r}")
    f = o["feature_columns"]
    if f is not None and not (
        isinstance(f, str) or (isinstance(f, (list, tuple)) and f and all(isinstance(c, str) for c in f))
    ):
        raise ValueError(
            f"data.options.feature_columns must be a column name or a list of column names, got {f!r}"
        )
    if not table and any(o[k] is not None for k in TABLE_OPTIONS):
        given = [k for k in TABLE_OPTIONS if o[k] is not None]
        raise ValueError(f"data.options {given} apply to .csv/.parquet tables only")
    if o["id_column"] is None and (o["time_column"] is not None or o["feature_columns"] is not None):
        raise ValueError(
            "data.options time_column and feature_columns describe the long format: set id_column too"
        )


# ---- reading the sources ----------------------------------------------------------------------


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            for k in ("x", "y"):
                if k not in keys:
                    raise DataError(
                        f"{path}: no array {k!r} (found {keys or 'no arrays'}); expected x (n, L) or (n, L, "
                        "C), y (n,) or (n, d) and optionally lengths (n,)"
                    )
            return {k: f[k] for k in ("x", "y", "lengths", "t") if k in keys}
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        hint = (
            "; store labels as numbers or fixed-width strings, not objects"
            if "allow_pickle" in str(e)
            else ""
        )
        raise DataError(f"{path}: cannot read as .npz ({e}){hint}") from e


def _read_table(path: str):
    import pandas as pd

    try:
        if path.lower().endswith(".csv"):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow ({e})") from e
    except Exception as e:  # pandas/pyarrow raise many types for malformed files
        raise DataError(f"{path}: cannot read the table ({type(e).__name__}: {e})") from e


def _label_column(df, path: str, o: dict) -> str:
    name = o["label_column"]
    if name is None:
        name = next((c for c in ("y", "label") if c in df.columns), None)
        if name is None:
            raise DataError(
                f"{path}: no label column 'y' or 'label' (columns: {list(df.columns)}); set "
                "data.options.label_column"
            )
    elif name not in df.columns:
        raise DataError(f"{path}: label_column {name!r} not found (columns: {list(df.columns)})")
    if df[name].isna().any():
        row = int(np.flatnonzero(df[name].isna().to_numpy())[0])
        raise DataError(f"{path}: missing label in column {name!r} (data row {row + 1})")
    return name


def _labels(column) -> np.ndarray:
    """A label column as a numpy array: numbers as they are, anything else as strings."""
    a = column.to_numpy()
    return a if a.dtype.kind in "biuf" else a.astype(str)


def _numeric(df, columns, path: str, what: str) -> np.ndarray:
    bad = [c for c in columns if df[c].dtype.kind not in "biuf"]
    if bad:
        raise DataError(f"{path}: {what} columns must be numeric; not numeric: {bad}")
    return df[list(columns)].to_numpy()


def _read_wide(df, path: str, o: dict) -> dict[str, np.ndarray]:
    label = _label_column(df, path, o)
    steps = [c for c in df.columns if c != label]
    if not steps:
        raise DataError(f"{path}: no time-step columns besides the label {label!r}")
    bad = [c for c in steps if df[c].dtype.kind not in "biuf"]
    if bad:
        raise DataError(
            f"{path}: wide format (one row per sequence) needs numeric step columns; not numeric: {bad}. For "
            "one row per time step set data.options.id_column"
        )
    x = df[steps].to_numpy()  # (n, L)
    out = {"x": x, "y": _labels(df[label])}
    if x.dtype.kind == "f" and np.isnan(x).any():  # ragged rows: trailing empty cells
        present = ~np.isnan(x)
        lengths = present.sum(1)
        ragged = (present & (np.arange(x.shape[1]) >= lengths[:, None])).any(1)  # a value after an empty cell
        if ragged.any():
            row = int(np.flatnonzero(ragged)[0])
            raise DataError(
                f"{path}: data row {row + 1} has an empty cell inside the sequence (only trailing cells may "
                "be empty)"
            )
        if (lengths == 0).any():
            raise DataError(f"{path}: data row {int(np.flatnonzero(lengths == 0)[0]) + 1} has no values")
        out["x"], out["lengths"] = np.nan_to_num(x, nan=0.0), lengths
    return out


def _py(v):
    """A numpy scalar as the plain Python value, for messages."""
    return v.item() if isinstance(v, np.generic) else v


def _read_long(df, path: str, o: dict) -> dict[str, np.ndarray]:
    import pandas as pd

    idc, tc = o["id_column"], o["time_column"]
    for key, c in (("id_column", idc), ("time_column", tc)):
        if c is not None and c not in df.columns:
            raise DataError(f"{path}: {key} {c!r} not found (columns: {list(df.columns)})")
    label = _label_column(df, path, o)
    if o["feature_columns"] is None:
        features = [c for c in df.columns if c not in (idc, tc, label) and df[c].dtype.kind in "biuf"]
        if not features:
            raise DataError(
                f"{path}: no numeric feature columns besides id/time/label (columns: {list(df.columns)})"
            )
    else:
        features = (
            [o["feature_columns"]] if isinstance(o["feature_columns"], str) else list(o["feature_columns"])
        )
        absent = [c for c in features if c not in df.columns]
        if absent:
            raise DataError(f"{path}: feature_columns {absent} not found (columns: {list(df.columns)})")
    values = _numeric(df, features, path, "feature")  # (rows, C)
    if df[idc].isna().any():
        raise DataError(
            f"{path}: missing id in column {idc!r} (data row "
            f"{int(np.flatnonzero(df[idc].isna().to_numpy())[0]) + 1})"
        )
    codes, ids = pd.factorize(df[idc], sort=False)  # sequence number per row, in order of first appearance
    varying = df.groupby(codes, sort=False)[label].nunique()
    if (varying > 1).any():
        raise DataError(
            f"{path}: the label {label!r} changes within id "
            f"{_py(ids[int(varying.index[varying.to_numpy() > 1][0])])!r}; it must be the same on every row "
            "of a sequence"
        )
    if tc is None:
        order = np.argsort(codes, kind="stable")
    else:
        if df[tc].isna().any():
            raise DataError(f"{path}: missing value in time_column {tc!r}")
        t = df[tc].to_numpy()
        order = (
            pd.DataFrame({"id": codes, "t": t}).sort_values(["id", "t"], kind="mergesort").index.to_numpy()
        )  # numbers, dates, strings
        same = (np.diff(codes[order]) == 0) & (t[order][1:] == t[order][:-1])
        if same.any():
            raise DataError(
                f"{path}: id {_py(ids[codes[order][1:][same][0]])!r} has two rows at time "
                f"{_py(t[order][1:][same][0])!r}"
            )
    codes, values = codes[order], values[order]
    counts = np.bincount(codes, minlength=len(ids))  # (n,) steps per sequence
    step = np.arange(len(codes)) - np.repeat(np.cumsum(counts) - counts, counts)
    x = np.zeros((len(ids), int(counts.max()), values.shape[1]), dtype=values.dtype)  # (n, L, C)
    x[codes, step] = values
    first = np.unique(codes, return_index=True)[1]
    out = {"x": x, "y": _labels(df[label].iloc[order[first]])}
    if o["timestamps"]:
        out["t"] = np.zeros(x.shape[:2])
        out["t"][codes, step] = _seconds(df[tc], path, tc)[order]
    if (counts != counts.max()).any():
        out["lengths"] = counts
    return out


def _seconds(column, path: str, name: str) -> np.ndarray:
    """A time column as float64 numbers: numbers as they are, datetimes in seconds."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        return (column - column.min()).dt.total_seconds().to_numpy(dtype=np.float64)
    if column.dtype.kind not in "iuf":
        raise DataError(
            f"{path}: data.options.timestamps needs a numeric or datetime time_column, {name!r} has dtype "
            f"{column.dtype}"
        )
    return column.to_numpy(dtype=np.float64)


def _read_source(path: str, o: dict) -> dict[str, dict[str, np.ndarray]]:
    """{part: {x, y[, lengths]}} with part "all" (one file) or train/val/test (a folder)."""
    if os.path.isdir(path):
        files = {s: os.path.join(path, f"{s}.npz") for s in SPLITS}
        return {s: _read_npz(f) for s, f in files.items() if os.path.isfile(f)}
    if path.endswith(".npz"):
        return {"all": _read_npz(path)}
    df = _read_table(path)
    if len(df) == 0:
        raise DataError(f"{path}: the table has no rows")
    saved_index = [c for c in df.columns if str(c).startswith("Unnamed: ")]
    if saved_index:
        raise DataError(
            f"{path}: unnamed column(s) {saved_index}, probably a saved row index; write the table without "
            "it (pandas: to_csv(..., index=False)) or give every column a name"
        )
    return {"all": _read_long(df, path, o) if o["id_column"] else _read_wide(df, path, o)}


# ---- checking and converting ------------------------------------------------------------------


def _check_part(p: dict, name: str, tokens_: bool, timestamps: bool = False) -> dict:
    """Shapes, row counts, finiteness and lengths of one part; x (n, L, C) (tokens: (n, L)); with
    `timestamps`, the time stamps t (n, L) as float64."""
    x, y = np.asarray(p["x"]), np.asarray(p["y"])
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name}: x must be numeric, got dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise DataError(f"{name}: x must be (n, L) or (n, L, C), got shape {x.shape}")
    if x.ndim == 2:
        x = x[:, :, None]
    n, L = x.shape[:2]
    if n == 0 or L == 0:
        raise DataError(f"{name}: x is empty (shape {x.shape})")
    if y.ndim not in (1, 2) or len(y) != n:
        raise DataError(f"{name}: y must be (n,) or (n, d) with n = {n} rows like x, got shape {y.shape}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).reshape(n, -1).all(1))[0])
        raise DataError(f"{name}: x has NaN or inf values (first in sequence {row})")
    out = {"x": x, "y": y}
    if "lengths" in p:
        lengths = np.asarray(p["lengths"])
        if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
            raise DataError(
                f"{name}: lengths must be integers of shape ({n},), got {lengths.dtype} {lengths.shape}"
            )
        if n and (lengths.min() < 1 or lengths.max() > L):
            raise DataError(f"{name}: lengths must lie in [1, L={L}], got [{lengths.min()}, {lengths.max()}]")
        out["lengths"] = lengths.astype(np.int64)
    if timestamps:
        out["t"] = _check_times(p, name, n, L, out.get("lengths"))
    if tokens_:
        if x.shape[2] != 1:
            raise DataError(
                f"{name}: tokens: true needs one token per step, x (n, L), got shape {p['x'].shape}"
            )
        if x.dtype.kind == "f" and (x != np.round(x)).any():
            raise DataError(f"{name}: tokens: true needs integer x, got non-integer values")
        if x.min() < 0:
            raise DataError(f"{name}: token ids must be >= 0, got {x.min()}")
    return out


def _check_times(p: dict, name: str, n: int, L: int, lengths) -> np.ndarray:
    """The time stamps t (n, L) of one part as float64: finite and strictly increasing along the valid
    steps of each sequence (padded steps are set to 0), else a DataError."""
    if "t" not in p:
        raise DataError(
            f"{name}: data.options.timestamps is set but there is no array 't' of time stamps (n, L) = "
            f"({n}, {L}), one per step of x"
        )
    t = np.asarray(p["t"])
    if t.dtype.kind not in "iuf" or t.shape != (n, L):
        raise DataError(
            f"{name}: the time stamps t must be numbers of shape (n, L) = ({n}, {L}) like x, got {t.dtype} "
            f"{t.shape}"
        )
    t = t.astype(np.float64)
    valid = np.ones((n, L), dtype=bool) if lengths is None else np.arange(L) < lengths[:, None]
    bad = valid & ~np.isfinite(t)
    if bad.any():
        row, step = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{name}: the time stamps t have NaN or inf values (first in sequence {row}, step {step})"
        )
    t = np.where(valid, t, 0.0)
    bad = valid[:, 1:] & ~(np.diff(t, axis=1) > 0)
    if bad.any():
        row, step = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{name}: the time stamps t must increase strictly along each sequence; sequence {row} has "
            f"t[{step + 1}] = {t[row, step + 1]!r} after t[{step}] = {t[row, step]!r}"
        )
    return t


def _label_kind(y: np.ndarray) -> str:
    return "strings" if y.dtype.kind in "USO" else "integers" if y.dtype.kind in "biu" else "floats"


def _check_label_kinds(parts: dict, task: str, where: str) -> None:
    """Integer labels in one split and float labels in another would make the detected task depend on
    the split (the whole set silently became regression): refused unless the task is set explicitly;
    string labels mixed with numbers are always refused."""
    kinds = {s: _label_kind(p["y"]) for s, p in parts.items()}
    if len(set(kinds.values())) < 2 or (task != "auto" and "strings" not in kinds.values()):
        return
    found = ", ".join(f"{s}.npz has {p['y'].dtype} ({kinds[s]})" for s, p in parts.items())
    raise DataError(
        f"{where}: y has different types in different splits: {found}. Integer labels mean classification "
        "and float labels regression; save y with the same dtype in every file (e.g. y.astype(np.int64) for "
        "class labels), or set data.options.task to classification or regression"
    )


def _targets(parts: dict, task: str, where: str) -> tuple[dict, np.ndarray | None]:
    """y of every part as int64 (n,) class ids or float32 (n, d) targets; the class names of string labels."""
    _check_label_kinds(parts, task, where)
    ys = [p["y"] for p in parts.values()]
    strings = any(y.dtype.kind in "USO" for y in ys)
    if task == "auto":
        task = "classification" if strings or all(y.dtype.kind in "biu" for y in ys) else "regression"
    names = None
    if task == "regression":
        if strings:
            raise DataError(f"{where}: task regression needs numeric y, got string labels")
        for s, p in parts.items():
            y = p["y"].astype(np.float32)
            if not np.isfinite(y).all():
                raise DataError(f"{where} ({s}): y has NaN or inf values")
            p["y"] = y.reshape(len(y), -1)  # (n, d)
        if len({p["y"].shape[1] for p in parts.values()}) > 1:
            raise DataError(f"{where}: y has a different number of targets in different splits")
        return parts, names
    for s, p in parts.items():
        y = p["y"]
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(
                f"{where} ({s}): classification labels must be (n,), got y of shape {p['y'].shape}"
            )
        p["y"] = y
    if strings:
        names = np.unique(np.concatenate([p["y"].astype(str) for p in parts.values()]))
        for p in parts.values():
            p["y"] = np.searchsorted(names, p["y"].astype(str)).astype(np.int64)
        return parts, names
    for s, p in parts.items():
        y = p["y"]
        if y.dtype.kind == "f" and (not np.isfinite(y).all() or (y != np.round(y)).any()):
            raise DataError(
                f"{where} ({s}): classification needs integer labels, y has non-integer values (use task: "
                "regression?)"
            )
        if len(y) and y.min() < 0:
            raise DataError(f"{where} ({s}): class labels must be >= 0, got {y.min()}")
        p["y"] = y.astype(np.int64)
    return parts, names


def _prepare(path: str, o: dict) -> dict[str, np.ndarray]:
    """Read, check and convert the source; flat arrays `<part>_x`, `<part>_y`, `<part>_lengths`,
    `<part>_t`, `classes` for the cache."""
    raw = _read_source(path, o)
    parts = {
        s: _check_part(p, f"{path} ({s})" if s != "all" else path, o["tokens"], o["timestamps"])
        for s, p in raw.items()
    }
    channels = {p["x"].shape[2] for p in parts.values()}
    if len(channels) > 1:
        raise DataError(
            f"{path}: x has a different number of channels in different splits: {sorted(channels)}"
        )
    parts, names = _targets(parts, o["task"], path)
    padded = any("lengths" in p for p in parts.values())
    vocab = max(int(p["x"].max()) for p in parts.values()) + 1 if o["tokens"] else None
    out = {}
    for s, p in parts.items():
        x = p["x"][:, :, 0].astype(token_dtype(vocab)) if vocab else p["x"].astype(np.float32)
        out[f"{s}_x"], out[f"{s}_y"] = x, p["y"]
        if padded:
            out[f"{s}_lengths"] = p.get("lengths", np.full(len(x), x.shape[1], dtype=np.int64))
        if "t" in p:
            out[f"{s}_t"] = p["t"]
    if names is not None:
        out["classes"] = names
    return out


# ---- splits, standardization, the datasets ----------------------------------------------------


def _indices(arrays: dict, spec) -> dict[str, tuple[str, np.ndarray]]:
    """Each split as (part, row indices into that part)."""
    n = len(arrays["all_x"]) if "all_x" in arrays else len(arrays["train_x"])
    if "all_x" in arrays:
        tr, va, te = split_indices(n, spec.val_fraction, spec.test_fraction, seed=0)
        out = {"train": ("all", tr), "val": ("all", va), "test": ("all", te)}
    else:
        vf = 0.0 if "val_x" in arrays else spec.val_fraction
        tf = 0.0 if "test_x" in arrays else spec.test_fraction
        tr, va, te = split_indices(n, vf, tf, seed=0)
        out = {"train": ("train", tr), "val": ("train", va), "test": ("train", te)}
        out.update({s: (s, np.arange(len(arrays[f"{s}_x"]))) for s in ("val", "test") if f"{s}_x" in arrays})
    out = {s: (p, np.asarray(i, dtype=np.int64)) for s, (p, i) in out.items()}
    if len(out["train"][1]) == 0:
        raise ValueError(
            f"no training sequences left: {n} sequences with val_fraction {spec.val_fraction} and "
            f"test_fraction {spec.test_fraction}"
        )
    return out


def build_arrays(spec) -> SequenceData:
    """The user's own arrays at spec.data_dir (module docstring); options task, label_column, id_column,
    time_column, feature_columns, tokens, timestamps, nominal_step."""
    path = spec.data_dir
    if not path:
        raise ValueError(
            f"dataset 'arrays' reads your own data: pass --data PATH (data.data_dir) where PATH is\n{FORMS}"
        )
    path = os.path.normpath(os.path.expanduser(str(path)))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"your data (--data PATH) not found at {path!r}. PATH may be:\n{FORMS}\n{SOURCE}"
        )
    table = os.path.isfile(path) and path.lower().endswith(TABLES)
    if os.path.isfile(path) and not (table or path.lower().endswith(".npz")):
        raise ValueError(
            f"{path}: unsupported file type {os.path.splitext(path)[1] or '(none)'!r}; PATH may be\n{FORMS}"
        )
    o = take_options(spec.options, DEFAULTS, "arrays")
    _check_options(o, table)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "train.npz")):
            found = sorted(f for f in os.listdir(path) if not f.startswith("."))
            raise FileNotFoundError(
                f"{path}: a data folder needs train.npz (found {found or 'nothing'}). PATH may be:\n{FORMS}"
            )
        root, key, sources = path, "arrays", [os.path.join(path, f"{s}.npz") for s in SPLITS]
    else:
        root, key, sources = (
            os.path.dirname(path) or ".",
            "arrays-" + re.sub(r"[^\w.]", "_", os.path.basename(path)),
            [path],
        )
    arrays = cached(root, key, sources, o, lambda: _prepare(path, o), version=1)
    return _assemble(arrays, spec, o, path)


def _valid_steps(t, lengths) -> np.ndarray:
    L = t.shape[1]
    return np.ones(t.shape, dtype=bool) if lengths is None else np.arange(L) < np.asarray(lengths)[:, None]


def _median_gap(arrays: dict, part: str, index: np.ndarray) -> float:
    """The median gap between consecutive valid steps of the training rows (1 if there is none)."""
    t = np.asarray(arrays[f"{part}_t"])[index]
    lengths = arrays.get(f"{part}_lengths")
    valid = _valid_steps(t, None if lengths is None else np.asarray(lengths)[index])
    d = np.diff(t, axis=1)[valid[:, 1:]]
    return float(np.median(d)) if d.size else 1.0


def _gaps(t, lengths, step: float) -> np.ndarray:
    """Per-step gaps (n, L) float32 in units of `step`: (t_k - t_{k-1}) / step, 1 at the first step
    and at padded steps."""
    t = np.asarray(t, dtype=np.float64)
    dt = np.ones(t.shape, dtype=np.float64)
    dt[:, 1:] = np.diff(t, axis=1) / step
    return np.where(_valid_steps(t, lengths), dt, 1.0).astype(np.float32)


def _check_classes(arrays: dict, split: dict, path: str) -> None:
    """Classification needs two or more classes in the training split (a clear error otherwise); a
    class that occurs in the validation or test split but never in training gets a warning."""

    def labels(s):
        part, index = split[s]
        return np.unique(np.asarray(arrays[f"{part}_y"])[index])

    def show(classes):  # class names of string labels, else the ids
        return [str(arrays["classes"][c]) if "classes" in arrays else int(c) for c in classes]

    train = labels("train")
    if len(train) < 2:
        raise DataError(
            f"{path}: classification needs at least 2 classes, but every training label is "
            f"{show(train)[0]!r}. Add sequences of the other classes; or, if y is a numeric target, store it "
            "as floats or set data.options.task=regression"
        )
    for s in ("val", "test"):
        unseen = np.setdiff1d(labels(s), train)
        if len(unseen):
            warnings.warn(
                f"{path}: the {s} split has class(es) "
                f"{show(unseen[:10])}{' ...' if len(unseen) > 10 else ''} that never occur in the training "
                "split; the model cannot learn them",
                stacklevel=3,
            )


def _assemble(arrays: dict, spec, o: dict, path: str) -> SequenceData:
    split = _indices(arrays, spec)
    padded = any(k.endswith("_lengths") for k in arrays)
    part, index = split["train"]
    x_train = arrays[f"{part}_x"]
    vocab = None
    extra: dict = {"source": path}
    if o["tokens"]:
        vocab = max(int(np.max(arrays[k])) for k in arrays if k.endswith("_x")) + 1
        transform, d_input = tokens, 1
    else:
        mean, std = channel_stats(x_train, index, arrays.get(f"{part}_lengths"))
        transform, d_input = Standardize(mean, std), x_train.shape[2]
        extra.update(mean=mean.tolist(), std=std.tolist())
    ys = [arrays[k] for k in arrays if k.endswith("_y")]
    classification = ys[0].dtype.kind in "iu"
    if classification:
        _check_classes(arrays, split, path)
        d_output = max(int(np.max(y)) for y in ys if len(y)) + 1
        target_transform = tokens
        if "classes" in arrays:
            extra["classes"] = [str(c) for c in arrays["classes"]]
            d_output = len(extra["classes"])
    else:
        d_output, target_transform = ys[0].shape[1], None
    gaps = {}
    if o["timestamps"]:
        step = o["nominal_step"] or _median_gap(arrays, part, index)
        gaps = {p: _gaps(arrays[f"{p}_t"], arrays.get(f"{p}_lengths"), step) for p, _ in split.values()}
        extra.update(time_gaps="rate", nominal_step=float(step))
    datasets = {}
    for s, (p, i) in split.items():
        if len(i) == 0:
            datasets[s] = None
            continue
        datasets[s] = ArrayDataset(
            arrays[f"{p}_x"],
            arrays[f"{p}_y"],
            arrays.get(f"{p}_lengths"),
            index=i,
            transform=transform,
            target_transform=target_transform,
            dt=gaps.get(p),
        )
    n = sum(len(arrays[k]) for k in arrays if k.endswith("_x"))
    Ls = sorted({arrays[k].shape[1] for k in arrays if k.endswith("_x")})
    length = f"L={Ls[0]}" if len(Ls) == 1 else f"L={Ls[0]}..{Ls[-1]}"
    if padded:
        lens = np.concatenate([np.asarray(arrays[k]) for k in arrays if k.endswith("_lengths")])
        length += f" (padded; lengths {int(lens.min())}..{int(lens.max())})"
    if gaps:
        length += f", per-step time gaps (nominal step {extra['nominal_step']:g})"
    inputs = f"tokens (vocab {vocab})" if vocab else f"C={d_input}"
    outputs = f"{d_output} classes" if classification else f"{d_output} regression target(s)"
    sizes = "/".join(str(len(datasets[s]) if datasets[s] is not None else 0) for s in SPLITS)
    info = DataInfo(
        d_input=d_input,
        d_output=d_output,
        task="classification" if classification else "regression",
        vocab_size=vocab,
        description=(
            f"arrays from {path}: n={n} sequences, {length}, {inputs}, {outputs}; train/val/test {sizes}"
        ),
        extra=extra,
    )
    return SequenceData(datasets["train"], datasets["val"], datasets["test"], info)
