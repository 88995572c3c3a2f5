"""Independent float64 references shared by the tests: dense discrete systems built directly from a
layer's parameters, explicit matrix powers and a brute-force recurrence."""

from __future__ import annotations

import torch

from liquid_s4 import LSSL, S4, S4D


def full(v):
    return torch.cat([v, v.conj()], -1)


def reference_system(layer, rate: float = 1.0):
    """(A_bar (H, M, M), B_bar (H, M), C (Ch, H, M)) in float64 complex, from the raw parameters.

    M is the full state size (both halves of the conjugate pairs for S4/S4D). For S4 the stored
    C~ is converted back to C = C~ (I - A_bar^Lk)^{-1} with Lk = l_kernel."""
    dt = torch.exp(layer.ssm.log_dt.detach().double()) * rate  # (H,)
    H = layer.d_model
    if isinstance(layer, S4D):
        A = torch.complex(-(1e-4 + torch.exp(layer.ssm.log_A_real_gap.double())), layer.ssm.A_imag.double())
        B = torch.view_as_complex(layer.ssm.B.detach().double().contiguous())
        A, B = full(A), full(B)
        if layer.disc == "zoh":
            dA = torch.exp(dt[:, None] * A)
            dB = (dA - 1) / A * B
        else:
            dA = (1 + dt[:, None] / 2 * A) / (1 - dt[:, None] / 2 * A)
            dB = dt[:, None] * B / (1 - dt[:, None] / 2 * A)
        C = full(torch.view_as_complex(layer.ssm.C.detach().double().contiguous()))
        return torch.diag_embed(dA), dB, C
    if isinstance(layer, S4):
        lam = torch.complex(-(1e-4 + torch.exp(layer.ssm.log_A_real_gap.double())), layer.ssm.A_imag.double())
        P = full(torch.view_as_complex(layer.ssm.P.detach().double().contiguous()))
        B = full(torch.view_as_complex(layer.ssm.B.detach().double().contiguous()))
        A = torch.diag_embed(full(lam)) - torch.einsum("rhn,rhm->hnm", P, P.conj())
        dA, dB = _bilinear(A, B, dt)
        Ct = full(torch.view_as_complex(layer.ssm.C.detach().double().contiguous()))
        Lk = int(layer.ssm.l_kernel)
        if Lk == 0:
            return dA, dB, Ct
        dA1, _ = _bilinear(A, B, dt / rate)  # C~ was set up at the layer's own step size
        M = torch.eye(A.shape[-1], dtype=A.dtype) - torch.linalg.matrix_power(dA1, Lk)
        C = torch.linalg.solve(M.mT, Ct.permute(1, 2, 0)).permute(2, 0, 1)  # C M = C~
        return dA, dB, C
    if isinstance(layer, LSSL):
        A = layer.ssm.A.detach().double().expand(H, -1, -1)
        B = layer.ssm.B.detach().double()
        if layer.disc == "zoh":
            dA = torch.linalg.matrix_exp(dt[:, None, None] * A)
            # B_bar = sum_k (dt A)^k dt / (k+1)! B  (A may be singular, e.g. FouT)
            term, dB = dt[:, None] * B, torch.zeros_like(B)
            for k in range(60):
                dB = dB + term
                term = dt[:, None] * (A @ term[..., None])[..., 0] / (k + 2)
        else:
            dA, dB = _bilinear(A, B, dt)
        C = layer.ssm.C.detach().double()
        return dA.to(torch.complex128), dB.to(torch.complex128), C.to(torch.complex128)
    raise TypeError(type(layer))


def _bilinear(A, B, dt):
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    lhs = eye - dt[:, None, None] / 2 * A
    return torch.linalg.solve(lhs, eye + dt[:, None, None] / 2 * A), torch.linalg.solve(lhs, dt[:, None] * B)


def explicit_kernel(dA, dB, C, L):
    """K[c, h, l] = C A_bar^l B_bar by explicit matrix powers (float64)."""
    out, x = [], dB
    for _ in range(L):
        out.append(torch.einsum("chm,hm->ch", C, x).real)
        x = torch.einsum("hmn,hn->hm", dA, x)
    return torch.stack(out, -1)


def _steps(layer, u, state, rate):
    state = layer.default_state(u.shape[0]) if state is None else state
    ys = []
    for t in range(u.shape[1]):
        y, state = layer.step(u[:, t], state, rate=rate)
        ys.append(y)
    return torch.stack(ys, 1), state


def run_steps(layer, u, state=None, rate=None, path: str = "both"):
    """Drive a layer step by step: u (B, L, H) -> stacked step outputs (B, L, H) and the final state.

    path "ref": under the caller's grad mode (with gradients: the differentiable reference step);
    "fast": under no_grad (the fast recurrence of S4/S4D); "both": runs both, checks that they agree
    (outputs and states, relative to their largest entry: 1e-10 in float64, 1e-4 in float32) and
    returns the fast result."""
    if path == "ref":
        return _steps(layer, u, state, rate)
    with torch.no_grad():
        y, s = _steps(layer, u, state, rate)
    if path == "both":
        with torch.enable_grad():
            y_ref, s_ref = _steps(layer, u, state, rate)
        tol = 1e-10 if u.dtype == torch.float64 else 1e-4
        for a, b in ((y, y_ref), (s, s_ref)):
            err = (a - b.detach()).abs().max() / b.abs().max().clamp(min=1e-30)
            assert err <= tol, f"fast step differs from the reference: relative {err:.3g}"
    return y, s


def recurrence(dA, dB, C, u, x0=None):
    """Brute-force x_k = A_bar x_{k-1} + B_bar u_k, y_k = Re(C x_k). u (B, H, L) -> y (B, Ch, H, L), x_L."""
    Bsz, H, L = u.shape
    x = torch.zeros(Bsz, H, dA.shape[-1], dtype=dA.dtype) if x0 is None else x0
    ys = []
    for k in range(L):
        x = torch.einsum("hmn,bhn->bhm", dA, x) + dB * u[..., k, None]
        ys.append(torch.einsum("chm,bhm->bch", C, x).real)
    return torch.stack(ys, -1), x


# (class, init, disc) for every family, init and discretization
CONFIGS = (
    [(S4D, init, disc) for init in S4D.inits for disc in S4D.discs]
    + [(S4, init, "bilinear") for init in S4.inits]
    + [(LSSL, init, disc) for init in LSSL.inits for disc in LSSL.discs]
)


def config_id(cfg):
    return f"{cfg[0].__name__}-{cfg[1]}-{cfg[2]}"


class LargestTensor:
    """Context manager recording the largest tensor (in elements) produced by any aten op,
    forward or backward, run inside it."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor):
                        outer.numel = max(outer.numel, t.numel())
                return out

        self.numel = 0
        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


def products(u, degree, squash=None):
    """Correlation signals by explicit loops: v[b, p-2, h, k] = u_k u_{k-1} ... u_{k-p+1} (0 before the
    start)."""
    Bsz, H, L = u.shape
    v = torch.zeros(Bsz, degree - 1, H, L, dtype=u.dtype)
    for p in range(2, degree + 1):
        for k in range(L):
            prod = torch.ones(Bsz, H, dtype=u.dtype)
            for i in range(p):
                prod = prod * (u[..., k - i] if k - i >= 0 else 0.0)
            v[:, p - 2, :, k] = torch.tanh(prod) if squash == "tanh" else prod
    return v


def liquid_recurrence(dA, dB, C, u, kind, degree, squash=None):
    """Brute-force Liquid-S4 terms, float64. y_k = Re(C x_k) plus
    pb: sum_p Re(C B_bar^p) v^(p)_k;
    kb: sum_p Re(C x^(p)_k) with x^(p)_k = A_bar x^(p)_{k-1} + B_bar^p v^(p)_k
    (one state per degree). u (B, H, L) real -> (B, Ch, H, L)."""
    y, _ = recurrence(dA, dB, C, u.to(dA.dtype))
    v = products(u, degree, squash).to(dA.dtype)
    for p in range(2, degree + 1):
        Bp = dB**p
        if kind == "pb":
            coef = torch.einsum("chm,hm->ch", C, Bp).real
            y = y + coef[None, :, :, None] * v[:, None, p - 2].real
        else:
            y = y + recurrence(dA, Bp, C, v[:, p - 2])[0]
    return y


def full_liquid_recurrence(dA, dB, C, u):
    """The untruncated model x_k = (A_bar + diag(B_bar) u_k) x_{k-1} + B_bar u_k, y_k = Re(C x_k)."""
    Bsz, H, L = u.shape
    u = u.to(dA.dtype)
    x = torch.zeros(Bsz, H, dA.shape[-1], dtype=dA.dtype)
    ys = []
    for k in range(L):
        x = torch.einsum("hmn,bhn->bhm", dA, x) + dB * u[..., k, None] * x + dB * u[..., k, None]
        ys.append(torch.einsum("chm,bhm->bch", C, x).real)
    return torch.stack(ys, -1)


def randomize_norms(model: torch.nn.Module) -> None:
    """Norm affines and BatchNorm running statistics away from the identity (in place), so that a
    streaming path that folds or skips a norm shows the error."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm1d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
