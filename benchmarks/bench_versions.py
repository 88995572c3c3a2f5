"""Two versions of liquid_s4 side by side in one process, interleaved: the layers' forward, forward +
backward, cached evaluation and recurrent step, and a model's training step.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_versions.py --before /tmp/before/src --after src

Each version's package folder is copied under another name (liquid_s4_before, liquid_s4_after: the
package imports itself only relatively), and every measurement alternates between them round by
round (which one goes first alternates too), so both see the same machine load. Reported: the
median time of each, and the median of the per-round ratios after/before (below 1: faster). On a
shared machine a single run drifts by tens of percent within minutes; the interleaved ratio is what
to compare.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {"short": (16, 128, 64, 1024), "long": (8, 128, 64, 4096)}  # (B, H, N, L)
LAYERS = {
    "S4D": ("S4D", {}),
    "S4": ("S4", {}),
    "LSSL": ("LSSL", {}),
    "S4D-PB2": ("S4D", {"liquid_kernel": "pb"}),
    "S4D-KB2": ("S4D", {"liquid_kernel": "kb"}),
    "S4-PB2": ("S4", {"liquid_kernel": "pb"}),
    "S4-KB2": ("S4", {"liquid_kernel": "kb"}),
}
STEP_LAYERS = ("S4D", "S4", "S4-PB2", "S4-KB2")


def load(src: str, name: str, tmp: Path):
    """The package under `src`/liquid_s4, imported as `name`."""
    shutil.copytree(Path(src) / "liquid_s4", tmp / name)
    return importlib.import_module(name)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare(label: str, before, after, rounds: int) -> dict:
    """before/after: zero-argument callables, each one measurement (run once untimed first)."""
    before(), after()
    tb, ta = [], []
    for i in range(rounds):  # the order alternates, so that neither always runs first
        if i % 2:
            ta.append(timed(after))
            tb.append(timed(before))
        else:
            tb.append(timed(before))
            ta.append(timed(after))
    ratio = statistics.median(a / b for a, b in zip(ta, tb))
    row = {"what": label, "before_ms": statistics.median(tb) * 1e3, "after_ms": statistics.median(ta) * 1e3}
    row["ratio"] = ratio
    print(f"{label:38s} {row['before_ms']:9.2f} {row['after_ms']:9.2f} {ratio:7.2f}", flush=True)
    return row


def layer_pairs(versions, name: str, H: int, N: int):
    import torch

    cls, kw = LAYERS[name]
    out = []
    for pkg in versions:
        torch.manual_seed(0)
        out.append(getattr(pkg, cls)(H, N, **kw))
    return out


def forward(layer, u):
    return lambda: layer(u)


def forward_backward(model, u):
    def run():
        y = model(u)
        (y[0] if isinstance(y, tuple) else y).square().mean().backward()

    return run


def evaluate(layer, u):
    import torch

    def run():
        with torch.no_grad():
            layer(u)

    return run


def stepping(layer, u, steps: int):
    import torch

    state = [layer.default_state(u.shape[0])]

    def run():
        with torch.no_grad():
            for _ in range(steps):
                state[0] = layer.step(u, state[0])[1]

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True, help="the src folder of the earlier version")
    p.add_argument("--after", default="src", help="the src folder of the later version (default: src)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=200, help="recurrent steps per measurement")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    sys.path.insert(0, str(tmp))
    versions = (load(args.before, "liquid_s4_before", tmp), load(args.after, "liquid_s4_after", tmp))
    versions[1].tune_cpu_allocator()  # process-wide: both versions run under it
    print(f"{args.threads} threads, {args.rounds} interleaved rounds; times: medians in ms")
    print(f"{'':38s} {'before':>9s} {'after':>9s} {'ratio':>7s}")
    rows = []
    for shape_name, (B, H, N, L) in SHAPES.items():
        u = torch.randn(B, L, H)
        for name in LAYERS:
            pair = layer_pairs(versions, name, H, N)
            tag = f"{name} {shape_name} L={L}"
            rows.append(compare(f"{tag} fwd", *[forward(m, u) for m in pair], args.rounds))
            rows.append(compare(f"{tag} fwd+bwd", *[forward_backward(m, u) for m in pair], args.rounds))
            rows.append(compare(f"{tag} eval (cached)", *[evaluate(m, u) for m in pair], args.rounds))
    for name in STEP_LAYERS:
        pair = [layer.eval() for layer in layer_pairs(versions, name, 256, 64)]
        for B in (1, 64):
            u = torch.randn(B, 256)
            runs = [stepping(m, u, args.steps) for m in pair]
            rows.append(compare(f"{name} step B={B} ({args.steps} steps)", *runs, args.rounds))
    models = []
    for pkg in versions:
        torch.manual_seed(0)
        cfg = pkg.ModelConfig(d_input=1, d_output=10, d_model=64, n_layers=4, layer="liquid_s4")
        models.append(pkg.SequenceModel(cfg))
    x = torch.randn(8, 2048, 1)
    rows.append(
        compare(
            "SequenceModel liquid 64x4 L=2048 fwd+bwd",
            *[forward_backward(m, x) for m in models],
            args.rounds,
        )
    )
    worst = max(rows, key=lambda r: r["ratio"])
    median = statistics.median(r["ratio"] for r in rows)
    print(f"median ratio {median:.3f}; largest {worst['ratio']:.2f} ({worst['what']})")


if __name__ == "__main__":
    main()
