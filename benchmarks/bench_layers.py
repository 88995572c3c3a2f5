"""CPU speed and memory benchmark of the S4D, S4 and LSSL layers and their Liquid-S4 variants.

Run from the repository root:

    python benchmarks/bench_layers.py                       # all layers, all shapes, aligned table
    python benchmarks/bench_layers.py --markdown            # the same as a Markdown table (for the README)
    python benchmarks/bench_layers.py --layers S4D,S4 --shapes small --repeats 2 --json results.json
    python benchmarks/bench_layers.py --layers liquid --shapes 2   # PB/KB against their plain bases

Layers: S4D, S4, LSSL (plain), BASE-KINDDEGREE for the liquid kernels, e.g. S4-PB2 (= LiquidS4),
S4D-KB3, and S4D-SCAN / S4D-ODE for the exact liquid scan (liquid_form "discrete" / "ode"; the fused
CPU kernels when numba is installed); "plain", "liquid" and "scan" name groups. For every (layer,
shape) a fresh subprocess (`--worker LAYER B H N L`) builds the layer with d_model=H, d_state=N and
default options, and times on a float32 input of shape (B, L, H):
  * fwd:      forward under torch.no_grad() in eval mode,
  * fwd+bwd:  forward, loss = y.square().mean(), backward, in train mode,
as the median of --repeats runs after one warm-up run (at most 3 runs for L >= 16384). Peak
memory is the child's peak RSS during forward+backward minus its RSS after imports, model
construction and input allocation ("delta"); the total peak RSS is reported too. A case that
crashes (e.g. out of memory) is reported as failed without stopping the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time

SHAPES = [(16, 128, 64, 1024), (8, 128, 64, 4096), (2, 128, 64, 16384), (1, 256, 64, 65536)]  # (B, H, N, L)
PLAIN = ("S4D", "S4", "LSSL")
LIQUID = tuple(
    f"{base}-{kind}{degree}" for base in ("S4D", "S4") for kind in ("PB", "KB") for degree in (2, 3)
)
SCAN = ("S4D-SCAN", "S4D-ODE")  # the exact liquid scan: liquid_form "discrete" and "ode"
LAYERS = PLAIN + LIQUID + SCAN
GROUPS = {
    "plain": PLAIN,
    "liquid": ("S4D", "S4") + LIQUID,
    "scan": ("S4D", "S4D-PB2") + SCAN,
    "all": LAYERS + SCAN,
}


def build(name: str, H: int, N: int):
    """The layer called `name` (see the module docstring) with d_model=H, d_state=N."""
    import liquid_s4

    base, _, liquid = name.partition("-")
    if liquid in ("SCAN", "ODE"):
        kwargs = {"liquid_kernel": "scan", "liquid_form": "ode" if liquid == "ODE" else "discrete"}
    else:
        kwargs = {"liquid_kernel": liquid[:2].lower(), "liquid_degree": int(liquid[2:])} if liquid else {}
    return getattr(liquid_s4, base)(H, N, **kwargs)


def peak_rss_kib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def current_rss_kib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    except OSError:
        return peak_rss_kib()  # no /proc: the peak so far is the best available estimate


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def worker(
    layer: str, B: int, H: int, N: int, L: int, repeats: int, threads: int, allocator: str = "tuned"
) -> dict:
    """One measurement, run in its own process; returns the result as a dict."""
    import torch

    import liquid_s4

    if allocator == "tuned":
        liquid_s4.tune_cpu_allocator()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(layer, H, N)
    u = torch.randn(B, L, H)
    base = current_rss_kib()

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        y, _ = model(u)
        y.square().mean().backward()

    model.train()
    t_fwd_bwd = timed(fwd_bwd, repeats)
    peak = peak_rss_kib()  # before the forward-only runs, so the peak is that of forward+backward
    model.eval()
    with torch.no_grad():
        t_fwd = timed(lambda: model(u), repeats)
    return {
        "layer": layer,
        "B": B,
        "H": H,
        "N": N,
        "L": L,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "allocator": allocator,
        "fwd_ms": t_fwd,
        "fwd_bwd_ms": t_fwd_bwd,
        "base_rss_mib": base / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_delta_mib": (peak - base) / 1024,
    }


def run_case(
    layer: str, shape: tuple[int, ...], repeats: int, threads: int, allocator: str = "tuned"
) -> dict:
    """Run one case in a subprocess; returns its result, or a dict with an "error" entry."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", layer, *map(str, shape)]
    cmd += ["--repeats", str(repeats), "--threads", str(threads), "--allocator", allocator]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode == 0:
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            reason = "no result printed"
    elif proc.returncode < 0:
        name = (
            signal.Signals(-proc.returncode).name
            if -proc.returncode in signal.valid_signals()
            else str(-proc.returncode)
        )
        reason = f"killed by {name}" + (" (out of memory?)" if proc.returncode == -signal.SIGKILL else "")
    else:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else "no error message"
    return dict(zip("BHNL", shape), layer=layer, error=f"failed: {reason} (return code {proc.returncode})")


def fmt_mem(mib: float) -> str:
    return f"{mib / 1024:.2f} GiB" if abs(mib) >= 1024 else f"{mib:.0f} MiB"


def table(results: list[dict], markdown: bool) -> str:
    head = [
        "layer",
        "B",
        "H",
        "N",
        "L",
        "fwd ms",
        "fwd+bwd ms",
        "peak delta",
        "peak total",
        "fwd+bwd / S4D",
        "fwd+bwd / base",
    ]
    ok = {(r["layer"], r["B"], r["H"], r["N"], r["L"]): r["fwd_bwd_ms"] for r in results if "error" not in r}
    rows = []  # failed rows have 6 cells: the case and the error message
    for r in results:
        row = [r["layer"], *(str(r[k]) for k in "BHNL")]
        if "error" in r:
            rows.append(row + [r["error"]])
            continue
        shape = (r["B"], r["H"], r["N"], r["L"])
        ratios = []
        for ref_layer in ("S4D", r["layer"].partition("-")[0] if "-" in r["layer"] else None):
            ref = ok.get((ref_layer, *shape))
            ratios.append(f"{r['fwd_bwd_ms'] / ref:.2f}x" if ref else "-")
        times = [f"{r['fwd_ms']:.1f}", f"{r['fwd_bwd_ms']:.1f}"]
        rows.append(row + times + [fmt_mem(r["peak_delta_mib"]), fmt_mem(r["peak_rss_mib"]), *ratios])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|:---|" + "---:|" * (len(head) - 1)]
        return "\n".join(
            lines + ["| " + " | ".join(row + [""] * (len(head) - len(row))) + " |" for row in rows]
        )
    widths = [
        max([len(h)] + [len(row[i]) for row in rows if len(row) == len(head)]) for i, h in enumerate(head)
    ]
    widths[:5] = [max([w] + [len(row[i]) for row in rows]) for i, w in enumerate(widths[:5])]

    def fmt(row: list[str]) -> str:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells if len(row) == len(head) else cells[:5] + [row[5]])

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(row) for row in rows])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def parse_shapes(spec: str) -> list[tuple[int, ...]]:
    """'all', 'small' (the first shape), or comma-separated indices into SHAPES and/or BxHxNxL."""
    if spec == "all":
        return list(SHAPES)
    if spec == "small":
        return SHAPES[:1]
    shapes = []
    for item in spec.split(","):
        item = item.strip()
        shape = tuple(int(x) for x in item.split("x")) if "x" in item else SHAPES[int(item)]
        if len(shape) != 4:
            raise ValueError(f"shape {item!r} is not BxHxNxL")
        shapes.append(shape)
    return shapes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--layers",
        default="all",
        help=f"comma-separated layers and/or groups: {','.join(LAYERS)}; groups {','.join(GROUPS)}",
    )
    p.add_argument(
        "--shapes",
        default="all",
        help="'all', 'small' (first shape only), or comma-separated indices 0-3 / BxHxNxL; "
        + "shapes (B,H,N,L): "
        + ", ".join(f"{i}={s}" for i, s in enumerate(SHAPES)),
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="timed runs per measurement (at most 3 for L >= 16384)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads value (default 2)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument(
        "--allocator",
        choices=["tuned", "default"],
        default="tuned",
        help="tuned: liquid_s4.tune_cpu_allocator() (as `liquid-s4 train` does); default: glibc's defaults",
    )
    p.add_argument("--worker", nargs=5, metavar=("LAYER", "B", "H", "N", "L"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        layer, *shape = args.worker
        print(json.dumps(worker(layer, *map(int, shape), args.repeats, args.threads, args.allocator)))
        return

    layers = []
    for x in (x.strip() for x in args.layers.split(",") if x.strip()):
        layers += [y for y in GROUPS.get(x, (x,)) if y not in layers]
    if bad := [x for x in layers if x not in LAYERS]:
        p.error(f"unknown layers {bad}; choose from {','.join(LAYERS)} or the groups {','.join(GROUPS)}")
    try:
        shapes = parse_shapes(args.shapes)
    except (ValueError, IndexError) as e:
        p.error(f"bad --shapes {args.shapes!r}: {e}")

    import torch

    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "allocator": args.allocator,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    print(
        f"liquid_s4 layer benchmark: torch {meta['torch']}, {args.threads} threads, "
        f"CPU {meta['cpu']} ({meta['cpu_count']} cores)"
    )
    print(
        f"python {meta['python']} on {meta['platform']}; median of {args.repeats} runs "
        "(at most 3 for L >= 16384) after a warm-up; "
        f"{args.allocator} allocator"
    )
    print("peak = max RSS during fwd+bwd; delta = above the RSS after imports, model and input\n", flush=True)

    results = []
    cases = [(shape, layer) for shape in shapes for layer in layers]
    for i, (shape, layer) in enumerate(cases, 1):
        repeats = min(args.repeats, 3) if shape[3] >= 16384 else args.repeats
        print(f"[{i}/{len(cases)}] {layer} B,H,N,L={shape} ...", end=" ", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results.append(run_case(layer, shape, repeats, args.threads, args.allocator))
        print(
            results[-1].get("error", "done"),
            f"({time.perf_counter() - t0:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    print(table(results, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
