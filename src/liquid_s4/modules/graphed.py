"""Recurrent inference replayed from a CUDA graph: one step of a layer is a few dozen small kernels,
and at small batch their launches cost more than their work. Captured once, a step is one graph
launch (no compilation: the graph records the same PyTorch kernels `SSMLayer.step` runs)."""

from __future__ import annotations

import torch

from ..utils import is_positive_int
from .cache import TensorCache
from .layer import SSMLayer


class CUDAGraphStep:
    """`layer.step` for a fixed batch size on a CUDA device, captured as a CUDA graph.

        stream = CUDAGraphStep(layer.cuda().eval(), batch_size=1)
        for u_t in inputs:            # (B, H) each
            y_t = stream(u_t)         # == layer.step(u_t, state)[0], state kept inside
        stream.state                  # the current state (layer.default_state layout)
        stream.reset()                # back to the zero state (or reset(state))

    The graph holds the layer's step setup (discretization, recurrence coefficients) as it was at
    capture: calling after any of the layer's own tensors changed (in any way: in place, through
    `.data`, `load_state_dict`, ...; compared bitwise with a snapshot, see `TensorCache`)
    raises; build a new one. Runs under
    no_grad (inference only). The returned y_t is a fresh tensor unless `clone_output=False`, which
    returns the graph's output buffer itself (overwritten by the next call).
    """

    def __init__(
        self,
        layer: SSMLayer,
        batch_size: int,
        state: torch.Tensor | None = None,
        clone_output: bool = True,
        warmup: int = 3,
    ):
        if not isinstance(layer, SSMLayer):
            raise TypeError(
                f"CUDAGraphStep: expected an SSM layer (S4D, S4, LSSL, LiquidS4), got {type(layer).__name__}"
            )
        device = layer.D.device
        if device.type != "cuda":
            raise ValueError(
                f"CUDAGraphStep: CUDA graphs need the layer on a CUDA device, it is on {device}; "
                "move it with layer.cuda(), or call layer.step() directly on CPU"
            )
        if layer.training:
            raise ValueError(
                "CUDAGraphStep: put the layer in eval mode first (layer.eval()): "
                "a graph replays one fixed dropout mask"
            )
        if not is_positive_int(batch_size):
            raise ValueError(f"CUDAGraphStep: batch_size must be a positive integer, got {batch_size!r}")
        self.layer, self.clone_output = layer, clone_output
        self._u = torch.zeros(batch_size, layer.d_model, dtype=layer.D.dtype, device=device)
        self.state = layer.default_state(batch_size)  # the graph's state buffer, updated in place
        if state is not None:
            self.reset(state)
        side = torch.cuda.Stream(
            device
        )  # warm-up (builds the step cache) off the capture stream, as CUDA graphs require
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):
                layer.step(self._u, self.state)
        torch.cuda.current_stream(device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self._graph):
            y, new = layer.step(self._u, self.state)
            self.state.copy_(new)
        self._y = y  # capture records the step without running it: the state is still the given one
        # the graph, valid while the tensors it was captured from are unchanged
        self._captured = TensorCache()
        self._captured.get("graph", layer.cached_tensors, lambda: self._graph)

    def reset(self, state: torch.Tensor | None = None) -> None:
        """Set the state to zero, or to `state` (shaped like `layer.default_state(batch_size)`)."""
        if state is None:
            self.state.zero_()
            return
        self.layer.check_state(state, self._u.shape[0])
        self.state.copy_(state)

    def __call__(self, u_t: torch.Tensor) -> torch.Tensor:
        """One step: u_t (B, H) -> y_t (B, H); the state advances inside."""
        if not self._captured.is_valid(self.layer.cached_tensors):
            raise RuntimeError(
                "CUDAGraphStep: the layer's parameters changed since the graph was captured; "
                "build a new CUDAGraphStep"
            )
        if tuple(u_t.shape) != tuple(self._u.shape):
            raise ValueError(
                f"CUDAGraphStep: expected input of shape {tuple(self._u.shape)} (the captured batch size), "
                f"got {tuple(u_t.shape)}; build another CUDAGraphStep for another batch size"
            )
        self._u.copy_(u_t)
        self._graph.replay()
        return self._y.clone() if self.clone_output else self._y
