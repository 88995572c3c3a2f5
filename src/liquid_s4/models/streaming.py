"""The pooled statistic of a streamed model, one step or one chunk at a time.

A `SequenceModel` with mean pooling predicts from the mean of its final features h_1 .. h_t. On a
stream much longer than the clips it was trained on, that mean is taken over the whole stream, and
the prediction stops following the input. Three options of `SequenceModel.default_state` give
clip-level decisions on a continuous stream (`StreamOptions`):

    pool_window W   the mean of the last min(t, W) features: a moving window
    pool_decay lam  S_t = lam S_{t-1} + h_t, C_t = lam C_{t-1} + 1, pooled = S_t / C_t: an exponential
                    moving average that weighs the step t - j by lam^j (lam = 1: the plain mean)
    reset_every R   after every R steps the whole state (every layer and the pool) returns to zero:
                    the output at step t is that of the model's forward on the inputs since the last
                    reset, exactly (a model trained on clips of R steps sees clips of R steps)

The window and the decay change only the pooling: the layers still carry the whole history in their
states (which decay at the rates the model learned). `reset_every` is the exact clip semantics; a
window or decay gives a decision that moves smoothly. The functions here update the pool part of the
state dict (`sum`, `count`, and the window's ring buffer `window`, `pos`) for one step (`pool_step`)
or a chunk (`pool_chunk`); both give the same result as the other (to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..utils import is_positive_int


@dataclass(frozen=True)
class StreamOptions:
    """The continuous-stream options of a state (see the module docstring); all None: plain pooling."""

    pool_window: int | None = None
    pool_decay: float | None = None
    reset_every: int | None = None

    def check(self, pool: str) -> None:
        """A ValueError naming the first invalid option (for a model with pooling `pool`)."""
        if self.pool_window is not None and not is_positive_int(self.pool_window):
            raise ValueError(f"pool_window must be a positive integer (steps), got {self.pool_window!r}")
        if self.pool_decay is not None:
            lam = self.pool_decay
            if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 < lam <= 1:
                raise ValueError(
                    "pool_decay must be a number in (0, 1] (the weight of the previous pooled sum), "
                    f"got {lam!r}"
                )
        if self.reset_every is not None and not is_positive_int(self.reset_every):
            raise ValueError(f"reset_every must be a positive integer (steps), got {self.reset_every!r}")
        if self.pool_window is not None and self.pool_decay is not None:
            raise ValueError("pass pool_window or pool_decay, not both (two ways to forget the pooled past)")
        if (self.pool_window is not None or self.pool_decay is not None) and pool != "mean":
            raise ValueError(
                f"pool_window and pool_decay change mean pooling; this model's pool is {pool!r} (its "
                "decision already depends on the current step only, or it has none); use reset_every"
            )


def init_pool(state: dict[str, Any], options: StreamOptions, h: torch.Tensor) -> None:
    """Add the zero pool part to `state`: sum (B, H) zeros like h, count 0, and for a window its ring
    buffer (B, H, W) and write position."""
    state["sum"], state["count"] = h, 0
    if options.pool_window is not None:
        state["window"] = h.new_zeros(*h.shape, options.pool_window)
        state["pos"] = 0


def pool_step(state: dict[str, Any], options: StreamOptions, h: torch.Tensor) -> torch.Tensor:
    """One step: add the features h (B, H) to the pool part of `state` (updated in the returned
    entries; the window's ring buffer in place) and return the pooled features (B, H)."""
    W, lam = options.pool_window, options.pool_decay
    if W is not None:
        buf, pos = state["window"], state["pos"]
        total = state["sum"] - buf[..., pos] + h
        buf[..., pos] = h
        pos = (pos + 1) % W
        if pos == 0:  # once per W steps the sum is recomputed, so rounding does not accumulate
            total = buf.sum(-1)
        state["sum"], state["pos"], state["count"] = total, pos, min(state["count"] + 1, W)
    elif lam is not None:
        state["sum"], state["count"] = lam * state["sum"] + h, lam * state["count"] + 1
    else:
        state["sum"], state["count"] = state["sum"] + h, state["count"] + 1
    return state["sum"] / state["count"]


def pool_chunk(state: dict[str, Any], options: StreamOptions, h: torch.Tensor) -> torch.Tensor:
    """A chunk: add the features h (B, H, L) to the pool part of `state` and return the pooled
    features after every step, (B, H, L): what L calls of `pool_step` return."""
    L = h.shape[-1]
    W, lam = options.pool_window, options.pool_decay
    steps = torch.arange(1, L + 1, device=h.device, dtype=h.dtype)
    count = state["count"]
    if W is not None:
        buf, pos = state["window"], state["pos"]
        z = torch.cat([buf[..., pos:], buf[..., :pos], h], -1)  # the last W features, oldest first, then h
        cs = z.cumsum(-1)
        total = cs[..., W:] - cs[..., :L]  # z[k+1 .. k+W]: the window that ends at step k of the chunk
        counts = (count + steps).clamp(max=W)
        state["window"] = z[..., -W:].contiguous()
        state["pos"], state["sum"], state["count"] = 0, state["window"].sum(-1), min(count + L, W)
        return total / counts
    if lam is not None:
        # S_k = lam^(k+1) S_prev + sum_j<=k lam^(k-j) h_j, the causal convolution with lam^i (by FFT)
        n = 2 * L
        powers = lam ** torch.arange(L, device=h.device, dtype=h.dtype)
        conv = torch.fft.irfft(torch.fft.rfft(h, n) * torch.fft.rfft(powers, n), n)[..., :L]
        total = conv + (lam * powers) * state["sum"][..., None]
        counts = (lam * powers) * count + (
            steps if lam == 1 else (1 - lam * powers) / (1 - lam)
        )  # C_k = lam^(k+1) C_prev + sum_j<=k lam^j
        state["sum"], state["count"] = total[..., -1], float(counts[-1])
        return total / counts
    total = state["sum"][..., None] + h.cumsum(-1)
    counts = count + steps
    state["sum"], state["count"] = total[..., -1], count + L
    return total / counts
