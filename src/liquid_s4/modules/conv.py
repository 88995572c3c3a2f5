"""The SSM as a sequence map: the convolution of the input with the kernels, the D skip, the liquid
terms, and the state carried from one chunk to the next; and the same map one step at a time.

Everything here takes and returns tensors: the kernels and the discrete system come from the
layer's kernel module (`liquid_s4.modules.kernel`), the liquid terms from `liquid_s4.ops.liquid`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..ops.fftconv import bidirectional_kernel, fftconv_sum
from ..ops.liquid import (
    anticorrelations,
    kb_convolution,
    last_inputs,
    pb_readout,
    pb_readout_reverse,
    pb_readout_step,
    push_history,
    step_correlations,
)
from ..ops.recurrence import real_view
from ..ops.scan import liquid_coefficients, liquid_scan
from ..ops.state import ChunkOperators, DiscreteSSM, apply_chunk_operators, reverse_within
from .kernel import ScanCoefficients


class StepSetup(NamedTuple):
    """What a fast inference step needs, computed once from the parameters (see `SSMLayer.step`)."""

    sys: DiscreteSSM  # the discrete system (with its liquid vectors and read-outs)
    recurrence: object  # the fast step of `liquid_s4.ops.recurrence` for sys
    D: torch.Tensor  # the skip, flattened (channels * H,), in the SSM precision
    pb_coef: tuple[torch.Tensor, ...]  # the PB read-outs C B_bar^p per degree: (channels, H), or (H,)
    out_dtype: torch.dtype  # D's dtype: that of the layer's outputs (float16/bfloat16 layers: see SSMKernel)


class SSMConvolution(nn.Module):
    """u (B, H, L) -> y (B, C, H, L), per channel h and output channel c:

        y = K * u + D u (+ the liquid terms),  K (C, H, L) causal, or two-sided if bidirectional

    with D (C, H) the skip (a parameter). The D skip is folded into lag 0 of the kernel, so it costs no
    pass of its own. Liquid terms (liquid_kernel "pb" or "kb", degree P, squash; see
    `liquid_s4.ops.liquid`) add input products with their read-outs (PB) or kernels (KB).

    State: the stored SSM state (B, H, n) of the kernel module's discrete system, followed, for a
    PB/KB liquid layer, by the last P - 1 inputs (as real parts, oldest first), from which the liquid
    terms of the next chunk or step are formed.

    liquid_kernel "scan" replaces the convolution by the exact liquid recurrence of a diagonal SSM
    (`scan`, `step_scan`; see `liquid_s4.ops.scan`), in the form liquid_form ("discrete": the paper's
    x_k = (A_bar + B_bar s_k) x_{k-1} + B_bar u_k; "split" and "ode": stable forms of the continuous
    liquid system), with s_k = tanh(u_k) if liquid_squash is "tanh" (always for "split" and "ode"),
    else u_k. Its state is the SSM state alone.
    """

    def __init__(
        self,
        d_model: int,
        channels: int = 1,
        bidirectional: bool = False,
        liquid_kernel: str | None = None,
        liquid_degree: int = 2,
        liquid_squash: str | None = None,
        liquid_form: str = "discrete",
    ):
        super().__init__()
        self.channels, self.bidirectional = channels, bidirectional
        self.liquid_kernel, self.liquid_degree, self.liquid_squash = (
            liquid_kernel,
            liquid_degree,
            liquid_squash,
        )
        self.liquid_form = liquid_form
        self.D = nn.Parameter(torch.randn(channels, d_model))

    @property
    def history_size(self) -> int:
        """Inputs the state keeps for the liquid terms: P - 1 (0 for a plain layer and the scan)."""
        return self.liquid_degree - 1 if self.liquid_kernel in ("pb", "kb") else 0

    @property
    def system_degree(self) -> int | None:
        """The liquid degree the discrete system must carry vectors for (None for a plain layer and the
        scan)."""
        return self.liquid_degree if self.liquid_kernel in ("pb", "kb") else None

    def kernel_request(self, L: int) -> tuple[tuple[int, ...], int]:
        """(powers, L_powers) for `SSMKernel.kernels`: the powers B_bar^p the liquid terms need, and
        how many lags of their kernels (KB: all L; PB: only lag 0, the read-out C B_bar^p)."""
        if self.liquid_kernel is None:
            return (), 0
        return tuple(range(2, self.liquid_degree + 1)), L if self.liquid_kernel == "kb" else 1

    def _main_kernel(self, k: torch.Tensor) -> torch.Tensor:
        """k (C', H, L) with D added at lag 0 of the forward kernels, joined into one two-sided
        kernel if bidirectional: conv(u, k) + D u as one convolution."""
        pad = (0, k.shape[-1] - 1, 0, 0, 0, k.shape[0] - self.channels)
        k = k + nn.functional.pad(self.D.to(k.dtype)[..., None], pad)
        return bidirectional_kernel(*k.chunk(2, dim=0)) if self.bidirectional else k

    def forward(self, x: torch.Tensor, k: torch.Tensor, kp: torch.Tensor | None, history=None):
        """x (B, H, L); k (C', H, L) and kp (P - 1, C', H, .) from `SSMKernel.kernels` (with the powers
        of `kernel_request`); history (B, H, P - 1): the inputs before x (liquid layers with state).
        Returns (y (B, C, H, L), v): v the causal liquid signals that drive the next state (KB), or None."""
        C = self.channels
        if self.liquid_kernel == "kb":
            kp_rev = kp[:, C:] if self.bidirectional else None
            return kb_convolution(x, self._main_kernel(k), kp[:, :C], history, self.liquid_squash, kp_rev)
        y = fftconv_sum([x], [self._main_kernel(k)])
        if self.liquid_kernel == "pb":
            coef = kp[..., 0]  # (P - 1, C', H): C B_bar^p
            if self.bidirectional:  # anti-causal: C_b B_bar^p times the products of the following inputs
                w = anticorrelations(x, self.liquid_degree, self.liquid_squash)
                y = pb_readout_reverse(y, w, coef[:, C:])
            y = pb_readout(y, x, coef[:, :C], history, self.liquid_squash)
        return y, None

    def split_state(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(SSM state, input history (B, H, P - 1) real, oldest first, or None)."""
        n = self.history_size
        if n == 0:
            return state, None
        return state[..., :-n], state[..., -n:].real

    def join_state(self, x: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        return x if history is None else torch.cat([x, history.to(x.dtype)], -1)

    def pass_state(self, sys: DiscreteSSM, y, x, x0, history, v, lengths=None):
        """Chunked mode: add the initial state's contribution to y (B, C, H, L) and compute the state
        after x (B, H, L) (each sequence up to its length), from the SSM state x0 and the history.
        Returns (y, next state)."""
        y = y + sys.state_output(x0, x.shape[-1])
        extra = (sys.liquid_B, v) if v is not None else None
        nxt = sys.next_state(x, x0, lengths, extra)
        if self.liquid_kernel is not None:
            nxt = self.join_state(nxt, last_inputs(x, self.history_size, history, lengths))
        return y, nxt

    def pass_state_cached(self, ops: ChunkOperators, y, x, x0, history, v):
        """`pass_state` for whole chunks (no lengths) through the precomputed maps of `ops` (see
        `DiscreteSSM.chunk_operators`; with the KB inputs v when the layer has them)."""
        y, nxt = apply_chunk_operators(ops, y, x0, [x] + ([] if v is None else list(v)))
        if self.liquid_kernel is not None:
            nxt = self.join_state(nxt, last_inputs(x, self.history_size, history))
        return y, nxt

    def step(self, sys: DiscreteSSM, u_t: torch.Tensor, state: torch.Tensor):
        """One step through the reference `DiscreteSSM.step` (differentiable): u_t (B, H) ->
        (y (B, C * H) with the D skip, next state)."""
        x, hist = self.split_state(state)
        v = None
        if hist is not None:
            v = step_correlations(u_t, hist.to(u_t.dtype), self.liquid_degree, self.liquid_squash)
        x = sys.step(x, u_t, (sys.liquid_B, v) if self.liquid_kernel == "kb" else None)
        y = sys.output(x)  # (B, C, H)
        if self.liquid_kernel == "pb":
            y = pb_readout_step(y, v, sys.liquid_coef)
        y = torch.addcmul(y, self.D.to(y.dtype), u_t[:, None]).flatten(1)
        return y, self.join_state(x, None if hist is None else push_history(hist, u_t))

    def step_fast(self, setup: StepSetup, u_t: torch.Tensor, state: torch.Tensor, batched: bool):
        """`step` through the fast recurrence of `setup` (no autograd). batched: advance with the
        recurrence's batched form (`advance`: all dot products in one matrix product, best for many
        streams), which returns the next state as a (B, H, n) view of an (H, B, n) buffer."""
        rec, C = setup.recurrence, self.channels
        P1 = self.history_size
        if P1 == 0:
            if batched:
                state, y = rec.advance(state, u_t)
            else:
                state = rec.step(state, u_t)
                y = rec.output(state)
        else:
            n = state.shape[-1] - P1
            hist = real_view(state)[..., 2 * n :: 2]  # (B, H, P - 1): real parts, oldest first
            v = step_correlations(u_t, hist, self.liquid_degree, self.liquid_squash)
            v_kb = v if self.liquid_kernel == "kb" else None
            B = u_t.shape[0]
            if batched:  # keep the (H, B, .) layout `advance` reads and writes fastest
                new_hb = state.new_empty(state.shape[1], B, state.shape[2])
                _, y = rec.advance(state[..., :n], u_t, v_kb, out=new_hb[..., :n])
                new = new_hb.transpose(0, 1)
            else:
                new = torch.empty_like(state)
                x = rec.step(state[..., :n], u_t, v_kb, out=new[..., :n])
                y = rec.output(x)
            if P1 > 1:
                new[..., n:-1] = state[..., n + 1 :]
            new[..., -1] = u_t
            if self.liquid_kernel == "pb":
                y_c = y if C == 1 else y.unflatten(1, (C, -1))  # (B, H) or (B, C, H), a view of y
                pb_readout_step(y_c, v, setup.pb_coef, inplace=True)
            state = new
        y.addcmul_(setup.D, u_t if C == 1 else u_t.repeat(1, C))
        return y, state

    # ---- the exact liquid scan (liquid_kernel "scan") ---------------------------------------------
    @property
    def squash(self) -> bool:
        """Whether the scan's transition reads tanh(u) rather than u."""
        return self.liquid_squash == "tanh" or self.liquid_form in ("split", "ode")

    @staticmethod
    def step_sizes(
        coef: ScanCoefficients, rate, shape: tuple[int, int, int], x: torch.Tensor
    ) -> torch.Tensor:
        """The step size of every step, (B, H, L): dt * rate for a number, dt[h] * rate[b, k] for a (B, L)
        tensor (zeros, unread, for the "affine" form)."""
        if coef.dt is None:
            return x.new_zeros(()).expand(shape)
        if isinstance(rate, torch.Tensor):
            return coef.dt[:, None] * rate.to(coef.dt.dtype)[:, None, :]
        return (coef.dt * rate)[:, None].expand(shape)

    def scan(self, coef: ScanCoefficients, x: torch.Tensor, rate, x0=None, lengths=None):
        """x (B, H, L) -> (y (B, C, H, L) with the D skip, the SSM state after each sequence's own
        inputs). rate: a number or a (B, L) tensor of per-step multipliers of dt; x0 (B, H, N/2) or None
        (zeros); lengths (B,) or None.

        Bidirectional: the second half of the output vectors reads out the same recurrence run on each
        sequence reversed within its length (pairs of input and step size reversed together), and
        adds at step k what that reversed pass holds after the inputs k+1 .. len-1, as the anti-causal
        half of a two-sided kernel does."""
        B, H, L = x.shape
        C = self.channels
        d = self.step_sizes(coef, rate, (B, H, L), x)
        y, x_end = liquid_scan(coef.form, x, d, coef.a, coef.b, coef.bt, coef.C[:C], x0, lengths, self.squash)
        if self.bidirectional:
            xr = reverse_within(x, lengths)
            dr = d if coef.dt is None or not isinstance(rate, torch.Tensor) else reverse_within(d, lengths)
            yr, _ = liquid_scan(
                coef.form, xr, dr, coef.a, coef.b, coef.bt, coef.C[C:], None, None, self.squash
            )
            yr = reverse_within(yr, lengths)  # yr[k]: the reversed pass after inputs len-1 .. k
            y = y + nn.functional.pad(yr[..., 1:], (0, 1))
        y = torch.addcmul(y, self.D.to(y.dtype)[..., None], x[:, None])
        return y, x_end

    def step_scan(self, coef: ScanCoefficients, u_t: torch.Tensor, state: torch.Tensor, rate):
        """One step of the scan (differentiable): u_t (B, H), state (B, H, N/2), rate a number or a (B,)
        tensor -> (y (B, C * H) with the D skip, next state)."""
        s = torch.tanh(u_t) if self.squash else u_t
        d = None
        if coef.dt is not None:
            d = coef.dt[:, None] * (
                rate.to(coef.dt.dtype)[:, None, None] if isinstance(rate, torch.Tensor) else rate
            )
        f, g = liquid_coefficients(coef.form, coef.a, coef.b, coef.bt, d, s[..., None], u_t[..., None])
        x = torch.addcmul(g, f, state)
        y = 2 * (coef.C[: self.channels] * x[:, None]).sum(-1).real  # (B, C, H)
        y = torch.addcmul(y, self.D.to(y.dtype), u_t[:, None]).flatten(1)
        return y, x
