"""The uea dataset: real archive files (tests/fixtures/ts, from the aeon wheel) and written `.ts` fixtures:
layouts, splits, standardization, missing values, time gaps, `--data NAME_TRAIN.ts` and `data check`."""

import json
import os
import types

import numpy as np
import pytest
import torch

from liquid_s4.cli import main
from liquid_s4.data import uea
from liquid_s4.data.common import DataError, collate
from liquid_s4.data.registry import build_dataset

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ts")


def spec(data_dir, val_fraction=0.1, **options):
    return types.SimpleNamespace(
        name="uea", data_dir=str(data_dir), val_fraction=val_fraction, test_fraction=0.0, options=options
    )


@pytest.fixture(autouse=True)
def no_cache(monkeypatch):
    monkeypatch.setenv("LIQUID_S4_NO_CACHE", "1")  # the fixture folder stays clean


def write_cls(path, cases, labels, classes, name="Toy", missing=False, stamps=None):
    """A classification .ts file: cases a list of (C, L_i) arrays (NaN written '?'), labels the class
    label of each case, classes the @classLabel list; stamps a list of (L_i,) time stamps, or None."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    lengths = {c.shape[1] for c in cases}
    head = [
        "# written by the tests",
        f"@problemName {name}",
        f"@timeStamps {'true' if stamps is not None else 'false'}",
        f"@missing {'true' if missing else 'false'}",
        f"@univariate {'true' if cases[0].shape[0] == 1 else 'false'}",
        f"@dimensions {cases[0].shape[0]}",
        f"@equalLength {'true' if len(lengths) == 1 else 'false'}",
    ]
    if len(lengths) == 1:
        head.append(f"@seriesLength {lengths.pop()}")
    head += [f"@classLabel true {' '.join(classes)}", "@data"]

    def value(v):
        return "?" if np.isnan(v) else repr(float(v))

    lines = []
    for i, (case, label) in enumerate(zip(cases, labels)):
        if stamps is None:
            dims = [",".join(value(v) for v in dim) for dim in case]
        else:
            dims = [",".join(f"({float(t)!r},{value(v)})" for t, v in zip(stamps[i], dim)) for dim in case]
        lines.append(":".join(dims) + f":{label}")
    with open(path, "w") as f:
        f.write("\n".join(head + lines) + "\n")


def toy(root, name="Toy", n_train=20, n_test=10, C=2, L=16, seed=0, flat=False, offset=0.0):
    """A two-class problem in the archive layout (root/name/name_{TRAIN,TEST}.ts), or flat in root."""
    rng = np.random.default_rng(seed)
    folder = root if flat else os.path.join(root, name)
    for part, n, shift in (("TRAIN", n_train, 0.0), ("TEST", n_test, offset)):
        cases = [rng.standard_normal((C, L)) * 2 + 5 + shift for _ in range(n)]
        labels = ["up" if k % 2 else "down" for k in range(n)]
        write_cls(os.path.join(folder, f"{name}_{part}.ts"), cases, labels, ["up", "down"], name=name)
    return os.path.join(folder, f"{name}_TRAIN.ts")


# ---- real archive files ------------------------------------------------------------------------


def test_basic_motions_real_files():
    data = build_dataset(spec(FIXTURES, dataset="BasicMotions"))
    info = data.info
    assert (info.d_input, info.d_output, info.task) == (6, 4, "classification")
    assert info.extra["classes"] == ["Standing", "Running", "Walking", "Badminton"]  # header order
    assert data.sizes() == {"train": 36, "val": 4, "test": 40}
    x, y = data.train[0]  # equal length: no lengths
    assert x.shape == (100, 6) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert info.extra["found"] == info.extra["published"] == {"dimensions": 6, "length": 100, "classes": 4}
    assert data.official == {"train": 40, "test": 40}
    batch = collate([data.train[i] for i in range(len(data.train))])
    assert batch.x.mean((0, 1)).abs().max() < 1e-4 and (batch.x.std((0, 1)) - 1).abs().max() < 0.02


def test_japanese_vowels_variable_lengths():
    data = build_dataset(spec(FIXTURES, dataset="japanesevowels"))  # names match case-insensitively
    assert (data.info.d_input, data.info.d_output) == (12, 9)
    lengths = [int(data.test[i][2]) for i in range(len(data.test))]
    assert min(lengths) >= 7 and max(lengths) <= 29 and len(set(lengths)) > 5
    x, _, n = data.test[int(np.argmin(lengths))]
    assert x.shape == (29, 12)  # TEST's longest; the padding after the length is the standardized 0
    assert torch.isfinite(x).all() and torch.allclose(x[n:], x[n:][:1].expand_as(x[n:]))
    assert data.info.extra["found"] == {"dimensions": 12, "length": 29, "classes": 9}


def test_pickup_gesture_univariate_variable_length():
    data = build_dataset(spec(FIXTURES, dataset="PickupGestureWiimoteZ", split="random", seed=1))
    assert (data.info.d_input, data.info.d_output) == (1, 10)
    assert data.sizes() == {"train": 70, "val": 15, "test": 15}
    x, _, n = data.train[0]
    assert x.shape == (361, 1) and 1 <= int(n) <= 361 and torch.isfinite(x).all()
    assert data.official == {}  # not in the published table: nothing compared


def test_regression_file_standardized_target():
    data = build_dataset(spec(FIXTURES, dataset="Covid3Month"))
    assert (data.info.task, data.info.d_output) == ("regression", 1)
    e = data.info.extra
    assert e["target_normalized"] and e["target_std"] > 0
    ys = torch.stack([data.train[i][1] for i in range(len(data.train))])
    assert ys.shape == (len(data.train), 1) and abs(float(ys.mean())) < 1e-4


# ---- written fixtures: layouts, errors, splits, statistics ------------------------------------


def test_archive_flat_and_file_layouts(tmp_path):
    archive = toy(str(tmp_path / "a"))
    flat = toy(str(tmp_path / "f"), flat=True)
    a = build_dataset(spec(tmp_path / "a", dataset="Toy"))
    f = build_dataset(spec(tmp_path / "f", dataset="toy"))
    by_file = build_dataset(spec(archive))  # data_dir = the TRAIN file, the problem from its name
    assert a.sizes() == f.sizes() == by_file.sizes() == {"train": 18, "val": 2, "test": 10}
    assert torch.equal(a.test[3][0], by_file.test[3][0])
    assert os.path.basename(flat) == "Toy_TRAIN.ts"
    with pytest.raises(ValueError, match="is problem 'Toy'"):
        build_dataset(spec(archive, dataset="Other"))
    with pytest.raises(ValueError, match="needs the problem's name"):
        build_dataset(spec(tmp_path / "a"))
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        build_dataset(spec(tmp_path / "a", dataset="Missing"))
    os.remove(tmp_path / "a" / "Toy" / "Toy_TEST.ts")
    with pytest.raises(FileNotFoundError, match="Toy_TEST.ts not found"):
        build_dataset(spec(tmp_path / "a", dataset="Toy"))
    with pytest.raises(FileNotFoundError, match="Toy_TEST.ts not found beside"):
        build_dataset(spec(archive))
    with pytest.raises(ValueError, match="data.options.split must be one of"):
        build_dataset(spec(flat, split="kfold"))
    with pytest.raises(ValueError, match="unknown data.options"):
        build_dataset(spec(flat, folds=3))


def test_random_split_deterministic_disjoint_70_15_15(tmp_path):
    toy(str(tmp_path), n_train=60, n_test=40)

    def rows(data):  # each case's first value identifies it
        return [{float(ds.x[j, 0, 0]) for j in ds.index} for ds in (data.train, data.val, data.test)]

    a = build_dataset(spec(tmp_path, dataset="Toy", split="random", seed=3))
    b = build_dataset(spec(tmp_path, dataset="Toy", split="random", seed=3))
    c = build_dataset(spec(tmp_path, dataset="Toy", split="random", seed=4))
    assert a.sizes() == {"train": 70, "val": 15, "test": 15} and a.official == {}
    ra, rb, rc = rows(a), rows(b), rows(c)
    assert ra == rb and ra != rc
    assert not (ra[0] & ra[1] or ra[0] & ra[2] or ra[1] & ra[2]) and len(ra[0] | ra[1] | ra[2]) == 100
    # the seed defaults to the run's seed
    run = build_dataset(spec(tmp_path, dataset="Toy", split="random"), seed=4)
    assert rows(run) == rc
    # and a training run passes its trainer.seed on (build_datamodule)
    from liquid_s4.train.data import build_datamodule

    dm = build_datamodule(spec(tmp_path, dataset="Toy", split="random"), seed=4)
    assert [{float(ds.x[j, 0, 0]) for j in ds.index} for ds in (dm.train_set, dm.val_set)] == rc[:2]
    with pytest.raises(ValueError, match="applies to the random split"):
        build_dataset(spec(tmp_path, dataset="Toy", seed=4))


def test_standardization_uses_training_statistics_only(tmp_path):
    toy(str(tmp_path), n_train=30, n_test=10, offset=100.0)  # TEST shifted far away
    data = build_dataset(spec(tmp_path, dataset="Toy", val_fraction=0.2))
    train = np.asarray(data.train.x)[data.train.index].astype(np.float64)
    mean, std = train.mean((0, 1)), train.std((0, 1))
    np.testing.assert_allclose(data.info.extra["channel_mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(data.info.extra["channel_std"], std, rtol=1e-6)
    assert float(data.test[0][0].mean()) > 20  # the test set is not re-centred


def test_missing_values_forward_filled_then_training_mean(tmp_path):
    nan = np.nan
    train = [
        np.array([[1.0, nan, 3.0, nan], [nan, nan, 2.0, 4.0]]),
        np.array([[5.0, 5.0, 5.0, 7.0], [0.0, 2.0, 4.0, 6.0]]),
    ]
    test = [np.array([[nan, 2.0, nan, nan], [1.0, nan, nan, 3.0]])]
    write_cls(str(tmp_path / "M" / "M_TRAIN.ts"), train, ["a", "b"], ["a", "b"], name="M", missing=True)
    write_cls(str(tmp_path / "M" / "M_TEST.ts"), test, ["b"], ["a", "b"], name="M", missing=True)
    data = build_dataset(spec(tmp_path, dataset="M", val_fraction=0.0))
    observed = [[1.0, 3.0, 5.0, 5.0, 5.0, 7.0], [2.0, 4.0, 0.0, 2.0, 4.0, 6.0]]  # NaNs left out
    mean, std = np.mean(observed, 1), np.std(observed, 1)
    np.testing.assert_allclose(data.info.extra["channel_mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(data.info.extra["channel_std"], std, rtol=1e-6)
    assert data.info.extra["missing_values"] == 9
    x = data.test[0][0].double()
    assert torch.isfinite(x).all()
    raw = x * torch.tensor(std) + torch.tensor(mean)  # back to the file's units
    # channel 0: leading NaN -> the training mean, then 2 carried forward; channel 1: 1 carried forward
    expected = torch.tensor([[mean[0], 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 3.0]]).T
    torch.testing.assert_close(raw, expected, atol=1e-5, rtol=1e-5)  # float32 round trip
    row = [i for i in range(len(data.train)) if data.train.index[i] == 0][0]
    expected0 = torch.tensor([[1.0, 1.0, 3.0, 3.0], [mean[1], mean[1], 2.0, 4.0]]).T
    raw0 = data.train[row][0].double() * torch.tensor(std) + torch.tensor(mean)
    torch.testing.assert_close(raw0, expected0, atol=1e-5, rtol=1e-5)


def test_time_stamps_become_per_step_gaps(tmp_path):
    rng = np.random.default_rng(0)
    stamps = [np.cumsum(rng.choice([0.5, 1.0, 2.0], size=6)) for _ in range(8)]
    cases = [rng.standard_normal((1, 6)) for _ in range(8)]
    labels = ["x" if k % 2 else "y" for k in range(8)]
    for part, sl in (("TRAIN", slice(0, 6)), ("TEST", slice(6, 8))):
        write_cls(
            str(tmp_path / "T" / f"T_{part}.ts"),
            cases[sl],
            labels[sl],
            ["x", "y"],
            name="T",
            stamps=stamps[sl],
        )
    data = build_dataset(spec(tmp_path, dataset="T", val_fraction=0.0, nominal_step=0.5))
    item = data.test[1]
    assert isinstance(item, dict) and data.info.extra["time_gaps"] == "rate"
    expected = np.concatenate([[1.0], np.diff(stamps[7]) / 0.5])
    np.testing.assert_allclose(item["dt"].numpy(), expected, rtol=1e-6)
    assert collate([data.train[0], data.train[1]]).dt.shape == (2, 6)
    default = build_dataset(spec(tmp_path, dataset="T", val_fraction=0.0))  # median training gap
    train_gaps = np.concatenate([np.diff(s) for s in stamps[:6]])
    assert default.info.extra["nominal_step"] == pytest.approx(float(np.median(train_gaps)))
    ignored = build_dataset(spec(tmp_path, dataset="T", val_fraction=0.0, time_gaps=False))
    assert not isinstance(ignored.test[0], dict)


def test_test_labels_matched_by_name_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    cases = [rng.standard_normal((1, 5)) for _ in range(4)]
    write_cls(str(tmp_path / "P" / "P_TRAIN.ts"), cases, ["a", "b", "c", "a"], ["a", "b", "c"], name="P")
    write_cls(str(tmp_path / "P" / "P_TEST.ts"), cases[:2], ["c", "b"], ["c", "b"], name="P")
    data = build_dataset(spec(tmp_path, dataset="P", val_fraction=0.0))
    assert [int(data.test[i][1]) for i in range(2)] == [2, 1]  # the TRAIN header's order
    write_cls(str(tmp_path / "P" / "P_TEST.ts"), cases[:1], ["d"], ["d"], name="P")
    with pytest.raises(DataError, match=r"class label\(s\) \['d'\]"):
        build_dataset(spec(tmp_path, dataset="P"))
    write_cls(str(tmp_path / "P" / "P_TEST.ts"), [np.ones((2, 5))], ["a"], ["a", "b", "c"], name="P")
    with pytest.raises(DataError, match="2 dimension"):
        build_dataset(spec(tmp_path, dataset="P"))


# ---- the command line ------------------------------------------------------------------------

TINY = ["--set", "model.d_model=8", "--set", "model.n_layers=1", "--set", "model.layer_args.d_state=4"]


def test_train_and_eval_with_data_ts_file(tmp_path, capsys):
    train_file = os.path.join(FIXTURES, "JapaneseVowels", "JapaneseVowels_TRAIN.ts")
    out = tmp_path / "run"
    args = ["train", "--data", train_file, "--max-steps", "2", "--output-dir", str(out), *TINY]
    assert main(args + ["--set", "data.batch_size=8", "--set", "trainer.progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "JapaneseVowels (classification)" in printed and "9 classes" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and 0 <= metrics["test/acc"] <= 1
    ckpt = str(out / "checkpoints" / "last.ckpt")
    assert main(["eval", ckpt, "--data", train_file]) == 0
    assert "test/acc" in capsys.readouterr().out
    lone = tmp_path / "Lone_TRAIN.ts"
    lone.write_text((tmp_path / "x").as_posix())
    assert main(["train", "--data", str(lone), "--quiet"]) == 2
    assert "Lone_TEST.ts not found beside" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "whatever.ts"), "--quiet"]) == 2
    assert "NAME_TRAIN.ts" in capsys.readouterr().err


def test_data_check_compares_published_sizes(tmp_path, capsys):
    train_file = os.path.join(FIXTURES, "BasicMotions", "BasicMotions_TRAIN.ts")
    assert main(["data", "check", "--data", train_file]) == 0
    out = capsys.readouterr().out
    assert "4 classes (Standing, Running, Walking, Badminton)" in out and "length 100" in out
    assert "official release" not in out and "ok: every split was read" in out
    assert (
        main(["data", "check", "uea", "--data-dir", FIXTURES, "--set", "data.options.dataset=Heartbeat"]) == 2
    )
    assert "Heartbeat_TRAIN.ts not found" in capsys.readouterr().err
    # a copy named like a published problem whose sizes differ: every difference is reported
    toy(str(tmp_path), name="Heartbeat", n_train=10, n_test=6, C=3, L=12)
    args = ["data", "check", "uea", "--data-dir", str(tmp_path), "--set", "data.options.dataset=Heartbeat"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for line in (
        "train: 10 items, the official release has 204",
        "test: 6 items, the official release has 205",
        "dimensions: 3, the official release has 61",
        "length: 12, the official release has 405",
    ):
        assert line in out
    assert "classes:" not in out and "(with the differences above)" in out
    assert main(args + ["--set", "data.options.split=random"]) == 0
    assert "all: 16 items, the official release has 409" in capsys.readouterr().out


def test_uea_presets_load():
    from liquid_s4.train.config import load_config

    for name, problem in [
        ("uea-eigenworms", "EigenWorms"),
        ("uea-ethanolconcentration", "EthanolConcentration"),
        ("uea-heartbeat", "Heartbeat"),
        ("uea-motorimagery", "MotorImagery"),
        ("uea-selfregulationscp1", "SelfRegulationSCP1"),
        ("uea-selfregulationscp2", "SelfRegulationSCP2"),
    ]:
        c = load_config(name)
        assert c.data.name == "uea" and c.data.options == {"dataset": problem, "split": "random"}
        assert uea.PUBLISHED[problem]["train"] > 0
        assert c.model.layer_args["lr"] == c.optim.lr and c.optim.scheduler == "constant"
    assert load_config("uea").data.options == {"split": "archive"}


def test_parsed_arrays_are_cached_next_to_the_files(tmp_path, monkeypatch):
    monkeypatch.delenv("LIQUID_S4_NO_CACHE")
    toy(str(tmp_path))
    first = build_dataset(spec(tmp_path, dataset="Toy"))
    entries = os.listdir(tmp_path / "Toy" / ".liquid_s4_cache")
    assert len(entries) == 1 and entries[0].startswith("uea-Toy-")
    again = build_dataset(spec(tmp_path, dataset="Toy"))  # memory-mapped from the cache
    assert isinstance(again.test.x, np.memmap) and torch.equal(first.test[4][0], again.test[4][0])
