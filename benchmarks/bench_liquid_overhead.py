"""Cost of the Liquid-S4 kernels relative to their plain base layer, measured side by side.

Separate processes (bench_layers.py) give absolute times and memory, but on a shared machine their
ratios drift with the load. Here each base layer (S4D, S4) and its liquid variants live in one process
and are timed in interleaved rounds (base, variant, base, variant, ...); the reported ratio is the
median over rounds of variant time / base time in the same round.

    python benchmarks/bench_liquid_overhead.py                     # shapes 0 and 2 of bench_layers
    python benchmarks/bench_liquid_overhead.py --shapes 2 --rounds 9 --bases S4D
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layers import SHAPES, build, parse_shapes  # noqa: E402


def measure(base: str, shape: tuple[int, ...], rounds: int, threads: int) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    B, H, N, L = shape
    names = [base] + [f"{base}-{kind}{degree}" for kind in ("PB", "KB") for degree in (2, 3)]
    torch.manual_seed(0)
    models = {name: build(name, H, N).train() for name in names}
    u = torch.randn(B, L, H)

    def fwd_bwd(model):
        model.zero_grad(set_to_none=True)
        y, _ = model(u)
        y.square().mean().backward()

    times = {name: [] for name in names}
    for name in names:
        fwd_bwd(models[name])  # warm-up
    for _ in range(rounds):
        for name in names:
            t0 = time.perf_counter()
            fwd_bwd(models[name])
            times[name].append(time.perf_counter() - t0)
    out = []
    for name in names:
        ratios = [t / b for t, b in zip(times[name], times[base])]
        out.append(
            {
                "layer": name,
                "shape": shape,
                "ms": 1e3 * statistics.median(times[name]),
                "ratio": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--shapes",
        default="0,2",
        help="indices into " + ", ".join(f"{i}={s}" for i, s in enumerate(SHAPES)) + " or BxHxNxL",
    )
    p.add_argument("--bases", default="S4D,S4")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--allocator",
        choices=["tuned", "default"],
        default="tuned",
        help="tuned: liquid_s4.tune_cpu_allocator()",
    )
    args = p.parse_args()
    if args.allocator == "tuned":
        import liquid_s4

        liquid_s4.tune_cpu_allocator()
    print(
        f"{args.allocator} allocator; fwd+bwd, {args.threads} threads, "
        f"median of {args.rounds} interleaved rounds; "
        "ratio = median of per-round ratios"
    )
    print(f"{'layer':8s} {'B,H,N,L':>20s} {'ms':>9s} {'ratio':>7s}  range")
    for shape in parse_shapes(args.shapes):
        for base in args.bases.split(","):
            for r in measure(base, shape, args.rounds, args.threads):
                shp, spread = ",".join(map(str, r["shape"])), f"[{r['ratio_min']:.2f}..{r['ratio_max']:.2f}]"
                print(f"{r['layer']:8s} {shp:>20s} {r['ms']:9.1f} {r['ratio']:6.2f}x  {spread}", flush=True)


if __name__ == "__main__":
    main()
