"""The LightningModule: loss and metrics per task, AdamW with the SSM parameter groups, schedulers."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch
import torch.nn as nn

from ..data.common import IGNORE_INDEX, Batch
from ..models.sequence import SequenceModel
from ..optim import param_groups
from ..utils import lengths_mask
from .checkpoint import load_checkpoint
from .checks import NonFiniteLossError
from .config import RunConfig
from .data import DataInfo
from .pl import L


class LitSequenceModel(L.LightningModule):
    """The model of a run (`config.model`, with the sizes of the dataset described by `info`) with its
    training, validation and test steps, which read `Batch` fields by name. Batches with per-step time
    gaps (`Batch.dt`, irregularly sampled data) run the model at that per-step rate, in every split
    (a test set's own rate multiplies it).

    The checkpoint's hyperparameters hold the configuration and the data info as plain values
    ("config": `RunConfig.to_dict()`, "info": the DataInfo fields); `from_hyperparameters` rebuilds
    the module from them (`liquid-s4 eval`, --resume of runs without run.json)."""

    def __init__(self, config: RunConfig, info: DataInfo):
        super().__init__()
        self.save_hyperparameters({"config": config.to_dict(), "info": dataclasses.asdict(info)})
        self.run_config, self.info = config, info
        per_step, pool = (info.extra or {}).get("pool") == "none", config.model.pool
        if per_step != (pool == "none"):
            want = (
                "model.pool=none (one output per step)"
                if per_step
                else "model.pool=mean or last (one output per sequence)"
            )
            raise ValueError(
                f"the dataset's targets are {'per step' if per_step else 'per sequence'}, but model.pool is "
                f"{pool!r}; set {want}"
            )
        self.model = SequenceModel(config.model.with_data_sizes(info.d_input, info.d_output, info.vocab_size))
        self.classification = info.task == "classification"
        extra = info.extra or {}
        self.target_std = float(extra["target_std"]) if extra.get("target_normalized") else None
        self._sums: dict[str, torch.Tensor] = {}  # evaluation sums of the current epoch, per split

    @classmethod
    def from_hyperparameters(cls, hparams: dict[str, Any]) -> LitSequenceModel:
        """The module described by a checkpoint's hyperparameters (also those written by earlier
        versions, whose model section holds only the entries that were set)."""
        return cls(RunConfig.from_dict(hparams["config"]), DataInfo(**hparams["info"]))

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, strict: bool = True, **_ignored):
        """The module of a checkpoint written by liquid-s4 train, read once and verified by its sha256
        (`load_checkpoint`), rebuilt from its hyperparameters (`from_hyperparameters`) and moved to
        `map_location` if given. Lightning's own loader would pass the stored dicts to the constructor,
        which takes the typed configuration."""
        path = str(checkpoint_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path} not found")
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # torch.save's zip format
                raise ValueError(
                    f"{path} is not a training checkpoint (not in the format torch.save writes; if it was "
                    "one, it is damaged). Pass a .ckpt file written by liquid-s4 train, e.g. "
                    "RUN/checkpoints/best.ckpt"
                )
        ckpt = load_checkpoint(path)
        hp = ckpt.get("hyper_parameters") or {}
        if "config" not in hp or "info" not in hp:
            raise ValueError(
                f"{path} is a checkpoint, but not one written by liquid-s4 train (it holds no run "
                "configuration)"
            )
        lit = cls.from_hyperparameters(hp)
        lit.load_state_dict(ckpt["state_dict"], strict=strict)
        return lit if map_location is None else lit.to(map_location)

    def forward(self, x, lengths=None, x2=None, lengths2=None, rate=None):
        return self.model(x, lengths=lengths, x2=x2, lengths2=lengths2, rate=rate)

    def _metrics(
        self, out: torch.Tensor, y: torch.Tensor, lengths
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Cross-entropy and accuracy, or MSE and RMSE, of a batch, and the number n of scored units
        they average over: items, or for per-step outputs (B, L, C) the steps whose target is not
        IGNORE_INDEX (classification) or the elements within `lengths` (regression). Summing
        mean * n over batches and dividing by the summed n gives the exact mean over a whole split."""
        if self.classification:
            logits, target = (out.flatten(0, 1), y.flatten()) if out.dim() == 3 else (out, y)
            loss = nn.functional.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
            scored = target != IGNORE_INDEX
            acc = (logits.argmax(-1) == target)[scored].float().mean()
            return {"loss": loss, "acc": acc}, scored.sum()
        target = y.float().view_as(out)
        err = (out.float() - target) ** 2
        if out.dim() == 3 and lengths is not None:
            mask = lengths_mask(lengths.to(out.device), out.shape[1])  # (B, L)
            err = err[mask]
        loss = err.mean()
        return self._regression_metrics(loss), torch.tensor(err.numel(), device=out.device)

    def _regression_metrics(self, mse: torch.Tensor) -> dict[str, torch.Tensor]:
        metrics = {"loss": mse, "mse": mse, "rmse": mse.detach().sqrt()}
        if (
            self.target_std is not None
        ):  # targets were standardized by the dataset: RMSE in the original units too
            metrics["rmse_orig"] = metrics["rmse"] * self.target_std
        return metrics

    def _forward_metrics(self, batch: Batch, rate: float | None = None):
        """Metrics of a batch; the model runs at `rate` (a number, None for the layers' own), times the
        per-step time gaps `batch.dt` (B, L) when the dataset has them (irregularly sampled data)."""
        dt = getattr(batch, "dt", None)
        if dt is not None:
            rate = dt if rate is None else dt * rate
        out = self(batch.x, batch.lengths, batch.x2, batch.lengths2, rate=rate)
        return self._metrics(out, batch.y, batch.lengths)

    def training_step(self, batch: Batch, batch_idx):
        metrics, _ = self._forward_metrics(batch)
        self._stop_if_not_finite(metrics["loss"], batch_idx)
        for k, v in metrics.items():
            self.log(
                f"train/{k}",
                v,
                on_step=True,
                on_epoch=True,
                prog_bar=k in ("loss", "acc", "rmse"),
                batch_size=batch.x.shape[0],
            )
        return metrics["loss"]

    # ---- evaluation: exact metrics, also across processes ------------------------------------
    # Each process sums mean * n and n over its batches (its share of the split, no item twice: see
    # data.EvalShard); at the end of the epoch the sums are added over processes and divided once.

    def _additive(self) -> tuple[str, ...]:
        return ("loss", "acc") if self.classification else ("mse",)

    def _start_sums(self, stages: list[str]) -> None:
        # every process reduces the same stages in the same order, even one that saw no batch of a stage
        self._sums = {s: torch.zeros(len(self._additive()) + 1, dtype=torch.float64) for s in stages}

    def _sum_dtype(self) -> torch.dtype:
        return torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64

    def _accumulate(self, stage: str, metrics: dict[str, torch.Tensor], n: torch.Tensor) -> None:
        dtype = self._sum_dtype()
        row = torch.stack([metrics[k].detach().to(dtype) * n for k in self._additive()] + [n.to(dtype)])
        self._sums[stage] = self._sums[stage].to(row) + row

    def _log_exact(self) -> None:
        stages = list(self._sums)
        sums = torch.stack([self._sums[s].to(self.device, self._sum_dtype()) for s in stages])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # over processes (a no-op for one)
        for stage, row in zip(stages, sums):
            if row[-1] == 0:
                continue
            means = dict(zip(self._additive(), (row[:-1] / row[-1]).float()))
            metrics = means if self.classification else self._regression_metrics(means["mse"])
            for k, v in metrics.items():
                # the value is already the same on every process: "max" syncs it without changing it
                self.log(
                    f"{stage}/{k}", v, prog_bar=k in ("loss", "acc", "rmse"), sync_dist=True, reduce_fx="max"
                )

    def on_validation_epoch_start(self):
        self._start_sums(["val"])

    def validation_step(self, batch: Batch, batch_idx):
        self._accumulate("val", *self._forward_metrics(batch))

    def on_validation_epoch_end(self):
        self._log_exact()
        if self.trainer.state.fn == "fit":
            self._stop_if_validation_not_finite()

    def _test_sets(self) -> tuple[list[str], list[float]]:
        dm = getattr(self.trainer, "datamodule", None)
        return list(getattr(dm, "test_names", ["test"])), list(getattr(dm, "test_rates", [1.0]))

    def on_test_epoch_start(self):
        self._start_sums(self._test_sets()[0])

    def test_step(self, batch: Batch, batch_idx, dataloader_idx: int = 0):
        names, rates = self._test_sets()
        name = names[dataloader_idx] if dataloader_idx < len(names) else "test"
        rate = rates[dataloader_idx] if dataloader_idx < len(rates) else 1.0
        self._sums.setdefault(name, torch.zeros(len(self._additive()) + 1, dtype=torch.float64))
        self._accumulate(name, *self._forward_metrics(batch, rate=None if rate == 1.0 else rate))

    def on_test_epoch_end(self):
        self._log_exact()

    # ---- stop at the first non-finite loss ----------------------------------------------------

    def _stop_if_not_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Raise NonFiniteLossError before the backward pass of a NaN/inf training loss (so the update
        is not applied and no checkpoint of a diverged model is written). Every process takes the same
        decision: one process's NaN would reach all of them through the gradient all-reduce."""
        finite = bool(torch.isfinite(loss.detach()))
        if not self.trainer.strategy.reduce_boolean_decision(not finite, all=False):
            return
        value = f"{loss.item()}" if not finite else "not finite in another process"
        raise NonFiniteLossError(
            f"training stopped: the training loss is {value} in epoch {self.current_epoch} at step "
            f"{self.global_step + 1} (batch {batch_idx} of the epoch); that step's update was not applied. "
            f"{self._advice()}"
        )

    def _stop_if_validation_not_finite(self) -> None:
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is None or bool(torch.isfinite(loss)):
            return
        raise NonFiniteLossError(
            f"training stopped: the validation loss is {loss.item()} after epoch {self.current_epoch} (step "
            f"{self.global_step}): the model's outputs on the validation set are not finite, and no "
            f"checkpoint of this epoch was written. {self._advice()}"
        )

    def _advice(self) -> str:
        c = self.run_config
        lr = c.model.layer_args.get("lr", "its default")
        now = max((g["lr"] for opt in self.trainer.optimizers for g in opt.param_groups), default=c.optim.lr)
        return (
            f"Last good checkpoint(s): {good_checkpoints(self.trainer)}. metrics.json was not written. The "
            f"usual causes: a learning rate too high (optim.lr={c.optim.lr}, model.layer_args.lr={lr}; the "
            f"largest learning rate was {now:.3g} at that point), no gradient clipping "
            f"(trainer.grad_clip={c.trainer.grad_clip}), or NaN/inf values in the data (`liquid-s4 data "
            "check`). Change them and start a new run"
        )

    def configure_optimizers(self):
        o = self.run_config.optim
        opt = torch.optim.AdamW(param_groups(self.model, o.lr, o.weight_decay))
        if o.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=o.gamma, patience=o.patience
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"},
            }
        if o.scheduler == "multistep":
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=o.milestones, gamma=o.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = o.warmup_steps * total if o.warmup_steps < 1 else o.warmup_steps
        cosine = o.scheduler == "cosine"

        def factor(step: int) -> float:
            w = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
            if not cosine:
                return w
            progress = min(1.0, max(0.0, (step - warmup) / max(1.0, total - warmup)))
            return w * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def good_checkpoints(trainer) -> str:
    """The intact checkpoints in the folders of the trainer's checkpoint callbacks, each with the
    epoch and the step after which it was saved (each is verified: see checkpoint.load_checkpoint)."""
    from .checkpoint import checkpoint_files, sort_intact

    found = []
    for d in sorted({cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}):
        intact, _ = sort_intact(checkpoint_files(d))
        found += [
            f"{path} (saved in epoch {c.get('epoch')} after step {c.get('global_step')})"
            for path, c in intact
        ]
    return ", ".join(found) if found else "none (no checkpoint had been written)"
