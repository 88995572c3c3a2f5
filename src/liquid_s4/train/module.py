"""The LightningModule: loss and metrics per task, AdamW with the SSM parameter groups, schedulers."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

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
        self.model = SequenceModel(ModelConfig(d_input=i.d_input, d_output=i.d_output, vocab_size=i.vocab_size, **m))
        self.classification = self.info.task == "classification"

    def forward(self, x, lengths=None):
        return self.model(x, lengths=lengths)

    def _step(self, batch, stage: str):
        x, y, *rest = batch
        lengths = rest[0] if rest else None
        out = self(x, lengths)
        if self.classification:
            loss = nn.functional.cross_entropy(out.float(), y)
            metrics = {"loss": loss, "acc": (out.argmax(-1) == y).float().mean()}
        else:
            loss = nn.functional.mse_loss(out.float(), y.float().view_as(out))
            metrics = {"loss": loss, "mse": loss, "rmse": loss.detach().sqrt()}
        on_step = stage == "train"
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", v, on_step=on_step, on_epoch=True, prog_bar=k in ("loss", "acc", "rmse"),
                     batch_size=x.shape[0], sync_dist=not on_step)  # fmt: skip
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

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
