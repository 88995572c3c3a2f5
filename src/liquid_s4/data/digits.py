"""scikit-learn's bundled 8x8 handwritten digits read as pixel sequences (the embedded default task)."""

from __future__ import annotations

import numpy as np

from .common import ArrayDataset, DataInfo, SequenceData, Standardize, split_indices, take_options


def build_digits(spec) -> SequenceData:
    """x (64, 1): the 8x8 image row by row, standardized with the training split's statistics; y in 0..9.
    1797 images split by val_fraction/test_fraction (seed 0). Fully offline."""
    take_options(spec.options, {}, "digits")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits dataset needs scikit-learn: pip install 'liquid-s4[train]'") from e
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)[..., None]  # (1797, 64, 1), values 0..16
    tr, va, te = (i.numpy() for i in split_indices(len(X), spec.val_fraction, spec.test_fraction, seed=0))
    norm = Standardize(X[tr].mean(), X[tr].std())
    full = ArrayDataset(X, y.astype(np.int64), transform=norm)
    sets = [full.subset(i) if len(i) else None for i in (tr, va, te)]
    info = DataInfo(
        d_input=1,
        d_output=10,
        description=f"sklearn digits as 64-step pixel sequences: {len(tr)}/{len(va)}/{len(te)}",
    )
    return SequenceData(*sets, info=info, official={"all": 1797})
