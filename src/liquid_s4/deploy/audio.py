"""WAV files for streaming: reading any PCM or float WAV as mono float samples, and resampling.

`read_wav(path)` returns the samples as float32 in [-1, 1] (channels averaged: stereo is mixed down)
and the file's sampling rate. It reads

* integer PCM of 8 (unsigned), 16, 24 and 32 bits, with Python's `wave` module or scipy;
* 32- and 64-bit float WAVs and WAVE_FORMAT_EXTENSIBLE headers, with `scipy.io.wavfile` (scipy is
  part of the `train` extra; without it only integer PCM in a plain header can be read).

Integer samples are divided by 2^(bits - 1) (8-bit WAVs are unsigned: (x - 128) / 128); float samples
are taken as they are (their nominal range is [-1, 1]). Anything that cannot be read -- a missing file,
a file that is not a RIFF/WAVE file, a truncated or corrupt one, a WAV without samples -- raises
`AudioError` (a `ValueError`) naming the file and what was expected.

`resample(x, orig_rate, new_rate)` is a band-limited polyphase resampler: a Kaiser-windowed sinc
low-pass at the lower of the two Nyquist frequencies, applied at the rational ratio new/orig reduced by
their gcd. With scipy it is `scipy.signal.resample_poly`; without, the same filter in numpy (the same
output up to rounding). `load_audio(path, sample_rate)` reads and resamples in one call.
"""

from __future__ import annotations

import math
import os
import warnings
import wave

import numpy as np

__all__ = ["AudioError", "read_wav", "resample", "load_audio"]

EXPECTED = "a WAV file (RIFF/WAVE: integer PCM of 8, 16, 24 or 32 bits, or 32/64-bit float)"


class AudioError(ValueError):
    """An audio file is missing, unreadable, corrupt, empty, or not a WAV file."""


def read_wav(path: str | os.PathLike, mono: bool = True) -> tuple[np.ndarray, int]:
    """The samples of a WAV file as float32 and its sampling rate in Hz: (n,) with the channels
    averaged when `mono` (the default), else (n, channels). An `AudioError` for anything unreadable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file; expected {EXPECTED}")
    if os.path.isdir(path):
        raise AudioError(f"{path} is a folder; expected {EXPECTED}")
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise AudioError(f"{path}: cannot be read ({e}); expected {EXPECTED}") from e
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        what = "an empty file" if not head else "not a RIFF/WAVE file"
        raise AudioError(f"{path} is {what}; expected {EXPECTED}")
    try:
        from scipy.io import wavfile
    except ImportError:
        wavfile = None
    samples, rate = _read_scipy(path, wavfile) if wavfile is not None else _read_wave(path)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise AudioError(f"{path} holds no samples; expected {EXPECTED} with at least one sample")
    if rate <= 0:
        raise AudioError(f"{path}: the header gives a sampling rate of {rate} Hz; expected a positive rate")
    x = _to_float(samples, path)
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path} holds samples that are not finite numbers (NaN or infinity)")
    return (x.mean(axis=1, dtype=np.float64).astype(np.float32) if mono else x), int(rate)


def _read_scipy(path: str, wavfile) -> tuple[np.ndarray, int]:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # WavFileWarning: chunks it skips (LIST, fact, ...), a short file
            rate, data = wavfile.read(path, mmap=False)
    except Exception as e:  # scipy's parser raises many kinds on damaged files (struct.error, NameError, ...)
        raise AudioError(
            f"{path}: cannot read as {EXPECTED} ({_why(e)}); it may be truncated or corrupt"
        ) from e
    short = [str(w.message) for w in caught if "prematurely" in str(w.message)]
    if short:  # scipy returns the samples it found; a file shorter than its header says is damaged
        raise AudioError(f"{path} is truncated or corrupt: {short[0]}")
    return np.asarray(data), int(rate)


def _read_wave(path: str) -> tuple[np.ndarray, int]:
    """Integer PCM with the standard library (no scipy)."""
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except wave.Error as e:
        raise AudioError(
            f"{path}: cannot read as integer PCM WAV ({e}); float and WAVE_FORMAT_EXTENSIBLE files need "
            "scipy (pip install scipy, or liquid-s4[train])"
        ) from e
    except Exception as e:  # EOFError, RuntimeError (a chunk past the end), OSError, ...
        raise AudioError(
            f"{path}: cannot read as {EXPECTED} ({_why(e)}); it may be truncated or corrupt"
        ) from e
    frame = channels * width
    if channels < 1 or width not in (1, 2, 3, 4):
        raise AudioError(f"{path}: {channels} channel(s) of {width}-byte samples; expected {EXPECTED}")
    if len(raw) != n * frame:
        raise AudioError(
            f"{path}: the header announces {n} frames but the file holds {len(raw) // frame} (truncated or "
            "corrupt)"
        )
    if width == 1:
        data = np.frombuffer(raw, dtype=np.uint8)
    elif width == 3:  # little-endian 24-bit: as int32 with the sample in the high three bytes
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
    else:
        data = np.frombuffer(raw, dtype="<i2" if width == 2 else "<i4")
    return data.reshape(-1, channels), rate


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _to_float(samples: np.ndarray, path: str) -> np.ndarray:
    """Integer samples scaled to [-1, 1) by their type's range (24-bit data arrives as int32 with the
    sample in the high bytes, so 2^31 scales it too); float samples as they are."""
    kind, bits = samples.dtype.kind, 8 * samples.dtype.itemsize
    if kind == "u" and bits == 8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if kind == "i":
        return (samples.astype(np.float64) / 2.0 ** (bits - 1)).astype(np.float32)
    if kind == "f":
        return samples.astype(np.float32)
    raise AudioError(f"{path}: samples of type {samples.dtype} are not supported; expected {EXPECTED}")


# ---- resampling ----------------------------------------------------------------------------------


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """`x` (n,) or (n, channels) sampled at `orig_rate` Hz, resampled to `new_rate` Hz along the first
    axis: ceil(n * new / orig) samples (a copy of `x` when the rates are equal). Band-limited: a
    Kaiser-windowed sinc low-pass (beta 5, 10 zero crossings each side at the lower rate) in polyphase
    form; `scipy.signal.resample_poly` when scipy is installed, the same filter in numpy otherwise."""
    for name, r in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r <= 0:
            raise ValueError(f"resample: {name} must be a positive integer (Hz), got {r!r}")
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    g = math.gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // g, int(orig_rate) // g
    if up == down:
        return x.copy()
    try:
        from scipy.signal import resample_poly
    except ImportError:
        return _resample_numpy(x, up, down)
    return resample_poly(x, up, down, axis=0)


def lowpass_filter(up: int, down: int, dtype=np.float64) -> np.ndarray:
    """The anti-aliasing filter of a resampling by up/down (scipy's resample_poly default): firwin's
    Kaiser-windowed (beta 5) sinc with cutoff 1/max(up, down) of the Nyquist frequency, 20 max(up, down)
    + 1 taps, unit gain at DC, times `up`."""
    m = max(up, down)
    half = 10 * m
    n = np.arange(2 * half + 1) - half
    h = np.sinc(n / m) / m * np.kaiser(2 * half + 1, 5.0)
    return (h / h.sum() * up).astype(dtype)


def _resample_numpy(x: np.ndarray, up: int, down: int, block: int = 1 << 15) -> np.ndarray:
    """Polyphase resampling without scipy: output m is sum_i h[i] xu[m down + half - i], where xu is x
    upsampled by `up` with zeros; only the taps that meet a nonzero xu are evaluated (one phase of h per
    output), in blocks of outputs."""
    h = lowpass_filter(up, down, x.dtype)
    half = (len(h) - 1) // 2
    J = -(-len(h) // up)  # taps per phase
    phases = np.zeros(J * up, dtype=x.dtype)
    phases[: len(h)] = h
    phases = phases.reshape(J, up).T  # phases[p, j] = h[p + j up]
    n_in = x.shape[0]
    n_out = -(-n_in * up // down)
    squeeze = x.ndim == 1
    x2 = x[:, None] if squeeze else x
    pad = np.zeros((J, x2.shape[1]), dtype=x.dtype)
    xp = np.concatenate([pad, x2, pad])  # xp[i + J] = x[i], zeros outside
    out = np.empty((n_out, x2.shape[1]), dtype=x.dtype)
    j = np.arange(J)
    for s in range(0, n_out, block):
        t = np.arange(s, min(s + block, n_out), dtype=np.int64) * down + half
        base, phase = t // up, t % up  # xu[t - p - j up] = x[base - j]
        idx = np.clip(base[:, None] - j[None, :] + J, 0, xp.shape[0] - 1)
        out[s : s + len(t)] = np.einsum("mj,mjc->mc", phases[phase], xp[idx])
    return out[:, 0] if squeeze else out


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """A WAV file as mono float32 samples (n,) at `sample_rate` Hz: read whole (`read_wav`), mixed
    down, and resampled once (`resample`) when its own rate differs."""
    x, rate = read_wav(path)
    if rate != sample_rate:
        x = resample(x, rate, sample_rate).astype(np.float32)
    return x
