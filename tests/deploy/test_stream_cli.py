"""`liquid-s4 stream MODEL --wav FILE`, end to end on WAV files the tests write: the printed decisions
equal those of a `model.step` loop on the same (resampled) audio, for a save_pretrained folder, a run
directory (its model/ folder or its checkpoints) and an exported ONNX file; the run's sampling rate,
class names and clip length are used; clear errors for what cannot be streamed."""

import json
import os
import re
import wave

import numpy as np
import pytest
import torch

from liquid_s4.cli import main
from liquid_s4.deploy.audio import load_audio
from liquid_s4.deploy.runner import Decision, format_decision, load_streaming_model, stream_wav
from liquid_s4.models.sequence import SequenceModel

RATE = 8000  # the tiny models' sampling rate (--sample-rate): half the steps of 16 kHz
LABELS = ["a", "b", "c", "d"]
DECISION = re.compile(r"^ +\d+\.\d{3} s  ")


def tiny_model(pool="last", seed=0, dtype=torch.float64, d_output=4, **kwargs) -> SequenceModel:
    """Two S4D layers with BatchNorm (random running statistics and affine, so folding mistakes show)
    and a decoder scaled up so that the decision follows the input."""
    torch.manual_seed(seed)
    args = dict(d_input=1, d_output=d_output, d_model=8, n_layers=2, layer="s4d", norm="batch", pool=pool)
    args["layer_args"] = dict(d_state=4, dt_min=0.01, dt_max=0.1)
    model = SequenceModel(**{**args, **kwargs}).to(dtype).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        model.decoder.weight.mul_(10)
    return model


def signal(rate=RATE, seconds=0.25) -> np.ndarray:
    """A tone, noise, a constant and a low tone, one after the other, in [-1, 1]."""
    n = int(rate * seconds) // 4
    t = np.arange(n) / rate
    noise = np.random.default_rng(0).standard_normal(n)
    parts = [
        0.8 * np.sin(2 * np.pi * 300 * t),
        0.3 * noise,
        -0.6 * np.ones(n),
        0.9 * np.sin(2 * np.pi * 50 * t),
    ]
    return np.clip(np.concatenate(parts), -1, 1)


def write_wav16(path, x, rate, channels=1):
    v = np.round(np.asarray(x) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(v[:, None], channels, 1).tobytes())
    return str(path)


def reference(model, audio, chunk, reset_every=None, labels=LABELS, min_prob=0.0, **options) -> list[str]:
    """The decision lines from `model.step`, one sample at a time: at the end of every chunk, the most
    probable class when it changed; the state returns to zero every `reset_every` samples."""
    state, last, lines = model.default_state(1, **options), None, []
    x = torch.as_tensor(np.asarray(audio), dtype=model.decoder.weight.dtype)
    with torch.no_grad():
        for k in range(len(x)):
            if reset_every is not None and k > 0 and k % reset_every == 0:
                state = model.default_state(1, **options)
            y, state = model.step(x[k].reshape(1, 1), state)
            if (k + 1) % chunk == 0 or k == len(x) - 1:
                p = torch.softmax(y[0].double(), -1)
                c = int(p.argmax())
                if c != last and p[c] >= min_prob:
                    last = c
                    name = labels[c] if labels else str(c)
                    lines.append(format_decision(Decision((k + 1) / RATE, c, name, float(p[c]))))
    return lines


def decisions(out: str) -> list[str]:
    return [line for line in out.splitlines() if DECISION.match(line)]


def same_decisions(a: list[str], b: list[str]) -> bool:
    """The same times and classes, probabilities within 0.01 (the printed digits of another runtime's
    rounding)."""

    def parse(line):
        t, rest = line.split(" s  ")
        name, p = rest.rsplit("  (p = ", 1)
        return float(t), name, float(p[:-1])

    pa, pb = [parse(x) for x in a], [parse(x) for x in b]
    return len(pa) == len(pb) and all(
        x[:2] == y[:2] and abs(x[2] - y[2]) <= 0.0101 for x, y in zip(pa, pb, strict=True)
    )


def test_stream_pretrained_folder_equals_stepping(tmp_path, capsys):
    model = tiny_model("last")
    model.save_pretrained(tmp_path / "model")
    x = signal()
    wav = write_wav16(tmp_path / "mono.wav", x, RATE)
    args = ["stream", str(tmp_path / "model"), "--wav", wav, "--sample-rate", str(RATE)]
    assert main(args + ["--labels", ",".join(LABELS), "--chunk-ms", "7"]) == 0  # 56 samples, a short last one
    captured = capsys.readouterr()
    expected = reference(model, load_audio(wav, RATE), 56)
    assert len(expected) >= 5  # the decision changes often on this input
    assert decisions(captured.out) == expected
    out = captured.out
    assert f"audio: 0.250 s at {RATE} Hz, 36 chunks of 56 samples (7 ms); pytorch, 1 thread(s)" in out
    assert re.search(r"processing: [\d.]+ s, real-time factor [\d.]+x", out)
    assert re.search(r"latency per chunk: median [\d.]+ ms, p95 [\d.]+ ms, max [\d.]+ ms", out)
    assert "note:" not in captured.err  # rate and labels given
    # without them: the assumed rate (16 kHz: the 8 kHz file is resampled) and class indices, said so
    assert main(["stream", str(tmp_path / "model"), "--wav", wav, "--min-prob", "0.9"]) == 0
    captured = capsys.readouterr()
    assert "assuming 16000 Hz" in captured.err and "printing class indices" in captured.err
    assert "audio: 0.250 s at 16000 Hz, 25 chunks of 160 samples (10 ms)" in captured.out
    assert all(float(line.split("p = ")[1][:-1]) >= 0.9 for line in decisions(captured.out))


def test_stream_stereo_resampled_with_resets_and_window(tmp_path, capsys):
    from scipy.io import wavfile

    model = tiny_model("mean", seed=1)
    model.save_pretrained(tmp_path / "model")
    x = signal(rate=44100)
    wav = write_wav16(tmp_path / "stereo.wav", x, 44100, channels=2)
    common = ["stream", str(tmp_path / "model"), "--sample-rate", str(RATE), "--labels", ",".join(LABELS)]
    assert main(common + ["--wav", wav, "--reset-ms", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    audio = load_audio(wav, RATE)  # mixed down and resampled 44.1 -> 8 kHz
    assert len(audio) == int(np.ceil(len(x) * RATE / 44100))
    assert result["reset_every"] == 400 and result["chunk_samples"] == 80 and result["runtime"] == "pytorch"
    expected = reference(model, audio, 80, reset_every=400)
    got = [
        format_decision(Decision(d["time_s"], d["index"], d["class"], d["prob"])) for d in result["decisions"]
    ]
    assert got == expected and len(expected) >= 2
    assert result["audio_s"] == pytest.approx(len(audio) / RATE) and result["chunks"] == -(-len(audio) // 80)
    assert set(result["latency_ms"]) == {"median", "p95", "max"} and result["realtime_factor"] > 0
    f32 = tmp_path / "float.wav"  # a float WAV, pooled over a moving window of 20 ms
    wavfile.write(f32, RATE, signal().astype(np.float32))
    assert main(common + ["--wav", str(f32), "--window-ms", "20", "--chunk-ms", "10"]) == 0
    expected = reference(model, load_audio(f32, RATE), 80, pool_window=160)
    assert decisions(capsys.readouterr().out) == expected


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A real run directory: the default digits preset, tiny, one step."""
    out = tmp_path_factory.mktemp("run") / "digits"
    tiny = ["model.d_model=4", "model.n_layers=1", "model.layer_args.d_state=4", "trainer.progress=false"]
    args = ["train", "--max-steps", "1", "--max-epochs", "1", "--output-dir", str(out), "--quiet"]
    assert main(args + [a for s in tiny for a in ("--set", s)]) == 0
    return out


def test_stream_run_directory(tmp_path, digits_run, capsys):
    wav = write_wav16(tmp_path / "a.wav", signal(16000, 0.05), 16000)
    assert main(["stream", str(digits_run), "--wav", wav]) == 0
    captured = capsys.readouterr()
    assert "assuming 16000 Hz" in captured.err  # digits are not audio: nothing recorded
    first = decisions(captured.out)
    assert first and all(re.search(r"  \d  \(p = ", line) for line in first)
    loaded = load_streaming_model(digits_run)
    assert loaded.kind == "run" and loaded.sample_rate is None and not loaded.model.training
    run = tmp_path / "ckpt_only"  # training did not finish: the model comes from the checkpoint
    os.makedirs(run / "checkpoints")
    for name in ("run.json", "checkpoints/last.ckpt"):
        (run / name).write_bytes((digits_run / name).read_bytes())
    assert main(["stream", str(run), "--wav", wav]) == 0
    captured = capsys.readouterr()
    assert "the model of checkpoints/last.ckpt" in captured.err
    assert load_streaming_model(run).kind == "checkpoint"


def test_stream_speech_commands_run_metadata(tmp_path):
    from liquid_s4.data.speech_commands import SC35
    from liquid_s4.train.config import load_config
    from liquid_s4.train.rundir import create_run_dir

    sets = ["model.d_model=4", "model.n_layers=1", "model.layer_args.d_state=2", "model.layer=s4d"]
    config = load_config("speech-commands", [*sets, "model.layer_args.liquid_kernel=null"])
    run = create_run_dir(str(tmp_path / "sc"), config)
    SequenceModel(config.model.with_data_sizes(1, 35)).eval().save_pretrained(os.path.join(run, "model"))
    wav = write_wav16(tmp_path / "a.wav", signal(16000, 0.05), 16000)
    notes = []
    for source in (run, os.path.join(run, "model")):  # the run, or its model/ folder
        result = stream_wav(source, wav, on_note=notes.append)
        assert result.sample_rate == 16000 and result.reset_every == 16000 and result.chunk_size == 160
        assert result.decisions and all(d.label == SC35[d.index] for d in result.decisions)
    assert (
        notes == ["resetting the state every 1000 ms (the clip length of the run; --reset-ms 0: never)"] * 2
    )
    assert stream_wav(run, wav, reset_ms=0).reset_every is None
    assert stream_wav(run, wav, window_ms=500).reset_every is None  # a window instead of resets


def test_stream_onnx(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("liquid_s4.deploy.onnx")
    model = tiny_model("last", dtype=torch.float32)
    model.save_pretrained(tmp_path / "model")
    wav = write_wav16(tmp_path / "mono.wav", signal(), RATE)
    common = ["--wav", wav, "--sample-rate", str(RATE), "--labels", ",".join(LABELS), "--chunk-ms", "7"]
    assert main(["stream", str(tmp_path / "model"), *common]) == 0
    torch_lines = decisions(capsys.readouterr().out)
    saved = tmp_path / "model.onnx"
    assert main(["stream", str(tmp_path / "model"), *common, "--save-onnx", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and same_decisions(decisions(out), torch_lines)
    # the exported file carries the rate, the labels and the chunk size
    assert main(["stream", str(saved), "--wav", wav]) == 0
    captured = capsys.readouterr()
    assert (
        same_decisions(decisions(captured.out), torch_lines)
        and "note: the model's sampling rate" not in captured.err
    )
    assert main(["stream", str(saved), "--wav", wav, "--chunk-ms", "10"]) == 2
    assert "exported with chunks of 56 samples" in capsys.readouterr().err
    assert main(["stream", str(saved), "--wav", wav, "--window-ms", "10"]) == 2
    assert "does not expose" in capsys.readouterr().err
    assert main(["stream", str(saved), "--wav", wav, "--save-onnx", str(tmp_path / "again.onnx")]) == 2
    assert "is already an ONNX file" in capsys.readouterr().err
    assert main(["stream", str(tmp_path / "model"), *common, "--save-onnx", str(saved)]) == 2
    assert "exists" in capsys.readouterr().err  # an existing file is not replaced
    assert main(["stream", str(saved), "--wav", wav, "--reset-ms", "30"]) == 0  # resets done by the runner
    got = decisions(capsys.readouterr().out)
    assert same_decisions(got, reference(model, load_audio(wav, RATE), 56, reset_every=240))


def test_stream_fast(tmp_path, capsys):
    pytest.importorskip("numba")
    pytest.importorskip("liquid_s4.deploy.fast")
    model = tiny_model("mean", seed=1)
    model.save_pretrained(tmp_path / "model")
    wav = write_wav16(tmp_path / "mono.wav", signal(), RATE)
    common = [
        "stream",
        str(tmp_path / "model"),
        "--wav",
        wav,
        "--sample-rate",
        str(RATE),
        "--labels",
        "a,b,c,d",
    ]
    for extra in (["--chunk-ms", "7", "--reset-ms", "30"], ["--chunk-ms", "0.125", "--window-ms", "20"]):
        assert main(common + extra) == 0
        expected = decisions(capsys.readouterr().out)  # SequenceModel.stream, tested against stepping
        assert main(common + extra + ["--fast"]) == 0
        out = capsys.readouterr().out
        assert same_decisions(decisions(out), expected) and len(expected) >= 2 and "; numba" in out
    assert main(common + ["--fast", "--onnx"]) == 2
    assert "does not run ONNX graphs" in capsys.readouterr().err


def test_stream_errors(tmp_path, capsys):
    tiny_model().save_pretrained(tmp_path / "model")
    model = str(tmp_path / "model")
    wav = write_wav16(tmp_path / "ok.wav", signal(), RATE)
    (tmp_path / "text.wav").write_text("not audio")
    write_wav16(tmp_path / "empty.wav", np.zeros(0), RATE)
    (tmp_path / "folder").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    SequenceModel(d_input=1, d_output=1, d_model=4, n_layers=1, layer="s4d").save_pretrained(tmp_path / "reg")
    SequenceModel(vocab_size=5, d_output=2, d_model=4, n_layers=1, layer="s4d").save_pretrained(
        tmp_path / "tok"
    )
    cases = [
        ([model, "--wav", str(tmp_path / "missing.wav")], "missing.wav: no such file; expected a WAV file"),
        ([model, "--wav", str(tmp_path / "text.wav")], "text.wav is not a RIFF/WAVE file"),
        ([model, "--wav", str(tmp_path / "empty.wav")], "empty.wav holds no samples"),
        (
            [str(tmp_path / "nowhere"), "--wav", wav],
            "nowhere: no such file or folder; expected a run directory",
        ),
        ([str(tmp_path / "folder"), "--wav", wav], "is a folder without a model"),
        ([str(tmp_path / "weights.bin"), "--wav", wav], "is a file but not an .onnx file"),
        ([model, "--wav", wav, "--labels", "a,b"], "2 labels for a model with 4 outputs"),
        ([str(tmp_path / "reg"), "--wav", wav], "single output"),
        ([str(tmp_path / "tok"), "--wav", wav], "the model reads tokens"),
        ([model, "--wav", wav, "--threads", "0"], "--threads must be at least 1"),
        ([model, "--wav", wav, "--chunk-ms", "-5"], "--chunk-ms must be a non-negative number"),
        ([model, "--wav", wav, "--window-ms", "5", "--decay-ms", "5"], "--window-ms or --decay-ms, not both"),
        ([model, "--wav", wav, "--min-prob", "2"], "--min-prob must lie in [0, 1]"),
    ]
    for args, message in cases:
        assert main(["stream", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("liquid-s4 stream: error: ") and message in err, (args, err)
