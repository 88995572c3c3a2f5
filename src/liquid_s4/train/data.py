"""Datasets for the training pipeline, as Lightning DataModules.

Every dataset yields (x, y) or (x, y, length) batches; `info` tells the model its input and output
sizes and the task ("classification" or "regression"). Splits are deterministic (seeded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from .config import DataConfig


@dataclass
class DataInfo:
    d_input: int
    d_output: int
    task: str = "classification"  # or "regression"
    vocab_size: int | None = None
    description: str = ""


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


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int = 0):
    """Deterministic train/val/test index split."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def _lightning():
    try:
        import lightning as L
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("training needs the 'train' extra: pip install 'liquid-s4[train]'") from e
    return L


class SequenceDataModule(_lightning().LightningDataModule):
    """Train/val/test datasets with seeded, resumable shuffling (see `EpochSampler`)."""

    def __init__(self, train: Dataset, val: Dataset | None, test: Dataset | None, info: DataInfo, config: DataConfig, seed: int = 0):
        super().__init__()
        self.train_set, self.val_set, self.test_set, self.info = train, val, test, info
        self.config, self.seed = config, seed

    def _loader(self, ds, shuffle: bool):
        if ds is None or len(ds) == 0:
            return None
        sampler = EpochSampler(len(ds), self.seed) if shuffle else None
        return DataLoader(ds, batch_size=self.config.batch_size, sampler=sampler, num_workers=self.config.num_workers)

    def train_dataloader(self):
        return self._loader(self.train_set, True)

    def val_dataloader(self):
        return self._loader(self.val_set, False) or []

    def test_dataloader(self):
        return self._loader(self.test_set, False) or []


def digits(config: DataConfig, seed: int = 0) -> SequenceDataModule:
    """scikit-learn's bundled 8x8 digits as pixel sequences: x (n, 64, 1) standardized with the
    training split's statistics, y in 0..9. Fully offline."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits dataset needs scikit-learn: pip install 'liquid-s4[train]'") from e
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32)[..., None]  # (1797, 64, 1), values 0..16
    y = torch.tensor(y, dtype=torch.long)
    tr, va, te = split_indices(len(X), config.val_fraction, config.test_fraction, seed=0)
    mean, std = X[tr].mean(), X[tr].std()
    X = (X - mean) / std
    sets = [TensorDataset(X[i], y[i]) if len(i) else None for i in (tr, va, te)]
    info = DataInfo(d_input=1, d_output=10, description=f"sklearn digits as 64-step pixel sequences: {len(tr)}/{len(va)}/{len(te)}")
    return SequenceDataModule(*sets, info=info, config=config, seed=seed)


def _mnist(config: DataConfig, seed: int, permute: bool) -> SequenceDataModule:
    """Sequential MNIST: 784-step pixel sequences (row by row), standardized with the training split's
    statistics; psMNIST applies one fixed random permutation (seed 0) to the pixel order. The
    validation set is `val_fraction` of the official training set; the test set is the official one."""
    from ..data.common import data_root
    from ..data.mnist import load_mnist

    d = load_mnist(data_root(config.data_dir, "mnist"))
    x_tr, x_te = (d[k].flatten(1).float()[..., None] / 255.0 for k in ("train_x", "test_x"))  # (n, 784, 1)
    if permute:
        perm = torch.randperm(784, generator=torch.Generator().manual_seed(0))
        x_tr, x_te = x_tr[:, perm], x_te[:, perm]
    tr, va, _ = split_indices(len(x_tr), config.val_fraction, 0.0, seed=0)
    mean, std = x_tr[tr].mean(), x_tr[tr].std()
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    sets = [TensorDataset(x_tr[tr], d["train_y"][tr]), TensorDataset(x_tr[va], d["train_y"][va]) if len(va) else None,
            TensorDataset(x_te, d["test_y"])]  # fmt: skip
    name = "psMNIST" if permute else "sMNIST"
    info = DataInfo(d_input=1, d_output=10, description=f"{name}: 784-step pixel sequences, {len(tr)}/{len(va)}/{len(x_te)}")
    return SequenceDataModule(*sets, info=info, config=config, seed=seed)


def smnist(config: DataConfig, seed: int = 0) -> SequenceDataModule:
    return _mnist(config, seed, permute=False)


def psmnist(config: DataConfig, seed: int = 0) -> SequenceDataModule:
    return _mnist(config, seed, permute=True)


DATASETS = {"digits": digits, "smnist": smnist, "psmnist": psmnist}


def build_datamodule(config: DataConfig, seed: int = 0) -> SequenceDataModule:
    if config.name not in DATASETS:
        raise ValueError(f"unknown data.name {config.name!r}; available: {sorted(DATASETS)}")
    return DATASETS[config.name](config, seed)
