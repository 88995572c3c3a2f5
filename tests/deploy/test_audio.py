"""WAV reading (every PCM width, float, WAVE_FORMAT_EXTENSIBLE, stereo; with and without scipy; clear
errors for what cannot be read) and the band-limited resampler."""

import struct
import sys
import wave

import numpy as np
import pytest

from liquid_s4.deploy.audio import AudioError, load_audio, lowpass_filter, read_wav, resample


def write_pcm(path, samples, rate, width):
    """Integer samples (n,) or (n, channels) as a plain PCM WAV with the standard library."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    if width == 1:
        raw = samples.astype(np.uint8).tobytes()
    elif width == 3:
        v = samples.astype("<i4").reshape(-1, 1).view(np.uint8)
        raw = v.reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = samples.astype("<i2" if width == 2 else "<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def write_extensible(path, data: np.ndarray, rate: int, float_format: bool):
    """A WAVE_FORMAT_EXTENSIBLE file (format tag 0xFFFE, sub-format PCM or IEEE float)."""
    data = np.asarray(data)
    channels = 1 if data.ndim == 1 else data.shape[1]
    bits = 8 * data.dtype.itemsize
    block = channels * data.dtype.itemsize
    sub = (3 if float_format else 1).to_bytes(2, "little") + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0) + sub
    payload = data.astype(data.dtype.newbyteorder("<")).tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload))
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body) + len(payload)) + body + payload)


@pytest.fixture
def no_scipy(monkeypatch):
    """As if scipy were not installed (the core install)."""
    for name in ("scipy.io", "scipy.io.wavfile", "scipy.signal"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("scipy", [True, False], ids=["scipy", "wave"])
def test_pcm_widths(tmp_path, scipy, request):
    if not scipy:
        request.getfixturevalue("no_scipy")
    rng = np.random.default_rng(0)
    v16 = rng.integers(-32768, 32768, 300)
    write_pcm(tmp_path / "a16.wav", v16, 16000, 2)
    x, rate = read_wav(tmp_path / "a16.wav")
    assert rate == 16000 and x.dtype == np.float32 and x.shape == (300,)
    np.testing.assert_array_equal(x, (v16 / 32768).astype(np.float32))
    v8 = rng.integers(0, 256, 100)
    write_pcm(tmp_path / "a8.wav", v8, 8000, 1)
    x, rate = read_wav(tmp_path / "a8.wav")
    assert rate == 8000
    np.testing.assert_allclose(x, (v8 - 128) / 128, atol=1e-7)
    v24 = rng.integers(-(2**23), 2**23, 100)
    write_pcm(tmp_path / "a24.wav", v24, 22050, 3)
    x, rate = read_wav(tmp_path / "a24.wav")
    assert rate == 22050
    np.testing.assert_allclose(x, v24 / 2**23, atol=1e-7)
    v32 = rng.integers(-(2**31), 2**31, 100)
    write_pcm(tmp_path / "a32.wav", v32, 48000, 4)
    np.testing.assert_allclose(read_wav(tmp_path / "a32.wav")[0], v32 / 2**31, atol=1e-7)
    assert np.abs(read_wav(tmp_path / "a32.wav")[0]).max() <= 1


@pytest.mark.parametrize("scipy", [True, False], ids=["scipy", "wave"])
def test_stereo_is_mixed_down(tmp_path, scipy, request):
    if not scipy:
        request.getfixturevalue("no_scipy")
    rng = np.random.default_rng(1)
    v = rng.integers(-20000, 20000, (441, 2))
    write_pcm(tmp_path / "st.wav", v, 44100, 2)
    x, rate = read_wav(tmp_path / "st.wav")
    assert rate == 44100 and x.shape == (441,)
    np.testing.assert_allclose(x, v.mean(1) / 32768, atol=1e-7)
    both, _ = read_wav(tmp_path / "st.wav", mono=False)
    assert both.shape == (441, 2)
    np.testing.assert_allclose(both, v / 32768, atol=1e-7)


def test_float_and_extensible(tmp_path):
    from scipy.io import wavfile

    rng = np.random.default_rng(2)
    f32 = rng.uniform(-1, 1, 500).astype(np.float32)
    wavfile.write(tmp_path / "f32.wav", 16000, f32)
    x, rate = read_wav(tmp_path / "f32.wav")
    assert rate == 16000
    np.testing.assert_array_equal(x, f32)
    f64 = rng.uniform(-1, 1, (200, 2))
    wavfile.write(tmp_path / "f64.wav", 32000, f64)
    x, rate = read_wav(tmp_path / "f64.wav")
    assert rate == 32000
    np.testing.assert_allclose(x, f64.mean(1), atol=1e-7)
    write_extensible(tmp_path / "ext_f.wav", f32, 16000, float_format=True)
    np.testing.assert_array_equal(read_wav(tmp_path / "ext_f.wav")[0], f32)
    i16 = rng.integers(-32768, 32768, (100, 2)).astype(np.int16)
    write_extensible(tmp_path / "ext_i.wav", i16, 44100, float_format=False)
    x, rate = read_wav(tmp_path / "ext_i.wav")
    assert rate == 44100
    np.testing.assert_allclose(x, i16.mean(1) / 32768, atol=1e-7)


def test_float_wav_without_scipy(tmp_path, monkeypatch):
    write_extensible(tmp_path / "f.wav", np.zeros(10, np.float32), 16000, float_format=True)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(AudioError, match="need scipy"):
        read_wav(tmp_path / "f.wav")


def test_unreadable_files(tmp_path):
    expected = "expected a WAV file"
    with pytest.raises(AudioError, match="no such file"):
        read_wav(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="is a folder"):
        read_wav(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=f"empty file; {expected}"):
        read_wav(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("hello, this is not audio at all")
    with pytest.raises(AudioError, match=f"text.wav is not a RIFF/WAVE file; {expected}"):
        read_wav(tmp_path / "text.wav")
    write_pcm(tmp_path / "none.wav", np.zeros(0, np.int16), 16000, 2)
    with pytest.raises(AudioError, match="none.wav holds no samples"):
        read_wav(tmp_path / "none.wav")
    write_pcm(tmp_path / "ok.wav", np.arange(1000), 16000, 2)
    raw = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "short.wav").write_bytes(raw[:500])
    (tmp_path / "header.wav").write_bytes(raw[:30])
    (tmp_path / "garbage.wav").write_bytes(raw[:12] + b"x" * 64)
    for scipy in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            if not scipy:
                mp.setitem(sys.modules, "scipy.io", None)
            for name in ("short.wav", "header.wav", "garbage.wav"):
                with pytest.raises(AudioError, match=f"{name}.*(truncated or corrupt)"):
                    read_wav(tmp_path / name)


def _tone(freq, rate, seconds, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def _fit(x, freq, rate):
    """Amplitude of the sine of `freq` in x (least squares on sin and cos), and the residual's rms."""
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.hypot(*coef)), float(np.sqrt(np.mean((x - basis @ coef) ** 2)))


def _dominant(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()]


@pytest.mark.parametrize("scipy", [True, False], ids=["scipy", "numpy"])
def test_resample_keeps_frequency_and_amplitude(scipy, request):
    if not scipy:
        request.getfixturevalue("no_scipy")
    x = _tone(1000.0, 44100, 0.5)
    y = resample(x, 44100, 16000)
    assert y.shape == (int(np.ceil(len(x) * 16000 / 44100)),)
    inner = y[200:-200]  # away from the edges (zero padding)
    amp, residual = _fit(inner, 1000.0, 16000)
    assert abs(amp - 0.5) < 1e-3 and residual < 1e-3
    assert abs(_dominant(inner, 16000) - 1000.0) < 3
    up = resample(_tone(440.0, 8000, 0.5), 8000, 16000)
    assert up.shape == (8000,)
    amp, residual = _fit(up[200:-200], 440.0, 16000)
    assert abs(amp - 0.5) < 1e-3 and residual < 1e-3
    alias = resample(_tone(10000.0, 44100, 0.5), 44100, 16000)  # above the new Nyquist (8 kHz): removed
    assert np.sqrt(np.mean(alias[200:-200] ** 2)) < 1e-3
    same = resample(x.astype(np.float32), 16000, 16000)
    np.testing.assert_array_equal(same, x.astype(np.float32))


def test_numpy_resampler_equals_scipy(monkeypatch):
    from scipy.signal import firwin, resample_poly

    rng = np.random.default_rng(3)
    for orig, new in ((44100, 16000), (8000, 16000), (48000, 16000), (16000, 22050)):
        x = rng.standard_normal((1500, 2))
        ref = resample_poly(x, new, orig, axis=0)
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, "scipy.signal", None)
            got = resample(x, orig, new)
        np.testing.assert_allclose(got, ref, atol=1e-12)
    h = firwin(2 * 10 * 441 + 1, 1 / 441, window=("kaiser", 5.0)) * 160
    np.testing.assert_allclose(lowpass_filter(160, 441), h, atol=1e-15)


def test_resample_errors():
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="positive integer"):
            resample(np.zeros(4), bad, 16000)


def test_load_audio(tmp_path):
    v = (_tone(700.0, 44100, 0.2) * 32767).astype(np.int16)
    write_pcm(tmp_path / "st.wav", np.stack([v, v], 1), 44100, 2)
    x = load_audio(tmp_path / "st.wav", 16000)
    assert x.dtype == np.float32 and x.shape == (int(np.ceil(len(v) * 16000 / 44100)),)
    amp, _ = _fit(x[100:-100], 700.0, 16000)
    assert abs(amp - 0.5) < 2e-3
    write_pcm(tmp_path / "m.wav", v, 16000, 2)
    np.testing.assert_array_equal(load_audio(tmp_path / "m.wav", 16000), v / np.float32(32768))
