"""The datasets of `liquid_s4.data` as Lightning DataModules, with seeded, resumable shuffling.

Batches are `Batch` named tuples (x, y, lengths, x2, lengths2; the fields a dataset does not have
are None), stacked from the dataset's items by `liquid_s4.data.common.collate`; `info` tells the
model its input and output sizes and the task. Extra test sets (e.g. Speech Commands at 8 kHz) are
evaluated after the main one, each at its own sampling `rate`.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.common import Batch, DataInfo, SequenceData, collate, split_indices
from ..data.registry import SEEDED, build_dataset
from .config import DataConfig
from .pl import L

__all__ = [
    "Batch",
    "DataInfo",
    "EpochSampler",
    "EvalShard",
    "SequenceDataModule",
    "build_datamodule",
    "split_indices",
]


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class EvalShard(DistributedSampler):
    """One process's share of an evaluation set in a multi-process run: items rank, rank + world,
    rank + 2 world, ... in order, without padding. (The sampler Lightning would add repeats items so
    that every process gets as many, and a repeated item counts twice in the metrics.) Processes may
    get one item, and so one batch, fewer; the model sums its metrics over processes (module.py)."""

    def __init__(self, dataset: Dataset, rank: int, world: int, split: str = "evaluation"):
        n = len(dataset)
        if n < world:
            raise ValueError(
                f"the {split} set has {n} items, fewer than the {world} processes of this run; every process "
                "needs at least one: use fewer --devices, or a larger split"
            )
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=False)
        self.indices = list(range(rank, n, world))
        self.num_samples, self.total_size = len(self.indices), n

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SequenceDataModule(L.LightningDataModule):
    """Train/val/test datasets of a `SequenceData`. `test_names`/`test_rates`: the name under which
    each test loader's metrics are logged ("test", then the extra test sets) and the model's rate."""

    def __init__(self, data: SequenceData, config: DataConfig, seed: int = 0):
        super().__init__()
        self.data, self.info, self.config, self.seed = data, data.info, config, seed
        self.train_set, self.val_set, self.test_set = data.train, data.val, data.test
        tests = [("test", data.test, 1.0)] if data.test is not None and len(data.test) else []
        tests += [(name, ds, rate) for name, (ds, rate) in data.extra_tests.items() if len(ds)]
        self.test_names = [n for n, _, _ in tests]
        self.test_rates = [r for _, _, r in tests]
        self.test_sets = [ds for _, ds, _ in tests]

    def _loader(self, ds: Dataset | None, shuffle: bool, split: str = "evaluation"):
        if ds is None or len(ds) == 0:
            return None
        sampler = EpochSampler(len(ds), self.seed) if shuffle else self._eval_sampler(ds, split)
        return DataLoader(
            ds,
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )

    def _eval_sampler(self, ds: Dataset, split: str) -> Sampler | None:
        """Sequential order; in a multi-process run, this process's unpadded share (EvalShard)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return EvalShard(ds, trainer.global_rank, trainer.world_size, split)

    def train_dataloader(self):
        return self._loader(self.train_set, True)

    def val_dataloader(self):
        return self._loader(self.val_set, False, "validation") or []

    def test_dataloader(self):
        return [self._loader(ds, False, name) for name, ds in zip(self.test_names, self.test_sets)]


def build_datamodule(config: DataConfig, seed: int = 0) -> SequenceDataModule:
    # the run's seed goes to the datasets whose split depends on it (uea's random split)
    data = build_dataset(config, seed=seed) if config.name in SEEDED else build_dataset(config)
    return SequenceDataModule(data, config, seed)
