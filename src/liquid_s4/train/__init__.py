"""Training pipeline (needs the `train` extra: lightning, pyyaml, scikit-learn, ...)."""

from .config import RunConfig, load_config, preset_names, preset_text

__all__ = ["RunConfig", "load_config", "preset_names", "preset_text"]
