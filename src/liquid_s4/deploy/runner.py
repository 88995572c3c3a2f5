"""Streaming audio through a trained model chunk by chunk: what `liquid-s4 stream` runs.

    loaded = load_streaming_model("runs/speech-commands-.../")    # a run, a save_pretrained folder, .onnx
    result = stream_wav(loaded, "clip.wav", chunk_ms=10)
    print(format_result(result))

**The model.** `load_streaming_model(path)` accepts

* a run directory written by `liquid-s4 train` (its `model/` folder, or when training did not finish,
  `checkpoints/best.ckpt` then `last.ckpt`); the run's configuration gives the sampling rate, the class
  names and the clip length for the datasets that have them (`speech-commands`: 16 kHz, its word list,
  1 s clips);
* a `save_pretrained` folder (config.json + model.safetensors); when it is a run's `model/` folder the
  run's values are used as above, otherwise there are none (pass `sample_rate` / `labels`; without a
  rate 16000 Hz is assumed, without labels the class indices are printed);
* an ONNX file written by `liquid_s4.deploy.onnx.export_onnx`, run with onnxruntime; its metadata
  (`sample_rate`, `labels`, `clip_length` when the export was given them) plays the part of the run's.

`stream_wav(..., onnx=True)` on a PyTorch model exports it first (to `save_onnx`, or a temporary file)
with the chunk size as the graph's chunk size, then streams through onnxruntime. `fast=True` runs it
with the compiled per-sample path instead (`liquid_s4.deploy.fast.FastStream`, numba: the choice for
very short chunks, down to one sample).

**Streaming.** The WAV file is read whole, mixed down to mono and resampled once to the model's rate
(`liquid_s4.deploy.audio`); then its samples are fed to the model in chunks of `chunk_ms`, each chunk
continuing from the state the previous one left (`SequenceModel.stream`, or the ONNX graph). The latency
figures are the model's: the wall time of each chunk's call (including the conversion of its output
to a decision), measured after one warm-up chunk that is not counted; reading and resampling the file
are not part of them. Real-time factor = audio duration / total processing time of the chunks (above 1:
faster than real time). `threads` sets the intra-op thread count of torch (for the run) or of the
onnxruntime session (default 1: at batch 1 a chunk is a few dozen small operations, and waking more
threads costs more than it saves; try 2 for long chunks).

**Decisions.** After every chunk the model's output at the chunk's last step (for mean pooling: the
prediction from the features pooled so far) is turned into class probabilities (softmax); a decision
is reported when the most probable class differs from the last reported one and its probability is at
least `min_prob`: (time at the end of the chunk, class, probability).

**Continuous streams.** A clip classifier pools its features over the whole input, so on a recording
much longer than its clips the decision would average the whole stream. The default therefore resets
the whole state every clip length when the run gives one (speech-commands: every 1 s, so the decision
at the end of each second is exactly the model's prediction for that second as a clip); otherwise the
state is never reset. `reset_ms` sets the period (0: never), `window_ms` pools only the last window of
features, `decay_ms` pools with an exponential decay of that time constant (the layers keep their own
memory with a window or decay; see `liquid_s4.models.streaming`). For ONNX graphs `OnnxStream` does
the resets (the state returns to the graph's zero state); the window and decay are not available.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Decision",
    "LoadedModel",
    "StreamResult",
    "format_result",
    "load_streaming_model",
    "stream_audio",
    "stream_wav",
]

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_CHUNK_MS = 10.0
# the datasets of audio runs: their sampling rate, class names (by data.options) and clip length come
# from the dataset's module (`_apply_run_metadata`)
AUDIO_DATASETS = {"speech-commands"}


@dataclass
class LoadedModel:
    """A model ready to stream: a PyTorch `SequenceModel` (`model`) or an ONNX graph (`onnx_path`),
    with what its run or metadata says about the input (None where nothing does)."""

    source: str  # the path given
    kind: str  # "run", "pretrained", "checkpoint" or "onnx"
    model: Any = None  # SequenceModel (eval mode) for every kind but "onnx"
    onnx_path: str | None = None
    sample_rate: int | None = None
    labels: list[str] | None = None
    clip_length: int | None = None  # samples at sample_rate
    d_output: int | None = None
    chunk_size: int | None = None  # an ONNX graph's chunk size
    notes: list[str] = field(default_factory=list)


@dataclass
class Decision:
    time_s: float  # end of the chunk, seconds since the start of the stream
    index: int
    label: str
    prob: float


@dataclass
class StreamResult:
    decisions: list[Decision]
    audio_s: float
    wall_s: float  # total processing time of the chunks
    latencies_ms: np.ndarray  # per chunk
    chunk_size: int  # samples
    sample_rate: int
    runtime: str  # "pytorch", "numba" or "onnxruntime"
    threads: int | None
    reset_every: int | None  # samples
    pool_window: int | None
    pool_decay: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else math.inf

    def latency(self) -> dict[str, float]:
        lat = self.latencies_ms
        if len(lat) == 0:
            return {"median": 0.0, "p95": 0.0, "max": 0.0}
        return {
            "median": float(np.median(lat)),
            "p95": float(np.percentile(lat, 95)),
            "max": float(lat.max()),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": [
                {"time_s": round(d.time_s, 6), "class": d.label, "index": d.index, "prob": d.prob}
                for d in self.decisions
            ],
            "audio_s": self.audio_s,
            "wall_s": self.wall_s,
            "realtime_factor": self.realtime_factor,
            "latency_ms": self.latency(),
            "chunks": len(self.latencies_ms),
            "chunk_samples": self.chunk_size,
            "chunk_ms": 1000.0 * self.chunk_size / self.sample_rate,
            "sample_rate": self.sample_rate,
            "runtime": self.runtime,
            "threads": self.threads,
            "reset_every": self.reset_every,
            "pool_window": self.pool_window,
            "pool_decay": self.pool_decay,
            "notes": self.notes,
        }


# ---- loading -------------------------------------------------------------------------------------

EXPECTED_MODEL = (
    "a run directory (written by liquid-s4 train), a save_pretrained folder (config.json + "
    "model.safetensors) or an exported .onnx file"
)


def load_streaming_model(path: str | os.PathLike) -> LoadedModel:
    """The model at `path` (see the module docstring), in eval mode on the CPU."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder; expected {EXPECTED_MODEL}")
    if os.path.isfile(path):
        if path.lower().endswith(".onnx"):
            return _load_onnx(path)
        raise ValueError(f"{path} is a file but not an .onnx file; expected {EXPECTED_MODEL}")
    from ..models.sequence import CONFIG_NAME, WEIGHTS_NAME

    if os.path.isfile(os.path.join(path, CONFIG_NAME)) or os.path.isfile(os.path.join(path, WEIGHTS_NAME)):
        loaded = LoadedModel(path, "pretrained", model=_from_pretrained(path))
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isfile(os.path.join(parent, "run.json")):  # a run's model/ folder
            _apply_run_metadata(loaded, _run_data_config(parent))
        return _finish(loaded)
    run_json, ckpt_dir = os.path.join(path, "run.json"), os.path.join(path, "checkpoints")
    if os.path.isfile(run_json) or os.path.isdir(ckpt_dir):
        model_dir = os.path.join(path, "model")
        if os.path.isfile(os.path.join(model_dir, CONFIG_NAME)):
            loaded = LoadedModel(path, "run", model=_from_pretrained(model_dir))
        else:
            ckpt = next(
                (
                    os.path.join(ckpt_dir, n)
                    for n in ("best.ckpt", "last.ckpt")
                    if os.path.isfile(os.path.join(ckpt_dir, n))
                ),
                None,
            )
            if ckpt is None:
                raise FileNotFoundError(
                    f"{path} is a run directory without a model: neither model/ (written when training "
                    "ends) nor checkpoints/best.ckpt or last.ckpt is there"
                )
            loaded = _load_checkpoint(path, ckpt)
        if os.path.isfile(run_json):
            _apply_run_metadata(loaded, _run_data_config(path))
        return _finish(loaded)
    raise ValueError(
        f"{path} is a folder without a model (no config.json/model.safetensors, run.json or "
        f"checkpoints/); expected {EXPECTED_MODEL}"
    )


def _from_pretrained(directory: str):
    from ..models.sequence import SequenceModel

    return SequenceModel.from_pretrained(directory).eval()


def _load_checkpoint(run: str, ckpt: str) -> LoadedModel:
    try:
        from ..train.module import LitSequenceModel
    except ImportError as e:
        raise ImportError(
            f"{run} has no model/ folder, only checkpoints, and reading a checkpoint needs the train extra "
            f"(pip install liquid-s4[train]): {e}"
        ) from e
    lit = LitSequenceModel.load_from_checkpoint(ckpt, map_location="cpu")
    loaded = LoadedModel(run, "checkpoint", model=lit.model.eval())
    loaded.notes.append(f"the model of {os.path.relpath(ckpt, run)} (the run has no model/ folder)")
    _apply_run_metadata(loaded, lit.run_config.to_dict()["data"])
    return loaded


def _run_data_config(run: str) -> dict[str, Any]:
    """The data section of a run's run.json."""
    path = os.path.join(run, "run.json")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        data = record["config"]["data"]
        if not isinstance(data, dict):
            raise TypeError("config.data is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a readable liquid-s4 run record ({e})") from e
    return data


def _apply_run_metadata(loaded: LoadedModel, data: dict[str, Any]) -> None:
    """The sampling rate, class names and clip length of the run's dataset, when it is an audio one."""
    if data.get("name") not in AUDIO_DATASETS:
        return
    from ..data import speech_commands as sc

    classes = (data.get("options") or {}).get("classes", sc.DEFAULTS["classes"])
    loaded.sample_rate, loaded.clip_length = sc.SAMPLE_RATE, sc.CLIP_LENGTH
    loaded.labels = list(sc.SC10 if classes == 10 else sc.SC35)


def _finish(loaded: LoadedModel) -> LoadedModel:
    m = loaded.model
    c = m.config
    if c.vocab_size:
        raise ValueError(
            f"{loaded.source}: the model reads tokens (vocab_size {c.vocab_size}); streaming audio needs a "
            "model of real-valued inputs"
        )
    if c.d_input != 1:
        raise ValueError(
            f"{loaded.source}: the model reads {c.d_input} features per step; streaming a (mono) WAV file "
            "needs d_input 1"
        )
    if c.head == "retrieval":
        raise ValueError(
            f"{loaded.source}: the retrieval head compares two whole sequences; it cannot stream"
        )
    if any(getattr(blk.layer, "bidirectional", False) for blk in m.blocks):
        raise ValueError(
            f"{loaded.source}: the model has bidirectional layers, which need the whole sequence; it cannot "
            "stream"
        )
    loaded.d_output = c.d_output
    return loaded


def _onnx_module():
    try:
        from . import onnx as onnx_runtime
    except ImportError as e:
        raise ImportError(
            "ONNX streaming needs onnx and onnxruntime (pip install liquid-s4[deploy]) and "
            f"liquid_s4.deploy.onnx: {e}"
        ) from e
    return onnx_runtime


def _load_onnx(path: str) -> LoadedModel:
    stream = _onnx_module().OnnxStream(path)
    meta = dict(stream.metadata or {})
    loaded = LoadedModel(path, "onnx", onnx_path=path)
    loaded.sample_rate = _meta_int(meta.get("sample_rate"), "sample_rate", path)
    loaded.clip_length = _meta_int(meta.get("clip_length"), "clip_length", path)
    labels = _meta_value(meta.get("labels"))
    if labels is not None and not isinstance(labels, (list, tuple)):
        labels = [s.strip() for s in str(labels).split(",")]
    loaded.labels = None if labels is None else [str(s) for s in labels]
    loaded.d_output, loaded.chunk_size = int(stream.d_output), int(stream.chunk_size)
    if stream.info.get("vocab_size"):
        raise ValueError(
            f"{path}: the graph reads tokens (vocab_size {stream.info['vocab_size']}); streaming audio "
            "needs a model of real-valued inputs"
        )
    if stream.d_input != 1:
        raise ValueError(
            f"{path}: the graph reads {stream.d_input} features per step; streaming a (mono) WAV file needs "
            "d_input 1"
        )
    return loaded


def _meta_value(value):
    """A metadata entry: ONNX stores strings, so JSON-encoded values are decoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _meta_int(value, name: str, path: str) -> int | None:
    value = _meta_value(value)
    if value is None:
        return None
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: metadata {name} = {value!r} is not an integer") from None
    return out


# ---- the streaming loop --------------------------------------------------------------------------


def _samples(ms: float | None, rate: int, name: str, allow_zero: bool = False) -> int | None:
    """A duration in ms as a number of samples at `rate` (at least 1); None for None (and for 0 when
    `allow_zero`)."""
    if ms is None:
        return None
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
        raise ValueError(f"{name} must be a non-negative number of milliseconds, got {ms!r}")
    if ms == 0:
        if allow_zero:
            return None
        raise ValueError(f"{name} must be positive, got 0")
    return max(1, round(ms * rate / 1000))


class _TorchRunner:
    """`SequenceModel.stream` on one stream (batch 1); resets and pooling options in the model's state."""

    runtime = "pytorch"

    def __init__(self, model, reset_every, pool_window, pool_decay):
        import torch

        self.torch, self.model = torch, model
        self.options = dict(pool_window=pool_window, pool_decay=pool_decay, reset_every=reset_every)
        self.dtype = model.decoder.weight.dtype
        self.restart()

    def restart(self) -> None:
        self.state = self.model.default_state(1, **self.options)

    def prepare(self, audio: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(audio)).to(self.dtype)[None, :, None]

    def __call__(self, chunk) -> np.ndarray:
        """The chunk's output at its last step, (d_output,) float64."""
        with self.torch.no_grad():
            y, self.state = self.model.stream(chunk, self.state)
        return y[0, -1].double().numpy()


class _FastRunner(_TorchRunner):
    """`FastStream` (the compiled per-sample path, `liquid_s4.deploy.fast`) on one stream: every chunk
    in one kernel call; resets and pooling options in its state."""

    runtime = "numba"

    def __init__(self, model, reset_every, pool_window, pool_decay):
        try:
            from .fast import FastStream
        except ImportError as e:
            raise ImportError(f"--fast needs numba (pip install liquid-s4[fast]): {e}") from e
        import torch

        self.torch, self.dtype = torch, model.decoder.weight.dtype
        self.fast = FastStream(
            model, 1, pool_window=pool_window, pool_decay=pool_decay, reset_every=reset_every
        )

    def restart(self) -> None:
        self.fast.reset()

    def __call__(self, chunk) -> np.ndarray:
        return self.fast.run(chunk)[0, -1].double().numpy()


class _OnnxRunner:
    """An `OnnxStream` on one stream; it does the resets (zero state every R samples)."""

    runtime = "onnxruntime"

    def __init__(self, path, reset_every, pool_window, pool_decay, threads):
        if pool_window is not None or pool_decay is not None:
            raise ValueError(
                "--window-ms and --decay-ms change the model's pooling state, which an ONNX graph does not "
                "expose; use --reset-ms, or stream the PyTorch model (a run or save_pretrained folder "
                "without --onnx)"
            )
        self.stream = _onnx_module().OnnxStream(path, intra_op_num_threads=threads, reset_every=reset_every)
        self.restart()

    def restart(self) -> None:
        self.state = self.stream.default_state(1)  # also restarts the count to the next reset

    def prepare(self, audio: np.ndarray):
        return np.ascontiguousarray(audio, dtype=np.float32)[None, :, None]

    def __call__(self, chunk) -> np.ndarray:
        y, self.state = self.stream.stream(chunk, self.state)
        return np.asarray(y)[0, -1].astype(np.float64)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_decisions(loaded: LoadedModel, labels, min_prob) -> None:
    if isinstance(min_prob, bool) or not isinstance(min_prob, (int, float)) or not 0 <= min_prob <= 1:
        raise ValueError(f"--min-prob must lie in [0, 1], got {min_prob!r}")
    d_output = loaded.d_output
    if d_output is not None and d_output < 2:
        raise ValueError("stream prints class decisions; this model has a single output (a regression model)")
    if labels is not None and d_output is not None and len(labels) != d_output:
        raise ValueError(f"{len(labels)} labels for a model with {d_output} outputs (classes)")


def stream_audio(
    loaded: LoadedModel,
    audio: np.ndarray,
    sample_rate: int,
    chunk_size: int,
    *,
    labels: list[str] | None = None,
    reset_every: int | None = None,
    pool_window: int | None = None,
    pool_decay: float | None = None,
    min_prob: float = 0.0,
    threads: int | None = 1,
    onnx_path: str | None = None,
    fast: bool = False,
    on_decision=None,
) -> StreamResult:
    """Stream `audio` (mono float samples (n,) already at the model's `sample_rate`) through the model
    in chunks of `chunk_size` samples (the last one may be shorter) and return the decisions and the
    timing. `onnx_path`: run this ONNX graph (exported from the model with chunk size `chunk_size`)
    instead of the PyTorch model (always for an ONNX `loaded`); `fast`: run the model with
    `liquid_s4.deploy.fast.FastStream` (numba) instead of `SequenceModel.stream`. `reset_every`,
    `pool_window` (samples) and `pool_decay` (per-sample factor) as in `SequenceModel.default_state`.
    `on_decision(decision)` is called as each decision is made."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(audio) == 0:
        raise ValueError("stream: the audio holds no samples")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"stream: the chunk size must be a positive number of samples, got {chunk_size!r}")
    _check_decisions(loaded, labels, min_prob)
    path = onnx_path or loaded.onnx_path
    if path is not None:
        runner = _OnnxRunner(path, reset_every, pool_window, pool_decay, threads)
    elif fast:
        runner = _FastRunner(loaded.model, reset_every, pool_window, pool_decay)
    else:
        runner = _TorchRunner(loaded.model, reset_every, pool_window, pool_decay)
    x = runner.prepare(audio)
    decisions: list[Decision] = []
    n, last = len(audio), None
    latencies = np.empty(-(-n // chunk_size))
    with _torch_threads(threads):
        runner(runner.prepare(np.zeros(min(chunk_size, n), dtype=np.float32)))  # warm-up: lazy set-up
        runner.restart()  # the warm-up's state is discarded
        wall = 0.0
        for i, start in enumerate(range(0, n, chunk_size)):
            chunk = x[:, start : start + chunk_size]
            t0 = time.perf_counter()
            y = runner(chunk)
            k = int(y.argmax())
            p = float(_softmax(y)[k]) if k != last else None  # only for a new class
            dt = time.perf_counter() - t0
            latencies[i] = 1000.0 * dt
            wall += dt
            if p is not None and p >= min_prob:
                last = k
                name = labels[k] if labels is not None else str(k)
                d = Decision(min(start + chunk_size, n) / sample_rate, k, name, p)
                decisions.append(d)
                if on_decision is not None:
                    on_decision(d)
    return StreamResult(
        decisions=decisions,
        audio_s=n / sample_rate,
        wall_s=wall,
        latencies_ms=latencies,
        chunk_size=chunk_size,
        sample_rate=sample_rate,
        runtime=runner.runtime,
        threads=None if runner.runtime == "numba" else threads,  # one stream: the kernel runs on one
        reset_every=reset_every,
        pool_window=pool_window,
        pool_decay=pool_decay,
    )


def stream_wav(
    model: str | os.PathLike | LoadedModel,
    wav: str | os.PathLike,
    *,
    chunk_ms: float | None = None,
    onnx: bool = False,
    fast: bool = False,
    save_onnx: str | os.PathLike | None = None,
    sample_rate: int | None = None,
    labels: list[str] | str | None = None,
    reset_ms: float | None = None,
    window_ms: float | None = None,
    decay_ms: float | None = None,
    min_prob: float = 0.0,
    threads: int | None = 1,
    on_decision=None,
    on_note=None,
) -> StreamResult:
    """Read `wav`, resample it to the model's rate and stream it (`stream_audio`); the options as in
    `liquid-s4 stream` (see the module docstring). `sample_rate` / `labels` replace what the run or the
    ONNX metadata says; `labels` may be a comma-separated string. `reset_ms` 0: never reset (default:
    the run's clip length, if it has one). `decay_ms`: the time constant tau of an exponential pool
    decay, lam = exp(-1 / (tau * rate)). `on_note(text)` is called with each remark on the set-up (what
    was assumed or done) once the set-up succeeded, before streaming starts; the result holds them too
    (`notes`)."""
    from .audio import load_audio

    loaded = model if isinstance(model, LoadedModel) else load_streaming_model(model)
    notes: list[str] = list(loaded.notes)
    note = notes.append
    if isinstance(labels, str):
        labels = [s.strip() for s in labels.split(",")]
    labels = labels if labels is not None else loaded.labels
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0
    ):
        raise ValueError(f"--sample-rate must be a positive integer (Hz), got {sample_rate!r}")
    rate = sample_rate or loaded.sample_rate
    if rate is None:
        rate = DEFAULT_SAMPLE_RATE
        note(f"the model's sampling rate is not recorded: assuming {rate} Hz (set it with --sample-rate)")
    if labels is None:
        note("no class names recorded: printing class indices (set them with --labels a,b,c)")
    if sum(v is not None for v in (window_ms, decay_ms)) > 1:
        raise ValueError("pass --window-ms or --decay-ms, not both")
    if reset_ms is None and loaded.clip_length is not None and (window_ms, decay_ms) == (None, None):
        reset_every = loaded.clip_length * rate // (loaded.sample_rate or rate)
        note(
            f"resetting the state every {1000 * reset_every / rate:g} ms (the clip length of the run; "
            "--reset-ms 0: never)"
        )
    else:
        reset_every = _samples(reset_ms, rate, "--reset-ms", allow_zero=True)
    pool_window = _samples(window_ms, rate, "--window-ms")
    pool_decay = None
    if decay_ms is not None:
        _samples(decay_ms, rate, "--decay-ms")  # checks it
        pool_decay = math.exp(-1000.0 / (decay_ms * rate))
    onnx = onnx or save_onnx is not None
    if fast and (onnx or loaded.kind == "onnx"):
        raise ValueError("--fast runs the PyTorch model's parameters with numba; it does not run ONNX graphs")
    if loaded.kind == "onnx" and save_onnx is not None:
        raise ValueError(f"--save-onnx exports a PyTorch model; {loaded.source} is already an ONNX file")
    if loaded.kind == "onnx":
        onnx_chunk = loaded.chunk_size
        given = _samples(chunk_ms, rate, "--chunk-ms")
        if given is not None and given != onnx_chunk:
            raise ValueError(
                f"{loaded.source} was exported with chunks of {onnx_chunk} samples "
                f"({1000 * onnx_chunk / rate:g} ms at {rate} Hz); --chunk-ms {chunk_ms:g} asks for {given}: "
                "leave --chunk-ms out, or export the model again with that chunk size"
            )
        chunk_size = onnx_chunk
    else:
        chunk_size = _samples(DEFAULT_CHUNK_MS if chunk_ms is None else chunk_ms, rate, "--chunk-ms")
    _check_decisions(loaded, labels, min_prob)
    audio = load_audio(wav, rate)
    with contextlib.ExitStack() as stack:
        onnx_path = None
        if onnx and loaded.kind != "onnx":
            onnx_path = _export(loaded, chunk_size, rate, labels, save_onnx, stack)
            note(f"exported to ONNX with chunk size {chunk_size}" + (f": {save_onnx}" if save_onnx else ""))
        for text in notes if on_note is not None else ():
            on_note(text)
        result = stream_audio(
            loaded,
            audio,
            rate,
            chunk_size,
            labels=labels,
            reset_every=reset_every,
            pool_window=pool_window,
            pool_decay=pool_decay,
            min_prob=min_prob,
            threads=threads,
            onnx_path=onnx_path,
            fast=fast,
            on_decision=on_decision,
        )
    result.notes = notes
    return result


def _export(loaded: LoadedModel, chunk_size: int, rate: int, labels, save_onnx, stack) -> str:
    """Export the PyTorch model for onnxruntime with the stream's metadata; a temporary file (removed
    at the end of `stack`) unless `save_onnx` names one."""
    module = _onnx_module()
    if save_onnx is not None:
        path = os.fspath(save_onnx)
    else:
        path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "model.onnx")
    metadata = {"sample_rate": rate}
    if labels is not None:
        metadata["labels"] = list(labels)
    if loaded.clip_length is not None:
        metadata["clip_length"] = loaded.clip_length
    module.export_onnx(loaded.model, path, chunk_size, metadata=metadata)
    return path


# ---- output ----------------------------------------------------------------------------------------


def format_decision(d: Decision) -> str:
    return f"{d.time_s:8.3f} s  {d.label}  (p = {d.prob:.2f})"


def format_result(result: StreamResult, decisions: bool = True) -> str:
    """The decisions (one line each, unless `decisions` is False: they were printed as they came) and
    the summary."""
    lines = [format_decision(d) for d in result.decisions] if decisions else []
    lat = result.latency()
    chunk_ms = 1000.0 * result.chunk_size / result.sample_rate
    runtime = result.runtime + (f", {result.threads} thread(s)" if result.threads else "")
    lines += [
        f"audio: {result.audio_s:.3f} s at {result.sample_rate} Hz, {len(result.latencies_ms)} chunks of "
        f"{result.chunk_size} samples ({chunk_ms:g} ms); {runtime}",
        f"processing: {result.wall_s:.3f} s, real-time factor {result.realtime_factor:.1f}x",
        f"latency per chunk: median {lat['median']:.3f} ms, p95 {lat['p95']:.3f} ms, max {lat['max']:.3f} ms",
    ]
    return "\n".join(lines)
