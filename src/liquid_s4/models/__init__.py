from .sequence import ModelConfig, SequenceModel

__all__ = ["ModelConfig", "SequenceModel"]
