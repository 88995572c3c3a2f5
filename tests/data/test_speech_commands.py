"""Speech Commands v0.02 reader on fixture folders written in the official layout (16-bit WAVs +
split lists)."""

import os
import types
import wave

import numpy as np
import pytest
import torch

from liquid_s4.data import speech_commands as sc
from liquid_s4.data.common import CACHE_DIR, DataError
from liquid_s4.data.registry import build_dataset


def write_wav(path, samples, channels=1, width=2, rate=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).astype("<i2" if width == 2 else np.uint8).tobytes())


def write_speech_commands(root, words=sc.SC35, per_word=3, lengths=(16000, 700, 50), seed=0):
    """The official layout: one folder per word (file names like 0a7c2a8d_nohash_0.wav), the
    background-noise folder, and the two split lists (which also name clips of every word). Returns
    {relative path: samples}."""
    rng = np.random.default_rng(seed)
    clips = {}
    for w, word in enumerate(words):
        for k in range(per_word):
            rel = f"{word}/{w:04x}{k:04x}_nohash_{k}.wav"
            clips[rel] = rng.integers(-32768, 32768, lengths[k % len(lengths)]).astype(np.int16)
            write_wav(os.path.join(root, rel), clips[rel])
    write_wav(
        os.path.join(root, "_background_noise_", "white_noise.wav"), rng.integers(-900, 900, 3 * 16000)
    )  # > 1 s: must be ignored
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("Speech Commands\n")
    names = sorted(clips)
    val = [n for n in names if n.endswith("_nohash_1.wav")]  # the second clip of every word
    test = [n for n in names if n.endswith("_nohash_2.wav")]
    with open(os.path.join(root, "validation_list.txt"), "w") as f:
        f.write("\n".join(val) + "\n")
    with open(os.path.join(root, "testing_list.txt"), "w") as f:
        f.write("\n".join(test) + "\n")
    return clips


def spec(root, **options):
    return types.SimpleNamespace(
        name="speech-commands", data_dir=str(root), val_fraction=0.1, test_fraction=0.0, options=options
    )


def expected_split(clips, words, split):
    """(samples, label) in the reader's order: label order, then sorted file names; split from the
    lists' rule above."""
    suffix = {"train": "_nohash_0.wav", "val": "_nohash_1.wav", "test": "_nohash_2.wav"}[split]
    chosen = [rel for rel in clips if rel.split("/")[0] in words and rel.endswith(suffix)]
    return [
        (clips[rel], words.index(rel.split("/")[0]))
        for rel in sorted(chosen, key=lambda r: (words.index(r.split("/")[0]), r))
    ]


def check_items(ds, expected):
    assert len(ds) == len(expected)
    for i, (samples, label) in enumerate(expected):
        x, y = ds[i]
        assert x.shape == (16000, 1) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.shape == () and int(y) == label
        padded = np.zeros(16000, dtype=np.float32)
        padded[: len(samples)] = samples.astype(np.float32) / 32768
        assert np.array_equal(x[:, 0].numpy(), padded)  # exact values, zero padding at the end


def test_sc10_labels_padding_and_official_lists(tmp_path):
    words = list(sc.SC10) + ["bed", "cat"]  # two words outside SC10 (listed in the split lists too)
    clips = write_speech_commands(tmp_path, words=words)
    data = build_dataset(spec(tmp_path, test_rate=None))
    assert data.info.d_output == 10 and data.info.d_input == 1 and data.info.task == "classification"
    assert data.info.extra["classes"] == list(sc.SC10)
    for split in ("train", "val", "test"):
        check_items(getattr(data, split), expected_split(clips, list(sc.SC10), split))
    assert data.sizes() == {"train": 10, "val": 10, "test": 10} and data.extra_tests == {}
    assert data.official == {}
    assert data.info.description.startswith(
        "Speech Commands v0.02 (SC10): raw 16 kHz audio, 16000 steps, 1 channel, 10/10/10"
    )
    assert "zero-shot" not in data.info.description
    # the cache keeps int16 audio padded to 16000 and the real lengths
    entry = [d for d in os.listdir(tmp_path / CACHE_DIR) if d.startswith("speech_commands_sc10-")]
    assert len(entry) == 1
    audio = np.load(tmp_path / CACHE_DIR / entry[0] / "audio.npy", mmap_mode="r")
    lengths = np.load(tmp_path / CACHE_DIR / entry[0] / "lengths.npy")
    assert audio.dtype == np.int16 and audio.shape == (30, 16000)
    assert list(lengths[:3]) == [16000, 700, 50]  # 'yes': clips 0, 1, 2


def test_35_classes_sorted_labels_and_official_sizes(tmp_path):
    clips = write_speech_commands(tmp_path, per_word=3, lengths=(40, 30, 20))
    data = build_dataset(spec(tmp_path, classes=35, test_rate=None))
    assert data.info.d_output == 35 and data.info.extra["classes"] == sorted(
        data.info.extra["classes"]
    ) == list(sc.SC35)
    assert data.info.extra["classes"][0] == "backward" and data.info.extra["classes"][-1] == "zero"
    for split in ("train", "val", "test"):
        check_items(getattr(data, split), expected_split(clips, list(sc.SC35), split))
    assert data.official == {"train": 84843, "val": 9981, "test": 11005}
    x, y = data.test[len(data.test) - 1]  # the last test clip is zero's
    assert int(y) == 34 and "35 classes" in data.info.description


def test_the_lists_decide_the_split(tmp_path):
    clips = write_speech_commands(tmp_path, words=sc.SC10, lengths=(60,))
    moved = "go/00090000_nohash_0.wav"  # a training clip by the default lists
    with open(tmp_path / "testing_list.txt", "a") as f:
        f.write(
            "\n" + moved + "\nbackward/ffff_nohash_0.wav\n"
        )  # a blank line, and a clip of a word not in SC10
    data = build_dataset(spec(tmp_path, test_rate=None))
    assert data.sizes() == {"train": 9, "val": 10, "test": 11}
    x, y = data.test[len(data.test) - 1]  # go is the last label; its moved clip sorts first of its test clips
    assert int(y) == 9
    go_test = [data.test[i] for i in range(len(data.test)) if int(data.test[i][1]) == 9]
    assert np.array_equal(go_test[0][0][:60, 0].numpy(), clips[moved] / 32768)
    assert all(int(data.train[i][1]) != 9 for i in range(len(data.train)))


def test_8khz_zero_shot_test_set(tmp_path):
    clips = write_speech_commands(tmp_path, words=sc.SC10, lengths=(16000, 16000, 16000))
    t = np.arange(16000) / 16000
    low, high = (
        0.5 * np.sin(2 * np.pi * 440 * t),
        0.3 * np.sin(2 * np.pi * 6000 * t),
    )  # 6 kHz is above the 4 kHz Nyquist of 8 kHz
    tone = np.rint((low + high) * 32768).astype(np.int16)
    write_wav(tmp_path / "yes" / "00000002_nohash_2.wav", tone)  # the first test clip
    clips["yes/00000002_nohash_2.wav"] = tone
    short = np.full(6001, 1000, dtype=np.int16)
    write_wav(tmp_path / "go" / "00090002_nohash_2.wav", short)  # the last test clip: shorter than 1 s
    data = build_dataset(spec(tmp_path))  # test_rate 8000 by default
    assert set(data.extra_tests) == {"test_8khz"}
    low_set, rate = data.extra_tests["test_8khz"]
    assert rate == 2.0 and len(low_set) == len(data.test) == 10
    assert "zero-shot test at 8 kHz (8000 steps, rate 2)" in data.info.description
    assert data.sizes()["test_8khz"] == 10
    x, y = low_set[0]
    assert x.shape == (8000, 1) and x.dtype == torch.float32 and int(y) == int(data.test[0][1]) == 0
    # independent reference: the band-limited signal sampled at 8 kHz is just the 440 Hz tone
    reference = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    inner = slice(50, 7950)  # away from the clip's edges (the filter's support)
    assert np.abs(x[inner, 0].numpy() - reference[inner]).max() < 0.01
    naive = tone[::2] / 32768  # plain decimation aliases 6 kHz onto 2 kHz: the check above would fail
    assert np.abs(naive[inner] - reference[inner]).max() > 0.2
    # and against scipy's polyphase resampler applied to the float signal
    from scipy.signal import resample_poly

    assert np.abs(x[:, 0].numpy() - resample_poly(tone / 32768, 1, 2)).max() <= 0.6 / 32768
    # the short clip: constant level, then the (band-limited) step down to the zero padding at 6001 / 2
    xs, ys = low_set[9]
    assert (
        int(ys) == 9
        and np.allclose(xs[20:2980, 0].numpy(), 1000 / 32768, atol=2e-5)
        and np.all(xs[3020:, 0].numpy() == 0)
    )
    # test_rate null: no extra test set; another rate: its own set and rate
    assert build_dataset(spec(tmp_path, test_rate=None)).extra_tests == {}
    other, rate = build_dataset(spec(tmp_path, test_rate=4000)).extra_tests["test_4khz"]
    assert rate == 4.0 and other[0][0].shape == (4000, 1)
    assert len(clips) == 30


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    write_speech_commands(tmp_path, words=sc.SC10, lengths=(80, 40))
    calls = []
    real = sc.read_wav
    monkeypatch.setattr(sc, "read_wav", lambda path: calls.append(path) or real(path))
    first = build_dataset(spec(tmp_path))
    assert len(calls) == 30 and os.path.isdir(tmp_path / CACHE_DIR)
    calls.clear()
    second = build_dataset(spec(tmp_path))
    assert calls == []  # memory-mapped from the cache, 8 kHz set included
    assert torch.equal(second.train[3][0], first.train[3][0]) and torch.equal(
        second.extra_tests["test_8khz"][0][0][0], first.extra_tests["test_8khz"][0][0][0]
    )
    path = tmp_path / "up" / "00020000_nohash_0.wav"
    write_wav(path, np.full(80, 123, dtype=np.int16))
    os.utime(path, ns=(10**18, 10**18))  # a different modification time, whatever the clock resolution
    third = build_dataset(spec(tmp_path))
    assert len(calls) == 30
    up = [third.train[i][0] for i in range(len(third.train)) if int(third.train[i][1]) == 2]
    assert torch.all(up[0][:80, 0] == 123 / 32768)
    calls.clear()
    with open(tmp_path / "validation_list.txt", "a") as f:  # editing a list rebuilds too
        f.write("up/00020000_nohash_0.wav\n")
    assert build_dataset(spec(tmp_path)).sizes()["val"] == 11 and len(calls) == 30
    entries = sorted(d.rsplit("-", 1)[0] for d in os.listdir(tmp_path / CACHE_DIR))
    assert entries == ["speech_commands_sc10", "speech_commands_sc10-8000hz"]  # stale entries were removed


def test_default_folder_and_nested_archive_folder(tmp_path, monkeypatch):
    clips = write_speech_commands(
        tmp_path / "speech_commands" / "speech_commands_v0.02", words=sc.SC10, lengths=(20,)
    )
    monkeypatch.setenv("LIQUID_S4_DATA", str(tmp_path))
    data = build_dataset(
        types.SimpleNamespace(
            name="speech-commands", data_dir=None, val_fraction=0.1, test_fraction=0.0, options={}
        )
    )
    check_items(data.val, expected_split(clips, list(sc.SC10), "val"))


def test_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match="(?s)Speech Commands v0.02 folder not found.*Expected layout:.*validation_list.txt"
        ".*speech_commands_v0.02.tar.gz",
    ):
        build_dataset(spec(tmp_path / "nowhere"))
    root = tmp_path / "sc"
    v001 = [
        w for w in sc.SC35 if w not in ("backward", "follow", "forward", "learn", "visual")
    ]  # the 30 words of v0.01
    write_speech_commands(root, words=v001, per_word=1, lengths=(30,))
    with pytest.raises(
        FileNotFoundError, match="(?s)word folder\\(s\\) backward, follow, forward, learn, visual.*v0.01"
    ):
        build_dataset(spec(root, classes=35))
    os.remove(root / "testing_list.txt")
    with pytest.raises(FileNotFoundError, match="split list testing_list.txt not found"):
        build_dataset(spec(root))
    with pytest.raises(ValueError, match="classes must be one of \\(10, 35\\), got 12"):
        build_dataset(spec(root, classes=12))
    with pytest.raises(ValueError, match="unknown data.options \\['rate'\\].*valid options: classes"):
        build_dataset(spec(root, rate=8000))
    with pytest.raises(ValueError, match="test_rate must be null or a sampling rate"):
        build_dataset(spec(root, test_rate=16000))


@pytest.mark.parametrize(
    "case, match",
    [
        ("stereo", "no_nohash_0.wav: expected 1 channel.*found 2 channel"),
        ("8bit", "no_nohash_0.wav: expected 1 channel of 2-byte.*1-byte samples"),
        ("44khz", "no_nohash_0.wav: expected .*16000 Hz.*at 44100 Hz"),
        ("truncated", "no_nohash_0.wav: the header announces 500 samples but the file holds 400"),
        ("garbage", "no_nohash_0.wav: cannot read as a WAV file"),
        ("empty", "no_nohash_0.wav: cannot read as a WAV file"),
        ("long", "no_nohash_0.wav: 16001 samples, longer than the 16000"),
        ("bad list", "validation_list.txt line 2: expected a relative path like"),
        ("both lists", "yes/yes_nohash_0.wav is listed in both validation_list.txt and testing_list.txt"),
    ],
)
def test_corrupt_files(tmp_path, case, match):
    for word in sc.SC10:
        write_wav(tmp_path / word / f"{word}_nohash_0.wav", np.arange(500))
    (tmp_path / "validation_list.txt").write_text("yes/yes_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("up/up_nohash_0.wav\n")
    bad = tmp_path / "no" / "no_nohash_0.wav"
    if case == "stereo":
        write_wav(bad, np.arange(100), channels=2)
    elif case == "8bit":
        write_wav(bad, np.arange(100), width=1)
    elif case == "44khz":
        write_wav(bad, np.arange(100), rate=44100)
    elif case == "truncated":
        bad.write_bytes(bad.read_bytes()[:-200])
    elif case == "garbage":
        bad.write_bytes(b"ID3\x04garbage, not a RIFF file" * 3)
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "long":
        write_wav(bad, np.zeros(16001))
    elif case == "bad list":
        (tmp_path / "validation_list.txt").write_text("yes/yes_nohash_0.wav\nyes_nohash_1.wav\n")
    else:
        (tmp_path / "testing_list.txt").write_text("yes/yes_nohash_0.wav\n")
    with pytest.raises(DataError, match=match):
        build_dataset(spec(tmp_path))
    assert not os.path.exists(tmp_path / CACHE_DIR) or not [
        d for d in os.listdir(tmp_path / CACHE_DIR) if not d.startswith(".")
    ]
