"""Shared pieces of the dataset readers."""

from __future__ import annotations

import os

ENV_VAR = "LIQUID_S4_DATA"


class DataError(ValueError):
    """A dataset file is missing, truncated or not in the expected format."""


def data_root(data_dir: str | None, name: str) -> str:
    """The directory of dataset `name`: data_dir if given, else $LIQUID_S4_DATA/name, else ./data/name."""
    if data_dir:
        return data_dir
    return os.path.join(os.environ.get(ENV_VAR, "data"), name)
