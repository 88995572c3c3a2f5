"""Bring-your-own arrays: .npz, a folder of .npz, wide/long CSV and Parquet, written by the helpers below."""

import os
import types

import numpy as np
import pandas as pd
import pytest
import torch

from liquid_s4.data import arrays
from liquid_s4.data.common import CACHE_DIR, DataError, collate, split_indices
from liquid_s4.data.registry import build_dataset


def spec(path, val_fraction=0.1, test_fraction=0.2, **options):
    return types.SimpleNamespace(
        name="arrays",
        data_dir=str(path),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        options=options,
    )


def stack(ds):
    """Every item of a dataset, stacked per position of the tuple."""
    items = [ds[i] for i in range(len(ds))]
    return [torch.stack([it[k] for it in items]) for k in range(len(items[0]))]


# ---- fixture writers, in the documented formats -----------------------------------------------


def write_npz(path, **arrays_):
    np.savez(path, **arrays_)
    return path


def write_npz_dir(root, **splits):
    """root/train.npz [val.npz test.npz]; each split a dict of arrays (x, y[, lengths])."""
    os.makedirs(root, exist_ok=True)
    for name, a in splits.items():
        np.savez(os.path.join(root, f"{name}.npz"), **a)
    return root


def _cell(v):
    return (
        ""
        if v is None or (isinstance(v, float) and np.isnan(v))
        else repr(v)
        if isinstance(v, float)
        else str(v)
    )


def write_wide_csv(path, x, labels, label="y"):
    """One row per sequence: the label, then one column per step (empty cells for NaN)."""
    with open(path, "w") as f:
        f.write(",".join([label] + [f"t{j}" for j in range(len(x[0]))]) + "\n")
        for row, lab in zip(x, labels):
            f.write(",".join([str(lab)] + [_cell(float(v)) for v in row]) + "\n")
    return path


def write_long_csv(path, sequences, features=("a", "b"), time=True, seed=0, label="label"):
    """One row per time step: id, t, features..., label; `sequences` is [(id, label, (l, C) values)],
    the rows written in a shuffled order (the time column restores it)."""
    rows = []
    for sid, lab, values in sequences:
        for t, v in enumerate(values):
            rows.append(
                [str(sid)] + ([str(t * 10)] if time else []) + [repr(float(c)) for c in v] + [str(lab)]
            )
    if time:
        rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    with open(path, "w") as f:
        f.write(",".join(["id"] + (["t"] if time else []) + list(features) + [label]) + "\n")
        f.writelines(",".join(r) + "\n" for r in rows)
    return path


def random_sequences(n, lengths, C=2, seed=0, labels=("cat", "dog", "ant")):
    rng = np.random.default_rng(seed)
    return [
        (f"s{i}", labels[i % len(labels)], rng.normal(size=(lengths[i % len(lengths)], C)).round(4))
        for i in range(n)
    ]


# ---- .npz -------------------------------------------------------------------------------------


def test_npz_roundtrip_split_and_train_statistics(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(40, 9, 2)) * np.array([1.0, 10.0])  # (n, L, C)
    y = rng.integers(0, 5, 40)
    d = build_dataset(spec(write_npz(tmp_path / "data.npz", x=x, y=y)))
    tr, va, te = (i.numpy() for i in split_indices(40, 0.1, 0.2, seed=0))
    assert d.sizes() == {"train": 28, "val": 4, "test": 8}
    assert sorted(np.concatenate([d.train.index, d.val.index, d.test.index])) == list(range(40))
    assert (
        np.array_equal(d.train.index, tr)
        and np.array_equal(d.val.index, va)
        and np.array_equal(d.test.index, te)
    )
    mean, std = x[tr].reshape(-1, 2).mean(0), x[tr].reshape(-1, 2).std(0)  # training split only
    assert np.allclose(d.info.extra["mean"], mean) and np.allclose(d.info.extra["std"], std)
    X, Y = stack(d.test)
    assert X.dtype == torch.float32 and X.shape == (8, 9, 2) and Y.dtype == torch.int64 and Y.shape == (8,)
    assert np.allclose(X.numpy(), (x[te] - mean) / std, atol=1e-5)
    assert np.array_equal(Y.numpy(), y[te])
    i = d.info
    assert (i.task, i.d_input, i.d_output, i.vocab_size) == ("classification", 2, int(y.max()) + 1, None)
    assert (
        "data.npz" in i.description
        and "n=40" in i.description
        and "L=9" in i.description
        and "28/4/8" in i.description
    )
    assert "C=2" in d.summary() and "5 classes" in d.summary()
    again = build_dataset(spec(tmp_path / "data.npz"))
    assert np.array_equal(again.val.index, d.val.index)  # deterministic


def test_npz_two_dim_x_is_one_channel(tmp_path):
    x = np.arange(60, dtype=np.int32).reshape(10, 6)  # integer values without tokens: real-valued
    d = build_dataset(spec(write_npz(tmp_path / "d.npz", x=x, y=np.arange(10) % 2), 0.0, 0.0))
    xi, _ = d.train[0]
    assert (
        xi.shape == (6, 1)
        and xi.dtype == torch.float32
        and d.info.d_input == 1
        and d.val is None
        and d.test is None
    )
    X, _ = stack(d.train)
    s = d.info.extra
    assert np.allclose(X.numpy()[..., 0] * s["std"][0] + s["mean"][0], x[d.train.index], atol=1e-4)


def test_lengths_and_statistics_without_padding(tmp_path):
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 8, 30)
    x = rng.normal(size=(30, 7, 1))
    x[np.arange(7) >= lengths[:, None]] = 1e6  # padding must not enter the statistics
    d = build_dataset(
        spec(write_npz(tmp_path / "v.npz", x=x, y=rng.normal(size=30), lengths=lengths), 0.2, 0.0)
    )
    tr = d.train.index
    valid = x[tr][np.arange(7) < lengths[tr][:, None]]
    assert np.allclose(d.info.extra["mean"], valid.mean(0)) and np.allclose(d.info.extra["std"], valid.std(0))
    x0, y0, l0 = d.val[0]
    assert l0.dtype == torch.int64 and int(l0) == lengths[d.val.index[0]]
    assert "padded" in d.info.description and "regression" in d.info.description


def test_regression_and_task_override(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 5))
    d = build_dataset(spec(write_npz(tmp_path / "r.npz", x=x, y=rng.normal(size=20)), 0.0, 0.0))
    assert (d.info.task, d.info.d_output) == ("regression", 1)
    assert d.train[0][1].shape == (1,) and d.train[0][1].dtype == torch.float32
    multi = rng.normal(size=(20, 3))
    d = build_dataset(spec(write_npz(tmp_path / "m.npz", x=x, y=multi), 0.0, 0.0))
    assert d.info.d_output == 3 and np.allclose(
        stack(d.train)[1].numpy(), multi[d.train.index]
    )  # targets raw
    y_int = rng.integers(0, 4, 20)
    d = build_dataset(spec(write_npz(tmp_path / "i.npz", x=x, y=y_int), 0.0, 0.0, task="regression"))
    assert d.info.task == "regression" and torch.equal(
        stack(d.train)[1][:, 0], torch.tensor(y_int[d.train.index], dtype=torch.float32)
    )
    d = build_dataset(
        spec(write_npz(tmp_path / "f.npz", x=x, y=y_int.astype(float)), 0.0, 0.0, task="classification")
    )
    assert (
        d.info.task == "classification"
        and stack(d.train)[1].dtype == torch.int64
        and d.info.d_output == y_int.max() + 1
    )
    write_npz(tmp_path / "g.npz", x=x, y=y_int + 0.5)
    with pytest.raises(DataError, match="classification needs integer labels"):
        build_dataset(spec(tmp_path / "g.npz", task="classification"))
    with pytest.raises(ValueError, match="task must be one of"):
        build_dataset(spec(tmp_path / "g.npz", task="ranking"))


def test_classes_from_max_label_and_string_labels(tmp_path):
    x = np.random.default_rng(3).normal(size=(12, 4))
    d = build_dataset(spec(write_npz(tmp_path / "a.npz", x=x, y=np.array([0, 7] * 6)), 0.0, 0.0))
    assert d.info.d_output == 8  # classes 0..max, even those never seen
    names = np.array(["zebra", "ant", "moth"] * 4)
    d = build_dataset(spec(write_npz(tmp_path / "s.npz", x=x, y=names), 0.0, 0.0))
    assert d.info.extra["classes"] == ["ant", "moth", "zebra"] and d.info.d_output == 3
    assert [d.info.extra["classes"][int(v)] for v in stack(d.train)[1]] == list(names[d.train.index])
    write_npz(tmp_path / "neg.npz", x=x, y=np.array([-1, 1] * 6))
    with pytest.raises(DataError, match="class labels must be >= 0, got -1"):
        build_dataset(spec(tmp_path / "neg.npz"))


def test_tokens(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 300, size=(10, 6))
    d = build_dataset(spec(write_npz(tmp_path / "t.npz", x=x, y=np.arange(10) % 2), 0.0, 0.0, tokens=True))
    X, _ = stack(d.train)
    assert X.dtype == torch.int64 and X.shape == (10, 6) and np.array_equal(X.numpy(), x[d.train.index])
    assert (
        d.info.vocab_size == x.max() + 1
        and "mean" not in d.info.extra
        and "tokens (vocab" in d.info.description
    )
    write_npz(tmp_path / "f.npz", x=x + 0.5, y=np.arange(10) % 2)
    with pytest.raises(DataError, match="tokens: true needs integer x"):
        build_dataset(spec(tmp_path / "f.npz", tokens=True))
    write_npz(tmp_path / "c.npz", x=np.ones((10, 6, 2), dtype=int), y=np.arange(10) % 2)
    with pytest.raises(DataError, match="one token per step"):
        build_dataset(spec(tmp_path / "c.npz", tokens=True))
    write_npz(tmp_path / "n.npz", x=-x, y=np.arange(10) % 2)
    with pytest.raises(DataError, match="token ids must be >= 0"):
        build_dataset(spec(tmp_path / "n.npz", tokens=True))


# ---- a folder of .npz -------------------------------------------------------------------------


def test_folder_with_train_only_carves_val_and_maybe_test(tmp_path):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(50, 4, 3)), rng.integers(0, 2, 50)
    root = write_npz_dir(tmp_path / "mine", train={"x": x, "y": y})
    d = build_dataset(spec(root, 0.2, 0.0))
    tr, va, _ = split_indices(50, 0.2, 0.0, seed=0)
    assert d.sizes() == {"train": 40, "val": 10, "test": 0} and d.test is None
    assert np.array_equal(d.val.index, va.numpy()) and np.array_equal(d.train.index, tr.numpy())
    d = build_dataset(spec(root, 0.2, 0.1))
    assert d.sizes() == {"train": 35, "val": 10, "test": 5}


def test_folder_with_all_splits_keeps_them(tmp_path):
    rng = np.random.default_rng(6)
    parts = {
        s: {"x": rng.normal(size=(n, 5, 2)) + 100 * (s != "train"), "y": rng.normal(size=(n, 2))}
        for s, n in (("train", 20), ("val", 6), ("test", 4))
    }
    d = build_dataset(spec(write_npz_dir(tmp_path / "d", **parts), 0.3, 0.3))  # fractions unused: files given
    assert d.sizes() == {"train": 20, "val": 6, "test": 4}
    train = parts["train"]["x"].reshape(-1, 2)
    assert np.allclose(d.info.extra["mean"], train.mean(0))  # statistics from train.npz only
    X, Y = stack(d.test)  # the test file, in order
    assert np.allclose(X.numpy(), (parts["test"]["x"] - train.mean(0)) / train.std(0), atol=1e-4)
    assert np.allclose(Y.numpy(), parts["test"]["y"])
    assert d.info.d_output == 2 and d.info.task == "regression"
    parts["test"]["lengths"] = np.array([5, 1, 3, 2])
    d = build_dataset(spec(write_npz_dir(tmp_path / "p", **parts)))
    assert [int(it[2]) for it in (d.test[i] for i in range(4))] == [5, 1, 3, 2]
    assert len(d.train[0]) == 3 and int(d.train[0][2]) == 5  # splits without lengths are full length


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"needs train.npz \(found \['notes.txt'\]\)"):
        build_dataset(spec(tmp_path / "empty"))
    x = np.zeros((4, 3, 2))
    root = write_npz_dir(
        tmp_path / "c",
        train={"x": x, "y": np.zeros(4, int)},
        val={"x": np.zeros((2, 3, 5)), "y": np.zeros(2, int)},
    )
    with pytest.raises(DataError, match="different number of channels"):
        build_dataset(spec(root))


def test_mixed_label_types_across_splits_are_refused(tmp_path):
    """Integer labels in train.npz and float labels in val.npz made the whole set regression silently."""
    rng = np.random.default_rng(7)
    train = {"x": rng.normal(size=(20, 4)), "y": rng.integers(0, 3, 20)}
    root = write_npz_dir(
        tmp_path / "m",
        train=train,
        val={"x": rng.normal(size=(6, 4)), "y": rng.integers(0, 3, 6).astype(np.float32)},
    )
    with pytest.raises(
        DataError,
        match=(
            r"m: y has different types in different splits: train.npz has int64 \(integers\), "
            r"val.npz has float32 \(floats\).*data.options.task"
        ),
    ):
        build_dataset(spec(root))
    d = build_dataset(spec(root, task="classification"))  # the user said which task: both are class ids
    assert d.info.task == "classification" and d.info.d_output == 3 and stack(d.val)[1].dtype == torch.int64
    strings = write_npz_dir(
        tmp_path / "s", train=train, test={"x": rng.normal(size=(6, 4)), "y": np.array(["a", "b"] * 3)}
    )
    with pytest.raises(DataError, match=r"test.npz has <U1 \(strings\)"):
        build_dataset(spec(strings, task="classification"))


def test_single_class_is_refused_and_unseen_classes_warned(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(12, 4))
    write_npz(tmp_path / "one.npz", x=x, y=np.full(12, 3))
    with pytest.raises(
        DataError,
        match=(
            r"one.npz: classification needs at least 2 classes, but every training label is 3.*"
            r"task=regression"
        ),
    ):
        build_dataset(spec(tmp_path / "one.npz"))
    root = write_npz_dir(
        tmp_path / "n",
        train={"x": x, "y": np.array(["cat"] * 12)},
        val={"x": x[:4], "y": np.array(["cat", "dog"] * 2)},
    )
    with pytest.raises(DataError, match="every training label is 'cat'"):
        build_dataset(spec(root))
    root = write_npz_dir(
        tmp_path / "u",
        train={"x": x, "y": np.arange(12) % 2},
        val={"x": x[:4], "y": np.array([0, 1, 2, 5])},
        test={"x": x[:2], "y": np.array([1, 0])},
    )
    with pytest.warns(
        UserWarning, match=r"the val split has class\(es\) \[2, 5\] that never occur in the training split"
    ) as w:
        d = build_dataset(spec(root))
    assert d.info.d_output == 6 and not [m for m in w if "test split" in str(m.message)]


# ---- CSV and Parquet --------------------------------------------------------------------------


def test_wide_csv(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20, 6)).round(5)
    labels = rng.integers(0, 3, 20)
    path = write_wide_csv(tmp_path / "wide.csv", x, labels)
    d = build_dataset(spec(path, 0.25, 0.0))
    X, Y = stack(d.train)
    s = d.info.extra
    assert X.shape == (15, 6, 1) and d.info.task == "classification" and d.info.d_output == 3
    assert np.allclose(X.numpy()[..., 0] * s["std"][0] + s["mean"][0], x[d.train.index], atol=1e-4)
    assert np.array_equal(Y.numpy(), labels[d.train.index])
    write_wide_csv(tmp_path / "named.csv", x, labels, label="label")  # the second default name
    assert build_dataset(spec(tmp_path / "named.csv")).info.d_output == 3
    write_wide_csv(tmp_path / "other.csv", x, labels, label="target")
    with pytest.raises(DataError, match="no label column 'y' or 'label'.*set data.options.label_column"):
        build_dataset(spec(tmp_path / "other.csv"))
    d = build_dataset(spec(tmp_path / "other.csv", label_column="target", task="regression"))
    assert d.info.task == "regression"


def test_wide_csv_string_labels_and_ragged_rows(tmp_path):
    x = np.arange(1, 25, dtype=float).reshape(6, 4)
    x[1, 2:] = np.nan  # length 2
    x[4, 3] = np.nan  # length 3
    names = ["dog", "cat", "dog", "bird", "cat", "dog"]
    d = build_dataset(spec(write_wide_csv(tmp_path / "r.csv", x, names), 0.0, 0.0))
    assert d.info.extra["classes"] == ["bird", "cat", "dog"]
    X, Y, lengths = stack(d.train)
    order = d.train.index
    assert list(lengths.numpy()) == [[4, 2, 4, 4, 3, 4][i] for i in order]
    assert [d.info.extra["classes"][int(v)] for v in Y] == [names[i] for i in order]
    raw = X.numpy()[..., 0] * d.info.extra["std"][0] + d.info.extra["mean"][0]
    valid = np.arange(4) < lengths.numpy()[:, None]
    assert np.allclose(raw[valid], x[order][valid], atol=1e-4)
    assert np.allclose(d.info.extra["mean"][0], np.nanmean(x))  # empty cells excluded from the statistics
    x[2, 1] = np.nan
    with pytest.raises(DataError, match="data row 3 has an empty cell inside the sequence"):
        build_dataset(spec(write_wide_csv(tmp_path / "hole.csv", x, names)))


def test_long_csv_variable_lengths(tmp_path):
    seqs = random_sequences(7, lengths=[3, 5, 2])
    path = write_long_csv(tmp_path / "long.csv", seqs)
    d = build_dataset(spec(path, 0.0, 0.0, id_column="id", time_column="t"))
    assert d.train.x.shape == (7, 5, 2)  # padded to the longest sequence
    by_id = {sid: (lab, v) for sid, lab, v in seqs}
    first_seen = list(
        dict.fromkeys(pd.read_csv(path)["id"])
    )  # sequences in order of first appearance in the file
    assert list(d.train.lengths) == [len(by_id[sid][1]) for sid in first_seen]
    classes = d.info.extra["classes"]
    assert classes == ["ant", "cat", "dog"]
    for i in range(7):
        x, y, length = d.train[i]
        n = int(length)
        raw = x.numpy() * np.array(d.info.extra["std"]) + np.array(d.info.extra["mean"])
        sid = next(s for s, (_, v) in by_id.items() if len(v) == n and np.allclose(v[0], raw[0], atol=1e-4))
        lab, v = by_id[sid]
        assert np.allclose(raw[:n], v, atol=1e-4)  # time order restored
        assert np.allclose(np.asarray(d.train.x)[d.train.index[i], n:], 0.0)  # padded with zeros
        assert classes[int(y)] == lab
    assert d.info.d_input == 2 and "padded; lengths 2..5" in d.info.description


def test_long_csv_file_order_features_and_errors(tmp_path):
    seqs = random_sequences(4, lengths=[3], labels=(0, 1))
    path = write_long_csv(tmp_path / "l.csv", seqs, features=("a", "b"), time=False)
    d = build_dataset(spec(path, 0.0, 0.0, id_column="id", feature_columns="b"))
    assert d.info.d_input == 1 and d.train.lengths is None and d.info.d_output == 2
    for i in range(4):
        j = d.train.index[i]
        assert np.allclose(np.asarray(d.train.x)[j, :, 0], seqs[j][2][:, 1])  # column b, file order
    with pytest.raises(DataError, match=r"feature_columns \['c'\] not found"):
        build_dataset(spec(path, id_column="id", feature_columns=["a", "c"]))
    text = open(path).read().splitlines()
    text[2] = text[2].rsplit(",", 1)[0] + ",1"  # second row of s0 gets another label
    (tmp_path / "changes.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match="label 'label' changes within id 's0'"):
        build_dataset(spec(tmp_path / "changes.csv", id_column="id"))
    (tmp_path / "dup.csv").write_text("id,t,a,y\n1,0,0.5,1\n1,0,0.7,1\n2,0,0.1,0\n")
    with pytest.raises(DataError, match="id 1 has two rows at time 0"):
        build_dataset(spec(tmp_path / "dup.csv", id_column="id", time_column="t"))
    (tmp_path / "dates.csv").write_text(
        "id,t,a,y\n1,2024-01-02,0.2,0\n1,2024-01-01,0.1,0\n2,2024-01-01,0.3,1\n"
    )
    d = build_dataset(spec(tmp_path / "dates.csv", 0.0, 0.0, id_column="id", time_column="t"))
    assert np.allclose(d.train.x[:, :, 0], [[0.1, 0.2], [0.3, 0.0]]) and list(d.train.lengths) == [2, 1]
    with pytest.raises(ValueError, match="set id_column too"):
        build_dataset(spec(path, time_column="t"))


def test_parquet(tmp_path):
    rng = np.random.default_rng(8)
    wide = pd.DataFrame(rng.normal(size=(12, 5)), columns=[f"s{j}" for j in range(5)])
    wide["y"] = rng.normal(size=12)
    wide.to_parquet(tmp_path / "w.parquet")
    d = build_dataset(spec(tmp_path / "w.parquet", 0.0, 0.0))
    X, Y = stack(d.train)
    assert d.info.task == "regression" and X.shape == (12, 5, 1)
    assert np.allclose(Y.numpy()[:, 0], wide["y"].to_numpy()[d.train.index], atol=1e-6)
    long = pd.DataFrame(
        {
            "seq": np.repeat([30, 10, 20], 4),
            "step": np.tile([3, 2, 1, 0], 3),
            "v": np.arange(12),
            "label": np.repeat(["z", "x", "y"], 4),
        }
    )
    long.to_parquet(tmp_path / "l.parquet")
    d = build_dataset(
        spec(tmp_path / "l.parquet", 0.0, 0.0, id_column="seq", time_column="step", tokens=True)
    )
    assert d.info.vocab_size == 12 and d.info.extra["classes"] == ["x", "y", "z"]
    assert np.asarray(d.train.x).tolist() == [
        [3, 2, 1, 0],
        [7, 6, 5, 4],
        [11, 10, 9, 8],
    ]  # ids as they appear, steps by time
    assert np.asarray(d.train.y).tolist() == [2, 0, 1]
    assert stack(d.train)[0].dtype == torch.int64


def test_table_errors(tmp_path):
    (tmp_path / "words.csv").write_text("y,t0,t1\n1,0.5,abc\n0,0.1,0.2\n")
    with pytest.raises(DataError, match=r"not numeric: \['t1'\].*id_column"):
        build_dataset(spec(tmp_path / "words.csv"))
    (tmp_path / "nolabel.csv").write_text("y,t0,t1\n1,0.5,0.1\n,0.1,0.2\n")
    with pytest.raises(DataError, match="missing label in column 'y' \\(data row 2\\)"):
        build_dataset(spec(tmp_path / "nolabel.csv"))
    pd.DataFrame({"y": [0, 1], "t0": [0.5, 0.1]}).to_csv(
        tmp_path / "index.csv"
    )  # with pandas' default index column
    with pytest.raises(DataError, match=r"unnamed column\(s\) \['Unnamed: 0'\], probably a saved row index"):
        build_dataset(spec(tmp_path / "index.csv"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="bad.parquet: cannot read the table"):
        build_dataset(spec(tmp_path / "bad.parquet"))


# ---- errors common to every form --------------------------------------------------------------


def test_input_errors(tmp_path):
    x = np.zeros((6, 4))
    with pytest.raises(
        FileNotFoundError,
        match=r"(?s)not found at .*nowhere.npz.*PATH may be.*PATH/train.npz.*PATH.csv or PATH.parquet",
    ):
        build_dataset(spec(tmp_path / "nowhere.npz"))
    with pytest.raises(ValueError, match="pass --data PATH"):
        build_dataset(
            types.SimpleNamespace(
                name="arrays", data_dir=None, val_fraction=0.1, test_fraction=0.0, options={}
            )
        )
    write_npz(tmp_path / "noy.npz", x=x, labels=np.zeros(6))
    with pytest.raises(DataError, match=r"no array 'y' \(found \['x', 'labels'\]\)"):
        build_dataset(spec(tmp_path / "noy.npz"))
    write_npz(tmp_path / "rows.npz", x=x, y=np.zeros(5, int))
    with pytest.raises(DataError, match=r"n = 6 rows like x, got shape \(5,\)"):
        build_dataset(spec(tmp_path / "rows.npz"))
    bad = x.copy()
    bad[3, 2] = np.nan
    write_npz(tmp_path / "nan.npz", x=bad, y=np.zeros(6, int))
    with pytest.raises(DataError, match="NaN or inf values \\(first in sequence 3\\)"):
        build_dataset(spec(tmp_path / "nan.npz"))
    bad[3, 2] = np.inf
    write_npz(tmp_path / "inf.npz", x=bad, y=np.zeros(6, int))
    with pytest.raises(DataError, match="NaN or inf"):
        build_dataset(spec(tmp_path / "inf.npz"))
    write_npz(tmp_path / "dims.npz", x=np.zeros((6, 4, 2, 2)), y=np.zeros(6, int))
    with pytest.raises(DataError, match=r"x must be \(n, L\) or \(n, L, C\), got shape \(6, 4, 2, 2\)"):
        build_dataset(spec(tmp_path / "dims.npz"))
    write_npz(tmp_path / "len.npz", x=x, y=np.zeros(6, int), lengths=np.array([1, 2, 3, 4, 5, 0]))
    with pytest.raises(DataError, match=r"lengths must lie in \[1, L=4\], got \[0, 5\]"):
        build_dataset(spec(tmp_path / "len.npz"))
    write_npz(tmp_path / "ydim.npz", x=x, y=np.zeros((6, 2, 2)))
    with pytest.raises(DataError, match="y must be"):
        build_dataset(spec(tmp_path / "ydim.npz"))
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        build_dataset(spec(tmp_path / "data.txt"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npz: cannot read as .npz"):
        build_dataset(spec(tmp_path / "junk.npz"))


def test_option_errors(tmp_path):
    path = write_npz(tmp_path / "o.npz", x=np.zeros((6, 4)), y=np.zeros(6, int))
    with pytest.raises(ValueError, match=r"unknown data.options \['label'\].*label_column"):
        build_dataset(spec(path, label="y"))
    with pytest.raises(ValueError, match=r"\['id_column'\] apply to .csv/.parquet tables only"):
        build_dataset(spec(path, id_column="id"))
    with pytest.raises(ValueError, match="tokens must be true or false"):
        build_dataset(spec(path, tokens="yes"))
    with pytest.raises(ValueError, match="no training sequences left"):
        build_dataset(spec(path, 0.5, 0.5))


# ---- the cache --------------------------------------------------------------------------------


def test_cache_reused_and_invalidated(tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    path = write_wide_csv(tmp_path / "c.csv", rng.normal(size=(10, 4)), rng.integers(0, 2, 10))
    calls = []
    real = arrays._prepare
    monkeypatch.setattr(arrays, "_prepare", lambda *a: calls.append(1) or real(*a))
    first = stack(build_dataset(spec(path, 0.0, 0.0)).train)
    assert len(calls) == 1 and any(e.startswith("arrays-c.csv-") for e in os.listdir(tmp_path / CACHE_DIR))
    second = stack(build_dataset(spec(path, 0.0, 0.0)).train)
    assert len(calls) == 1 and all(torch.equal(a, b) for a, b in zip(first, second))
    build_dataset(spec(path, 0.0, 0.0, task="regression"))  # other options: rebuilt
    assert len(calls) == 2
    new_x = rng.normal(size=(10, 4)) + 5
    write_wide_csv(path, new_x, np.arange(10) % 2)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    d = build_dataset(spec(path, 0.0, 0.0))
    assert len(calls) == 3 and np.allclose(d.info.extra["mean"][0], new_x.mean())


# ---- time stamps (irregular sampling) ---------------------------------------------------------


def _irregular(n=20, L=6, seed=0, step=0.5):
    rng = np.random.default_rng(seed)
    gaps = step * rng.choice([1.0, 1.0, 1.0, 2.0, 3.0], size=(n, L))  # median gap = step
    t = 100.0 + np.cumsum(gaps, axis=1)
    return rng.normal(size=(n, L)), rng.integers(0, 2, n), t


def test_npz_time_stamps_become_gaps_in_units_of_the_median_step(tmp_path):
    x, y, t = _irregular()
    path = write_npz(tmp_path / "t.npz", x=x, y=y, t=t)
    d = build_dataset(spec(path, 0.0, 0.0, timestamps=True))
    assert d.info.extra["nominal_step"] == pytest.approx(0.5) and d.info.extra["time_gaps"] == "rate"
    assert "per-step time gaps (nominal step 0.5)" in d.info.description
    for i in range(len(d.train)):
        item = d.train[i]
        j = d.train.index[i]
        assert set(item) == {"x", "y", "dt"} and item["dt"].dtype == torch.float32
        assert item["dt"][0] == 1.0  # nothing precedes the first step
        assert np.allclose(item["dt"][1:].numpy(), np.diff(t[j]) / 0.5)
    b = collate([d.train[i] for i in range(4)])
    assert b.dt.shape == (4, 6) and b.lengths is None
    # an explicit nominal step; without the option the time stamps are ignored (as before)
    d2 = build_dataset(spec(path, 0.0, 0.0, timestamps=True, nominal_step=2.0))
    j = d2.train.index[0]
    assert np.allclose(d2.train[0]["dt"][1:].numpy(), np.diff(t[j]) / 2.0)
    assert len(build_dataset(spec(path, 0.0, 0.0)).train[0]) == 2


def test_time_stamps_with_padding_and_splits(tmp_path):
    x, y, t = _irregular(n=12, L=5, seed=1)
    lengths = np.array([5, 3, 2, 5] * 3)
    t_padded = np.where(np.arange(5) < lengths[:, None], t, np.nan)  # padded steps may hold anything
    root = write_npz_dir(
        tmp_path / "d",
        train={"x": x, "y": y, "lengths": lengths, "t": t_padded},
        test={"x": x[:4], "y": y[:4], "lengths": lengths[:4], "t": t[:4]},
    )
    d = build_dataset(spec(root, 0.25, 0.0, timestamps=True))
    for ds in (d.train, d.val, d.test):
        for i in range(len(ds)):
            item = ds[i]
            n = int(item["lengths"])
            assert (item["dt"][n:] == 1.0).all() and torch.isfinite(item["dt"]).all()
            assert (item["dt"][1:n] > 0).all() and item["dt"][0] == 1.0
    # the median gap is taken over the valid steps of the training split only
    train_rows = d.train.index
    gaps = np.concatenate([np.diff(t[j, : lengths[j]]) for j in train_rows])
    assert d.info.extra["nominal_step"] == pytest.approx(np.median(gaps))


def test_time_stamp_errors(tmp_path):
    x, y, t = _irregular(n=6, L=4)
    ok = {"x": x, "y": y, "t": t}

    def build(**arrays_):
        path = write_npz(tmp_path / "e.npz", **{**ok, **arrays_})
        return build_dataset(spec(path, 0.0, 0.0, timestamps=True))

    with pytest.raises(DataError, match="no array 't' of time stamps"):
        path = write_npz(tmp_path / "none.npz", x=x, y=y)
        build_dataset(spec(path, 0.0, 0.0, timestamps=True))
    with pytest.raises(DataError, match=r"shape \(n, L\) = \(6, 4\) like x"):
        build(t=t[:, :3])
    bad = t.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN or inf values .*sequence 2, step 1"):
        build(t=bad)
    bad = t.copy()
    bad[3, 2] = bad[3, 1]
    with pytest.raises(DataError, match=r"increase strictly .*sequence 3 has t\[2\]"):
        build(t=bad)
    path = write_npz(tmp_path / "ok.npz", **ok)
    with pytest.raises(ValueError, match="nominal_step must be a number > 0"):
        build_dataset(spec(path, timestamps=True, nominal_step=0))
    with pytest.raises(ValueError, match="set data.options.timestamps=true"):
        build_dataset(spec(path, nominal_step=1.0))
    with pytest.raises(ValueError, match="timestamps must be true or false"):
        build_dataset(spec(path, timestamps="yes"))


def test_long_table_time_column_as_time_stamps(tmp_path):
    seqs = random_sequences(6, lengths=[4, 3])
    path = write_long_csv(tmp_path / "long.csv", seqs)  # times 0, 10, 20, ... in shuffled row order
    d = build_dataset(spec(path, 0.0, 0.0, id_column="id", time_column="t", timestamps=True))
    assert d.info.extra["nominal_step"] == 10.0
    for i in range(len(d.train)):
        item = d.train[i]
        n = int(item["lengths"])
        assert (item["dt"] == 1.0).all() and n in (3, 4)  # evenly spaced: every gap is one step
    with pytest.raises(ValueError, match="needs the time of every step"):
        wide = write_wide_csv(tmp_path / "w.csv", np.zeros((4, 3)), [0, 1, 0, 1])
        build_dataset(spec(wide, timestamps=True))
    with pytest.raises(ValueError, match="time_column: set it"):
        build_dataset(spec(path, id_column="id", timestamps=True))
