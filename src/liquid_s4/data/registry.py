"""Every dataset by name: `build_dataset(spec)` imports its reader lazily and returns `SequenceData`.

`spec` has the fields of `train.config.DataConfig` (name, data_dir, val_fraction, test_fraction,
options). Readers of downloaded archives find their folder with `common.data_root(spec.data_dir, <folder>)`.
"""

from __future__ import annotations

import importlib

from .common import SequenceData

DATASETS = {
    # bundled / generated: no files needed
    "digits": "digits:build_digits",
    "copying": "synthetic:build_copying",
    "adding": "synthetic:build_adding",
    "delay": "synthetic:build_delay",
    "listops-generated": "listops:build_listops_generated",
    "selective-copying": "selective:build_selective_copying",
    "mqar": "selective:build_mqar",
    "irregular-integral": "selective:build_irregular_integral",
    # bring your own arrays (npz, a folder of npz, CSV or Parquet)
    "arrays": "arrays:build_arrays",
    # official archives, read from --data-dir
    "smnist": "mnist:build_smnist",
    "psmnist": "mnist:build_psmnist",
    "cifar": "cifar:build_cifar",
    "listops": "listops:build_listops",
    "imdb": "imdb:build_imdb",
    "aan": "aan:build_aan",
    "pathfinder": "pathfinder:build_pathfinder",
    "pathx": "pathfinder:build_pathx",
    "speech-commands": "speech_commands:build_speech_commands",
    "bidmc": "bidmc:build_bidmc",
    "uea": "uea:build_uea",
}
SEEDED = {"uea"}  # builders that take the run's seed (the default of a seeded split)


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def build_dataset(spec, seed: int | None = None) -> SequenceData:
    """The dataset `spec` names. `seed`: the run's seed (trainer.seed), passed on to the datasets whose
    split may depend on it (`SEEDED`; None: their own default)."""
    if spec.name not in DATASETS:
        raise ValueError(f"unknown data.name {spec.name!r}; available: {dataset_names()}")
    module, func = DATASETS[spec.name].split(":")
    build = getattr(importlib.import_module(f"{__package__}.{module}"), func)
    return build(spec, seed=seed) if spec.name in SEEDED else build(spec)
