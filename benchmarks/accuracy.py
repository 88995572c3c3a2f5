"""Test accuracy of the layers at one fixed training budget, on the generated tasks.

Run from the repository root:

    python benchmarks/accuracy.py                    # every task and model, 3 seeds, 2000 steps each
    python benchmarks/accuracy.py --quick            # a smoke run: tiny data and model, 3 steps, 1 seed
    python benchmarks/accuracy.py --tasks mqar,selective-copying --models S4D,S4D-scan --seeds 5
    python benchmarks/accuracy.py --steps 1000 --minutes 3 --json runs/acc/accuracy.json

Tasks (the shipped presets, generated in memory): selective-copying, mqar, irregular-integral,
copying, delay, listops-generated. Models, each in the task preset's architecture (sizes, norm,
pooling, optimizer, the SSM's d_state, dt range and learning rate) with only the layer changed:

    S4D            layer s4d, no liquid kernel
    S4             layer s4, no liquid kernel
    LiquidS4       layer liquid_s4, liquid_kernel pb, liquid_degree 2 (the paper's PB kernel)
    S4D-PB         layer s4d, liquid_kernel pb, liquid_degree 2
    S4D-scan       layer s4d, liquid_kernel scan (the exact liquid recurrence, liquid_form discrete)
    S4D-split      layer s4d, liquid_kernel scan, liquid_form split (its form stable by construction)

On irregular-integral only the scan models get the per-step time gaps (as its per-step rate, data option
gaps=rate); the other models see the values only (gaps=none): the convolution kernels need one step
size per sequence. Their best possible error is then the gap-blind baseline printed under the table.

Every (task, model, seed) is one training run with the library's own API (`load_config` of the preset,
`RunConfig.from_dict` with the layer replaced, `train`), for at most --steps optimizer steps and
--minutes of wall-clock time (a callback stops the run at the time limit; the cosine schedule is laid
out for --steps), then evaluated on the test split with the checkpoint of the best validation score.
The seed is the trainer's (initialization, batch order); the data are the same for every seed.
Printed: a Markdown table of mean ± sample standard deviation over the seeds of the test accuracy
(classification, on the scored steps) or the test MSE (irregular-integral); the JSON file (--json)
holds every run's metrics, wall time, steps and configuration, rewritten after each run. A run that
fails (e.g. a layer option this version lacks, or a diverged loss) is recorded with its error and
shown as "error" without stopping the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

TASKS = ("selective-copying", "mqar", "irregular-integral", "copying", "delay", "listops-generated")
MODELS = {
    "S4D": ("s4d", {}),
    "S4": ("s4", {}),
    "LiquidS4": ("liquid_s4", {"liquid_kernel": "pb", "liquid_degree": 2}),
    "S4D-PB": ("s4d", {"liquid_kernel": "pb", "liquid_degree": 2}),
    "S4D-scan": ("s4d", {"liquid_kernel": "scan"}),
    "S4D-split": ("s4d", {"liquid_kernel": "scan", "liquid_form": "split"}),
}
LIQUID_KEYS = ("liquid_kernel", "liquid_degree", "liquid_form")
SCANS = ("S4D-scan", "S4D-split")  # the models that take per-step time gaps
QUICK_DATA = {
    "selective-copying": {"noise": 12, "tokens": 3},
    "mqar": {"vocab_size": 40, "length": 32, "kv_pairs": 2},
    "irregular-integral": {"length": 24},
    "copying": {"length": 3, "delay": 10},
    "delay": {"length": 24, "delay": 4},
    "listops-generated": {"min_length": 10, "max_length": 40},
}


def run_config(task: str, model: str, seed: int, steps: int, quick: bool):
    """The preset of `task` with the layer of `model`, `steps` steps and the trainer seed `seed`."""
    from liquid_s4.train.config import RunConfig, load_config

    d = load_config(task).to_dict()
    layer, liquid = MODELS[model]
    args = {k: v for k, v in d["model"]["layer_args"].items() if k not in LIQUID_KEYS}
    d["model"].update(layer=layer, layer_args={**args, **liquid})
    d["trainer"].update(seed=seed, max_steps=steps, max_epochs=-1, progress=False)
    if task == "irregular-integral":
        d["data"]["options"]["gaps"] = "rate" if model in SCANS else "none"
    if quick:
        d["data"]["options"].update(QUICK_DATA[task], n_train=32, n_val=8, n_test=8)
        d["data"]["batch_size"] = 8
        d["model"].update(d_model=8, n_layers=1)
        d["model"]["layer_args"]["d_state"] = 4
    return RunConfig.from_dict(d)


def time_limit(seconds: float):
    """A Lightning callback that stops training once `seconds` of wall-clock time have passed."""
    from liquid_s4.train.pl import L

    class TimeLimit(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if time.perf_counter() - self.start > seconds:
                trainer.should_stop = True

    return TimeLimit()


def one_run(task: str, model: str, seed: int, args, out_dir: str) -> dict:
    """Train one (task, model, seed) and return its record (metrics, or the error)."""
    import warnings

    from liquid_s4.train.run import train

    record = {"task": task, "model": model, "seed": seed}
    start = time.perf_counter()
    try:
        cfg = run_config(task, model, seed, args.steps, args.quick)
        record["config"] = cfg.to_dict()
        path = os.path.join(out_dir, f"{task}-{model}-seed{seed}")
        if os.path.isdir(path):  # a rerun into the same folder: start it afresh
            import shutil

            shutil.rmtree(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = train(cfg, output_dir=path, quiet=True, callbacks=[time_limit(60 * args.minutes)])
        record["metrics"] = {k: v for k, v in metrics.items() if k != "segments"}
    except Exception as e:  # a failing run is recorded, the others go on
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=5)
    record["wall_time_s"] = round(time.perf_counter() - start, 2)
    return record


def metric(task: str) -> tuple[str, str]:
    """The reported metric of a task: (key in metrics.json, label)."""
    return ("test/mse", "test MSE") if task == "irregular-integral" else ("test/acc", "test accuracy")


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "error"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(records: list[dict], tasks, models) -> str:
    """Markdown: one row per task, one column per model, mean ± std over the seeds."""
    lines = [
        "| task (metric) | " + " | ".join(models) + " |",
        "|:---|" + "---:|" * len(models),
    ]
    for task in tasks:
        key, label = metric(task)
        row = []
        for model in models:
            runs = [r for r in records if r["task"] == task and r["model"] == model]
            values = [r["metrics"][key] for r in runs if key in r.get("metrics", {})]
            text = cell(values)
            failed = len(runs) - len(values)
            if values and failed:
                text += f" ({failed} failed)"
            row.append(text)
        lines.append(f"| {task} ({label}) | " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(records: list[dict], tasks) -> list[str]:
    out = []
    if "irregular-integral" in tasks:
        from liquid_s4.data.registry import build_dataset

        cfg = next(
            (r["config"] for r in records if r["task"] == "irregular-integral" and "config" in r), None
        )
        if cfg is not None:
            spec = argparse.Namespace(**cfg["data"])
            extra = build_dataset(spec).info.extra
            out.append(
                f"irregular-integral: only the scan models get the time gaps (per-step rate); the others see "
                f"the values only. Best gap-blind test MSE {extra['baseline_mse']:.3f}; predicting 0: "
                f"{extra['zero_mse']:.3f}."
            )
    for r in records:
        if "error" in r:
            out.append(f"{r['task']} / {r['model']} / seed {r['seed']}: {r['error'].splitlines()[0][:200]}")
    return out


def _names(text: str, allowed, what: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in allowed]
    if bad or not names:
        raise SystemExit(f"unknown {what} {bad or text!r}; choose from {', '.join(allowed)}")
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default: all)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per (task, model) (default 3)")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps per run (default 2000)")
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock limit per run (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny data and model, 3 steps, 1 seed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/accuracy", help="folder of the runs (default runs/accuracy)")
    p.add_argument("--json", default=None, help="results file (default OUT/accuracy.json)")
    args = p.parse_args(argv)
    tasks = _names(args.tasks, TASKS, "tasks")
    models = _names(args.models, tuple(MODELS), "models")
    if args.quick:
        args.seeds, args.steps = 1, 3
    if args.seeds < 1 or args.steps < 1 or not args.minutes > 0:
        raise SystemExit("--seeds and --steps must be >= 1 and --minutes > 0")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    json_path = args.json or os.path.join(args.out, "accuracy.json")
    budget = f"{args.steps} steps, at most {args.minutes:g} min per run" + (" (quick)" if args.quick else "")
    header = {
        "budget": budget,
        "steps": args.steps,
        "minutes": args.minutes,
        "quick": args.quick,
        "seeds": args.seeds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    records: list[dict] = []
    total = len(tasks) * len(models) * args.seeds
    print(
        f"{total} runs ({len(tasks)} tasks x {len(models)} models x {args.seeds} seeds), {budget}", flush=True
    )
    for task in tasks:
        for model in models:
            for seed in range(args.seeds):
                r = one_run(task, model, seed, args, args.out)
                records.append(r)
                key = metric(task)[0]
                result = r["metrics"].get(key) if "metrics" in r else None
                shown = f"{key} {result:.4f}" if result is not None else r.get("error", "no metric")[:120]
                print(
                    f"[{len(records)}/{total}] {task} {model} seed {seed}: {shown} ({r['wall_time_s']} s)",
                    flush=True,
                )
                with open(json_path, "w") as f:
                    json.dump({**header, "runs": records}, f, indent=1, default=str)
    print()
    print(f"Test results at one budget ({budget}; mean ± std over {args.seeds} seed(s)):")
    print()
    print(table(records, tasks, models))
    for line in notes(records, tasks):
        print(f"- {line}")
    print(f"\nevery run: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
