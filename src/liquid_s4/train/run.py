"""`train(config)`: one run with Lightning, everything written under its output directory:

run.json           the run's record: resolved configuration (read by --resume), how far it got
config.yaml        the resolved configuration, for reading
checkpoints/       last.ckpt and best.ckpt (written atomically; --resume continues from last)
logs/              CSV (metrics.csv, every segment's rows) and TensorBoard logs
curves.png         training curves
metrics.json       final validation and test metrics, parameters, wall time (per segment and total)
model/             the best model as config.json + model.safetensors (SequenceModel.from_pretrained)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from typing import Any

import torch

from ..allocator import tune_cpu_allocator
from ..fileio import atomic_write, atomic_write_json
from .checkpoint import AtomicCheckpointIO, verify_checkpoint
from .checks import check_run
from .config import RunConfig
from .data import build_datamodule
from .module import LitSequenceModel
from .pl import L
from .rundir import (
    RUN_DIR_ENV,
    FlushLogs,
    MetricsCSV,
    ResumeStart,
    RunClock,
    absolute_paths,
    check_new_output_dir,
    check_resume,
    create_run_dir,
    missing_checkpoint_error,
    process_rank,
    record_finished,
)


class RNGState(L.Callback):
    """Saves and restores the torch RNGs (CPU, and CUDA when used) so that dropout continues
    identically after --resume."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        cuda = checkpoint.get("cuda_rng_state")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class PlateauAtResume(L.Callback):
    """Lightning does not step a ReduceLROnPlateau scheduler at the end of the epoch a run resumes
    after (the monitored value is not in the checkpoint, which is written before that step), so a
    resumed run's learning rate would drift from an uninterrupted one. The checkpoint keeps the value
    and the step is made here, after the restore."""

    KEY = "liquid_s4_plateau_value"

    def __init__(self, monitor: str = "val/loss"):
        self.monitor, self.pending = monitor, None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            checkpoint[self.KEY] = float(value)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self.pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer, pl_module):
        if self.pending is not None:
            for c in trainer.lr_scheduler_configs:
                if isinstance(c.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    c.scheduler.step(self.pending)
        self.pending = None


def train(
    config: RunConfig, output_dir: str | None = None, resume: bool = False, quiet: bool = False, callbacks=()
) -> dict[str, Any]:
    """Train, validate and test; returns the metrics written to metrics.json. `callbacks`: extra
    Lightning callbacks.

    A new run goes to `output_dir` (or trainer.output_dir, or a new unique runs/<dataset>-<time>-<random>),
    which must not hold any file a run writes (see `rundir`). With `resume=True` the run in
    `output_dir` continues from its last.ckpt with its own stored configuration: `config` may differ
    from it only in `rundir.RESUMABLE_KEYS` (`rundir.resume_config` gives the stored one). Nothing on
    disk changes before training has restarted from the checkpoint."""
    config = absolute_paths(config)
    t = config.trainer
    out = output_dir or t.output_dir
    if process_rank() > 0:  # a process started by a multi-device run: rank 0 checked and created the folder
        out = os.environ.get(RUN_DIR_ENV) or out
        if not out:
            raise ValueError(
                "a multi-process run needs --output-dir (every process must write to the same folder)"
            )
    elif resume:
        if not out:
            raise ValueError("--resume needs the run's folder: --output-dir RUN")
        last = os.path.join(out, "checkpoints", "last.ckpt")
        if not os.path.isfile(last):
            raise missing_checkpoint_error(out)
        verify_checkpoint(
            last
        )  # a damaged last.ckpt: a clear error (naming an intact best.ckpt) before anything is written
        config = check_resume(out, config)
    elif out is not None:
        check_new_output_dir(out)  # before loading data: a refused folder fails fast
    check_run(config, out)  # model, devices, writable folder: before loading data or creating anything
    if t.tune_allocator:
        tune_cpu_allocator()
    L.seed_everything(t.seed, workers=True, verbose=False)
    dm = build_datamodule(
        config.data, seed=t.seed
    )  # first, so a missing dataset leaves no run directory behind
    if process_rank() == 0 and not resume:
        out = create_run_dir(out, config)
    with lightning_quiet():
        return _fit(config, out, dm, resume, quiet, list(callbacks))


def _fit(config: RunConfig, out: str, dm, resume: bool, quiet: bool, callbacks: list) -> dict[str, Any]:
    t, info = config.trainer, dm.info
    ckpt_dir = os.path.join(out, "checkpoints")
    last = os.path.join(ckpt_dir, "last.ckpt")
    lit = LitSequenceModel(config, info)
    if not quiet:
        print(dm.data.summary())
        m, n = lit.model.config, sum(p.numel() for p in lit.model.parameters())
        print(f"  model: {m.layer} x {m.n_layers} layers, d_model {m.d_model}, {n:,} parameters")
    has_val = dm.val_set is not None and len(dm.val_set) > 0
    monitor, mode = ("val/acc", "max") if info.task == "classification" else ("val/loss", "min")
    csv_log, clock = MetricsCSV(os.path.join(out, "logs", "metrics.csv")), RunClock()
    callbacks += [
        L.pytorch.callbacks.ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=monitor if has_val else None,
            mode=mode,
            save_top_k=1,
            enable_version_counter=False,
        ),
        # last.ckpt after every epoch, as the newest by step (Lightning's save_last=True rewrites it
        # only when a best checkpoint is written, so --resume would repeat the epochs since)
        L.pytorch.callbacks.ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="last",
            monitor="step",
            mode="max",
            save_top_k=1,
            enable_version_counter=False,
        ),
        L.pytorch.callbacks.LearningRateMonitor(logging_interval="step"),
        RNGState(),
        clock,
        *([ResumeStart(out, config, csv_log)] if resume else []),
        FlushLogs(csv_log),
        *([PlateauAtResume()] if config.optim.scheduler == "plateau" else []),
    ]
    if t.progress and not quiet:
        callbacks.append(
            L.pytorch.callbacks.RichProgressBar() if _has_rich() else L.pytorch.callbacks.TQDMProgressBar()
        )
    loggers = [L.pytorch.loggers.TensorBoardLogger(out, name="logs", version=""), csv_log]
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        gradient_clip_val=t.grad_clip or None,
        precision=_precision(t.precision),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        logger=loggers,
        callbacks=callbacks,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress and not quiet,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        deterministic=False,
        num_sanity_val_steps=0,
    )
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = os.path.abspath(out)  # for the processes a multi-device run starts
    try:
        trainer.fit(lit, datamodule=dm, ckpt_path=last if resume else None)
    finally:
        if previous is None:
            del os.environ[RUN_DIR_ENV]
        else:
            os.environ[RUN_DIR_ENV] = previous
    segments = clock.final(trainer)  # now: validate/test below restore best.ckpt's callback state
    csv_log.hold = False  # training ended normally: the rows are written even if no checkpoint was due
    best = os.path.join(ckpt_dir, "best.ckpt")
    ckpt = best if os.path.isfile(best) else last
    metrics: dict[str, Any] = {}
    if has_val:
        metrics.update(_scalars(trainer.validate(lit, datamodule=dm, ckpt_path=ckpt, verbose=False)))
    if dm.test_sets:
        metrics.update(_scalars(trainer.test(lit, datamodule=dm, ckpt_path=ckpt, verbose=False)))
    metrics.update(
        parameters=sum(p.numel() for p in lit.model.parameters()),
        wall_time_s=round(sum(s["wall_time_s"] for s in segments), 2),
        segments=segments,
        global_step=trainer.global_step,
        epochs=trainer.current_epoch,
        world_size=trainer.world_size,
        checkpoint=ckpt,
    )
    if trainer.is_global_zero:
        lit.model.save_pretrained(os.path.join(out, "model"))
        atomic_write_json(os.path.join(out, "metrics.json"), metrics)
        _plot(os.path.join(out, "logs", "metrics.csv"), os.path.join(out, "curves.png"))
        record_finished(out, trainer.current_epoch, trainer.global_step)
        if not quiet:
            print(summary(metrics, info.task, out))
    return metrics


def evaluate(checkpoint: str, data_dir: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Test metrics of a checkpoint (.ckpt written by `train`), on the test split(s) of the run's own
    data; `data_dir` replaces the stored data path (your arrays for a --data run, or the folder of a
    named dataset)."""
    lit = LitSequenceModel.load_from_checkpoint(checkpoint)  # read once and verified
    config = lit.run_config
    config.data.data_dir = data_dir if data_dir is not None else _stored_data_dir(config, checkpoint)
    dm = build_datamodule(config.data, seed=config.trainer.seed)
    trainer = L.Trainer(
        logger=False, enable_progress_bar=not quiet, enable_model_summary=False, accelerator="auto", devices=1
    )
    with lightning_quiet():
        metrics = _scalars(trainer.test(lit, datamodule=dm, verbose=False))
    if not quiet:
        print(json.dumps(metrics, indent=2))
    return metrics


# Lightning's informational lines (which devices exist, "Tip:" advertisements for other products,
# "Loading `train_dataloader` ...", checkpoint-restore notices) go through these loggers at INFO level
_LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


@contextlib.contextmanager
def lightning_quiet():
    """Show the run's own output, not Lightning's: its informational lines are held back (logger level
    WARNING) and one deprecation warning that Lightning triggers inside torch's pytree module is
    ignored. Every other warning and every error still reaches the user; levels and filters are
    restored afterwards."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_INFO_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _stored_data_dir(config: RunConfig, checkpoint: str) -> str | None:
    """The run's data path; a relative one (runs from before paths were stored absolute) must exist
    from the current folder, else a clear error naming the flag that passes the data."""
    stored = config.data.data_dir
    if stored and not os.path.isabs(stored) and not os.path.exists(stored):
        flag = "--data PATH" if config.data.name == "arrays" else "--data-dir DIR"
        raise FileNotFoundError(
            f"the run of {checkpoint} read its data from {stored!r}, a path relative to the folder it was "
            f"started from, and there is no {stored!r} in {os.getcwd()}: run eval from that folder, or pass "
            f"the data: liquid-s4 eval {checkpoint} {flag}"
        )
    return stored


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
    rows += [
        ("parameters", f"{metrics['parameters']:,}"),
        ("steps", str(metrics["global_step"])),
        ("wall time", f"{metrics['wall_time_s']:.1f} s"),
        ("output", out),
    ]
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
            if (
                v not in ("", None)
                and (k.endswith("_epoch") or k.startswith("val/"))
                and r.get("epoch", "") != ""
            ):
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
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
