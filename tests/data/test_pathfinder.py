"""LRA Pathfinder / Path-X reader on tiny PNGs and metadata files written in the layout of lra_release.gz."""

import os
import types

import numpy as np
import pytest
import torch
from PIL import Image

from liquid_s4.data import pathfinder
from liquid_s4.data.common import CACHE_DIR, DataError
from liquid_s4.data.registry import build_dataset

FOLDERS = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9", "hard": "curv_contour_length_14"}


def write_pathfinder(root, resolution=32, difficulty="hard", groups=(0, 2, 10), per_group=4, seed=0):
    """root/lra_release/lra_release/pathfinder<res>/<difficulty>/{imgs/<k>/sample_<i>.png, metadata/<k>.npy}.
    Returns the folder and the images (n, res, res) uint8 and labels (n,) in metadata order
    (k numerically)."""
    rng = np.random.default_rng(seed + resolution)
    folder = os.path.join(root, "lra_release", "lra_release", f"pathfinder{resolution}", FOLDERS[difficulty])
    os.makedirs(os.path.join(folder, "metadata"), exist_ok=True)
    images, labels = [], []
    for k in groups:
        os.makedirs(os.path.join(folder, "imgs", str(k)), exist_ok=True)
        lines = []
        for i in range(per_group):
            img = rng.integers(0, 256, (resolution, resolution), dtype=np.uint8)
            label = int(rng.integers(0, 2))
            Image.fromarray(img).save(os.path.join(folder, "imgs", str(k), f"sample_{i}.png"))
            lines.append(f"imgs/{k} sample_{i}.png {i} {label} 14 1.5 0.9 2\n")
            images.append(img)
            labels.append(label)
        with open(os.path.join(folder, "metadata", f"{k}.npy"), "w") as f:
            f.writelines(lines)
    return folder, np.stack(images), np.array(labels)


def spec(data_dir, name="pathfinder", val=0.25, test=0.25, **options):
    return types.SimpleNamespace(
        name=name,
        data_dir=None if data_dir is None else str(data_dir),
        val_fraction=val,
        test_fraction=test,
        options=options,
    )


def unstandardize(ds, i):
    t = ds.transform
    return torch.round((ds[i][0] * t.std + t.mean) / t.scale).numpy().astype(np.int64)


def test_round_trip_in_metadata_order(tmp_path):
    folder, images, labels = write_pathfinder(tmp_path)
    d = build_dataset(spec(tmp_path))  # the folder holding lra_release/lra_release/pathfinder32
    assert d.sizes() == {"train": 6, "val": 3, "test": 3}
    assert (
        d.info.d_input == 1 and d.info.d_output == 2 and d.info.task == "classification" and d.official == {}
    )
    assert d.info.description == "Pathfinder-32 (hard): 1024-step pixel sequences, 1 channel, 6/3/3"
    assert d.info.extra["folder"] == folder and d.info.extra["skipped_missing"] == 0
    # all samples, in metadata order: groups 0, 2, 10 (numeric, not 0, 10, 2), lines in order
    assert d.train.x.shape == (12, 1024, 1) and d.train.x.dtype == np.uint8
    assert np.array_equal(np.asarray(d.train.x)[:, :, 0], images.reshape(12, -1))
    assert np.array_equal(np.asarray(d.train.y), labels)
    seen = []
    for ds in (d.train, d.val, d.test):
        for i in range(len(ds)):
            j = int(ds.index[i])
            x, y = ds[i]
            assert (
                x.dtype == torch.float32
                and x.shape == (1024, 1)
                and y.dtype == torch.int64
                and int(y) == labels[j]
            )
            assert np.array_equal(unstandardize(ds, i)[:, 0], images[j].reshape(-1))  # row by row
            seen.append(j)
    assert sorted(seen) == list(range(12))


def test_standardized_with_training_statistics(tmp_path):
    _, images, _ = write_pathfinder(tmp_path)
    d = pathfinder.build_pathfinder(spec(tmp_path))
    train = images[np.asarray(d.train.index)].astype(np.float64) / 255
    assert np.allclose(d.train.transform.mean.numpy(), [train.mean()], atol=1e-6)
    assert np.allclose(d.train.transform.std.numpy(), [train.std()], atol=1e-6)
    assert not np.isclose(images.mean() / 255, train.mean(), atol=1e-4)
    xs = torch.stack([d.train[i][0] for i in range(len(d.train))])
    assert abs(float(xs.mean())) < 1e-4 and abs(float(xs.std(unbiased=False)) - 1) < 1e-4
    assert d.test.transform is d.train.transform


def test_deterministic_split(tmp_path):
    write_pathfinder(tmp_path, groups=tuple(range(5)))  # 20 samples
    a = pathfinder.build_pathfinder(spec(tmp_path, val=0.1, test=0.1))
    b = pathfinder.build_pathfinder(spec(tmp_path, val=0.1, test=0.1))
    assert a.sizes() == {"train": 16, "val": 2, "test": 2}  # LRA's 80/10/10
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert np.array_equal(x.index, y.index)
    assert len(set(a.train.index.tolist()) | set(a.val.index.tolist()) | set(a.test.index.tolist())) == 20


@pytest.mark.parametrize(
    "sub", ["lra_release", "lra_release/lra_release", "lra_release/lra_release/pathfinder32"]
)
def test_data_dir_forms(tmp_path, sub):
    _, images, _ = write_pathfinder(tmp_path)
    d = pathfinder.build_pathfinder(spec(tmp_path / sub))
    assert np.array_equal(np.asarray(d.train.x)[:, :, 0], images.reshape(len(images), -1))


def test_default_folder_from_environment(tmp_path, monkeypatch):
    write_pathfinder(tmp_path, groups=(0,))
    monkeypatch.setenv(
        "LIQUID_S4_DATA", str(tmp_path)
    )  # default: $LIQUID_S4_DATA/lra_release (here with the archive's nesting)
    assert len(pathfinder.build_pathfinder(spec(None)).train.x) == 4


def test_resolution_and_difficulty_options(tmp_path):
    write_pathfinder(tmp_path, groups=(0,))
    _, easy, easy_labels = write_pathfinder(tmp_path, difficulty="easy", groups=(0, 1), seed=1)
    _, big, _ = write_pathfinder(tmp_path, resolution=64, difficulty="intermediate", groups=(3,))
    d = pathfinder.build_pathfinder(spec(tmp_path, difficulty="easy"))
    assert np.array_equal(np.asarray(d.train.x)[:, :, 0], easy.reshape(8, -1)) and np.array_equal(
        np.asarray(d.train.y), easy_labels
    )
    assert d.info.description.startswith("Pathfinder-32 (easy): 1024-step")
    d = pathfinder.build_pathfinder(spec(tmp_path, resolution=64, difficulty="intermediate"))
    assert d.train[0][0].shape == (4096, 1) and np.array_equal(
        np.asarray(d.train.x)[:, :, 0], big.reshape(4, -1)
    )
    with pytest.raises(ValueError, match=r"resolution must be one of \(32, 64, 128, 256\), got 48"):
        pathfinder.build_pathfinder(spec(tmp_path, resolution=48))
    with pytest.raises(
        ValueError, match=r"difficulty must be one of \('easy', 'intermediate', 'hard'\), got 'medium'"
    ):
        pathfinder.build_pathfinder(spec(tmp_path, difficulty="medium"))
    with pytest.raises(
        ValueError,
        match=r"unknown data.options \['size'\] for dataset 'pathfinder'; valid options: resolution",
    ):
        pathfinder.build_pathfinder(spec(tmp_path, size=32))
    with pytest.raises(ValueError, match="skip_missing must be true or false"):
        pathfinder.build_pathfinder(spec(tmp_path, skip_missing="no"))
    with pytest.raises(
        ValueError, match="holds Pathfinder at resolution 32, but resolution 64 was asked for"
    ):
        pathfinder.build_pathfinder(spec(tmp_path / "lra_release/lra_release/pathfinder32", resolution=64))
    with pytest.raises(
        FileNotFoundError,
        match=r"difficulty 'hard' \(curv_contour_length_14/\) not found(.|\n)*lra_release.gz",
    ):
        pathfinder.build_pathfinder(spec(tmp_path, resolution=64))


def test_pathx(tmp_path):
    _, images, labels = write_pathfinder(tmp_path, resolution=128, groups=(0,), per_group=3)
    d = build_dataset(spec(tmp_path, name="pathx", val=0.0, test=0.0))
    assert d.sizes() == {"train": 3, "val": 0, "test": 0}
    assert d.info.description == "Path-X (Pathfinder-128, hard): 16384-step pixel sequences, 1 channel, 3/0/0"
    x, y = d.train[0]
    j = int(d.train.index[0])
    assert x.shape == (16384, 1) and int(y) == labels[j]
    assert np.array_equal(unstandardize(d.train, 0)[:, 0], images[j].reshape(-1))
    with pytest.raises(
        ValueError,
        match=r"unknown data.options \['resolution'\] for dataset 'pathx'; valid options: difficulty",
    ):
        pathfinder.build_pathx(spec(tmp_path, name="pathx", resolution=128))


def test_cache_reused_and_invalidated(tmp_path, monkeypatch):
    folder, images, _ = write_pathfinder(tmp_path, groups=(0,))
    calls = []
    real = pathfinder.decode_images
    monkeypatch.setattr(pathfinder, "decode_images", lambda *a: calls.append(a) or real(*a))
    pathfinder.build_pathfinder(spec(tmp_path))
    pf = os.path.dirname(folder)
    assert len(calls) == 1 and any(
        e.startswith("pathfinder32-curv_contour_length_14-") for e in os.listdir(os.path.join(pf, CACHE_DIR))
    )
    d = pathfinder.build_pathfinder(spec(tmp_path))
    assert len(calls) == 1 and isinstance(d.train.x, np.memmap)  # memory-mapped from the cache
    meta = os.path.join(folder, "metadata", "0.npy")
    with open(meta) as f:
        lines = f.readlines()
    with open(meta, "w") as f:
        f.writelines(lines[:3])  # a metadata change
    d = pathfinder.build_pathfinder(spec(tmp_path))
    assert len(calls) == 2 and len(d.train.x) == 3
    png = os.path.join(folder, "imgs", "0", "sample_1.png")
    Image.fromarray(255 - images[1]).save(png)
    st = os.stat(png)
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    d = pathfinder.build_pathfinder(spec(tmp_path))
    assert len(calls) == 3  # an image change
    assert np.array_equal(np.asarray(d.train.x)[1, :, 0], (255 - images[1]).reshape(-1))
    pathfinder.build_pathfinder(spec(tmp_path, skip_missing=True))  # other options: rebuilt
    assert len(calls) == 4


def test_missing_image(tmp_path):
    folder, images, labels = write_pathfinder(tmp_path, groups=(0, 1))
    os.remove(os.path.join(folder, "imgs", "1", "sample_2.png"))
    with pytest.raises(
        DataError,
        match=(
            r"imgs.1.sample_2\.png: image listed in the metadata is missing \(1 missing in all\); set "
            r"data.options.skip"
        ),
    ):
        pathfinder.build_pathfinder(spec(tmp_path))
    d = pathfinder.build_pathfinder(spec(tmp_path, skip_missing=True))
    keep = [i for i in range(8) if i != 6]
    assert d.info.extra["skipped_missing"] == 1 and len(d.train.x) == 7
    assert np.array_equal(np.asarray(d.train.x)[:, :, 0], images[keep].reshape(7, -1))
    assert np.array_equal(np.asarray(d.train.y), labels[keep])


def test_missing_folders(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=(
            r"LRA Pathfinder folder pathfinder32/ not "
            r"found(.|\n)*curv_contour_length_14(.|\n)*lra_release\.gz"
        ),
    ):
        pathfinder.build_pathfinder(spec(tmp_path / "nowhere"))
    folder, _, _ = write_pathfinder(tmp_path, groups=(0,))
    os.remove(os.path.join(folder, "metadata", "0.npy"))
    with open(os.path.join(folder, "metadata", "notes.txt"), "w") as f:
        f.write("imgs/0 sample_0.png 0 1\n")
    with pytest.raises(DataError, match=r"metadata: no metadata files <k>\.npy found"):
        pathfinder.build_pathfinder(spec(tmp_path))
    with open(os.path.join(folder, "metadata", "0.npy"), "w") as f:
        f.write("\n\n")
    with pytest.raises(DataError, match="the metadata files list no images"):
        pathfinder.build_pathfinder(spec(tmp_path))
    os.rename(os.path.join(folder, "metadata"), os.path.join(folder, "meta"))
    with pytest.raises(
        FileNotFoundError, match=r"Pathfinder metadata folder not found at .*curv_contour_length_14.metadata"
    ):
        pathfinder.build_pathfinder(spec(tmp_path))


@pytest.mark.parametrize(
    "line", ["imgs/0 sample_9.png 0", "imgs/0 sample_9.png 0 2 1", "imgs/0 sample_9.png 0 one"]
)
def test_bad_metadata_line(tmp_path, line):
    folder, _, _ = write_pathfinder(tmp_path, groups=(0, 5))
    with open(os.path.join(folder, "metadata", "5.npy"), "a") as f:
        f.write(line + "\n")
    with pytest.raises(
        DataError,
        match=(
            r"metadata.5\.npy, line 5: expected '<image folder> <file name> <field> <label 0/1> ...', got "
            rf"'{line}'"
        ),
    ):
        pathfinder.build_pathfinder(spec(tmp_path))
    with open(os.path.join(folder, "metadata", "5.npy"), "wb") as f:
        f.write(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"metadata.5\.npy: cannot read the metadata text"):
        pathfinder.build_pathfinder(spec(tmp_path))


def test_bad_images(tmp_path, monkeypatch):
    monkeypatch.setenv("LIQUID_S4_NO_CACHE", "1")
    folder, _, _ = write_pathfinder(tmp_path, groups=(0, 1))
    png = os.path.join(folder, "imgs", "1", "sample_3.png")
    Image.fromarray(np.zeros((64, 32), np.uint8)).save(png)
    with pytest.raises(DataError, match=r"imgs.1.sample_3\.png: image is 32x64, expected 32x32"):
        pathfinder.build_pathfinder(spec(tmp_path))
    with open(png, "wb") as f:
        f.write(b"not a png at all")
    with pytest.raises(
        DataError, match=r"imgs.1.sample_3\.png: cannot decode the PNG .*truncated or corrupt"
    ):
        pathfinder.build_pathfinder(spec(tmp_path))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(png)
    with open(png, "rb") as f:
        raw = f.read()
    with open(png, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"imgs.1.sample_3\.png: cannot decode the PNG"):
        pathfinder.build_pathfinder(spec(tmp_path))


def test_rgb_png_is_converted_to_gray(tmp_path):
    folder, images, _ = write_pathfinder(tmp_path, groups=(0,))
    gray = images[2]
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(
        os.path.join(folder, "imgs", "0", "sample_2.png")
    )
    d = pathfinder.build_pathfinder(spec(tmp_path))
    assert np.array_equal(np.asarray(d.train.x)[2, :, 0], gray.reshape(-1))
