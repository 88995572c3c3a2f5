"""The numba kernels of `liquid_s4.deploy.fast`: a whole `SequenceModel` stepped in real arithmetic,
every layer and step in one compiled call: `run_model` sample by sample (every layer per sample),
`run_model_chunked` layer by layer over pieces of a chunk, with the same arithmetic (the same bits).

The model comes as a plan of flat arrays (built by `liquid_s4.deploy.fast.FastStream`):

    g     int64 (G_SIZE,)           global sizes, flags and offsets (the G_* indices below)
    lm    int64 (n_layers, K_SIZE)  per layer: its kind, sizes, flags and the offsets of its arrays in F
    F     float (.,)                every parameter, in the model's precision (float32 or float64)
    gf    float64 (GF_SIZE,)        global numbers kept in float64 (the pool decay)

and the stream's state as

    state float (B, S)              per stream: each layer's state (complex modes as separate real and
                                    imaginary rows), its input history, the pooled sum, the window
    aux   float64 (3,)              what every stream shares: the pool count, the window position and
                                    the steps since the last reset

Complex numbers never appear: a mode x = xr + i xi is two reals, and every product with a complex
coefficient is written out. Matrix-vector products read transposed weights (in, out) row by row and
update the whole output vector (no reduction inside the inner loop), so they vectorize without
reassociating sums (fastmath stays off).
"""

from __future__ import annotations

import math

import numpy as np

try:  # optional: `FastStream` says how to install it
    import numba
except ImportError:  # pragma: no cover - exercised where numba is not installed
    numba = None


def _jit(**options):
    def wrap(fn):
        return numba.njit(cache=True, **options)(fn) if numba is not None else fn

    return wrap


# ---- the plan's indices -----------------------------------------------------------------------------
# global entries of g
G_H, G_DIN, G_DOUT, G_NL, G_TOK, G_VOCAB, G_PRENORM, G_POOL = 0, 1, 2, 3, 4, 5, 6, 7
G_WIN, G_DECAY, G_RESET, G_ENC_W, G_ENC_B, G_DEC_W, G_DEC_B, G_FIN = 8, 9, 10, 11, 12, 13, 14, 15
G_FIN_EPS, G_SUM, G_BUF, G_WORK, G_ROWS = 16, 17, 18, 19, 20
G_SIZE = 21
GF_LAM = 0
GF_SIZE = 1
# pools (G_POOL) and final normalizations (G_FIN: what precedes the folded affine map)
POOL_MEAN, POOL_LAST, POOL_NONE = 0, 1, 2
FIN_NONE, FIN_LAYER = 0, 1
# per-layer entries of lm
K_KIND, K_N, K_R, K_CH, K_P1, K_LIQ, K_SQUASH, K_ACT, K_POST, K_HOUT = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
K_NORM, K_NORM_W, K_NORM_B, K_EPS, K_ST = 10, 11, 12, 13, 14
K_AR, K_AI, K_BR, K_BI, K_WR, K_WI, K_PR, K_PI = 15, 16, 17, 18, 19, 20, 21, 22
K_BETR, K_BETI, K_DELR, K_DELI, K_EBR, K_EBI, K_PBC, K_D = 23, 24, 25, 26, 27, 28, 29, 30
K_PW, K_PB, K_BTR, K_BTI, K_DT, K_DA, K_FOLD = 31, 32, 33, 34, 35, 36, 37
K_SIZE = 38
# layer kinds (K_KIND)
DIAG, DPLR, DENSE, SCAN_AFFINE, SCAN_ODE = 0, 1, 2, 3, 4
# liquid terms (K_LIQ), block norms (K_NORM), output projections (K_POST)
LIQ_NONE, LIQ_PB, LIQ_KB = 0, 1, 2
NORM_LAYER, NORM_BATCH = 0, 1
POST_NONE, POST_LINEAR, POST_GLU = 0, 1, 2
# activations (K_ACT)
ACT_IDENTITY, ACT_GELU, ACT_GELU_TANH, ACT_RELU, ACT_SILU, ACT_TANH, ACT_SIGMOID = 0, 1, 2, 3, 4, 5, 6
# aux entries
AUX_COUNT, AUX_POS, AUX_T = 0, 1, 2


# ---- pieces ----------------------------------------------------------------------------------------
# Every parameter is read through a view of F shaped like the loop that reads it, indexed by loop
# variables only: numba then knows the indices are not negative, and the loops vectorize (indexing F
# at computed offsets costs a wraparound check per access, about 6x slower on a 128 x 256 product).
@_jit()
def _view2(F, off, n0, n1):
    return F[off : off + n0 * n1].reshape((n0, n1))


@_jit()
def _view3(F, off, n0, n1, n2):
    return F[off : off + n0 * n1 * n2].reshape((n0, n1, n2))


@_jit()
def _linear(F, w, b, nin, nout, x, out):
    """out[:nout] = F[b:b+nout] + x[:nin] @ Wt, with Wt = F[w : w + nin*nout] as (nin, nout). Four rows
    of Wt per pass over out: one load and store of out per four products."""
    Wt = _view2(F, w, nin, nout)
    bias = F[b : b + nout]
    for j in range(nout):
        out[j] = bias[j]
    i = 0
    while i + 4 <= nin:
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        w0, w1, w2, w3 = Wt[i], Wt[i + 1], Wt[i + 2], Wt[i + 3]
        for j in range(nout):
            out[j] += w0[j] * x0 + w1[j] * x1 + w2[j] * x2 + w3[j] * x3
        i += 4
    while i < nin:
        xi = x[i]
        wi = Wt[i]
        for j in range(nout):
            out[j] += wi[j] * xi
        i += 1


@_jit()
def _linear_rows(F, w, b, nin, nout, X, OUT):
    """OUT[t, :nout] = F[b:b+nout] + X[t, :nin] @ Wt for every row t of X (n, nin) -> OUT (n, nout):
    `_linear` on each row with the same sums in the same order (so the same bits), four rows of X per
    pass over Wt: each loaded weight serves four rows, and Wt (read once per four rows) stays in cache."""
    Wt = _view2(F, w, nin, nout)
    bias = F[b : b + nout]
    n = X.shape[0]
    for t in range(n):
        for j in range(nout):
            OUT[t, j] = bias[j]
    t = 0
    while t + 4 <= n:
        i = 0
        while i + 4 <= nin:
            w0, w1, w2, w3 = Wt[i], Wt[i + 1], Wt[i + 2], Wt[i + 3]
            a0, a1, a2, a3 = X[t, i], X[t, i + 1], X[t, i + 2], X[t, i + 3]
            b0, b1, b2, b3 = X[t + 1, i], X[t + 1, i + 1], X[t + 1, i + 2], X[t + 1, i + 3]
            c0, c1, c2, c3 = X[t + 2, i], X[t + 2, i + 1], X[t + 2, i + 2], X[t + 2, i + 3]
            d0, d1, d2, d3 = X[t + 3, i], X[t + 3, i + 1], X[t + 3, i + 2], X[t + 3, i + 3]
            for j in range(nout):
                p0, p1, p2, p3 = w0[j], w1[j], w2[j], w3[j]
                OUT[t, j] += p0 * a0 + p1 * a1 + p2 * a2 + p3 * a3
                OUT[t + 1, j] += p0 * b0 + p1 * b1 + p2 * b2 + p3 * b3
                OUT[t + 2, j] += p0 * c0 + p1 * c1 + p2 * c2 + p3 * c3
                OUT[t + 3, j] += p0 * d0 + p1 * d1 + p2 * d2 + p3 * d3
            i += 4
        while i < nin:
            wi = Wt[i]
            a0, b0, c0, d0 = X[t, i], X[t + 1, i], X[t + 2, i], X[t + 3, i]
            for j in range(nout):
                p0 = wi[j]
                OUT[t, j] += p0 * a0
                OUT[t + 1, j] += p0 * b0
                OUT[t + 2, j] += p0 * c0
                OUT[t + 3, j] += p0 * d0
            i += 1
        t += 4
    while t < n:  # the last rows one by one, as `_linear`
        o = OUT[t]
        i = 0
        while i + 4 <= nin:
            x0, x1, x2, x3 = X[t, i], X[t, i + 1], X[t, i + 2], X[t, i + 3]
            w0, w1, w2, w3 = Wt[i], Wt[i + 1], Wt[i + 2], Wt[i + 3]
            for j in range(nout):
                o[j] += w0[j] * x0 + w1[j] * x1 + w2[j] * x2 + w3[j] * x3
            i += 4
        while i < nin:
            xi = X[t, i]
            wi = Wt[i]
            for j in range(nout):
                o[j] += wi[j] * xi
            i += 1
        t += 1


@_jit()
def _activation(code, x):
    if code == ACT_GELU:
        return 0.5 * x * (1.0 + math.erf(x * 0.7071067811865476))
    if code == ACT_GELU_TANH:
        return 0.5 * x * (1.0 + math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    if code == ACT_RELU:
        return x if x > 0 or x != x else 0.0
    if code == ACT_SILU:
        return x / (1.0 + math.exp(-x))
    if code == ACT_TANH:
        return math.tanh(x)
    if code == ACT_SIGMOID:
        return 1.0 / (1.0 + math.exp(-x))
    return x


@_jit()
def _activate_rows(code, Y, A):
    """A = activation(Y) elementwise, `_activation`'s arithmetic with the choice of activation taken
    once (the loops without transcendental calls vectorize)."""
    n, m = Y.shape[0], Y.shape[1]
    if code == ACT_GELU:
        for k in range(n):
            for j in range(m):
                x = Y[k, j]
                A[k, j] = 0.5 * x * (1.0 + math.erf(x * 0.7071067811865476))
    elif code == ACT_RELU:
        for k in range(n):
            for j in range(m):
                x = Y[k, j]
                A[k, j] = x if x > 0 or x != x else 0.0
    elif code == ACT_IDENTITY:
        for k in range(n):
            for j in range(m):
                A[k, j] = Y[k, j]
    else:
        for k in range(n):
            for j in range(m):
                A[k, j] = _activation(code, Y[k, j])


@_jit()
def _layer_norm(F, eps, H, x, out, w, b, affine):
    """out = LayerNorm(x) over H entries, with the affine map F[w:], F[b:] if `affine`."""
    mean = 0.0
    for j in range(H):
        mean += x[j]
    mean /= H
    var = 0.0
    for j in range(H):
        d = x[j] - mean
        var += d * d
    var /= H
    inv = 1.0 / math.sqrt(var + F[eps])
    if affine:
        ws, bs = F[w : w + H], F[b : b + H]
        for j in range(H):
            out[j] = (x[j] - mean) * inv * ws[j] + bs[j]
    else:
        for j in range(H):
            out[j] = (x[j] - mean) * inv


@_jit()
def _norm(lay, F, H, x, out, affine):
    """The block norm of layer row `lay` on x (H,) -> out (may be x): LayerNorm, or BatchNorm in eval
    mode as the per-channel affine map F[w:] x + F[b:] (the identity when not `affine`)."""
    if lay[K_NORM] == NORM_LAYER:
        _layer_norm(F, lay[K_EPS], H, x, out, lay[K_NORM_W], lay[K_NORM_B], affine)
    elif affine:
        ws, bs = F[lay[K_NORM_W] : lay[K_NORM_W] + H], F[lay[K_NORM_B] : lay[K_NORM_B] + H]
        for j in range(H):
            out[j] = x[j] * ws[j] + bs[j]
    else:
        for j in range(H):
            out[j] = x[j]


# The layers' arrays are laid out with the channel h last: (n, H) per mode, (R, n, H), (Ch, n, H), and
# every loop over channels is the inner loop, contiguous, and vectorizes (H is 64 to 1024, while a
# layer has 4 to 32 modes per channel).
@_jit()
def _dense_step(lay, F, H, st, u, y, tmp):
    """The LSSL step: x = A_bar x + B_bar u, y = C x + D u (real, N = lay[K_N] per channel)."""
    n, Ch = lay[K_N], lay[K_CH]
    dA = _view3(F, lay[K_DA], n, n, H)
    dB = _view2(F, lay[K_BR], n, H)
    C = _view3(F, lay[K_WR], Ch, n, H)
    D = _view2(F, lay[K_D], Ch, H)
    X = st[: n * H].reshape((n, H))
    for i in range(n):
        for h in range(H):
            tmp[i, h] = dB[i, h] * u[h]
        for j in range(n):
            for h in range(H):
                tmp[i, h] += dA[i, j, h] * X[j, h]
    for i in range(n):
        for h in range(H):
            X[i, h] = tmp[i, h]
    for c in range(Ch):
        yc = y[c * H : (c + 1) * H]
        for h in range(H):
            yc[h] = D[c, h] * u[h]
        for i in range(n):
            for h in range(H):
                yc[h] += C[c, i, h] * X[i, h]


@_jit()
def _diag_update(lay, F, H, n, Xr, Xi, u):
    """x = A_bar x + B_bar u (S4D)."""
    Ar, Ai = _view2(F, lay[K_AR], n, H), _view2(F, lay[K_AI], n, H)
    Br, Bi = _view2(F, lay[K_BR], n, H), _view2(F, lay[K_BI], n, H)
    for m in range(n):
        for h in range(H):
            zr, zi = Xr[m, h], Xi[m, h]
            Xr[m, h] = Ar[m, h] * zr - Ai[m, h] * zi + Br[m, h] * u[h]
            Xi[m, h] = Ar[m, h] * zi + Ai[m, h] * zr + Bi[m, h] * u[h]


@_jit()
def _pdot(Pr, Pi, i, n, H, Xr, Xi, out):
    """out[h] = <P_i, x>[h] = Re(sum_m conj(P_i) x)."""
    for h in range(H):
        out[h] = Pr[i, 0, h] * Xr[0, h] + Pi[i, 0, h] * Xi[0, h]
    for m in range(1, n):
        for h in range(H):
            out[h] += Pr[i, m, h] * Xr[m, h] + Pi[i, m, h] * Xi[m, h]


@_jit()
def _dplr_update(lay, F, H, n, Xr, Xi, u, tmp):
    """The Woodbury form of the bilinear DPLR step (`DPLRRecurrence.step`):
    w = alpha x + gamma u + sum_i beta_i <P_i, x>,  x = w + sum_i delta_i <P_i, w>."""
    R = lay[K_R]
    Ar, Ai = _view2(F, lay[K_AR], n, H), _view2(F, lay[K_AI], n, H)
    Br, Bi = _view2(F, lay[K_BR], n, H), _view2(F, lay[K_BI], n, H)
    Pr, Pi = _view3(F, lay[K_PR], R, n, H), _view3(F, lay[K_PI], R, n, H)
    Betr, Beti = _view3(F, lay[K_BETR], R, n, H), _view3(F, lay[K_BETI], R, n, H)
    Delr, Deli = _view3(F, lay[K_DELR], R, n, H), _view3(F, lay[K_DELI], R, n, H)
    for i in range(R):
        _pdot(Pr, Pi, i, n, H, Xr, Xi, tmp[i])
    for m in range(n):
        for h in range(H):
            zr, zi = Xr[m, h], Xi[m, h]
            Xr[m, h] = Ar[m, h] * zr - Ai[m, h] * zi + Br[m, h] * u[h]
            Xi[m, h] = Ar[m, h] * zi + Ai[m, h] * zr + Bi[m, h] * u[h]
        for i in range(R):
            p = tmp[i]
            for h in range(H):
                Xr[m, h] += Betr[i, m, h] * p[h]
                Xi[m, h] += Beti[i, m, h] * p[h]
    for i in range(R):
        _pdot(Pr, Pi, i, n, H, Xr, Xi, tmp[R + i])
    for m in range(n):
        for i in range(R):
            p = tmp[R + i]
            for h in range(H):
                Xr[m, h] += Delr[i, m, h] * p[h]
                Xi[m, h] += Deli[i, m, h] * p[h]


@_jit()
def _scan_affine_update(lay, F, H, n, Xr, Xi, u, s):
    """The liquid scan with one step size: x = (a + bt s) x + b u, s = u or tanh(u) (given)."""
    Ar, Ai = _view2(F, lay[K_AR], n, H), _view2(F, lay[K_AI], n, H)
    Br, Bi = _view2(F, lay[K_BR], n, H), _view2(F, lay[K_BI], n, H)
    Btr, Bti = _view2(F, lay[K_BTR], n, H), _view2(F, lay[K_BTI], n, H)
    for m in range(n):
        for h in range(H):
            fr = Ar[m, h] + Btr[m, h] * s[h]
            fi = Ai[m, h] + Bti[m, h] * s[h]
            zr, zi = Xr[m, h], Xi[m, h]
            Xr[m, h] = fr * zr - fi * zi + Br[m, h] * u[h]
            Xi[m, h] = fr * zi + fi * zr + Bi[m, h] * u[h]


@_jit()
def _scan_ode_update(lay, F, H, n, Xr, Xi, u, s):
    """The liquid scan's "ode" form: w = d (a + bt s), x = e^w x + d phi(w) b u, s = tanh(u) (given),
    phi(w) = (e^w - 1) / w as `liquid_s4.ops.scan.phi` evaluates it."""
    Ar, Ai = _view2(F, lay[K_AR], n, H), _view2(F, lay[K_AI], n, H)
    Br, Bi = _view2(F, lay[K_BR], n, H), _view2(F, lay[K_BI], n, H)
    Btr, Bti = _view2(F, lay[K_BTR], n, H), _view2(F, lay[K_BTI], n, H)
    dt = F[lay[K_DT] : lay[K_DT] + H]
    for m in range(n):
        for h in range(H):
            d = dt[h]
            w_r = d * (Ar[m, h] + Btr[m, h] * s[h])
            w_i = d * (Ai[m, h] + Bti[m, h] * s[h])
            e = math.exp(w_r)
            er, ei = e * math.cos(w_i), e * math.sin(w_i)
            if w_r * w_r + w_i * w_i < 1e-6:  # phi(w) = 1 + w (1/2 + w (1/6 + w / 24))
                qr, qi = 1.0 / 6 + w_r / 24, w_i / 24
                qr, qi = 0.5 + w_r * qr - w_i * qi, w_r * qi + w_i * qr
                phr, phi_ = 1.0 + w_r * qr - w_i * qi, w_r * qi + w_i * qr
            else:  # (e^w - 1) / w, with e^w - 1 = expm1(Re w) cos(Im w) - 2 sin(Im w / 2)^2 + i Im e^w
                sh = math.sin(w_i / 2)
                mr, mi = math.expm1(w_r) * math.cos(w_i) - 2.0 * sh * sh, ei
                den = w_r * w_r + w_i * w_i
                phr, phi_ = (mr * w_r + mi * w_i) / den, (mi * w_r - mr * w_i) / den
            gr = d * (phr * Br[m, h] - phi_ * Bi[m, h]) * u[h]
            gi = d * (phr * Bi[m, h] + phi_ * Br[m, h]) * u[h]
            zr, zi = Xr[m, h], Xi[m, h]
            Xr[m, h] = er * zr - ei * zi + gr
            Xi[m, h] = er * zi + ei * zr + gi


@_jit()
def _modal_step(lay, F, H, st, u, y, v, tmp):
    """One step of a layer with N/2 complex modes per channel (S4D, S4 / Liquid-S4, the S4D scan): u (H,)
    -> y (Ch * H,) with the D skip and the liquid terms; the layer's state st advanced. v (P - 1, H) and
    tmp (., H) are work space."""
    kind, n, Ch, P1 = lay[K_KIND], lay[K_N], lay[K_CH], lay[K_P1]
    liq, squash = lay[K_LIQ], lay[K_SQUASH]
    X = st[: 2 * n * H].reshape((2, n, H))  # real and imaginary parts
    Xr, Xi = X[0], X[1]
    Hist = st[2 * n * H : (2 * n + P1) * H].reshape((P1, H))  # the last P - 1 inputs, oldest first
    # the liquid signals v_p = u_t u_{t-1} ... u_{t-p+1} (p = 2..P)
    for p in range(P1):
        prev = u if p == 0 else v[p - 1]
        for h in range(H):
            v[p, h] = prev[h] * Hist[P1 - 1 - p, h]
    if squash:  # (the scan has no liquid signals: P1 = 0)
        for p in range(P1):
            for h in range(H):
                v[p, h] = math.tanh(v[p, h])
    if kind == DIAG:
        _diag_update(lay, F, H, n, Xr, Xi, u)
    elif kind == DPLR:
        _dplr_update(lay, F, H, n, Xr, Xi, u, tmp)
    else:  # the scan: its transition reads s = tanh(u) or u, kept in tmp[0]
        s = tmp[0]
        for h in range(H):
            s[h] = math.tanh(u[h]) if squash or kind == SCAN_ODE else u[h]
        if kind == SCAN_AFFINE:
            _scan_affine_update(lay, F, H, n, Xr, Xi, u, s)
        else:
            _scan_ode_update(lay, F, H, n, Xr, Xi, u, s)
    if liq == LIQ_KB:  # the liquid inputs: x += B_bar^p v_p
        Ebr, Ebi = _view3(F, lay[K_EBR], P1, n, H), _view3(F, lay[K_EBI], P1, n, H)
        for p in range(P1):
            for m in range(n):
                for h in range(H):
                    Xr[m, h] += Ebr[p, m, h] * v[p, h]
                    Xi[m, h] += Ebi[p, m, h] * v[p, h]
    # y = 2 Re(C x) (+ the PB read-outs) + D u
    Wr, Wi = _view3(F, lay[K_WR], Ch, n, H), _view3(F, lay[K_WI], Ch, n, H)
    D = _view2(F, lay[K_D], Ch, H)
    for c in range(Ch):
        yc = y[c * H : (c + 1) * H]
        for h in range(H):
            yc[h] = Wr[c, 0, h] * Xr[0, h] + Wi[c, 0, h] * Xi[0, h]
        for m in range(1, n):
            for h in range(H):
                yc[h] += Wr[c, m, h] * Xr[m, h] + Wi[c, m, h] * Xi[m, h]
        if liq == LIQ_PB:
            PB = _view3(F, lay[K_PBC], P1, Ch, H)
            for p in range(P1):
                for h in range(H):
                    yc[h] += PB[p, c, h] * v[p, h]
        for h in range(H):
            yc[h] += D[c, h] * u[h]
    for p in range(P1 - 1):
        for h in range(H):
            Hist[p, h] = Hist[p + 1, h]
    for h in range(H if P1 > 0 else 0):
        Hist[P1 - 1, h] = u[h]


@_jit()
def _modal_steps(lay, F, H, st, zs, ys, v, tmp):
    """`_modal_step` on every row of zs (n, H) -> ys (n, Ch * H), the layer's state advanced n steps.
    The common layers (S4D, and S4 / Liquid-S4 with a rank-1 correction, one channel, no liquid
    term or the PB read-outs) run fused passes over the modes with the same arithmetic (the same
    bits): the Woodbury step's state update, its second projection <P, w> and the read-out share a
    pass where `_modal_step` runs one each. The others step through `_modal_step`."""
    kind, n, P1, liq = lay[K_KIND], lay[K_N], lay[K_P1], lay[K_LIQ]
    if lay[K_CH] != 1 or liq == LIQ_KB or not (kind == DIAG or (kind == DPLR and lay[K_R] == 1)):
        for k in range(zs.shape[0]):
            _modal_step(lay, F, H, st, zs[k], ys[k], v, tmp)
        return
    squash = lay[K_SQUASH]
    X = st[: 2 * n * H].reshape((2, n, H))
    Xr, Xi = X[0], X[1]
    Hist = st[2 * n * H : (2 * n + P1) * H].reshape((P1, H))
    Ar, Ai = _view2(F, lay[K_AR], n, H), _view2(F, lay[K_AI], n, H)
    Br, Bi = _view2(F, lay[K_BR], n, H), _view2(F, lay[K_BI], n, H)
    Wr, Wi = _view2(F, lay[K_WR], n, H), _view2(F, lay[K_WI], n, H)
    D = F[lay[K_D] : lay[K_D] + H]
    dplr = kind == DPLR
    nr = n if dplr else 0  # the rank-1 arrays (empty views for S4D)
    Pr, Pi = _view2(F, lay[K_PR], nr, H), _view2(F, lay[K_PI], nr, H)
    Betr, Beti = _view2(F, lay[K_BETR], nr, H), _view2(F, lay[K_BETI], nr, H)
    Delr, Deli = _view2(F, lay[K_DELR], nr, H), _view2(F, lay[K_DELI], nr, H)
    PB = _view2(F, lay[K_PBC], P1 if liq == LIQ_PB else 0, H)
    p, q = tmp[0], tmp[1 if dplr else 0]  # (tmp has 2 R rows)
    for k in range(zs.shape[0]):
        u, y = zs[k], ys[k]
        for pp in range(P1):  # the liquid signals, as `_modal_step`
            prev = u if pp == 0 else v[pp - 1]
            for h in range(H):
                v[pp, h] = prev[h] * Hist[P1 - 1 - pp, h]
        if squash:
            for pp in range(P1):
                for h in range(H):
                    v[pp, h] = math.tanh(v[pp, h])
        if dplr:
            # p = <P, x>;  w = alpha x + gamma u + beta p and q = <P, w> in one pass
            for h in range(H):
                p[h] = Pr[0, h] * Xr[0, h] + Pi[0, h] * Xi[0, h]
            for m in range(1, n):
                for h in range(H):
                    p[h] += Pr[m, h] * Xr[m, h] + Pi[m, h] * Xi[m, h]
            for m in range(n):
                for h in range(H):
                    zr, zi = Xr[m, h], Xi[m, h]
                    wr = Ar[m, h] * zr - Ai[m, h] * zi + Br[m, h] * u[h]
                    wi = Ar[m, h] * zi + Ai[m, h] * zr + Bi[m, h] * u[h]
                    wr += Betr[m, h] * p[h]
                    wi += Beti[m, h] * p[h]
                    Xr[m, h], Xi[m, h] = wr, wi
                if m == 0:
                    for h in range(H):
                        q[h] = Pr[0, h] * Xr[0, h] + Pi[0, h] * Xi[0, h]
                else:
                    for h in range(H):
                        q[h] += Pr[m, h] * Xr[m, h] + Pi[m, h] * Xi[m, h]
            # x = w + delta q and the read-out y = <W, x> in one pass
            for m in range(n):
                for h in range(H):
                    Xr[m, h] += Delr[m, h] * q[h]
                    Xi[m, h] += Deli[m, h] * q[h]
                if m == 0:
                    for h in range(H):
                        y[h] = Wr[0, h] * Xr[0, h] + Wi[0, h] * Xi[0, h]
                else:
                    for h in range(H):
                        y[h] += Wr[m, h] * Xr[m, h] + Wi[m, h] * Xi[m, h]
        else:  # x = A_bar x + B_bar u and the read-out in one pass
            for m in range(n):
                for h in range(H):
                    zr, zi = Xr[m, h], Xi[m, h]
                    Xr[m, h] = Ar[m, h] * zr - Ai[m, h] * zi + Br[m, h] * u[h]
                    Xi[m, h] = Ar[m, h] * zi + Ai[m, h] * zr + Bi[m, h] * u[h]
                if m == 0:
                    for h in range(H):
                        y[h] = Wr[0, h] * Xr[0, h] + Wi[0, h] * Xi[0, h]
                else:
                    for h in range(H):
                        y[h] += Wr[m, h] * Xr[m, h] + Wi[m, h] * Xi[m, h]
        for pp in range(PB.shape[0]):
            for h in range(H):
                y[h] += PB[pp, h] * v[pp, h]
        for h in range(H):
            y[h] += D[h] * u[h]
        for pp in range(P1 - 1):
            for h in range(H):
                Hist[pp, h] = Hist[pp + 1, h]
        for h in range(H if P1 > 0 else 0):
            Hist[P1 - 1, h] = u[h]


@_jit()
def _pool_add(Ssum, buf, h, H, W, decay, lam, pos, count):
    """Add the features h (H,) to the pooled statistic (window W > 0: the ring buffer `buf` and its
    sum, recomputed once per W steps as `step` does; else a decay lam, or the plain sum). Returns the
    new (pos, count)."""
    if W > 0:
        p = int(pos)
        for j in range(H):
            Ssum[j] = Ssum[j] - buf[p, j] + h[j]
            buf[p, j] = h[j]
        p = (p + 1) % W
        if p == 0:
            for j in range(H):
                Ssum[j] = 0
            for q in range(W):
                for j in range(H):
                    Ssum[j] += buf[q, j]
        return float(p), min(count + 1.0, float(W))
    if decay:
        for j in range(H):
            Ssum[j] = lam * Ssum[j] + h[j]
        return pos, lam * count + 1.0
    for j in range(H):
        Ssum[j] += h[j]
    return pos, count + 1.0


@_jit()
def _tokens_in_range(tok, vocab):
    """Whether every token id of tok (B, L) lies in [0, vocab): checked before any state changes."""
    for b in range(tok.shape[0]):
        for k in range(tok.shape[1]):
            if tok[b, k] < 0 or tok[b, k] >= vocab:
                return False
    return True


@_jit()
def run_model(g, lm, F, gf, aux, state, xin, tok, out):
    """Advance every stream b of `state` by the L inputs xin[b] (B, L, d_input) (or the tokens tok[b]
    (B, L) of an embedding encoder) and write the outputs out (B, L, d_output): exactly L calls of
    `SequenceModel.step`. aux is advanced once for all streams. Returns 0, or 1 without changing
    anything when a token id lies outside [0, vocab_size)."""
    B, L = out.shape[0], out.shape[1]
    if g[G_TOK] and not _tokens_in_range(tok, g[G_VOCAB]):
        return 1
    H, din, dout, NL = g[G_H], g[G_DIN], g[G_DOUT], g[G_NL]
    pool, W, decay, R = g[G_POOL], g[G_WIN], g[G_DECAY], g[G_RESET]
    prenorm = g[G_PRENORM] != 0
    lam = gf[GF_LAM]
    nwork = g[G_WORK]  # the largest vector of a step (Ch * H, the projection's outputs)
    h = np.zeros(H, F.dtype)
    z = np.zeros(nwork, F.dtype)
    y = np.zeros(nwork, F.dtype)
    a = np.zeros(nwork, F.dtype)
    v = np.zeros((g[G_ROWS], H), F.dtype)
    tmp = np.zeros((g[G_ROWS], H), F.dtype)
    pooled = np.zeros(H, F.dtype)
    S0, B0 = g[G_SUM], g[G_BUF]
    count, pos, t = aux[AUX_COUNT], aux[AUX_POS], aux[AUX_T]
    for b in range(B):
        count, pos, t = aux[AUX_COUNT], aux[AUX_POS], aux[AUX_T]
        row = state[b]
        Ssum = row[S0 : S0 + H]
        buf = row[B0 : B0 + W * H].reshape((W, H))
        for k in range(L):
            if R > 0 and t >= R:  # the whole state returns to zero (before the step, as `step` does)
                for j in range(row.shape[0]):
                    row[j] = 0
                count, pos, t = 0.0, 0.0, 0.0
            # encoder
            if g[G_TOK]:
                E = _view2(F, g[G_ENC_W], g[G_VOCAB], H)
                e = tok[b, k]
                for j in range(H):
                    h[j] = E[e, j]
            else:
                _linear(F, g[G_ENC_W], g[G_ENC_B], din, H, xin[b, k], h)
            for li in range(NL):
                lay = lm[li]
                if prenorm:
                    _norm(lay, F, H, h, z, True)
                else:
                    for j in range(H):
                        z[j] = h[j]
                st = row[lay[K_ST] :]
                nin = lay[K_CH] * H
                if lay[K_KIND] == DENSE:
                    _dense_step(lay, F, H, st, z, y, tmp)
                elif lay[K_KIND] == DPLR:  # the fused Woodbury step (S4D's gains less than its setup)
                    _modal_steps(lay, F, H, st, z[:H].reshape((1, H)), y[:nin].reshape((1, nin)), v, tmp)
                else:
                    _modal_step(lay, F, H, st, z, y, v, tmp)
                act = lay[K_ACT]
                for j in range(nin):
                    a[j] = _activation(act, y[j])
                post = lay[K_POST]
                if post == POST_NONE:
                    for j in range(H):
                        h[j] += a[j]
                else:
                    _linear(F, lay[K_PW], lay[K_PB], nin, lay[K_HOUT], a, y)
                    if post == POST_GLU:
                        for j in range(H):
                            h[j] += y[j] * (1.0 / (1.0 + math.exp(-y[H + j])))
                    else:
                        for j in range(H):
                            h[j] += y[j]
                if not prenorm:  # the last block's affine map is folded into the decoder
                    _norm(lay, F, H, h, h, li != NL - 1)
            if prenorm and g[G_FIN] == FIN_LAYER:  # the final norm's affine map is in the decoder
                _layer_norm(F, g[G_FIN_EPS], H, h, h, 0, 0, False)
            # pooling (on the features before the folded affine map)
            pos, count = _pool_add(Ssum, buf, h, H, W, decay, lam, pos, count)
            t += 1.0
            if pool == POOL_MEAN:
                for j in range(H):
                    pooled[j] = Ssum[j] / count
                _linear(F, g[G_DEC_W], g[G_DEC_B], H, dout, pooled, out[b, k])
            else:
                _linear(F, g[G_DEC_W], g[G_DEC_B], H, dout, h, out[b, k])
    aux[AUX_COUNT], aux[AUX_POS], aux[AUX_T] = count, pos, t
    return 0


@_jit()
def run_model_chunked(g, lm, F, gf, aux, state, xin, tok, out, tile):
    """`run_model` layer by layer: the same steps and the same arithmetic (the same outputs and state,
    bit for bit), in another order. The L inputs are cut into pieces of at most `tile` steps (and at
    every reset point); within a piece each layer advances its recurrence over all the piece's steps,
    then its activation, output projection (`_linear_rows`, a small matrix product), GLU and residual
    run on the whole piece, then the next layer; the pooling and the decoder last. A layer's weights
    are read once per piece instead of once per step (the model's weights together are larger than
    the per-core cache), and the projections' loops serve several steps per loaded weight."""
    B, L = out.shape[0], out.shape[1]
    if g[G_TOK] and not _tokens_in_range(tok, g[G_VOCAB]):
        return 1
    H, din, dout, NL = g[G_H], g[G_DIN], g[G_DOUT], g[G_NL]
    pool, W, decay, R = g[G_POOL], g[G_WIN], g[G_DECAY], g[G_RESET]
    prenorm = g[G_PRENORM] != 0
    lam = gf[GF_LAM]
    nwork = g[G_WORK]
    T = max(1, min(tile, L))
    hbuf = np.zeros(T * H, F.dtype)  # the residual stream of the piece (n, H)
    zbuf = np.zeros(T * H, F.dtype)  # the layer's inputs (n, H), then the pooled features
    ybuf = np.zeros(T * nwork, F.dtype)  # the layer's outputs (n, Ch * H), then the projection's
    abuf = np.zeros(T * nwork, F.dtype)  # the activations (n, Ch * H)
    v = np.zeros((g[G_ROWS], H), F.dtype)
    tmp = np.zeros((g[G_ROWS], H), F.dtype)
    S0, B0 = g[G_SUM], g[G_BUF]
    count, pos, t = aux[AUX_COUNT], aux[AUX_POS], aux[AUX_T]
    for b in range(B):
        count, pos, t = aux[AUX_COUNT], aux[AUX_POS], aux[AUX_T]
        row = state[b]
        Ssum = row[S0 : S0 + H]
        buf = row[B0 : B0 + W * H].reshape((W, H))
        k0 = 0
        while k0 < L:
            if R > 0 and t >= R:  # the whole state returns to zero (before the step, as `step` does)
                for j in range(row.shape[0]):
                    row[j] = 0
                count, pos, t = 0.0, 0.0, 0.0
            n = min(T, L - k0)
            if R > 0:
                n = min(n, R - int(t))  # the piece ends at the next reset
            hs = hbuf[: n * H].reshape((n, H))
            zs = zbuf[: n * H].reshape((n, H))
            # encoder
            if g[G_TOK]:
                E = _view2(F, g[G_ENC_W], g[G_VOCAB], H)
                for k in range(n):
                    e = tok[b, k0 + k]
                    for j in range(H):
                        hs[k, j] = E[e, j]
            else:
                _linear_rows(F, g[G_ENC_W], g[G_ENC_B], din, H, xin[b, k0 : k0 + n], hs)
            for li in range(NL):
                lay = lm[li]
                for k in range(n):
                    if prenorm:
                        _norm(lay, F, H, hs[k], zs[k], True)
                    else:
                        for j in range(H):
                            zs[k, j] = hs[k, j]
                st = row[lay[K_ST] :]
                nin = lay[K_CH] * H
                ys = ybuf[: n * nin].reshape((n, nin))
                if lay[K_KIND] == DENSE:
                    for k in range(n):
                        _dense_step(lay, F, H, st, zs[k], ys[k], tmp)
                else:
                    _modal_steps(lay, F, H, st, zs, ys, v, tmp)
                a_s = abuf[: n * nin].reshape((n, nin))
                _activate_rows(lay[K_ACT], ys, a_s)
                post = lay[K_POST]
                if post == POST_NONE:
                    for k in range(n):
                        for j in range(H):
                            hs[k, j] += a_s[k, j]
                else:
                    hout = lay[K_HOUT]
                    ps = ybuf[: n * hout].reshape((n, hout))
                    _linear_rows(F, lay[K_PW], lay[K_PB], nin, hout, a_s, ps)
                    if post == POST_GLU:
                        for k in range(n):
                            for j in range(H):
                                hs[k, j] += ps[k, j] * (1.0 / (1.0 + math.exp(-ps[k, H + j])))
                    else:
                        for k in range(n):
                            for j in range(H):
                                hs[k, j] += ps[k, j]
                if not prenorm:  # the last block's affine map is folded into the decoder
                    for k in range(n):
                        _norm(lay, F, H, hs[k], hs[k], li != NL - 1)
            if prenorm and g[G_FIN] == FIN_LAYER:  # the final norm's affine map is in the decoder
                for k in range(n):
                    _layer_norm(F, g[G_FIN_EPS], H, hs[k], hs[k], 0, 0, False)
            # pooling (on the features before the folded affine map), step by step
            for k in range(n):
                pos, count = _pool_add(Ssum, buf, hs[k], H, W, decay, lam, pos, count)
                t += 1.0
                if pool == POOL_MEAN:
                    for j in range(H):
                        zs[k, j] = Ssum[j] / count
            if pool == POOL_MEAN:
                _linear_rows(F, g[G_DEC_W], g[G_DEC_B], H, dout, zs, out[b, k0 : k0 + n])
            else:
                _linear_rows(F, g[G_DEC_W], g[G_DEC_B], H, dout, hs, out[b, k0 : k0 + n])
            k0 += n
    aux[AUX_COUNT], aux[AUX_POS], aux[AUX_T] = count, pos, t
    return 0
