"""Speech Commands v0.02 (Warden, 2018) as raw 16 kHz waveforms: the SC10 and 35-class tasks.

Expected layout of the data directory (the official archive, extracted; it has no top folder, so
extract it into e.g. data/speech_commands/ -- a single `speech_commands_v0.02/` level is also accepted):

    validation_list.txt            relative paths, one per line: right/bb05582b_nohash_0.wav
    testing_list.txt
    backward/  bed/  bird/ ...     one folder per word (35 words), each of 16 kHz mono 16-bit PCM WAVs
    _background_noise_/            (ignored)

Official archive: https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz

Splits: the official ones -- a clip is in validation/test when `validation_list.txt`/`testing_list.txt`
lists it, otherwise in training. SC10 keeps the ten words yes no up down left right on off stop go
(labels in that order); `classes: 35` keeps every word, labelled in sorted order.

Preprocessing: clips (most are 16000 samples, some shorter) are right-padded with zeros to 16000 and
stored as int16 (with their real lengths) in the cache; the model sees x float32 (16000, 1) =
int16 / 32768 in [-1, 1). Zero-shot sampling-rate test (`test_rate: 8000`, the default): the test
clips resampled 16 kHz -> 8 kHz with an anti-aliased polyphase filter (scipy.signal.resample_poly),
8000 steps, reported as the extra test set `test_8khz` at rate 2.0 (the model's step size doubled).
"""

from __future__ import annotations

import math
import os
import wave

import numpy as np

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
    tokens,
)

SAMPLE_RATE = 16000
CLIP_LENGTH = 16000  # 1 s at 16 kHz; shorter clips are zero-padded to this length
SC10 = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SC35 = tuple(
    sorted(
        "backward bed bird cat dog down eight five follow forward four go happy house learn left marvin nine "
        "no off on "
        "one right seven sheila six stop three tree two up visual wow yes zero".split()
    )
)
LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
DEFAULTS = {"classes": 10, "test_rate": 8000}
SOURCE = (
    "Get the official archive "
    "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz and extract it "
    "(tar xzf) into that folder."
)
LAYOUT = """    validation_list.txt   testing_list.txt
    backward/*.wav  bed/*.wav  ...  zero/*.wav   (35 word folders of 16 kHz mono 16-bit WAVs)
    _background_noise_/   (ignored)"""
OFFICIAL_35 = {"train": 84843, "val": 9981, "test": 11005}  # v0.02, all 35 words (105829 clips)
_CHUNK = 512  # clips resampled at a time


def read_wav(path: str) -> np.ndarray:
    """The samples of one 16 kHz mono 16-bit PCM WAV file as int16 (n,); anything else is a DataError."""
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if (channels, width, rate) != (1, 2, SAMPLE_RATE):
                raise DataError(
                    f"{path}: expected 1 channel of 2-byte samples at {SAMPLE_RATE} Hz (16-bit PCM mono), "
                    f"found {channels} channel(s), {width}-byte samples at {rate} Hz"
                )
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise DataError(f"{path}: cannot read as a WAV file ({e}); it may be truncated or corrupt") from e
    if len(raw) != 2 * n:
        raise DataError(
            f"{path}: the header announces {n} samples but the file holds {len(raw) // 2} (truncated or "
            "corrupt)"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def _find_root(root: str) -> str:
    if not os.path.isdir(root):
        raise missing("Speech Commands v0.02 folder", root, LAYOUT, SOURCE)
    nested = os.path.join(root, "speech_commands_v0.02")
    if not os.path.isfile(os.path.join(root, LISTS["test"])) and os.path.isdir(nested):
        return nested
    return root


def _read_list(path: str) -> list[str]:
    """The relative paths (word/name.wav) of one official split list."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            entry = line.strip().replace("\\", "/")
            if not entry:
                continue
            parts = entry.split("/")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise DataError(
                    f"{path} line {lineno}: expected a relative path like 'right/bb05582b_nohash_0.wav', got "
                    f"{entry!r}"
                )
            out.append(entry)
    return out


def _parse(root: str, words: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every clip of `words` (label order, then sorted file names), padded to 16000 samples."""
    val, test = (set(_read_list(os.path.join(root, LISTS[s]))) for s in ("val", "test"))
    both = sorted(val & test)
    if both:
        raise DataError(f"{both[0]} is listed in both {LISTS['val']} and {LISTS['test']} (in {root!r})")
    entries = []  # (label, relative path)
    for label, word in enumerate(words):
        names = sorted(n for n in os.listdir(os.path.join(root, word)) if n.lower().endswith(".wav"))
        entries += [(label, f"{word}/{n}") for n in names]
    audio = np.zeros((len(entries), CLIP_LENGTH), dtype=np.int16)  # (n, 16000), zero-padded
    lengths = np.zeros(len(entries), dtype=np.int32)
    labels = np.zeros(len(entries), dtype=np.uint8)
    split = np.zeros(len(entries), dtype=np.uint8)
    for i, (label, rel) in enumerate(entries):
        path = os.path.join(root, *rel.split("/"))
        clip = read_wav(path)
        if len(clip) > CLIP_LENGTH:
            raise DataError(
                f"{path}: {len(clip)} samples, longer than the {CLIP_LENGTH} (1 s) of Speech Commands clips"
            )
        audio[i, : len(clip)] = clip
        lengths[i], labels[i] = len(clip), label
        split[i] = (
            SPLIT_CODE["val"] if rel in val else SPLIT_CODE["test"] if rel in test else SPLIT_CODE["train"]
        )
    return {"audio": audio, "lengths": lengths, "labels": labels, "split": split}


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """int16 clips (n, 16000) at 16 kHz -> int16 (n, ceil(16000 * rate / 16000)) at `rate` Hz, with
    scipy's anti-aliased polyphase resampler (Kaiser-windowed low-pass), rounded and clipped to int16."""
    from scipy.signal import resample_poly

    g = math.gcd(rate, SAMPLE_RATE)
    up, down = rate // g, SAMPLE_RATE // g
    out = np.zeros((len(audio), math.ceil(audio.shape[1] * up / down)), dtype=np.int16)
    for s in range(0, len(audio), _CHUNK):
        y = resample_poly(np.asarray(audio[s : s + _CHUNK], dtype=np.float64), up, down, axis=1)
        out[s : s + _CHUNK] = np.clip(np.rint(y), -32768, 32767)
    return out


def _test_rate(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < SAMPLE_RATE:
        raise ValueError(
            f"data.options.test_rate must be null or a sampling rate in Hz below {SAMPLE_RATE} (e.g. 8000), "
            f"got {value!r}"
        )
    return value


def build_speech_commands(spec) -> SequenceData:
    """Speech Commands v0.02, raw audio: x float32 (16000, 1) in [-1, 1), y int64 in 0..classes-1.
    Options: `classes` (10: SC10, default; 35: every word), `test_rate` (8000, default: add the
    zero-shot `test_8khz` test set at rate 2.0; null: none). Official validation/test lists."""
    opts = take_options(spec.options, DEFAULTS, "speech-commands")
    classes = choose(opts["classes"], (10, 35), "data.options.classes")
    test_rate = _test_rate(opts["test_rate"])
    root = _find_root(data_root(spec.data_dir, "speech_commands"))
    words = SC10 if classes == 10 else SC35
    lists = [os.path.join(root, LISTS[s]) for s in ("val", "test")]
    for path in lists:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Speech Commands split list {os.path.basename(path)} not found at {path!r}; it is part of "
                f"the official archive. Expected layout:\n{LAYOUT}\n{SOURCE}"
            )
    absent = [w for w in words if not os.path.isdir(os.path.join(root, w))]
    if absent:
        hint = (
            " (v0.01 has only 30 words; use v0.02 or classes: 10)"
            if classes == 35 and len(absent) <= 5
            else ""
        )
        raise missing(f"Speech Commands word folder(s) {', '.join(absent)}{hint}", root, LAYOUT, SOURCE)
    sources = [os.path.join(root, w) for w in words] + lists
    key = f"speech_commands_sc{classes}"
    a = cached(root, key, sources, {"classes": classes}, lambda: _parse(root, words))
    split = np.asarray(a["split"])
    tr, va, te = (np.flatnonzero(split == SPLIT_CODE[s]) for s in ("train", "val", "test"))
    norm = Standardize(0.0, 1.0, scale=1 / 32768)  # int16 -> [-1, 1)
    full = ArrayDataset(
        a["audio"][..., None], a["labels"], transform=norm, target_transform=tokens
    )  # x (n, 16000, 1) int16
    name = "SC10" if classes == 10 else "35 classes"
    description = (
        f"Speech Commands v0.02 ({name}): raw 16 kHz audio, 16000 steps, 1 channel, "
        f"{len(tr)}/{len(va)}/{len(te)}"
    )
    official = dict(OFFICIAL_35) if classes == 35 else {}  # SC10 subset sizes: not published with the release
    extra_tests = {}
    if test_rate is not None:
        low = cached(
            root,
            f"{key}-{test_rate}hz",
            sources,
            {"classes": classes, "test_rate": test_rate},
            lambda: {"audio": resample(a["audio"][te], test_rate)},
        )
        rate, label = SAMPLE_RATE / test_rate, f"test_{test_rate / 1000:g}khz"
        low_set = ArrayDataset(
            low["audio"][..., None], np.asarray(a["labels"])[te], transform=norm, target_transform=tokens
        )
        extra_tests[label] = (low_set, rate)
        description += (
            f"; zero-shot test at {test_rate / 1000:g} kHz ({low['audio'].shape[1]} steps, rate {rate:g})"
        )
        if official:
            official[label] = official["test"]
    info = DataInfo(
        d_input=1,
        d_output=classes,
        description=description,
        extra={"classes": list(words), "sample_rate": SAMPLE_RATE, "test_rate": test_rate},
    )
    sets = [full.subset(tr), full.subset(va) if len(va) else None, full.subset(te) if len(te) else None]
    return SequenceData(*sets, info=info, extra_tests=extra_tests, official=official)
