"""`train(config)`: one run with Lightning, everything written under its output directory:

    config.yaml        the resolved configuration
    checkpoints/       last.ckpt and best.ckpt (written atomically; --resume continues from last)
    logs/              CSV (metrics.csv) and TensorBoard logs
    curves.png         training curves
    metrics.json       final validation and test metrics, parameters, wall time
    model/             the best model as config.json + model.safetensors (SequenceModel.from_pretrained)
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any

import torch

from ..allocator import tune_cpu_allocator
from .checkpoint import AtomicCheckpointIO, verify_checkpoint
from .config import RunConfig
from .data import build_datamodule
from .module import L, LitSequenceModel


class RNGState(L.Callback):
    """Saves and restores the torch RNG so that dropout continues identically after --resume."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])


def default_output_dir(config: RunConfig) -> str:
    return os.path.join("runs", f"{config.data.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")


def train(config: RunConfig, output_dir: str | None = None, resume: bool = False, quiet: bool = False, callbacks=()) -> dict[str, Any]:
    """Train, validate and test; returns the metrics written to metrics.json. `callbacks`: extra
    Lightning callbacks."""
    import yaml

    t = config.trainer
    out = output_dir or t.output_dir or default_output_dir(config)
    ckpt_dir = os.path.join(out, "checkpoints")
    last = os.path.join(ckpt_dir, "last.ckpt")
    if resume and not os.path.isfile(last):
        raise FileNotFoundError(f"--resume: no checkpoint at {last}; start without --resume or pass the run's --output-dir")
    if resume:
        verify_checkpoint(last)  # a damaged last.ckpt: a clear error (naming an intact best.ckpt) before anything is written
    if not resume and os.path.isfile(last):
        raise FileExistsError(f"{out} already holds a run ({last}); pass --resume to continue it or choose another --output-dir")
    if t.tune_allocator:
        tune_cpu_allocator()
    L.seed_everything(t.seed, workers=True, verbose=False)
    dm = build_datamodule(config.data, seed=t.seed)  # first, so a missing dataset leaves no run directory behind
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
    info = dm.info
    if not quiet:
        print(dm.data.summary())
    lit = LitSequenceModel(config.to_dict(), info.__dict__)
    has_val = dm.val_set is not None and len(dm.val_set) > 0
    monitor, mode = ("val/acc", "max") if info.task == "classification" else ("val/loss", "min")
    callbacks = [
        *callbacks,
        L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor if has_val else None, mode=mode,
                                            save_top_k=1, enable_version_counter=False),
        # last.ckpt after every epoch, as the newest by step (Lightning's save_last=True rewrites it
        # only when a best checkpoint is written, so --resume would repeat the epochs since)
        L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor="step", mode="max",
                                            save_top_k=1, enable_version_counter=False),
        L.pytorch.callbacks.LearningRateMonitor(logging_interval="step"),
        RNGState(),
    ]  # fmt: skip
    if t.progress and not quiet:
        callbacks.append(L.pytorch.callbacks.RichProgressBar() if _has_rich() else L.pytorch.callbacks.TQDMProgressBar())
    loggers = [L.pytorch.loggers.CSVLogger(out, name="logs", version=""), L.pytorch.loggers.TensorBoardLogger(out, name="logs", version="")]
    trainer = L.Trainer(
        max_epochs=t.max_epochs, max_steps=t.max_steps, gradient_clip_val=t.grad_clip or None, precision=_precision(t.precision),
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, logger=loggers, callbacks=callbacks,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.progress and not quiet, enable_model_summary=not quiet,
        plugins=[AtomicCheckpointIO()], deterministic=False, num_sanity_val_steps=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(lit, datamodule=dm, ckpt_path=last if resume else None)
    wall = time.perf_counter() - start
    best = os.path.join(ckpt_dir, "best.ckpt")
    ckpt = best if os.path.isfile(best) else last
    metrics: dict[str, Any] = {}
    if has_val:
        metrics.update(_scalars(trainer.validate(lit, datamodule=dm, ckpt_path=ckpt, verbose=False)))
    if dm.test_sets:
        metrics.update(_scalars(trainer.test(lit, datamodule=dm, ckpt_path=ckpt, verbose=False)))
    metrics.update(parameters=sum(p.numel() for p in lit.model.parameters()), wall_time_s=round(wall, 2),
                   global_step=trainer.global_step, epochs=trainer.current_epoch, world_size=trainer.world_size,
                   checkpoint=ckpt)  # fmt: skip
    if trainer.is_global_zero:
        lit.model.save_pretrained(os.path.join(out, "model"))
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        _plot(os.path.join(out, "logs", "metrics.csv"), os.path.join(out, "curves.png"))
        if not quiet:
            print(summary(metrics, info.task, out))
    return metrics


def evaluate(checkpoint: str, data_dir: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Test metrics of a checkpoint (.ckpt written by `train`)."""
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint {checkpoint} not found")
    verify_checkpoint(checkpoint)  # load_from_checkpoint does not go through the checksum-checking CheckpointIO
    lit = LitSequenceModel.load_from_checkpoint(checkpoint, map_location="cpu")
    config = lit.run_config
    if data_dir is not None:
        config.data.data_dir = data_dir
    dm = build_datamodule(config.data, seed=config.trainer.seed)
    trainer = L.Trainer(logger=False, enable_progress_bar=not quiet, enable_model_summary=False, accelerator="auto", devices=1)
    metrics = _scalars(trainer.test(lit, datamodule=dm, verbose=False))
    if not quiet:
        print(json.dumps(metrics, indent=2))
    return metrics


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _precision(p: str):
    return {"32": "32-true", "64": "64-true"}.get(str(p), str(p))


def _scalars(results: list[dict]) -> dict[str, float]:
    return {k: float(v) for r in results for k, v in r.items() if not k.endswith("_step")}


def summary(metrics: dict[str, Any], task: str, out: str) -> str:
    keys = [k for k in metrics if "/" in k and k.rsplit("/", 1)[1] in ("acc", "loss", "rmse", "rmse_orig")]
    rows = [(k.replace("_epoch", ""), f"{metrics[k]:.4f}") for k in keys]
    rows += [("parameters", f"{metrics['parameters']:,}"), ("steps", str(metrics["global_step"])),
             ("wall time", f"{metrics['wall_time_s']:.1f} s"), ("output", out)]  # fmt: skip
    w = max(len(k) for k, _ in rows)
    return "\n".join(["", "summary", "-" * (w + 20)] + [f"{k.ljust(w)}  {v}" for k, v in rows])


def _plot(csv_path: str, png_path: str) -> None:
    """Training curves from the CSV log (loss and metric per epoch); skipped without matplotlib."""
    try:
        import csv

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not os.path.isfile(csv_path):
        return
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if v not in ("", None) and (k.endswith("_epoch") or k.startswith("val/")) and r.get("epoch", "") != "":
                series.setdefault(k, []).append((float(r["epoch"]), float(v)))
    if not series:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, pts in sorted(series.items()):
        ax = axes[0] if "loss" in k else axes[1]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=k.replace("_epoch", ""))
    for ax, title in zip(axes, ("loss", "metric")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
