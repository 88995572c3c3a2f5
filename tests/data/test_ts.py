"""The .ts reader (UEA/UCR/Monash archive format) on real archive files and on files the tests write:
every header variant, every error (with file and line), time stamps and their gaps."""

import glob
import math
import os
import time

import numpy as np
import pytest

from liquid_s4.data.common import DataError
from liquid_s4.data.ts import read_header, read_ts, time_gaps

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ts")


def fixture(name: str, split: str = "TRAIN") -> str:
    return os.path.join(FIXTURES, name, f"{name}_{split}.ts")


def reference(path: str):
    """A plain Python reading of a labelled, untimed archive file: (cases as lists of float lists, labels)."""
    cases, labels, data = [], [], False
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#%":
                continue
            if data:
                *dims, label = line.split(":")
                cases.append([[float(v) for v in d.split(",")] for d in dims])
                labels.append(label)
            data = data or line.lower() == "@data"
    return cases, labels


# ---- real archive files ------------------------------------------------------------------------

# problem -> (task, (train cases, test cases), dimensions, (min length, max length), classes or None)
PUBLISHED = {
    "ArrowHead": ("classification", (36, 175), 1, (251, 251), ["0", "1", "2"]),
    "BasicMotions": (
        "classification",
        (40, 40),
        6,
        (100, 100),
        ["Standing", "Running", "Walking", "Badminton"],
    ),
    "JapaneseVowels": ("classification", (270, 370), 12, (7, 29), [str(i) for i in range(1, 10)]),
    "PickupGestureWiimoteZ": ("classification", (50, 50), 1, (29, 361), [str(i) for i in range(1, 11)]),
    "Covid3Month": ("regression", (140, 61), 1, (84, 84), None),
    "CardanoSentiment": ("regression", (74, 33), 2, (24, 24), None),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_real_files_have_their_published_sizes(name):
    task, cases, dims, (short, long), classes = PUBLISHED[name]
    lengths = []
    for split, n in zip(("TRAIN", "TEST"), cases):
        data = read_ts(fixture(name, split))
        assert data.task == task and data.problem_name == name and data.classes == classes
        assert data.x.dtype == np.float32 and data.x.shape[0] == n and data.x.shape[2] == dims
        assert data.lengths.dtype == np.int64 and data.lengths.shape == (n,)
        assert data.x.shape[1] == data.lengths.max() and data.times is None
        assert np.isfinite(data.x).all()
        steps = np.arange(data.x.shape[1])
        assert (data.x[steps[None, :] >= data.lengths[:, None]] == 0).all()  # 0 after each length
        if task == "classification":
            assert data.y.dtype == np.int64 and set(data.y.tolist()) == set(range(len(classes)))
        else:
            assert data.y.dtype == np.float32 and data.y.shape == (n,) and np.isfinite(data.y).all()
        lengths.append(data.lengths)
    lengths = np.concatenate(lengths)
    assert (lengths.min(), lengths.max()) == (short, long)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(FIXTURES, "*", "*_T*.ts"))))
def test_real_files_value_by_value(path):
    """Every value and label as a plain Python reading of the file gives it (the NumPy fast path)."""
    if "TimeStamps" in path:
        return
    data = read_ts(path)
    cases, labels = reference(path)
    assert len(cases) == len(data.x)
    for i, case in enumerate(cases):
        assert data.lengths[i] == len(case[0])
        expected = np.array(case, dtype=np.float64).astype(np.float32).T
        assert np.array_equal(data.x[i, : data.lengths[i]], expected)
    if data.task == "classification":
        assert [data.classes[k] for k in data.y] == labels
    else:
        assert np.array_equal(data.y, np.array([float(v) for v in labels], dtype=np.float32))


def test_real_files_spot_values():
    basic = read_ts(fixture("BasicMotions"))
    assert basic.x[0, :2, 0].tolist() == [np.float32(0.079106)] * 2 and basic.x[0, 0, 5] == np.float32(
        0.633883
    )
    assert basic.y[:3].tolist() == [0, 0, 0] and basic.y[-1] == 3  # Standing ... Badminton
    assert np.bincount(basic.y).tolist() == [10, 10, 10, 10]
    assert basic.header["problemname"] == "BasicMotions" and basic.header["dimensions"] == "6"
    vowels = read_ts(fixture("JapaneseVowels"))
    assert vowels.lengths[:3].tolist() == [20, 26, 22]
    assert vowels.x[0, 0, 0] == np.float32(1.860936) and vowels.x[0, 0, 1] == np.float32(-0.207383)
    assert vowels.y[-1] == 8 and vowels.classes[8] == "9"
    arrow = read_ts(fixture("ArrowHead"))
    assert arrow.x[0, 0, 0] == np.float32(-1.9630089) and arrow.y[:3].tolist() == [0, 1, 2]
    covid = read_ts(fixture("Covid3Month"))
    assert covid.y[:3].tolist() == [0.0, np.float32(0.07758620689655173), 0.0] and covid.x[-1, -1, 0] == 5.0
    cardano = read_ts(fixture("CardanoSentiment"))
    assert cardano.x[0, 0].tolist() == [np.float32(0.504), np.float32(4339.96019453)]
    assert cardano.y[0] == np.float32(0.0589) and cardano.header["targetlabel"] == "true"
    wiimote = read_ts(fixture("PickupGestureWiimoteZ"))
    assert wiimote.lengths[:3].tolist() == [324, 361, 277] and wiimote.y[-1] == 9  # label "10"
    assert wiimote.x[-1, wiimote.lengths[-1] - 1, 0] == np.float32(0.885)


def test_real_time_stamped_file():
    data = read_ts(fixture("UnitTestTimeStamps"))
    assert data.task == "classification" and data.classes == ["1", "2"] and data.y.tolist() == [0, 0, 1, 1]
    assert data.x.shape == (4, 4, 1) and data.lengths.tolist() == [4] * 4
    assert data.x[0, :, 0].tolist() == [np.float32(v) for v in (241.97, 241.75, 241.64, 241.71)]
    assert data.x[2, :, 0].tolist() == [4.0, 0.0, 1.0, 11.0]
    assert data.times.dtype == np.float64 and (data.times == [0.0, 60.0, 120.0, 180.0]).all()  # seconds
    assert (time_gaps(data.times, data.lengths) == 1).all()
    assert read_header(fixture("UnitTestTimeStamps")).timestamps is True


# ---- header variants in written files ----------------------------------------------------------


def write(tmp_path, text: str, name: str = "Problem_TRAIN.ts", newline: str = "\n") -> str:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return str(path)


CLASSIFICATION = """\
# a comment
% another comment
@problemName Toy
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true up down
@data
1,2,3:4,5,6:down
0.5,-1e-3,7:1.5,2.5,3.5:up
"""


def test_classification_file(tmp_path):
    data = read_ts(write(tmp_path, CLASSIFICATION))
    assert data.task == "classification" and data.classes == ["up", "down"] and data.y.tolist() == [1, 0]
    assert data.x.tolist() == [[[1, 4], [2, 5], [3, 6]], [[0.5, 1.5], [np.float32(-1e-3), 2.5], [7, 3.5]]]
    assert data.lengths.tolist() == [3, 3] and data.times is None and data.problem_name == "Toy"
    assert data.path.endswith("Problem_TRAIN.ts")
    assert data.header == {
        "problemname": "Toy",
        "timestamps": "false",
        "missing": "false",
        "univariate": "false",
        "dimensions": "2",
        "equallength": "true",
        "serieslength": "3",
        "classlabel": "true up down",
    }
    header = read_header(write(tmp_path, CLASSIFICATION))
    assert (header.dimensions, header.series_length, header.equal_length, header.missing) == (
        2,
        3,
        True,
        False,
    )
    assert (header.task, header.classes, header.data_line, header.timestamps) == (
        "classification",
        ["up", "down"],
        11,
        False,
    )


def test_layout_variants(tmp_path):
    """Upper/mixed-case keys and flags, CRLF, blank lines, trailing whitespace, comments among the cases,
    @dimension, no @problemName."""
    text = (
        "%% comment\n\n@TIMESTAMPS FALSE   \n@Missing False\n@UNIVARIATE false\n@Dimension 2\n"
        "@EqualLength TRUE\n@ClassLabel TRUE up down\n\n@DATA  \n# among the cases\n"
        "1,2,3:4,5,6:down   \n\n% again\n 0.5 , -1e-3 ,7:1.5,2.5,3.5:up\n"
    )
    for newline in ("\n", "\r\n"):
        data = read_ts(write(tmp_path, text, newline=newline))
        expected = read_ts(write(tmp_path, CLASSIFICATION, name="b.ts"))
        assert np.array_equal(data.x, expected.x) and data.y.tolist() == [1, 0] and data.problem_name is None
        assert data.header["dimension"] == "2" and data.header["classlabel"] == "TRUE up down"


def test_univariate_and_first_case_decides(tmp_path):
    data = read_ts(write(tmp_path, "@univariate true\n@classLabel true a b\n@data\n1,2,3,4:b\n5,6,7,8:a\n"))
    assert data.x.shape == (2, 4, 1) and data.x[:, :, 0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    data = read_ts(write(tmp_path, "@classLabel true a b\n@data\n1,2:3,4:5,6:b\n"))  # 3 dims, length 2
    assert data.x.shape == (1, 2, 3) and data.x[0].T.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_numeric_labels_in_header_order(tmp_path):
    text = "@classLabel true 10 2 -1 1\n@data\n1,2:2\n1,2:10\n1,2:1.0\n1,2:-1\n1,2: 1 \n"
    data = read_ts(write(tmp_path, text))
    assert data.classes == ["10", "2", "-1", "1"] and data.y.tolist() == [1, 0, 3, 2, 3]  # 1.0 is label 1


def test_regression_and_unlabelled(tmp_path):
    data = read_ts(write(tmp_path, "@targetLabel true\n@data\n1,2,3:0.25\n4,5,6:-1e2\n"))
    assert data.task == "regression" and data.y.dtype == np.float32 and data.y.tolist() == [0.25, -100.0]
    assert data.classes is None and data.x.shape == (2, 3, 1)
    for header in (
        "@classLabel false\n",
        "@targetLabel false\n",
        "@classLabel false\n@targetLabel false\n",
        "",
    ):
        data = read_ts(write(tmp_path, header + "@data\n1,2,3:4,5,6\n"))  # the last field is a dimension
        assert (
            data.task == "unlabelled"
            and data.y is None
            and data.classes is None
            and data.x.shape == (1, 3, 2)
        )
    # read as a given task where the header does not say otherwise
    path = write(tmp_path, "@univariate true\n@data\n1,2,3:7.5\n")
    data = read_ts(path, task="regression")
    assert data.task == "regression" and data.y.tolist() == [7.5] and data.x.shape == (1, 3, 1)
    with pytest.raises(DataError, match="line 3: 2 dimension\\(s\\), expected 1 \\(@univariate true\\)"):
        read_ts(path)  # unlabelled: the target is read as a second dimension
    assert read_ts(write(tmp_path, "@data\n1,2:3,4\n"), task="unlabelled").x.shape == (1, 2, 2)
    assert read_ts(write(tmp_path, CLASSIFICATION), task="classification").y.tolist() == [1, 0]


def test_file_as_aeon_writes_it(tmp_path):
    """aeon's save_to_ts_file: lower-case keys, `@missing True`, `@dimension`, NaN, and a ':' after every
    dimension even without labels."""
    text = (
        "# written by aeon\n@problemName W\n@timestamps false\n@missing True\n@univariate false\n"
        "@dimension 2\n@equalLength true\n@seriesLength 2\n@targetlabel false\n@data\n"
        "1.0,NaN:3.0,4.0:\n5.0,6.0:7.0,8.0:\n"
    )
    data = read_ts(write(tmp_path, text))
    assert data.task == "unlabelled" and data.x.shape == (2, 2, 2) and np.isnan(data.x[0, 1, 0])
    assert data.x[1].tolist() == [[5, 7], [6, 8]]


def test_missing_values(tmp_path):
    for flag in ("@missing true\n", ""):  # allowed unless the header says @missing false
        data = read_ts(
            write(tmp_path, flag + "@classLabel true a\n@data\n1,?,3:NaN,5,nan:a\n?,2,3:4,5,6:a\n")
        )
        assert np.isnan(data.x).sum() == 4 and np.isnan(data.x[0, [1], 0]).all() and np.isnan(data.x[1, 0, 0])
        assert np.isnan(data.x[0, [0, 2], 1]).all() and data.x[0, 2, 0] == 3 and data.x[1, 2, 1] == 6


def test_variable_lengths(tmp_path):
    text = (
        "@equalLength false\n@seriesLength 9\n@classLabel true a b\n@data\n"
        "1,2:3,4:a\n1,2,3,4:5,6,7,8:b\n9:9:a\n"
    )
    data = read_ts(write(tmp_path, text))  # @seriesLength is not checked for unequal lengths
    assert data.lengths.tolist() == [2, 4, 1] and data.x.shape == (3, 4, 2)
    assert data.x[0].tolist() == [[1, 3], [2, 4], [0, 0], [0, 0]] and data.x[2, 0].tolist() == [9, 9]
    assert data.x[2, 1:].tolist() == [[0, 0]] * 3


def test_numeric_time_stamps(tmp_path):
    text = (
        "@timeStamps true\n@dimensions 2\n@equalLength false\n@targetLabel true\n@data\n"
        "(0, 1.5),(1,2),(3.5, ?):(0,4),(1,5),(3.5,6):0.5\n"
        "(10,1),(12,2):(10,3),(12,4):1.5\n"
    )
    data = read_ts(write(tmp_path, text))
    assert data.task == "regression" and data.y.tolist() == [0.5, 1.5] and data.lengths.tolist() == [3, 2]
    assert data.times.tolist() == [[0, 1, 3.5], [10, 12, 0]]  # the numbers themselves; 0 after a length
    assert data.x[0, :2].tolist() == [[1.5, 4], [2, 5]] and np.isnan(data.x[0, 2, 0]) and data.x[0, 2, 1] == 6
    assert data.x[1].tolist() == [[1, 3], [2, 4], [0, 0]]
    # gaps in units of the median gap (gaps 1, 2.5, 2 -> median 2)
    assert time_gaps(data.times, data.lengths).tolist() == [[1, 0.5, 1.25], [1, 1, 1]]
    unlabelled = read_ts(write(tmp_path, "@timeStamps true\n@data\n(1,2),(2,3):(1,4),(2,5)\n", name="u.ts"))
    assert unlabelled.task == "unlabelled" and unlabelled.x[0].tolist() == [[2, 4], [3, 5]]
    assert unlabelled.times.tolist() == [[1, 2]]


def test_date_time_stamps(tmp_path):
    text = (
        "@timeStamps true\n@equalLength false\n@classLabel true x y\n@data\n"
        "(2020-01-01 00:00:00,1),(2020-01-01 00:00:30,2),(2020-01-01 00:02:00,3):y\n"
        "(2021-06-30T23:59:59, 4),(2021-07-01T00:00:01, 5):x\n"
    )
    data = read_ts(write(tmp_path, text))
    assert data.times.tolist() == [[0, 30, 120], [0, 2, 0]]  # seconds since each case's first stamp
    assert data.y.tolist() == [1, 0] and data.lengths.tolist() == [3, 2]
    gaps = time_gaps(data.times, data.lengths)  # gaps 30, 90, 2 -> median 30
    assert np.allclose(gaps, [[1, 1, 3], [1, 2 / 30, 1]])


def test_time_gaps_by_hand():
    times = np.array([[0.0, 0.5, 2.0, 2.5, 0.0], [10.0, 11.0, 14.0, 0.0, 0.0], [5.0, 9.0, 13.0, 14.0, 15.0]])
    lengths = np.array([4, 3, 5])
    # valid gaps: 0.5 1.5 0.5 | 1 3 | 4 4 1 1 -> sorted 0.5 0.5 1 1 1 1.5 3 4 4, median 1
    expected = [[1, 0.5, 1.5, 0.5, 1], [1, 1, 3, 1, 1], [1, 4, 4, 1, 1]]
    gaps = time_gaps(times, lengths)
    assert gaps.dtype == np.float32 and gaps.shape == (3, 5) and gaps.tolist() == expected
    halved = time_gaps(times, lengths, step=0.5)
    assert halved.tolist() == [[1, 1, 3, 1, 1], [1, 2, 6, 1, 1], [1, 8, 8, 2, 2]]
    assert time_gaps(times[2:], None, step=1.0).tolist() == [[1, 4, 4, 1, 1]]  # no lengths: all valid
    assert np.allclose(time_gaps(times[2:]), [[1, 1.6, 1.6, 0.4, 0.4]])  # median of 4 4 1 1: 2.5
    assert time_gaps(np.zeros((2, 1)), np.array([1, 1])).tolist() == [[1], [1]]  # no gap at all: step 1
    with pytest.raises(ValueError, match="step must be > 0"):
        time_gaps(times, lengths, step=0.0)


# ---- errors: the file, the line and what was expected ------------------------------------------

GOOD = (
    "@problemName P\n@missing false\n@dimensions 2\n@equalLength true\n@seriesLength 3\n"
    "@classLabel true a b\n@data\n"
)
CASE = "1,2,3:4,5,6:a\n"  # the first case is on line 8

ERRORS = {
    "empty file": ("", "the file is empty"),
    "only comments": ("# nothing\n%\n\n", "the file is empty"),
    "headers only": ("@problemName P\n@classLabel true a\n", "no @data line"),
    "no cases": (GOOD + "# none\n", "no cases after the @data line"),
    "data before @data": ("@problemName P\n1,2,3:a\n@data\n", "line 2: a data line before the @data line"),
    "missing @data": ("@classLabel true a\n" + CASE, "line 2: a data line before the @data line"),
    "@data with a value": ("@data now\n" + CASE, "line 1: @data takes no value, got 'now'"),
    "header after @data": (
        GOOD + CASE + "@seriesLength 3\n",
        "line 9: a header line after @data \\(line 7\\)",
    ),
    "key without name": ("@ problemName x\n@data\n" + CASE, "line 1: a header line without a key"),
    "bad flag": ("@missing no\n@data\n" + CASE, "line 1: @missing must be true or false, got 'no'"),
    "bad flag words": ("@timestamps false true\n@data\n", "line 1: @timestamps must be true or false"),
    "bad length": (
        "@seriesLength 0\n@data\n" + CASE,
        "line 1: @serieslength must be a positive integer, got '0'",
    ),
    "bad dimensions": ("@dimensions two\n@data\n", "line 1: @dimensions must be a positive integer"),
    "univariate and 2 dims": (
        "@univariate true\n@dimensions 2\n@data\n",
        "line 2: @univariate true but @dimensions 2",
    ),
    "both dimension keys": (
        "@dimension 2\n@dimensions 2\n@data\n",
        "line 1: both @dimension and @dimensions",
    ),
    "class labels missing": ("@classLabel true\n@data\n", "line 1: @classLabel true needs the class labels"),
    "class label flag": (
        "@classLabel a b\n@data\n",
        "line 1: @classlabel must be true followed by the class",
    ),
    "labels twice": ("@classLabel true a b a\n@data\n", "line 1: @classLabel lists a more than once"),
    "class and target": (
        "@classLabel true a\n@targetLabel true\n@data\n",
        "line 2: both @classLabel true and @targetLabel true",
    ),
    "too many dimensions": (
        GOOD + CASE + "1,2,3:4,5,6:7,8,9:b\n",
        "line 9: 3 dimension\\(s\\), expected 2 \\(@dimensions 2\\)",
    ),
    "dimensions of the first case": (
        "@classLabel true a\n@data\n1:2:a\n1:a\n",
        "line 4: 1 dimension\\(s\\), expected 2 \\(the first case\\)",
    ),
    "univariate with 2 dimensions": (
        "@univariate true\n@classLabel true a\n@data\n1:2:a\n",
        "line 4: 2 dimension\\(s\\), expected 1 \\(@univariate true\\)",
    ),
    "not a number": (GOOD + "1,2,3:4,x5,6:a\n", "line 8, dimension 2, value 2: cannot read 'x5' as a number"),
    "empty value": (GOOD + "1,,3:4,5,6:a\n", "line 8, dimension 1, value 2: an empty value"),
    "empty series": (
        "@classLabel true a\n@data\n:4,5,6:a\n",
        "line 3, dimension 1, value 1: an empty series",
    ),
    "infinite value": (GOOD + "1,2,3:4,inf,6:a\n", "line 8, dimension 2, value 2: 'inf' is infinite"),
    "? with @missing false": (
        GOOD + "1,?,3:4,5,6:a\n",
        "line 8, dimension 1, value 2: missing value '\\?' but @missing false",
    ),
    "NaN with @missing false": (
        GOOD + "1,2,3:4,5,NaN:a\n",
        "line 8, dimension 2, value 3: missing value 'NaN' but @missing false",
    ),
    "stamps without @timeStamps": (
        "@classLabel true a\n@data\n(1,2),(2,3):a\n",
        "line 3, dimension 1, value 1: '\\(1' looks like a time-stamped value",
    ),
    "series length": (
        GOOD + CASE + "1,2,3:4,5,6,7:a\n",
        "line 9, dimension 2: 4 values, expected 3 \\(@seriesLength 3; equal-length series\\)",
    ),
    "length of the first case": (
        "@classLabel true a\n@data\n1,2,3:a\n1,2:a\n",
        "line 4, dimension 1: 2 values, expected 3 \\(the first case's length; equal-length series unless",
    ),
    "dimensions of unequal length": (
        "@equalLength false\n@classLabel true a\n@data\n1,2,3:4,5:a\n",
        "line 4, dimension 2: 2 values, but dimension 1 has 3",
    ),
    "unknown label": (
        GOOD + "1,2,3:4,5,6:c\n",
        "line 8: class label 'c' is not one of the labels of the @classLabel line a b",
    ),
    "empty label": (GOOD + "1,2,3:4,5,6:\n", "line 8: class label '' is not one of the labels"),
    "no label field": (
        GOOD + "1,2,3\n",
        "line 8: expected dimensions separated by ':' and a final ':class label'",
    ),
    "target not a number": (
        "@targetLabel true\n@data\n1,2:high\n",
        "line 3: the target \\(last ':' field\\) 'high' is missing or not a number",
    ),
    "missing target": (
        "@targetLabel true\n@data\n1,2:?\n",
        "line 3: the target \\(last ':' field\\) '\\?' is missing",
    ),
    "infinite target": (
        "@targetLabel true\n@data\n1,2:-inf\n",
        "line 3: the target \\(last ':' field\\) '-inf' is infinite",
    ),
    "no pairs": (
        "@timeStamps true\n@classLabel true a\n@data\n1,2,3:a\n",
        "line 4: expected time-stamped dimensions \\(t, v\\),\\(t, v\\),... separated by ':' and a final "
        "':class label' field",
    ),
    "not pairs": (
        "@timeStamps true\n@data\n1,2,3\n",
        "line 3, dimension 1: expected time-stamped values \\(t, v\\)",
    ),
    "pair without value": (
        "@timeStamps true\n@data\n(1,2),(3)\n",
        "line 3, dimension 1, value 2: expected \\(time stamp, value\\), got \\(3\\)",
    ),
    "bad stamp": (
        "@timeStamps true\n@data\n(1,2),(later,3)\n",
        "line 3, dimension 1, value 2: cannot read the time stamp 'later'",
    ),
    "mixed stamps": (
        "@timeStamps true\n@data\n(1,2),(2020-01-01,3)\n",
        "line 3, dimension 1, value 2: cannot read the time stamp '2020-01-01'",
    ),
    "stamp kinds across cases": (
        "@timeStamps true\n@data\n(1,2),(2,3)\n(2020-01-01,2),(2020-01-02,3)\n",
        "line 4, dimension 1: date-time time stamps, but the earlier ones are numbers",
    ),
    "stamps not increasing": (
        "@timeStamps true\n@data\n(1,2),(3,3),(3,4)\n",
        "line 3, dimension 1, value 3: time stamp '3' does not come after '3'",
    ),
    "stamps differ between dimensions": (
        "@timeStamps true\n@data\n(1,2),(2,3):(1,2),(2.5,3)\n",
        "line 3, dimension 2, value 2: time stamp differs from dimension 1's",
    ),
    "task mismatch": (
        GOOD + CASE,
        "the header makes it a file of task 'classification'.*expected 'regression'",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_name_file_line_and_expectation(tmp_path, case):
    text, message = ERRORS[case]
    path = write(tmp_path, text, name="Broken_TRAIN.ts")
    with pytest.raises(DataError, match="Broken_TRAIN.ts.*" + message):
        read_ts(path, task="regression" if case == "task mismatch" else None)


def test_task_argument(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        read_ts(write(tmp_path, GOOD + CASE), task="forecasting")
    with pytest.raises(DataError, match="task 'unlabelled'.*expected 'classification'"):
        read_ts(write(tmp_path, "@data\n1,2\n"), task="classification")  # no labels to map
    with pytest.raises(DataError, match="task 'regression'.*expected 'unlabelled'"):
        read_ts(write(tmp_path, "@targetLabel true\n@data\n1,2:3\n"), task="unlabelled")
    with pytest.raises(DataError, match="task 'unlabelled'.*expected 'regression'"):
        read_ts(write(tmp_path, "@targetLabel false\n@data\n1,2:3\n"), task="regression")


def test_repeated_key_the_last_counts(tmp_path):
    data = read_ts(write(tmp_path, "@problemName A\n@problemName B\n@data\n1,2\n"))  # as in aeon's UnitTest
    assert data.problem_name == "B" and data.header["problemname"] == "B"


# ---- speed -------------------------------------------------------------------------------------


def test_long_lines_are_parsed_with_numpy(tmp_path):
    """4 cases of 6 x 20,000 values (an EigenWorms-sized line): well under a second."""
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal((4, 6, 20_000)), 5)
    lines = [":".join(",".join(map(repr, d.tolist())) for d in case) + ":1" for case in x]
    path = write(tmp_path, "@classLabel true 1 2\n@data\n" + "\n".join(lines) + "\n")
    start = time.perf_counter()
    data = read_ts(path)
    assert time.perf_counter() - start < 5.0
    assert np.array_equal(data.x, x.transpose(0, 2, 1).astype(np.float32))
    assert not math.isnan(float(data.x.sum()))
