"""The .ts reader and the BIDMC32 regression datasets on fixture files written like the Monash/UEA archive."""

import os
import types

import numpy as np
import pytest
import torch

from liquid_s4.data import bidmc
from liquid_s4.data.bidmc import read_ts
from liquid_s4.data.common import CACHE_DIR, DataError, split_indices
from liquid_s4.data.registry import build_dataset

HEADER = """\
#The goal of this dataset is to estimate {what} using PPG and ECG data. This dataset is part of the Monash,
#UEA & UCR time series regression repository. http://tseregression.org/
#The data comes from the BIDMC PPG and Respiration dataset https://physionet.org/content/bidmc/1.0.0/
@problemName {name}
@timeStamps false
@missing false
@univariate false
@dimensions {dims}
@equalLength true
@seriesLength {length}
@targetlabel true
@data
"""


def ts_case(series: np.ndarray, target: float) -> str:
    """One case: the dimensions (C, L) as comma-separated values joined by ':', then ':target'."""
    return ":".join(",".join(repr(float(v)) for v in dim) for dim in series) + f":{target!r}"


def write_ts(
    path, x: np.ndarray, y: np.ndarray, name="BIDMC32HR", what="heart rate", header=None, newline="\n"
):
    """A .ts file as in the archive: comments, the @ header, @data, one case per line. x (n, C, L), y (n,)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    head = (
        HEADER.format(what=what, name=name, dims=x.shape[1], length=x.shape[2]) if header is None else header
    )
    lines = head.splitlines() + [ts_case(s, float(t)) for s, t in zip(x, y)]
    with open(path, "w", newline="") as f:
        f.write(newline.join(lines) + newline)
    return lines


def make_cases(n=6, dims=2, length=20, seed=0, target_offset=80.0):
    rng = np.random.default_rng(seed)
    x = (
        rng.standard_normal((n, dims, length)) * [[2.0], [0.5]][:dims] + [[1.0], [-3.0]][:dims]
    )  # per-channel scale and offset
    y = np.round(target_offset + 10 * rng.standard_normal(n), 3)
    return x, y


def write_bidmc(root, n_train=20, n_test=8, length=20, layout="archive"):
    """The three archive problems, each with its TRAIN/TEST files (different targets per problem)."""
    out = {}
    for seed, (target, (folder, what, _)) in enumerate(bidmc.TARGETS.items()):
        base = {"archive": os.path.join(root, folder), "flat": str(root)}[layout]
        tr, te = (
            make_cases(n_train, length=length, seed=seed, target_offset=[80, 15, 97][seed]),
            make_cases(n_test, length=length, seed=seed + 10),
        )
        write_ts(os.path.join(base, f"{folder}_TRAIN.ts"), *tr, name=folder, what=what)
        write_ts(os.path.join(base, f"{folder}_TEST.ts"), *te, name=folder, what=what)
        out[target] = (tr, te)
        if layout == "flat":
            break
    return out


def spec(root, val_fraction=0.25, **options):
    return types.SimpleNamespace(
        name="bidmc",
        data_dir=None if root is None else str(root),
        val_fraction=val_fraction,
        test_fraction=0.0,
        options=options,
    )


# ---- read_ts ----------------------------------------------------------------------------------


def test_read_ts_round_trip(tmp_path):
    x, y = make_cases(6, dims=2, length=20)
    write_ts(tmp_path / "BIDMC32HR_TRAIN.ts", x, y)
    xs, ys = read_ts(str(tmp_path / "BIDMC32HR_TRAIN.ts"))
    assert xs.shape == (6, 20, 2) and xs.dtype == np.float32 and ys.shape == (6,) and ys.dtype == np.float32
    assert np.array_equal(
        xs, x.transpose(0, 2, 1).astype(np.float32)
    )  # (n, L, C), case and channel order kept
    assert np.array_equal(ys, y.astype(np.float32))


def test_read_ts_header_variants(tmp_path):
    x, y = make_cases(3, dims=2, length=7)
    header = (
        "# comment\n@problemname Other\n@TIMESTAMPS false\n\n@Dimension 2\n@serieslength 7\n@TargetLabel "
        "True\n@DATA   \n# among cases"
    )
    write_ts(tmp_path / "a.ts", x, y, header=header, newline="\r\n")
    xs, ys = read_ts(str(tmp_path / "a.ts"))
    assert np.array_equal(xs, x.transpose(0, 2, 1).astype(np.float32)) and np.array_equal(
        ys, y.astype(np.float32)
    )
    write_ts(
        tmp_path / "b.ts", x[:, :1], y, header="@univariate true\n@data"
    )  # no lengths or dimensions given
    xs, ys = read_ts(str(tmp_path / "b.ts"))
    assert xs.shape == (3, 7, 1) and np.array_equal(xs[..., 0], x[:, 0].astype(np.float32))


def test_read_ts_missing_values(tmp_path):
    x, y = make_cases(2, dims=2, length=5)
    lines = write_ts(tmp_path / "m.ts", x, y)
    text = "\n".join(lines).replace("@missing false", "@missing true")
    case = lines[-1].split(":")
    case[1] = "?," + case[1].split(",", 1)[1]
    (tmp_path / "m.ts").write_text(text.replace(lines[-1], ":".join(case)) + "\n")
    xs, _ = read_ts(str(tmp_path / "m.ts"))
    assert np.isnan(xs[1, 0, 1]) and np.isfinite(np.delete(xs.reshape(-1), 1 * 10 + 0 * 2 + 1)).all()
    (tmp_path / "m.ts").write_text(
        text.replace("@missing true", "@missing false").replace(lines[-1], ":".join(case)) + "\n"
    )
    with pytest.raises(
        DataError,
        match=f"m.ts line {len(lines)}, dimension 2, value 1: missing value '\\?' but @missing false",
    ):
        read_ts(str(tmp_path / "m.ts"))


def corrupt(lines, case):
    """The lines of a valid file (6 cases, 2 dims, length 20) broken in one way; returns (lines, message)."""
    lines, n = list(lines), len(lines)  # the last case is on line n, the @data line is n - 6
    last = lines[-1].split(":")
    if case == "bad value":
        values = last[1].split(",")
        values[4] = "abc"
        lines[-1] = ":".join([last[0], ",".join(values), last[2]])
        return lines, f"line {n}, dimension 2, value 5: cannot read 'abc' as a number"
    if case == "short series":
        lines[-2] = lines[-2].split(",", 1)[1]  # drop the first value of dimension 1
        return lines, f"line {n - 1}, dimension 1: 19 values, expected 20 \\(@seriesLength.*equal-length"
    if case == "unequal to the first case":
        lines = [line for line in lines if not line.startswith("@seriesLength")]
        lines[-1] = ":".join([last[0], last[1] + ",1.5", last[2]])
        return lines, f"line {n - 1}, dimension 2: 21 values, expected 20"
    if case == "extra dimension":
        lines[-1] = ":".join([last[0], last[1], last[1], last[2]])
        return lines, f"line {n}: 3 dimension\\(s\\), expected 2"
    if case == "header dimensions":
        lines = [line.replace("@dimensions 2", "@dimensions 3") for line in lines]
        return lines, f"line {n - 5}: 2 dimension\\(s\\), expected 3"
    if case == "header length":
        lines = [line.replace("@seriesLength 20", "@seriesLength 30") for line in lines]
        return lines, f"line {n - 5}, dimension 1: 20 values, expected 30"
    if case == "missing target":
        lines[-1] = ":".join(last[:2] + ["?"])
        return lines, f"line {n}: the target .* '\\?' is missing or not a number"
    if case == "no colon":
        lines[-1] = last[0]
        return lines, f"line {n}: expected dimensions separated by ':'.*malformed"
    if case == "missing @data":
        lines = [line for line in lines if line != "@data"]
        return lines, f"line {n - 6}: a data line before the @data line \\(is @data missing\\?\\)"
    if case == "headers only":
        return lines[: n - 7], "no @data line"
    if case == "no cases":
        return lines[: n - 6], "no cases after the @data line"
    if case == "timestamps":
        return [
            line.replace("@timeStamps false", "@timeStamps true") for line in lines
        ], "@timeStamps true\\) are not supported"
    if case == "classification":
        return [
            line.replace("@targetlabel true", "@classLabel true 0 1") for line in lines
        ], "a classification file"
    if case == "bad length header":
        return [
            line.replace("@seriesLength 20", "@seriesLength many") for line in lines
        ], "@serieslength must be a positive integer"
    assert case == "bad flag"
    return [
        line.replace("@missing false", "@missing no") for line in lines
    ], "@missing must be true or false, got 'no'"


CORRUPTIONS = [
    "bad value",
    "short series",
    "unequal to the first case",
    "extra dimension",
    "header dimensions",
    "header length",
    "missing target",
    "no colon",
    "missing @data",
    "headers only",
    "no cases",
    "timestamps",
    "classification",
    "bad length header",
    "bad flag",
]


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_read_ts_errors_name_file_and_line(tmp_path, case):
    lines = write_ts(tmp_path / "BIDMC32HR_TRAIN.ts", *make_cases(6, dims=2, length=20))
    bad, message = corrupt(lines, case)
    (tmp_path / "BIDMC32HR_TRAIN.ts").write_text("\n".join(bad) + "\n")
    with pytest.raises(DataError, match="BIDMC32HR_TRAIN.ts.*" + message):
        read_ts(str(tmp_path / "BIDMC32HR_TRAIN.ts"))


# ---- build_bidmc ------------------------------------------------------------------------------


def test_bidmc_standardized_with_training_statistics(tmp_path):
    written = write_bidmc(tmp_path)
    data = build_dataset(spec(tmp_path))
    (x_tr, y_tr), (x_te, y_te) = written["hr"]
    tr, va, _ = (i.numpy() for i in split_indices(20, 0.25, 0.0, seed=0))
    assert data.sizes() == {"train": 15, "val": 5, "test": 8} and data.official == {
        "train": 5550,
        "test": 2399,
    }
    info = data.info
    assert (info.d_input, info.d_output, info.task) == (2, 1, "regression")
    raw = x_tr.transpose(0, 2, 1).astype(np.float32).astype(np.float64)  # (n, L, C)
    mean, std = raw[tr].mean(axis=(0, 1)), raw[tr].std(axis=(0, 1))  # training split only
    y_mean, y_std = (
        y_tr.astype(np.float32)[tr].astype(np.float64).mean(),
        y_tr.astype(np.float32)[tr].astype(np.float64).std(),
    )
    assert np.allclose(info.extra["channel_mean"], mean) and np.allclose(info.extra["channel_std"], std)
    assert info.extra["target_normalized"] is True and info.extra["target"] == "hr"
    assert info.extra["target_mean"] == pytest.approx(y_mean, rel=1e-9) and info.extra[
        "target_std"
    ] == pytest.approx(y_std, rel=1e-9)
    assert (
        f"std {y_std:.4g}" in info.description
        and "BIDMC32HR (heart rate, bpm): 20-step series, 2 channels, 15/5/8" in info.description
    )
    for ds, index, xs, ys in (
        (data.train, tr, x_tr, y_tr),
        (data.val, va, x_tr, y_tr),
        (data.test, np.arange(8), x_te, y_te),
    ):
        for i, j in enumerate(index):
            x, y = ds[i]
            assert (
                x.shape == (20, 2)
                and x.dtype == torch.float32
                and y.shape == (1,)
                and y.dtype == torch.float32
            )
            assert np.allclose(x.numpy(), (xs[j].T - mean) / std, atol=1e-5)
            assert float(y) == pytest.approx((ys[j] - y_mean) / y_std, abs=1e-5)
            assert float(y) * info.extra["target_std"] + info.extra["target_mean"] == pytest.approx(
                ys[j], abs=1e-3
            )  # back to bpm
    train_x = torch.stack([data.train[i][0] for i in range(15)])
    assert torch.allclose(train_x.mean((0, 1)), torch.zeros(2), atol=1e-5) and torch.allclose(
        train_x.std((0, 1), unbiased=False), torch.ones(2), atol=1e-4
    )
    test_x = torch.stack([data.test[i][0] for i in range(8)])
    assert not torch.allclose(
        test_x.mean((0, 1)), torch.zeros(2), atol=1e-2
    )  # the test split is not used for the statistics


@pytest.mark.parametrize("target", ["rr", "spo2"])
def test_bidmc_target_option_and_raw_targets(tmp_path, target):
    written = write_bidmc(tmp_path)
    (_, y_tr), (_, y_te) = written[target]
    data = build_dataset(spec(tmp_path, target=target, normalize_target=False))
    tr, _, _ = split_indices(20, 0.25, 0.0, seed=0)
    assert float(data.train[0][1]) == pytest.approx(y_tr[int(tr[0])], abs=1e-4) and float(
        data.test[7][1]
    ) == pytest.approx(y_te[7], abs=1e-4)
    assert data.info.extra["target_normalized"] is False and data.info.extra["target"] == target
    assert bidmc.TARGETS[target][0] in data.info.description and "raw targets" in data.info.description


def test_bidmc_layouts(tmp_path, monkeypatch):
    written = write_bidmc(tmp_path / "bidmc")
    expected = float(written["rr"][1][1][0])
    one = build_dataset(
        spec(tmp_path / "bidmc" / "BIDMC32RR", target="rr", normalize_target=False)
    )  # one problem's folder
    assert float(one.test[0][1]) == pytest.approx(expected, abs=1e-4)
    monkeypatch.setenv("LIQUID_S4_DATA", str(tmp_path))  # default folder: $LIQUID_S4_DATA/bidmc
    assert float(build_dataset(spec(None, target="rr", normalize_target=False)).test[0][1]) == pytest.approx(
        expected, abs=1e-4
    )
    flat = write_bidmc(tmp_path / "flat", layout="flat")  # the .ts files directly in data_dir
    assert float(build_dataset(spec(tmp_path / "flat", normalize_target=False)).test[0][1]) == pytest.approx(
        flat["hr"][1][1][0], abs=1e-4
    )
    assert len(build_dataset(spec(tmp_path / "flat", val_fraction=0.0)).train) == 20


def test_bidmc_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    write_bidmc(tmp_path)
    calls = []
    real = bidmc.read_ts
    monkeypatch.setattr(bidmc, "read_ts", lambda path: calls.append(os.path.basename(path)) or real(path))
    first = build_dataset(spec(tmp_path))
    assert calls == ["BIDMC32HR_TRAIN.ts", "BIDMC32HR_TEST.ts"] and os.path.isdir(
        tmp_path / "BIDMC32HR" / CACHE_DIR
    )
    second = build_dataset(spec(tmp_path, val_fraction=0.5))  # other split, same parsed arrays
    assert len(calls) == 2 and len(second.train) == 10
    assert not torch.equal(first.test[3][0], second.test[3][0])  # statistics of the new training split
    x, y = make_cases(8, seed=99)
    write_ts(tmp_path / "BIDMC32HR" / "BIDMC32HR_TEST.ts", x, y)
    third = build_dataset(spec(tmp_path, normalize_target=False))
    assert len(calls) == 4 and float(third.test[0][1]) == pytest.approx(y[0], abs=1e-4)
    assert len([d for d in os.listdir(tmp_path / "BIDMC32HR" / CACHE_DIR) if d.startswith("BIDMC32HR-")]) == 1


def test_bidmc_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match="(?s)BIDMC data folder not found.*Expected layout:.*BIDMC32HR/BIDMC32HR_TRAIN.ts"
        ".*tseregression",
    ):
        build_dataset(spec(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="BIDMC file BIDMC32HR/BIDMC32HR_TRAIN.ts not found"):
        build_dataset(spec(tmp_path))
    write_bidmc(tmp_path)
    os.remove(tmp_path / "BIDMC32SpO2" / "BIDMC32SpO2_TEST.ts")
    with pytest.raises(FileNotFoundError, match="BIDMC file BIDMC32SpO2_TEST.ts not found"):
        build_dataset(spec(tmp_path, target="spo2"))
    with pytest.raises(ValueError, match="target must be one of \\('hr', 'rr', 'spo2'\\), got 'bp'"):
        build_dataset(spec(tmp_path, target="bp"))
    with pytest.raises(ValueError, match="normalize_target must be true or false"):
        build_dataset(spec(tmp_path, normalize_target="yes"))
    with pytest.raises(ValueError, match="unknown data.options \\['channels'\\]"):
        build_dataset(spec(tmp_path, channels=1))
    x, y = make_cases(8, length=21)
    write_ts(tmp_path / "BIDMC32RR" / "BIDMC32RR_TEST.ts", x, y)
    with pytest.raises(
        DataError, match="BIDMC32RR_TEST.ts: series of shape \\(21, 2\\).*TRAIN file has \\(20, 2\\)"
    ):
        build_dataset(spec(tmp_path, target="rr"))
    lines = write_ts(tmp_path / "BIDMC32HR" / "BIDMC32HR_TRAIN.ts", *make_cases(20))
    text = "\n".join(lines).replace("@missing false", "@missing true")
    (tmp_path / "BIDMC32HR" / "BIDMC32HR_TRAIN.ts").write_text(
        text.replace(lines[-1], "?" + lines[-1][lines[-1].index(",") :]) + "\n"
    )
    with pytest.raises(DataError, match="BIDMC32HR_TRAIN.ts: missing or non-finite values"):
        build_dataset(spec(tmp_path))
