"""GPU benchmark: the layer, liquid-overhead, audio-step and recurrent measurements of the CPU
benchmarks, on a CUDA device (float32, PyTorch's defaults: no TF32).

    python benchmarks/bench_cuda.py                    # everything, prints Markdown tables
    python benchmarks/bench_cuda.py --parts layers --json gpu.json

Times are medians of --repeats runs after a warm-up, each run closed by torch.cuda.synchronize();
memory is torch.cuda.max_memory_allocated() during forward+backward above what the model and input
hold. fwd is evaluation (eval mode, no_grad): from the second call on it reuses the layer's kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_layers import SHAPES, build  # noqa: E402

import liquid_s4  # noqa: E402
from liquid_s4.ops import kernels  # noqa: E402

DEV = "cuda"


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() in ms (synchronized), after one warm-up call."""
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def layer_case(name: str, shape, repeats: int) -> dict:
    B, H, N, L = shape
    torch.manual_seed(0)
    model = build(name, H, N).to(DEV)
    u = torch.randn(B, L, H, device=DEV)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        y, _ = model(u)
        y.square().mean().backward()

    model.train()
    fwd_bwd()
    sync()
    cuda = DEV == "cuda"
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_fb = timed(fwd_bwd, repeats)
    peak = torch.cuda.max_memory_allocated() - base if cuda else 0
    model.eval()
    with torch.no_grad():
        t_f = timed(lambda: model(u), repeats)
    return {"layer": name, "shape": list(shape), "fwd_ms": t_f, "fwd_bwd_ms": t_fb, "peak_mib": peak / 2**20}


def audio_step(layer: str, batch: int, repeats: int) -> dict:
    args = {"d_state": 64, **({"liquid_kernel": "pb", "liquid_degree": 2} if layer == "liquid_s4" else {})}
    model = liquid_s4.SequenceModel(
        d_input=1,
        d_output=35,
        d_model=64,
        n_layers=4,
        layer="s4" if layer == "liquid_s4" else layer,
        layer_args=args,
        norm="batch",
    ).to(DEV)
    opt = torch.optim.AdamW(liquid_s4.param_groups(model, lr=1e-3, weight_decay=0.01))
    x, y = torch.randn(batch, 16000, 1, device=DEV), torch.randint(0, 35, (batch,), device=DEV)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    t = timed(step, repeats)
    model.eval()
    with torch.no_grad():
        t_eval = timed(lambda: model(x), repeats)
    return {"layer": layer, "batch": batch, "step_ms": t, "eval_ms": t_eval}


def recurrent(layer: str, steps: int) -> dict:
    cls = liquid_s4.S4D if layer == "s4d" else liquid_s4.S4
    kw = {"liquid_kernel": "pb"} if layer == "liquid_s4" else {}
    m = cls(256, 64, **kw).to(DEV).eval()
    out = {"layer": layer}
    for B in (1, 64, 1024):
        state, u = m.default_state(B), torch.randn(B, 256, device=DEV)
        with torch.no_grad():
            for _ in range(20):
                _, state = m.step(u, state)
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                _, state = m.step(u, state)
            sync()
        rate = steps / (time.perf_counter() - t0)
        out[f"B{B}"] = {"steps_per_s": rate, "sample_steps_per_s": rate * B}
        if DEV == "cuda":  # the same step replayed from a CUDA graph
            graphed = liquid_s4.CUDAGraphStep(m, B)
            for _ in range(20):
                graphed(u)
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                graphed(u)
            sync()
            rate = steps / (time.perf_counter() - t0)
            out[f"B{B}_graph"] = {"steps_per_s": rate, "sample_steps_per_s": rate * B}
    return out


def cauchy_chunks(repeats: int) -> list[dict]:
    """S4 fwd+bwd at (2, 128, 64, 16384) with the CPU-sized Cauchy blocks against the GPU-sized ones."""
    out, keep = [], kernels.CAUCHY_IMAG_CHUNK_ELEMENTS_GPU
    try:
        for elements in (kernels.CAUCHY_IMAG_CHUNK_ELEMENTS, 1 << 23, keep):
            kernels.CAUCHY_IMAG_CHUNK_ELEMENTS_GPU = elements
            r = layer_case("S4", SHAPES[2], repeats)
            out.append({"elements": elements, "fwd_bwd_ms": r["fwd_bwd_ms"], "peak_mib": r["peak_mib"]})
    finally:
        kernels.CAUCHY_IMAG_CHUNK_ELEMENTS_GPU = keep
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="layers,liquid,chunks,audio,recurrent")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: a smoke run of this script
    p.add_argument(
        "--shapes", default="all", help=argparse.SUPPRESS
    )  # small: the first shape only (smoke run)
    args = p.parse_args()
    global DEV, SHAPES
    DEV = args.device
    if args.shapes == "small":
        SHAPES = [(2, 8, 8, 64)] * 4
    if DEV == "cuda" and not torch.cuda.is_available():
        p.error(
            "no CUDA device: this benchmark measures the GPU path "
            "(the CPU benchmarks are bench_layers.py, bench_model_step.py)"
        )
    parts = args.parts.split(",")
    device = torch.cuda.get_device_name() if DEV == "cuda" else DEV
    print(f"liquid_s4 GPU benchmark: {device}, torch {torch.__version__}, float32\n", flush=True)
    res: dict = {"device": device, "torch": torch.__version__}

    if "layers" in parts or "liquid" in parts:
        cases = [(n, s) for s in SHAPES for n in ("S4D", "S4", "LSSL")] if "layers" in parts else []
        if "liquid" in parts:
            cases += [
                (n, s)
                for s in (SHAPES[2], SHAPES[3])
                for n in ("S4D", "S4", "S4D-PB2", "S4D-KB2", "S4-PB2", "S4-KB2", "S4D-SCAN", "S4D-ODE")
            ]
        rows = []
        for name, shape in dict.fromkeys(cases):
            rows.append(layer_case(name, shape, args.repeats))
            print(f"  {name} {shape}: fwd+bwd {rows[-1]['fwd_bwd_ms']:.1f} ms", file=sys.stderr, flush=True)
        res["layers"] = rows
        ref = {(r["layer"], tuple(r["shape"])): r["fwd_bwd_ms"] for r in rows}
        print("| layer | B | H | N | L | fwd ms | fwd+bwd ms | peak (GPU) | / S4D | / base |")
        print("|:---|" + "---:|" * 9)
        for r in rows:
            s = tuple(r["shape"])
            base = ref.get((r["layer"].partition("-")[0], s)) if "-" in r["layer"] else None
            to_base = f"{r['fwd_bwd_ms'] / base:.2f}x" if base else "-"
            print(
                f"| {r['layer']} | {' | '.join(map(str, s))} | {r['fwd_ms']:.1f} | {r['fwd_bwd_ms']:.1f} "
                f"| {r['peak_mib']:.0f} MiB | "
                f"{r['fwd_bwd_ms'] / ref[('S4D', s)]:.2f}x | {to_base} |"
            )
        print(flush=True)
    if "chunks" in parts:
        res["chunks"] = cauchy_chunks(args.repeats)
        for r in res["chunks"]:
            print(
                f"S4 (2,128,64,16384) fwd+bwd, Cauchy blocks of {r['elements']:>10,} elements: "
                f"{r['fwd_bwd_ms']:.1f} ms, peak {r['peak_mib']:.0f} MiB"
            )
        print(flush=True)
    if "audio" in parts:
        res["audio"] = [
            audio_step(layer, B, args.repeats) for B in (16, 64) for layer in ("s4d", "s4", "liquid_s4")
        ]
        for r in res["audio"]:
            print(
                f"audio step (4 layers x 64, N=64, L=16000) {r['layer']:9s} batch {r['batch']:2d}: "
                f"train {r['step_ms']:.1f} ms, eval {r['eval_ms']:.1f} ms"
            )
        print(flush=True)
    if "recurrent" in parts:
        res["recurrent"] = [recurrent(layer, args.steps) for layer in ("s4d", "s4", "liquid_s4")]
        for r in res["recurrent"]:
            rates = []
            for b in (b for b in ("B1", "B64", "B1024", "B1_graph", "B64_graph", "B1024_graph") if b in r):
                label = b[1:].replace("_graph", " (CUDA graph)")
                rates.append(
                    f"batch {label}: {r[b]['steps_per_s']:,.0f} steps/s "
                    f"({r[b]['sample_steps_per_s']:,.0f} sample-steps/s)"
                )
            print(f"recurrent {r['layer']:9s} H=256 N=64: " + ", ".join(rates))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
