"""One full training step (forward, backward, AdamW) of a deep model on raw audio, and recurrent
inference speed: the model-level targets of the performance work.

Run from the repository root:

    python benchmarks/bench_model_step.py                  # both parts, all layers
    python benchmarks/bench_model_step.py --part audio --layers s4d --allocator default

audio:     a 4-layer, 64-channel, N = 64 SequenceModel (prenorm BatchNorm, 35 classes, mean pooling)
           on 16 kHz raw audio, L = 16000, batch 16; median (and range) of --repeats steps after
           --warmup untimed ones (the first steps page-fault the heap up to a step's peak). Then
           evaluation (eval mode, inference_mode) of a batch of 16 and of one clip, median of
           --repeats after one untimed call (which computes the kernels that later calls reuse).
recurrent: a single layer, H = 256, N = 64, `layer.step()` under torch.no_grad(); time steps per
           second at batch 1 and sample-steps per second at batch 64 (median of 3 runs of --steps).
Each case runs in its own subprocess, with `--threads` torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LAYERS = {
    "s4d": {},
    "s4": {},
    "liquid_s4": {"liquid_kernel": "pb", "liquid_degree": 2},
    "s4d_pb": {"liquid_kernel": "pb", "liquid_degree": 2},
    "s4d_scan": {"liquid_kernel": "scan"},
}
BASES = {"liquid_s4": "s4", "s4d_pb": "s4d", "s4d_scan": "s4d"}  # the layer family of each entry


def audio(layer: str, repeats: int, warmup: int) -> dict:
    import torch

    import liquid_s4

    layer_args = {"d_state": 64, **LAYERS[layer]}
    name = BASES.get(layer, layer)
    model = liquid_s4.SequenceModel(
        d_input=1, d_output=35, d_model=64, n_layers=4, layer=name, layer_args=layer_args, norm="batch"
    )
    opt = torch.optim.AdamW(liquid_s4.param_groups(model, lr=1e-3, weight_decay=0.01))
    x, y = torch.randn(16, 16000, 1), torch.randint(0, 35, (16,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(warmup):  # the first steps grow the heap (page faults) until it holds a step's peak
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    model.eval()  # evaluation after training: the first batch computes the kernels, later ones reuse them
    evals = {}
    with torch.inference_mode():
        for B in (16, 1):
            model(x[:B])
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                model(x[:B])
                ts.append(time.perf_counter() - t)
            evals[f"eval_B{B}_s"] = statistics.median(ts)
    return {
        "step_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "parameters": sum(p.numel() for p in model.parameters()),
        **evals,
    }


def recurrent(layer: str, steps: int) -> dict:
    import torch

    import liquid_s4

    cls = liquid_s4.S4D if BASES.get(layer, layer) == "s4d" else liquid_s4.S4
    m = cls(256, 64, **LAYERS[layer]).eval()
    out = {}
    for B in (1, 64):
        state, u = m.default_state(B), torch.randn(B, 256)
        rates = []
        with torch.no_grad():
            for _ in range(20):
                _, state = m.step(u, state)
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(steps):
                    _, state = m.step(u, state)
                rates.append(steps / (time.perf_counter() - t))
        out[f"B{B}_steps_per_s"] = statistics.median(rates)
        out[f"B{B}_sample_steps_per_s"] = statistics.median(rates) * B
    return out


def worker(
    part: str, layer: str, allocator: str, threads: int, repeats: int, steps: int, warmup: int
) -> dict:
    import torch

    import liquid_s4

    if allocator == "tuned":
        liquid_s4.tune_cpu_allocator()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    result = audio(layer, repeats, warmup) if part == "audio" else recurrent(layer, steps)
    return {"part": part, "layer": layer, "allocator": allocator, **result}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["audio", "recurrent", "all"], default="all")
    p.add_argument("--layers", default=",".join(LAYERS), help=f"comma-separated, from {','.join(LAYERS)}")
    p.add_argument(
        "--allocator", choices=["tuned", "default", "both"], default="both", help="for the audio part"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed training steps (audio)")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps first (audio)")
    p.add_argument("--steps", type=int, default=1000, help="time steps per timed run (recurrent)")
    p.add_argument("--worker", nargs=3, metavar=("PART", "LAYER", "ALLOCATOR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads, args.repeats, args.steps, args.warmup)))
        return
    layers = [x for x in args.layers.split(",") if x]
    if bad := [x for x in layers if x not in LAYERS]:
        p.error(f"unknown layers {bad}; choose from {','.join(LAYERS)}")
    allocators = ["tuned", "default"] if args.allocator == "both" else [args.allocator]
    cases = []
    if args.part in ("audio", "all"):
        cases += [("audio", layer, a) for a in allocators for layer in layers]
    if args.part in ("recurrent", "all"):
        cases += [("recurrent", layer, "tuned") for layer in layers]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    print(
        f"{args.threads} threads; audio: 4 layers x 64 channels, N=64, L=16000, batch 16, "
        f"median [min..max] of {args.repeats} "
        f"steps after {args.warmup} untimed"
    )
    for part, layer, allocator in cases:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            part,
            layer,
            allocator,
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            print(f"{part:9s} {layer:9s} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if part == "audio":
            print(
                f"audio     {layer:9s} {allocator:7s} allocator: {r['step_s']:.2f} s "
                f"[{r['min_s']:.2f}..{r['max_s']:.2f}] "
                f"per training step ({r['parameters']:,} parameters); "
                f"eval {r['eval_B16_s']:.2f} s per batch of 16, "
                f"{r['eval_B1_s'] * 1e3:.0f} ms per clip"
            )
        else:
            b1, b64 = r["B1_steps_per_s"], r["B64_sample_steps_per_s"]
            print(f"recurrent {layer:9s} batch 1: {b1:,.0f} steps/s; batch 64: {b64:,.0f} sample-steps/s")


if __name__ == "__main__":
    main()
