"""The LightningModule: loss and metrics per task, AdamW with the SSM parameter groups, schedulers."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..data.common import IGNORE_INDEX
from ..models.sequence import ModelConfig, SequenceModel
from ..optim import param_groups
from .config import RunConfig
from .data import DataInfo, _lightning

L = _lightning()


class LitSequenceModel(L.LightningModule):
    def __init__(self, config: dict, info: dict):
        super().__init__()
        self.save_hyperparameters()
        self.run_config = RunConfig.from_dict(config)
        self.info = DataInfo(**info)
        m = self.run_config.model
        i = self.info
        per_step, pool = (i.extra or {}).get("pool") == "none", m.get("pool", "mean")
        if per_step != (pool == "none"):
            want = "model.pool=none (one output per step)" if per_step else "model.pool=mean or last (one output per sequence)"
            raise ValueError(f"the dataset's targets are {'per step' if per_step else 'per sequence'}, but model.pool is {pool!r}; "
                             f"set {want}")  # fmt: skip
        self.model = SequenceModel(ModelConfig(d_input=i.d_input, d_output=i.d_output, vocab_size=i.vocab_size, **m))
        self.classification = self.info.task == "classification"
        extra = self.info.extra or {}
        self.target_std = float(extra["target_std"]) if extra.get("target_normalized") else None

    def forward(self, x, lengths=None, x2=None, lengths2=None, rate=None):
        return self.model(x, lengths=lengths, x2=x2, lengths2=lengths2, rate=rate)

    def _metrics(self, out: torch.Tensor, y: torch.Tensor, lengths) -> dict[str, torch.Tensor]:
        """Cross-entropy and accuracy, or MSE and RMSE. Per-step outputs (B, L, C) are scored at every
        step whose target is not IGNORE_INDEX (classification) or that lies within `lengths` (regression)."""
        if self.classification:
            logits, target = (out.flatten(0, 1), y.flatten()) if out.dim() == 3 else (out, y)
            loss = nn.functional.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
            scored = target != IGNORE_INDEX
            acc = (logits.argmax(-1) == target)[scored].float().mean()
            return {"loss": loss, "acc": acc}
        target = y.float().view_as(out)
        err = (out.float() - target) ** 2
        if out.dim() == 3 and lengths is not None:
            mask = torch.arange(out.shape[1], device=out.device) < lengths[:, None]  # (B, L)
            loss = err[mask].mean()
        else:
            loss = err.mean()
        metrics = {"loss": loss, "mse": loss, "rmse": loss.detach().sqrt()}
        if self.target_std is not None:  # targets were standardized by the dataset: RMSE in the original units too
            metrics["rmse_orig"] = metrics["rmse"] * self.target_std
        return metrics

    def _step(self, batch, stage: str, rate: float | None = None):
        x, y, *rest = batch
        lengths = rest[0] if rest else None
        x2, lengths2 = (rest[1], rest[2]) if len(rest) == 3 else (None, None)
        out = self(x, lengths, x2, lengths2, rate=rate)
        metrics = self._metrics(out, y, lengths)
        on_step = stage == "train"
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", v, on_step=on_step, on_epoch=True, prog_bar=k in ("loss", "acc", "rmse"),
                     batch_size=x.shape[0], sync_dist=not on_step, add_dataloader_idx=False)  # fmt: skip
        return metrics["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        dm = getattr(self.trainer, "datamodule", None)
        names, rates = getattr(dm, "test_names", ["test"]), getattr(dm, "test_rates", [1.0])
        rate = rates[dataloader_idx] if dataloader_idx < len(rates) else 1.0
        self._step(batch, names[dataloader_idx] if dataloader_idx < len(names) else "test", rate=None if rate == 1.0 else rate)

    def configure_optimizers(self):
        o = self.run_config.optim
        opt = torch.optim.AdamW(param_groups(self.model, o.lr, o.weight_decay))
        if o.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=o.gamma, patience=o.patience)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"}}
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
