"""The `.ts` text format of the UEA/UCR time series classification archives and the Monash time series
extrinsic regression archive (the format of sktime and aeon's `load_from_ts_file`).

A file is: comment lines (starting with `#` or `%`), blank lines, header lines `@key value` (keys are
case-insensitive, so are `true`/`false`), the line `@data`, then one case per line:

    @problemName BasicMotions            name of the problem (TsData.problem_name)
    @timeStamps true|false               values written as (time stamp, value) pairs, see below
    @missing true|false                  `?` or NaN values are allowed (false: an error; absent: allowed)
    @univariate true|false               one dimension (true); false leaves it to @dimensions
    @dimensions 6                        number of dimensions (channels); `@dimension` works too; without
                                         it (and without @univariate true) the first case decides
    @equalLength true|false              every series has the same length (the default when absent,
                                         as in sktime and aeon); false: lengths may differ between cases
    @seriesLength 100                    that length (checked when the series are of equal length)
    @classLabel true Standing Running    classification, with the class labels in order; `@classLabel
                                         false`: no class labels
    @targetLabel true|false              regression: a real-valued target per case
    @data

    0.1,0.2,?,0.4:1.5,1.2,1.1,0.9:Running

Each case line holds the dimensions separated by `:`, each a comma-separated list of numbers (`?` or
NaN = missing), then, for a labelled file, the class label or target as the last `:` field (an unlabelled
file may end its lines with an empty one, as aeon's writer does). CRLF line ends, trailing whitespace
and blank lines are accepted; `#`/`%` comment lines may also appear among the cases.

What `read_ts` returns (`TsData`): x float32 (n, L_max, C), a case's series left-aligned and 0 after
its own length (missing values are NaN); lengths int64 (n,); y as int64 class indices in the order the
`@classLabel` line lists the labels (the labels as written there are TsData.classes), float32
regression targets, or None. A case's label must be one of the header's labels: the same text, or the
same number (`1.0` for a header label `1`).

Decisions where the archives leave room:

- The dimensions of one case have the same length (as in aeon); lengths may differ between cases only
  with `@equalLength false`. `@seriesLength` is checked only for equal-length series.
- Infinite values are an error (they are not missing values).
- Time stamps: with `@timeStamps true` each dimension is written `(t, v),(t, v),...`; the stamps are
  numbers (integers or floats) or ISO date-times (`2007-01-01 00:01:00`), one kind for the whole file.
  All dimensions of a case share their stamps, and the stamps increase strictly along a case (both
  checked). TsData.times (n, L_max) float64 holds the numbers themselves, or for date-times the
  seconds since the case's first stamp; 0 after each case's length. `time_gaps` turns them into
  per-step gaps for the models' per-step rate (Batch.dt, as for `arrays` and `irregular-integral`).

Anything else (a data line before `@data`, a wrong number of dimensions, a value that is not a number,
a missing value with `@missing false`, a series of the wrong length, an unknown class label, an empty
file, no `@data` line, ...) is a `DataError` naming the file, the line and what was expected.
Values are parsed a line at a time with NumPy's text parser (a 100 MB file takes seconds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .arrays import _gaps, _valid_steps
from .common import DataError

TASKS = ("classification", "regression", "unlabelled")
FLAGS = ("timestamps", "missing", "univariate", "equallength", "targetlabel")
_PAIRS = re.compile(r"\s*\([^()]*\)(?:\s*,\s*\([^()]*\))*\s*")  # (t, v),(t, v),...
_PAIR = re.compile(r"\(([^()]*)\)")
_STAMPED_FIELDS = re.compile(r"\)\s*:")  # the ':' between dimensions of a time-stamped case
_DATE = re.compile(r"\d{4}-\d\d-\d\d")  # an ISO date-time starts with YYYY-MM-DD
_SHOWN_LABELS = 20


@dataclass
class TsHeader:
    """The header of a `.ts` file, checked (see the module docstring). `header` maps the lower-cased
    keys to their raw values; the other fields are None where the header does not say."""

    path: str
    problem_name: str | None = None
    timestamps: bool = False
    missing: bool | None = None
    univariate: bool | None = None
    dimensions: int | None = None
    equal_length: bool | None = None
    series_length: int | None = None
    class_label: bool | None = None
    classes: list[str] | None = None
    target_label: bool | None = None
    task: str = "unlabelled"  # "classification" | "regression" | "unlabelled"
    data_line: int = 0  # line number of @data
    header: dict[str, str] = field(default_factory=dict)


@dataclass
class TsData:
    """The cases of a `.ts` file (see the module docstring)."""

    path: str
    problem_name: str | None
    x: np.ndarray  # float32 (n, L_max, C); NaN where missing; 0 after each series' own length
    lengths: np.ndarray  # int64 (n,)
    y: np.ndarray | None  # int64 class indices, float32 targets, or None
    classes: list[str] | None  # the class labels as written in the header, in header order
    times: np.ndarray | None  # float64 (n, L_max) time stamps (see the module docstring), or None
    task: str  # "classification" | "regression" | "unlabelled"
    header: dict[str, str]  # lower-cased keys -> raw values


# ---- the header --------------------------------------------------------------------------------


def _lines(f) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of the lines that are neither blank nor comments."""
    for lineno, raw in enumerate(f, 1):
        line = raw.strip()
        if line and line[0] not in "#%":
            yield lineno, line


def _flag(path: str, value: str, lineno: int, key: str) -> bool:
    word = value.lower()
    if word not in ("true", "false"):
        raise DataError(f"{path} line {lineno}: @{key} must be true or false, got {value!r}")
    return word == "true"


def _positive(path: str, value: str, lineno: int, key: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise DataError(f"{path} line {lineno}: @{key} must be a positive integer, got {value!r}")
    return n


def _class_labels(path: str, value: str, lineno: int) -> tuple[bool, list[str] | None]:
    words = value.split()
    if not words or words[0].lower() not in ("true", "false"):
        raise DataError(
            f"{path} line {lineno}: @classlabel must be true followed by the class labels, or false; got "
            f"{value!r}"
        )
    if words[0].lower() == "false":
        return False, None
    labels = words[1:]
    if not labels:
        raise DataError(
            f"{path} line {lineno}: @classLabel true needs the class labels after it (e.g. @classLabel "
            "true 0 1 2)"
        )
    twice = sorted({c for c in labels if labels.count(c) > 1})
    if twice:
        raise DataError(f"{path} line {lineno}: @classLabel lists {', '.join(twice)} more than once")
    return True, labels


def _read_header(path: str, lines: Iterator[tuple[int, str]]) -> TsHeader:
    """Read the header lines up to @data (consumed from `lines`) and check them."""
    raw: dict[str, tuple[str, int]] = {}  # lower-case key -> (value, line number)
    for lineno, line in lines:
        if not line.startswith("@"):
            raise DataError(f"{path} line {lineno}: a data line before the @data line (is @data missing?)")
        key, value = (line[1:].split(None, 1) + ["", ""])[:2] if not line[1:2].isspace() else ("", "")
        key, value = key.lower(), value.strip()
        if not key:
            raise DataError(f"{path} line {lineno}: a header line without a key (expected @key value)")
        if key == "data":
            if value:
                raise DataError(f"{path} line {lineno}: @data takes no value, got {value!r}")
            return _check_header(path, raw, lineno)
        raw[key] = (value, lineno)  # a repeated key: the last one counts (as in aeon)
    if not raw:
        raise DataError(
            f"{path}: the file is empty (expected @ header lines, an @data line, then one case per line)"
        )
    raise DataError(f"{path}: no @data line (not a .ts file, or truncated before the data)")


def _check_header(path: str, raw: dict[str, tuple[str, int]], data_line: int) -> TsHeader:
    h = TsHeader(path=path, data_line=data_line, header={k: v for k, (v, _) in raw.items()})
    flags = {k: _flag(path, *raw[k], k) for k in FLAGS if k in raw}
    h.timestamps = flags.get("timestamps", False)
    h.missing, h.univariate = flags.get("missing"), flags.get("univariate")
    h.equal_length, h.target_label = flags.get("equallength"), flags.get("targetlabel")
    h.problem_name = (raw["problemname"][0] or None) if "problemname" in raw else None
    if "dimensions" in raw and "dimension" in raw:
        raise DataError(f"{path} line {raw['dimension'][1]}: both @dimension and @dimensions")
    for key in ("dimensions", "dimension"):
        if key in raw:
            h.dimensions = _positive(path, *raw[key], key)
            if h.univariate and h.dimensions != 1:
                raise DataError(f"{path} line {raw[key][1]}: @univariate true but @{key} {h.dimensions}")
    if h.univariate:
        h.dimensions = 1
    if "serieslength" in raw:
        h.series_length = _positive(path, *raw["serieslength"], "serieslength")
    if "classlabel" in raw:
        h.class_label, h.classes = _class_labels(path, *raw["classlabel"])
    if h.class_label and h.target_label:
        raise DataError(
            f"{path} line {raw['targetlabel'][1]}: both @classLabel true and @targetLabel true (a file is "
            "either classification or regression)"
        )
    h.task = "classification" if h.class_label else "regression" if h.target_label else "unlabelled"
    return h


def read_header(path: str) -> TsHeader:
    """The header of a `.ts` file, checked, without reading the cases."""
    path = str(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        return _read_header(path, _lines(f))


# ---- the cases ---------------------------------------------------------------------------------


def _numbers_slowly(text: str, where: str, allow_missing: bool, stamped: bool) -> np.ndarray:
    """Value by value, to name the bad one."""
    tokens = text.split(",")
    out = np.empty(len(tokens), dtype=np.float64)
    for k, token in enumerate(tokens):
        token = token.strip()
        try:
            value = math.nan if token == "?" else float(token)
        except ValueError:
            value = None
        if value is None or math.isinf(value):
            if not token:
                what = "an empty value" if len(tokens) > 1 else "an empty series"
                raise DataError(f"{where}, value {k + 1}: {what} (expected a number or ?)")
            if "(" in token and not stamped:
                raise DataError(
                    f"{where}, value {k + 1}: {token!r} looks like a time-stamped value (t, v), but the "
                    "header does not say @timeStamps true"
                )
            shown = repr(token if len(token) <= 40 else token[:40] + "...")
            if value is not None:
                raise DataError(
                    f"{where}, value {k + 1}: {shown} is infinite (expected a finite number or ?)"
                )
            raise DataError(f"{where}, value {k + 1}: cannot read {shown} as a number")
        if math.isnan(value) and not allow_missing:
            raise DataError(f"{where}, value {k + 1}: missing value {token!r} but @missing false")
        out[k] = value
    return out


def _numbers(text: str, where: str, allow_missing: bool, stamped: bool = False) -> np.ndarray:
    """One dimension of one case: comma-separated numbers as float64, `?`/NaN as NaN when allowed."""
    fast = text.replace("?", "nan") if allow_missing and "?" in text else text
    try:
        out = np.fromstring(fast, dtype=np.float64, sep=",")
    except ValueError:
        out = None
    if out is not None and len(out) == text.count(",") + 1:
        finite = np.isfinite(out)
        if finite.all() or (allow_missing and not np.isinf(out).any()):
            return out
    return _numbers_slowly(text, where, allow_missing, stamped)


def _stamp_kind(token: str) -> str:
    try:
        return "number" if math.isfinite(float(token)) else ""
    except ValueError:
        pass
    try:
        ok = _DATE.match(token) and not np.isnat(np.datetime64(token, "ns"))
    except ValueError:
        ok = False
    return "date-time" if ok else ""


def _stamps(tokens: list[str], where: str) -> tuple[str, np.ndarray]:
    """("number", float64) or ("date-time", datetime64[ns]) time stamps of one dimension."""
    t, kind = None, ""
    for name, dtype in (("number", np.float64), ("date-time", "datetime64[ns]")):
        if name == "date-time" and not all(_DATE.match(s) for s in tokens):
            break  # NumPy would read a number as a year
        try:
            t, kind = np.array(tokens, dtype=dtype), name
            break
        except ValueError:
            pass
    bad = np.isnat(t) if kind == "date-time" else ~np.isfinite(t) if t is not None else None
    if t is None or bad.any():
        kinds = [_stamp_kind(s) for s in tokens]
        k = next((i for i, s in enumerate(kinds) if s != kinds[0] or not s), 0)
        raise DataError(
            f"{where}, value {k + 1}: cannot read the time stamp {tokens[k]!r} as a finite number or an ISO "
            "date-time such as 2007-01-01 00:00:00 (one kind throughout the file)"
        )
    later = np.diff(t) > (0 if kind == "number" else np.timedelta64(0, "ns"))
    if not later.all():
        k = int(np.argmin(later)) + 1
        raise DataError(
            f"{where}, value {k + 1}: time stamp {tokens[k]!r} does not come after {tokens[k - 1]!r} (the "
            "time stamps of a case must increase)"
        )
    return kind, t


def _stamped(text: str, where: str, allow_missing: bool) -> tuple[str, np.ndarray, np.ndarray]:
    """One time-stamped dimension `(t, v),(t, v),...`: (kind of stamps, stamps, values float64)."""
    if not _PAIRS.fullmatch(text):
        raise DataError(
            f"{where}: expected time-stamped values (t, v),(t, v),... (@timeStamps true), got "
            f"{text[:60]!r}{'...' if len(text) > 60 else ''}"
        )
    pairs = _PAIR.findall(text)
    for k, pair in enumerate(pairs):
        if "," not in pair:
            raise DataError(f"{where}, value {k + 1}: expected (time stamp, value), got ({pair})")
    stamps, values = zip(*(p.rsplit(",", 1) for p in pairs))
    kind, t = _stamps([s.strip() for s in stamps], where)
    return kind, t, _numbers(",".join(values), where, allow_missing, stamped=True)


@dataclass
class _Reader:
    """The state of reading the cases of one file."""

    h: TsHeader
    task: str
    label_index: dict[str, int] = field(default_factory=dict)
    number_index: dict[float, int] = field(default_factory=dict)
    dims: int | None = None
    length: int | None = None  # the series length, once known, for equal-length series
    stamp_kind: str | None = None
    cases: list[np.ndarray] = field(default_factory=list)  # float32 (C, L) each
    times: list[np.ndarray] = field(default_factory=list)  # float64 (L,) each
    labels: list = field(default_factory=list)

    def __post_init__(self):
        self.dims = self.h.dimensions
        self.length = self.h.series_length if self.h.equal_length is not False else None
        if self.task == "classification":
            self.label_index = {c: i for i, c in enumerate(self.h.classes)}
            numbers = {}
            for i, c in enumerate(self.h.classes):
                try:
                    numbers.setdefault(float(c), []).append(i)
                except ValueError:
                    pass
            self.number_index = {v: i[0] for v, i in numbers.items() if len(i) == 1}

    def _what(self) -> str:
        return "class label" if self.task == "classification" else "target"

    def fields(self, line: str, lineno: int) -> tuple[list[str], str | None]:
        """The dimensions' texts and the label (None for an unlabelled file)."""
        path, labelled = self.h.path, self.task != "unlabelled"
        if self.h.timestamps:
            parts = _STAMPED_FIELDS.split(line)
            if labelled and len(parts) == 1:
                raise DataError(
                    f"{path} line {lineno}: expected time-stamped dimensions (t, v),(t, v),... separated by "
                    f"':' and a final ':{self._what()}' field (@timeStamps true), found no '):'"
                )
            if labelled:
                dims, label = [p + ")" for p in parts[:-1]], parts[-1]
            else:
                dims, label = [p + ")" for p in parts[:-1]] + parts[-1:], None
        else:
            parts = line.split(":")
            dims, label = (parts[:-1], parts[-1]) if labelled else (parts, None)
        if not labelled and len(dims) > 1 and not dims[-1].strip():
            dims = dims[:-1]  # an empty label field, as aeon's writer leaves in unlabelled files
        if labelled and not dims:
            raise DataError(
                f"{path} line {lineno}: expected dimensions separated by ':' and a final ':{self._what()}' "
                "field, found no ':' (malformed line)"
            )
        if self.dims is None:
            self.dims = len(dims)  # no @dimensions header: the first case decides
        elif len(dims) != self.dims:
            source = (
                "@univariate true"
                if self.h.univariate
                else f"@dimensions {self.h.dimensions}"
                if self.h.dimensions
                else "the first case"
            )
            raise DataError(
                f"{path} line {lineno}: {len(dims)} dimension(s), expected {self.dims} ({source})"
            )
        return dims, label

    def label(self, text: str, lineno: int):
        text = text.strip()
        if self.task == "regression":
            try:
                target = float(text)
            except ValueError:
                target = math.nan
            if math.isnan(target):
                raise DataError(
                    f"{self.h.path} line {lineno}: the target (last ':' field) {text!r} is missing or not a "
                    "number"
                )
            if math.isinf(target):
                raise DataError(
                    f"{self.h.path} line {lineno}: the target (last ':' field) {text!r} is infinite"
                )
            return target
        if text in self.label_index:
            return self.label_index[text]
        try:
            return self.number_index[float(text)]
        except (ValueError, KeyError):
            pass
        shown = " ".join(self.h.classes[:_SHOWN_LABELS]) + (
            " ..." if len(self.h.classes) > _SHOWN_LABELS else ""
        )
        raise DataError(
            f"{self.h.path} line {lineno}: class label {text!r} is not one of the labels of the @classLabel "
            f"line {shown}"
        )

    def case(self, line: str, lineno: int) -> None:
        path, allow_missing = self.h.path, self.h.missing is not False
        dims, label = self.fields(line, lineno)
        series, stamps = [], None
        for d, text in enumerate(dims):
            where = f"{path} line {lineno}, dimension {d + 1}"
            if self.h.timestamps:
                kind, t, values = _stamped(text, where, allow_missing)
                if self.stamp_kind is None:
                    self.stamp_kind = kind
                elif kind != self.stamp_kind:
                    raise DataError(
                        f"{where}: {kind} time stamps, but the earlier ones are {self.stamp_kind}s (one kind "
                        "per file)"
                    )
            else:
                values = _numbers(text, where, allow_missing)
            n = len(values)
            if self.length is not None and n != self.length:
                source = (
                    f"@seriesLength {self.length}; equal-length series"
                    if self.h.series_length
                    else "the first case's length; equal-length series unless @equalLength false"
                )
                raise DataError(f"{where}: {n} values, expected {self.length} ({source})")
            if d and n != len(series[0]):
                raise DataError(
                    f"{where}: {n} values, but dimension 1 has {len(series[0])} (the dimensions of a case "
                    "have the same length)"
                )
            if self.h.timestamps:
                if stamps is None:
                    stamps = t
                elif not np.array_equal(t, stamps):
                    k = int(np.argmax(t != stamps))
                    raise DataError(
                        f"{where}, value {k + 1}: time stamp differs from dimension 1's (all dimensions of a "
                        "case share their time stamps)"
                    )
            series.append(values)
        if self.length is None and self.h.equal_length is not False:
            self.length = len(series[0])  # no @seriesLength header: the first case decides
        if label is not None:
            self.labels.append(self.label(label, lineno))
        self.cases.append(np.stack(series).astype(np.float32))
        if stamps is not None:
            if self.stamp_kind == "date-time":
                stamps = (stamps - stamps[0]) / np.timedelta64(1, "s")
            self.times.append(stamps.astype(np.float64))

    def result(self) -> TsData:
        h = self.h
        if not self.cases:
            raise DataError(f"{h.path}: no cases after the @data line (empty or truncated file)")
        lengths = np.array([c.shape[1] for c in self.cases], dtype=np.int64)
        n, length = len(self.cases), int(lengths.max())
        x = np.zeros((n, length, self.dims), dtype=np.float32)
        for i, c in enumerate(self.cases):
            x[i, : c.shape[1]] = c.T
        times = None
        if h.timestamps:
            times = np.zeros((n, length), dtype=np.float64)
            for i, t in enumerate(self.times):
                times[i, : len(t)] = t
        y = None
        if self.task == "classification":
            y = np.array(self.labels, dtype=np.int64)
        elif self.task == "regression":
            y = np.array(self.labels, dtype=np.float32)
        return TsData(
            path=h.path,
            problem_name=h.problem_name,
            x=x,
            lengths=lengths,
            y=y,
            classes=list(h.classes) if self.task == "classification" else None,
            times=times,
            task=self.task,
            header=dict(h.header),
        )


def _task(h: TsHeader, task: str | None) -> str:
    """The task the cases are read as: the header's, or `task` where the header does not say
    otherwise."""
    if task is None:
        return h.task
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    said = {
        "classification": h.target_label or h.class_label is False,
        "regression": h.class_label or h.target_label is False,
        "unlabelled": h.class_label or h.target_label,
    }[task]
    if said or (task == "classification" and not h.class_label):
        raise DataError(
            f"{h.path}: the header makes it a file of task {h.task!r} (@classLabel / @targetLabel), expected "
            f"{task!r}"
        )
    return task


def read_ts(path, task: str | None = None) -> TsData:
    """Read a `.ts` file (module docstring). `task` (classification, regression or unlabelled) reads the
    file as that task: a header that says otherwise is a DataError, and a header that says nothing about
    labels (neither @classLabel nor @targetLabel) is read as that task; None: as the header says."""
    path = str(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = _lines(f)
        h = _read_header(path, lines)
        reader = _Reader(h, _task(h, task))
        for lineno, line in lines:
            if line.startswith("@"):
                raise DataError(
                    f"{path} line {lineno}: a header line after @data (line {h.data_line}); expected a case"
                )
            reader.case(line, lineno)
    return reader.result()


def time_gaps(times: np.ndarray, lengths: np.ndarray | None = None, step: float | None = None) -> np.ndarray:
    """Per-step time gaps float32 (n, L_max) of time stamps (n, L_max): (t_k - t_{k-1}) / step, 1 at each
    series' first step and after its length. `step` (in the units of the stamps): by default the median
    positive gap between consecutive valid steps (1 where there is none)."""
    times = np.asarray(times, dtype=np.float64)
    valid = _valid_steps(times, lengths)
    if step is None:
        d = np.diff(times, axis=1)[valid[:, 1:]]
        d = d[d > 0]
        step = float(np.median(d)) if d.size else 1.0
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step!r}")
    return _gaps(np.where(valid, times, 0.0), lengths, step)
