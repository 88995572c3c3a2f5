"""Running trained models as streams: a fast per-sample CPU path, ONNX export, and WAV streaming.

The model-side API (`SequenceModel.step`, `SequenceModel.stream`, `SequenceModel.default_state`) lives
with the model; this package holds the runtimes built from a trained model (see docs/streaming.md):

    FastStream       the whole model as one compiled loop, one sample (or many) per call (numba: the
                     `fast` extra)
    export_onnx      an ONNX graph of a chunk in real arithmetic (onnx: the `deploy` extra)
    OnnxStream       such a graph run by onnxruntime on numpy arrays (the `deploy` extra)
    RealStreamModule the same chunk program as a PyTorch module
    read_wav, load_audio, resample, load_streaming_model, stream_audio, stream_wav: what
                     `liquid-s4 stream` runs

Importing the package needs neither numba nor onnx: each raises an ImportError naming its extra when
it is used without it.
"""

from .audio import AudioError, load_audio, read_wav, resample
from .fast import FastStream
from .onnx import OnnxStream, export_onnx
from .realstep import RealStreamModule
from .runner import load_streaming_model, stream_audio, stream_wav

__all__ = [
    "FastStream",
    "export_onnx",
    "OnnxStream",
    "RealStreamModule",
    "read_wav",
    "resample",
    "load_audio",
    "AudioError",
    "load_streaming_model",
    "stream_audio",
    "stream_wav",
]
