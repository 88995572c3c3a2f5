"""Streaming whole models on 16 kHz audio: real-time factors of chunked streaming and samples per
second of per-sample streaming, every runtime side by side in one process.

Run from the repository root:

    python benchmarks/bench_streaming.py                       # all models, all runtimes
    python benchmarks/bench_streaming.py --models speech-commands --rounds 5 --json out.json

Models (d_input 1, 35 classes, inputs: one second of white noise at 16 kHz, batch 1):
  speech-commands   the preset's model (Liquid-S4: S4 DPLR + PB degree 2, 128 x 6, N = 8, BatchNorm)
  s4d-64x4          S4D, d_model 64, 4 layers, N = 64, BatchNorm
  liquid_s4-64x4    Liquid-S4 (PB degree 2), d_model 64, 4 layers, N = 64, BatchNorm

Runtimes (each under torch.no_grad(), eval mode):
  step              `SequenceModel.step`, one sample at a time (eager PyTorch, the reference)
  stream 10/100 ms  `SequenceModel.stream` on chunks of 160 / 1600 samples
  fast step         `FastStream.step`, one sample per call (numba; the `fast` extra)
  fast run 10 ms    `FastStream.run` on chunks of 160 samples
  onnx 10/100 ms    an exported graph (`export_onnx`) in onnxruntime on chunks of 160 / 1600 samples
                    (the `deploy` extra), intra-op threads = --threads
  forward           one full forward of 1600 samples (the convolution mode, for comparison)

--batch B streams B recordings together (samples/s and rtf are per stream: multiply by B for
sample-steps per second); --device cuda runs step, stream and forward on the GPU (FastStream and ONNX
are CPU runtimes and are left out there).

Real-time factor (rtf): seconds of audio per second of processing (1 s of audio at 16 kHz in
--samples samples). The rounds interleave every runtime; the table gives medians over rounds, and
for chunked runtimes the median and 95th percentile of the per-chunk latency.

Targets (issue: streaming whole models): stream 10 ms rtf >= 10, stream 100 ms rtf >= 50 for the
speech-commands model; fast step >= 16,000 samples/s; eager step >= 3x its earlier 1,182 samples/s.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

RATE = 16000
MODELS = {
    "speech-commands": dict(
        d_model=128,
        n_layers=6,
        layer="liquid_s4",
        layer_args=dict(
            d_state=8, init="legs", liquid_kernel="pb", liquid_degree=2, dt_min=0.002, dt_max=0.2, lr=0.001
        ),
    ),
    "s4d-64x4": dict(d_model=64, n_layers=4, layer="s4d", layer_args=dict(d_state=64)),
    "liquid_s4-64x4": dict(
        d_model=64,
        n_layers=4,
        layer="liquid_s4",
        layer_args=dict(d_state=64, liquid_kernel="pb", liquid_degree=2),
    ),
}


def build(name: str):
    import torch

    from liquid_s4 import SequenceModel

    torch.manual_seed(0)
    m = SequenceModel(d_input=1, d_output=35, norm="batch", prenorm=True, pool="mean", **MODELS[name])
    m.train()
    with torch.no_grad():  # BatchNorm statistics of real inputs, so the stream sees realistic scales
        m(torch.randn(4, 2000))
    return m.eval()


def sync(x) -> None:
    """Wait for the device's queued work (CUDA), so that wall times include it."""
    import torch

    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def timed(fn, n_samples: int) -> dict:
    t0 = time.perf_counter()
    lat = fn()
    wall = time.perf_counter() - t0
    out = {"samples_per_s": n_samples / wall, "rtf": n_samples / RATE / wall}
    if lat:
        lat = sorted(lat)
        out["chunk_ms_median"] = 1e3 * statistics.median(lat)
        out["chunk_ms_p95"] = 1e3 * lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    return out


def runtimes(model, x, args) -> dict:
    """name -> a function that streams x (B, n) and returns per-chunk latencies (or None)."""
    import numpy as np
    import torch

    B, n = x.shape
    on_cpu = x.device.type == "cpu"
    fns = {}

    def step():
        state = model.default_state(B)
        for t in range(min(n, args.step_samples)):
            _, state = model.step(x[:, t], state)
        sync(x)

    fns["step"] = (step, min(n, args.step_samples))

    def chunked(T):
        # its own copy of the model: the layers keep one set of kernels and state maps (for the last
        # chunk length), and interleaved runtimes with other lengths would replace them every round
        m = copy.deepcopy(model)

        def run():
            state, lat = m.default_state(B), []
            for i in range(0, n, T):
                t0 = time.perf_counter()
                _, state = m.stream(x[:, i : i + T], state)
                sync(x)
                lat.append(time.perf_counter() - t0)
            return lat

        return run

    for ms in args.chunks_ms:
        fns[f"stream {ms} ms"] = (chunked(RATE * ms // 1000), n)

    try:
        from liquid_s4.deploy.fast import FastStream, available

        has_fast = available() and on_cpu
    except ImportError:
        has_fast = False
    if has_fast:
        fast = FastStream(model, batch_size=B)
        xs = x.numpy()

        def fast_step():
            fast.reset()
            for t in range(n):
                fast.step(xs[:, t])

        fns["fast step"] = (fast_step, n)

        def fast_run(T):
            def run():
                fast.reset()
                lat = []
                for i in range(0, n, T):
                    t0 = time.perf_counter()
                    fast.run(x[:, i : i + T])
                    lat.append(time.perf_counter() - t0)
                return lat

            return run

        fns[f"fast run {args.chunks_ms[0]} ms"] = (fast_run(RATE * args.chunks_ms[0] // 1000), n)
    try:
        import onnxruntime  # noqa: F401

        from liquid_s4.deploy.onnx import OnnxStream, export_onnx

        has_onnx = on_cpu
    except ImportError:
        has_onnx = False
    if has_onnx:
        tmp, xn = tempfile.mkdtemp(), x.numpy()
        for ms in args.chunks_ms:
            T = RATE * ms // 1000
            path = os.path.join(tmp, f"model_{T}.onnx")
            export_onnx(model, path, chunk_size=T)
            session = OnnxStream(path, intra_op_num_threads=args.threads)

            def onnx_run(session=session, T=T, xn=xn):
                state, lat = session.default_state(B), []
                for i in range(0, n, T):
                    t0 = time.perf_counter()
                    _, state = session.stream(xn[:, i : i + T], state)
                    lat.append(time.perf_counter() - t0)
                return lat

            fns[f"onnx {ms} ms"] = (onnx_run, n)

    m_forward = copy.deepcopy(model)

    def forward():
        m_forward(x[:, :1600])
        sync(x)

    fns["forward"] = (forward, 1600)
    del np, torch
    return fns


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1, help="streams advanced together")
    p.add_argument(
        "--device", default="cpu", help="cpu, or cuda (step, stream, forward; FastStream and ONNX: cpu)"
    )
    p.add_argument("--samples", type=int, default=RATE, help="samples streamed per measurement (1 s)")
    p.add_argument("--step-samples", type=int, default=2000, help="samples of the eager per-sample step")
    p.add_argument("--chunks-ms", type=int, nargs="+", default=[10, 100])
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    import torch

    from liquid_s4 import tune_cpu_allocator

    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    results = {}
    for name in args.models:
        model = build(name).to(args.device)
        x = torch.randn(args.batch, args.samples, device=args.device)
        with torch.no_grad():
            fns = runtimes(model, x, args)
            for fn, _ in fns.values():  # warm-up: caches, compilation, first-touch of buffers
                fn()
            rounds = {k: [] for k in fns}
            for _ in range(args.rounds):
                for k, (fn, count) in fns.items():
                    rounds[k].append(timed(fn, count))
        res = {}
        for k, rs in rounds.items():
            res[k] = {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        results[name] = res
        print(
            f"\n{name} ({sum(p.numel() for p in model.parameters()) / 1e3:.0f}K parameters), "
            f"{args.threads} threads, batch {args.batch}, {args.device}, median of {args.rounds} rounds"
        )
        print(f"  {'runtime':<16} {'samples/s':>11} {'rtf':>8} {'chunk ms (median / p95)':>26}")
        for k, r in res.items():
            lat = f"{r['chunk_ms_median']:.2f} / {r['chunk_ms_p95']:.2f}" if "chunk_ms_median" in r else ""
            print(f"  {k:<16} {r['samples_per_s']:>11,.0f} {r['rtf']:>8.2f} {lat:>26}")
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rounds": args.rounds, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
