"""The one place liquid_s4 imports Lightning.

Every module of `liquid_s4.train` that uses Lightning imports it from here, at the top of the module:
`from .pl import L`. The import is eager (not deferred into functions) because those modules define
subclasses of Lightning classes (the LightningModule, the DataModule, callbacks, the logger and the
checkpoint plugin), which need Lightning when the module is imported. Lightning stays out of every
import that does not train: `import liquid_s4` (layers, models, ops), `liquid_s4.data`,
`liquid_s4.train.config` and `liquid_s4.train.checks` do not import this module, so presets, `data
check` and the layers work without the `train` extra.
"""

from __future__ import annotations

try:
    import lightning as L
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("training needs the 'train' extra: pip install 'liquid-s4[train]'") from e

__all__ = ["L"]
