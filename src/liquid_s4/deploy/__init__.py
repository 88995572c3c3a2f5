"""Running trained models as streams: a fast per-sample CPU path, ONNX export, and WAV streaming.

The model-side API (`SequenceModel.stream`, `SequenceModel.step`, `SequenceModel.default_state`) lives
with the model; this package holds the runtimes built from a trained model. Each needs an optional
extra: the per-sample path numba (`pip install liquid-s4[fast]`), the ONNX export onnx and onnxruntime
(`pip install liquid-s4[deploy]`).
"""
