"""Linear (non-circular) convolution of a sequence with SSM kernels through real FFTs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bidirectional_kernel(k_fwd: torch.Tensor, k_bwd: torch.Tensor) -> torch.Tensor:
    """One length-2L kernel for a circular convolution of size 2L that is causal in k_fwd
    and strictly anti-causal in k_bwd:  y_k = sum_{j<=k} k_fwd[k-j] u_j + sum_{j>k} k_bwd[j-k-1] u_j."""
    L = k_fwd.shape[-1]
    return F.pad(k_fwd, (0, L)) + F.pad(k_bwd.flip(-1), (L, 0))


def anticausal_kernel(k_bwd: torch.Tensor) -> torch.Tensor:
    """The length-2L kernel of `bidirectional_kernel` with no causal part."""
    L = k_bwd.shape[-1]
    return F.pad(k_bwd.flip(-1), (L, 0))


def fftconv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[b, c, h, l] = sum_j k[c, h, l - j] u[b, h, j] (causal; or the 2L kernel of
    `bidirectional_kernel`). u (B, H, L), k (C, H, L) or (C, H, 2L). Returns (B, C, H, L)."""
    return fftconv_sum([u], [k])


def fft_size(L: int) -> int:
    """The FFT length used for sequences of length L: the smallest n >= 2L of the form 2^a, 3 2^a or
    9 2^a (such sizes run faster on CPU than sizes with larger prime factors, e.g. 32000 = 2^8 5^3)."""
    need = 2 * L
    return min(m << max(0, math.ceil(math.log2(need / m))) for m in (1, 3, 9))


def _spread(k: torch.Tensor, L: int, n: int) -> torch.Tensor:
    """A causal (length L) kernel as is; a two-sided (length 2L) kernel with its negative lags
    (k[L:], see `bidirectional_kernel`) moved to the end of a length-n circle."""
    if k.shape[-1] == L or n == 2 * L:
        return k
    return torch.cat([k[..., :L], k.new_zeros(*k.shape[:-1], n - 2 * L), k[..., L:]], -1)


def _gather(x: torch.Tensor, L: int, m: int, n: int) -> torch.Tensor:
    """The inverse of `_spread` on a length-n gradient, for a kernel of length m."""
    if m == L or n == 2 * L:
        return x[..., :m]
    return torch.cat([x[..., :L], x[..., n - L :]], -1)


class _FFTConvSum(torch.autograd.Function):
    """sum_s irfft(rfft(u_s, n)[:, None] * rfft(k_s, n), n)[..., :L] with an explicit adjoint.

    The adjoint of a truncated circular convolution is a circular correlation with the zero-padded
    output gradient G = rfft(g, n):  grad u_s = irfft(sum_c G conj(K_s))[:L],  grad k_s =
    irfft(sum_b G conj(U_s)) on the kernel's support. Three real FFTs backward (autograd's backward of
    rfft uses a full-length complex FFT plus a zero-filled copy instead)."""

    @staticmethod
    def forward(ctx, count: int, *tensors):
        us, ks = tensors[:count], tensors[count:]
        L = us[0].shape[-1]
        n = fft_size(L)
        ctx.empty = us[0].numel() == 0
        if ctx.empty:  # an empty batch (the FFT libraries reject it): an empty output, zero gradients
            ctx.like = [torch.zeros_like(t) for t in tensors]
            return us[0].new_zeros(us[0].shape[0], ks[0].shape[0], *us[0].shape[1:])
        Us = [torch.fft.rfft(u, n=n) for u in us]  # (B, H, n/2+1)
        Ks = [torch.fft.rfft(_spread(k, L, n), n=n) for k in ks]  # (C, H, n/2+1)
        y_f = Us[0][:, None] * Ks[0]
        for U, K in zip(Us[1:], Ks[1:]):
            y_f.addcmul_(U[:, None], K)
        ctx.save_for_backward(*Us, *Ks)
        ctx.count, ctx.L, ctx.n, ctx.k_lengths = count, L, n, [k.shape[-1] for k in ks]
        return _crop(torch.fft.irfft(y_f, n=n), L)

    @staticmethod
    def backward(ctx, g):
        if ctx.empty:
            return (None, *ctx.like)
        count, L, n = ctx.count, ctx.L, ctx.n
        saved = ctx.saved_tensors
        Us, Ks = saved[:count], saved[count:]
        G = torch.fft.rfft(
            g.contiguous(), n=n
        )  # (B, C, H, n/2+1); the cropped outputs had no gradient: zero padding
        grads = []
        for i, K in enumerate(Ks):
            need = ctx.needs_input_grad[1 + i]
            grads.append(
                _crop(torch.fft.irfft(_sum_conj_products(G.unbind(1), K.conj().unbind(0)), n=n), L)
                if need
                else None
            )
        for i, (U, m) in enumerate(zip(Us, ctx.k_lengths)):
            need = ctx.needs_input_grad[1 + count + i]
            grads.append(
                _gather(torch.fft.irfft(_sum_conj_products(G.unbind(0), U.conj().unbind(0)), n=n), L, m, n)
                if need
                else None
            )
        return (None, *grads)


def _crop(y: torch.Tensor, L: int) -> torch.Tensor:
    """The first L points of each length-n row, contiguous: element-wise ops downstream (activation,
    norms and their backward) run slower on rows with a stride of n."""
    return y[..., :L].contiguous()


def _sum_conj_products(gs, vs) -> torch.Tensor:
    """sum_j gs[j] * vs[j] accumulated in place: no (B, C, H, n/2+1) product is materialized before
    the sum (the reduced axis is short: the batch or the channels), and conjugate views are
    resolved one slice at a time."""
    acc = gs[0] * vs[0]
    for g, v in zip(gs[1:], vs[1:]):
        acc.addcmul_(g, v)
    return acc


def fftconv_sum(us, ks) -> torch.Tensor:
    """Several signals, each with its own kernel, summed in the frequency domain (one inverse FFT):
    `y[b, c, h, l] = sum_s sum_j ks[s][c, h, l - j] us[s][b, h, j]`.

    us: sequence of (B, H, L); ks: sequence of (C, H, L) causal or (C, H, 2L) two-sided kernels (see
    `bidirectional_kernel`). The FFT size is `fft_size(L)` >= 2L, so the convolution is linear (no
    wrap-around). The backward pass is the explicit adjoint (`_FFTConvSum`); `fftconv_sum_ref` is the
    same computation left to autograd."""
    us, ks = list(us), list(ks)
    if len(us) != len(ks) or not us:
        raise ValueError(
            f"fftconv_sum: need as many kernels as signals (at least one), got {len(us)} and {len(ks)}"
        )
    return _FFTConvSum.apply(len(us), *us, *ks)


def fftconv_sum_ref(us, ks) -> torch.Tensor:
    """Reference for `fftconv_sum`: FFT size exactly 2L, differentiated by autograd."""
    L = us[0].shape[-1]
    n = 2 * L
    y_f = None
    for u, k in zip(us, ks, strict=True):
        t = torch.fft.rfft(u, n=n)[:, None] * torch.fft.rfft(k, n=n)  # (B, C, H, n/2+1)
        y_f = t if y_f is None else y_f + t
    return torch.fft.irfft(y_f, n=n)[..., :L]
