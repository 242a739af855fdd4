"""SPEC.md §6 (v3: the single neuron ``act(w . x + b)`` with d inputs, an activation and a
loss, on the teacher problem) written again in NumPy, from the SPEC text only (no torch, no
fastneuron).

Built on tests/spec_numpy.py (the v1/v2 oracle): its ``philox``, ``uniform``, ``split_seeds``,
``normal_block`` and, for the sigmoid, tanh, erf and bce lines, SPEC §2c's ``exp32``,
``tanh32`` and ``erf32`` (looked up in spec_numpy when first used, so that the activations
without a transcendental work without them).

As spec_numpy: float32 arrays and ``np.float32`` constants only, one NumPy operation per SPEC
line (NumPy never fuses a multiply and an add), selects as ``np.where``; the float64 work is
only where the SPEC puts it on the host (``r = f32(1 / sqrt(d))``, Adam's ``lr / bc1[t]`` and
tables). :func:`train_v3` asserts float32 after every step.

Vectorized over members and coordinates: the parameters of a step are one array (M, d) for w
(plus a column for b), the samples of a step (B, M, d), and a chunk of steps' inputs and
targets is drawn at once (one ``philox`` call per coordinate: coordinate i is key (0, i)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import spec_numpy as S

F32 = np.float32
_ONE = F32(1)
_TWO = F32(2)
_ZERO = F32(0)
_NEG0 = F32(-0.0)

#: f32(1/sqrt(2)) and f32(2/sqrt(pi)), by their bits (SPEC §6e).
RSQRT2 = S._f32_bits(0x3F3504F3)
TWO_RSQRTPI = S._f32_bits(0x3F906EBB)

DATA = 0   # key (0, i): coordinate i of the data stream (§6b)
INIT = 1   # key (1, i)
NOISE_KEY = (2, 0)
EVAL = 3   # key (3, i): the evaluation set (§6f; not used by train_v3)

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "erf", "abs", "square")
LOSSES = ("mse", "bce")


def _sec2c(name: str):
    """SPEC §2c's float32 function ``name`` from spec_numpy (appended there by §2c's author)."""
    fn = getattr(S, name, None)
    if fn is None:
        raise NotImplementedError(f"SPEC §2c's {name} is not in tests/spec_numpy.py (yet)")
    return fn


def _check32(*arrays):
    for a in arrays:
        assert a.dtype == np.float32, f"float64 crept in: {a.dtype}"


# --------------------------------------------------------------------------------------
# §6c: the dot product, a fixed pairwise tree
# --------------------------------------------------------------------------------------

def tree_sum(p: np.ndarray) -> np.ndarray:
    """SPEC §6c's tree over the last axis of float32 ``p``: pad to the next power of two with
    -0.0, then add adjacent pairs level by level (each addition rounded)."""
    p = np.asarray(p)
    _check32(p)
    d = p.shape[-1]
    big = 1 << (d - 1).bit_length()  # the next power of two >= d
    if big > d:
        pad = np.full(p.shape[:-1] + (big - d,), _NEG0, dtype=np.float32)
        p = np.concatenate([p, pad], axis=-1)
    while p.shape[-1] > 1:
        p = p[..., 0::2] + p[..., 1::2]
    return p[..., 0]


def dot(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """tree(w_i * x_i) over the last axis (each product rounded, never an FMA)."""
    p = w * x
    return tree_sum(p)


# --------------------------------------------------------------------------------------
# §6e: activations, forward and backward
# --------------------------------------------------------------------------------------

def act_forward(name: str, z: np.ndarray, slope: np.float32) -> np.ndarray:
    if name == "identity":
        return z
    if name == "relu":
        return np.where(z < _ZERO, _ZERO, z)  # +0.0 where z < 0; -0.0 and NaN pass (torch.relu)
    if name == "leaky_relu":
        zs = z * slope
        return np.where(z > _ZERO, z, zs)
    if name == "sigmoid":
        e = _sec2c("exp32")(-z)
        d = _ONE + e
        return _ONE / d
    if name == "tanh":
        return _sec2c("tanh32")(z)
    if name == "erf":
        v = z * RSQRT2
        return _sec2c("erf32")(v)
    if name == "abs":
        return np.abs(z)
    if name == "square":
        return z * z
    raise ValueError(f"activation {name!r}")


def act_backward(name: str, z: np.ndarray, y: np.ndarray, gy: np.ndarray, slope: np.float32) -> np.ndarray:
    """gz = dL/dz from gy = dL/dy, as SPEC §6e's table (y is the forward's output)."""
    if name == "identity":
        return gy
    if name == "relu":
        return np.where(z <= _ZERO, _ZERO, gy)
    if name == "leaky_relu":
        gs = gy * slope
        return np.where(z > _ZERO, gy, gs)
    if name == "sigmoid":
        one_y = _ONE - y
        g = gy * one_y
        return g * y
    if name == "tanh":
        yy = y * y
        one_yy = _ONE - yy
        return gy * one_yy
    if name == "erf":
        v = z * RSQRT2
        vv = v * v
        e = _sec2c("exp32")(-vv)
        ke = TWO_RSQRTPI * e
        gv = ke * gy
        return gv * RSQRT2
    if name == "abs":
        sgn = np.where(z > _ZERO, _ONE, np.where(z < _ZERO, -_ONE, _ZERO))  # 0 at ±0 and NaN
        return gy * sgn
    if name == "square":
        z2 = _TWO * z
        return gy * z2
    raise ValueError(f"activation {name!r}")


def bce_grad(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """loss="bce": gz = sigmoid(z) - t, SPEC §6e's lines."""
    e = _sec2c("exp32")(-z)
    d = _ONE + e
    sg = _ONE / d
    return sg - t


# --------------------------------------------------------------------------------------
# §6b: streams with d coordinates
# --------------------------------------------------------------------------------------

def init_r(d: int) -> np.float32:
    """r = f32(1 / sqrt(d)), on the host in float64 (Python's 1.0 / math.sqrt(d))."""
    return F32(1.0 / math.sqrt(d))


def init_words(seeds, d: int):
    """(u_w (M, d), u_b (M,)): the init uniforms, word 0 of key (1, i) and word 1 of key (1, 0),
    counter (0, 0, s_lo, s_hi)."""
    s_lo, s_hi = S.split_seeds(np.asarray(S._u64(seeds)).reshape(-1))
    zero = np.zeros_like(s_lo)
    u_w = np.empty((s_lo.size, d), np.float32)
    u_b = None
    for i in range(d):
        r0, r1, _, _ = S.philox((INIT, i), zero, zero, s_lo, s_hi)
        u_w[:, i] = S.uniform(r0)
        if i == 0:
            u_b = S.uniform(r1)
    return u_w, u_b


def init_unscaled(seeds, d: int):
    """(-1 + 2*u_i, -1 + 2*u_b): the init before ``* r`` and ``* init_scale``."""
    u_w, u_b = init_words(seeds, d)
    w = _TWO * u_w
    w = -_ONE + w
    b = _TWO * u_b
    b = -_ONE + b
    return w, b


def init_v3(seeds, d: int, *, bias: bool = True, init_scale=1.0):
    """SPEC §6b's init: (w (M, d), b (M,)), b = +0.0 without bias."""
    w, b = init_unscaled(seeds, d)
    m = w.shape[0]
    scale = _per_member(init_scale, m)
    if d > 1:  # r = 1 for d = 1: the multiply is skipped (same bits)
        r = init_r(d)
        w = w * r
        b = b * r
    if (scale != _ONE).any():
        w = w * scale[:, None]
        b = b * scale
    if not bias:
        b = np.zeros(m, np.float32)  # +0.0, no draw needed (the draw above is simply dropped)
    _check32(w, b)
    return w, b


def data_x(seeds, n0: int, n1: int, d: int, *, x_dist: str = "uniform", lo32=1.0, span32=4.0,
           mean32=0.0, std32=1.0) -> np.ndarray:
    """x of samples n0 .. n1-1 of every member: float32 (n1 - n0, M, d). Coordinate i of sample
    n is word (uniform) / normal (Gaussian, §2b) n % 4 of block n // 4 of key (0, i)."""
    lo32, span32, mean32, std32 = F32(lo32), F32(span32), F32(mean32), F32(std32)
    s_lo, s_hi = S.split_seeds(np.asarray(S._u64(seeds)).reshape(-1))
    qa, qb = n0 // 4, (n1 - 1) // 4 + 1
    q = np.arange(qa, qb, dtype=np.uint64)[:, None]
    lo_q, hi_q = q & S.U32, q >> np.uint64(32)
    out = np.empty((n1 - n0, s_lo.size, d), np.float32)
    for i in range(d):
        words = S.philox((DATA, i), lo_q, hi_q, s_lo[None, :], s_hi[None, :])  # 4 x (Q, M)
        if x_dist == "normal":
            vals = [mean32 + std32 * z for z in S.normal_block(*[w.astype(np.uint64) for w in words])]
        elif x_dist == "uniform":
            vals = [lo32 + span32 * S.uniform(r) for r in words]
        else:
            raise ValueError(f"x_dist {x_dist!r}")
        block = np.stack(vals, axis=1).reshape(4 * (qb - qa), s_lo.size)  # sample n = 4q + k
        out[:, :, i] = block[n0 - 4 * qa:n1 - 4 * qa]
    _check32(out)
    return out


def noise_eps(seeds, n0: int, n1: int) -> np.ndarray:
    """eps of samples n0 .. n1-1: float32 (n1 - n0, M), key (2, 0) (§2b), one per sample."""
    s_lo, s_hi = S.split_seeds(np.asarray(S._u64(seeds)).reshape(-1))
    qa, qb = n0 // 4, (n1 - 1) // 4 + 1
    q = np.arange(qa, qb, dtype=np.uint64)[:, None]
    words = S.philox(NOISE_KEY, q & S.U32, q >> np.uint64(32), s_lo[None, :], s_hi[None, :])
    z = S.normal_block(*[w.astype(np.uint64) for w in words])
    block = np.stack(z, axis=1).reshape(4 * (qb - qa), s_lo.size)
    return block[n0 - 4 * qa:n1 - 4 * qa]


# --------------------------------------------------------------------------------------
# §6d: the teacher
# --------------------------------------------------------------------------------------

def teacher_targets(x: np.ndarray, eps, *, a32: np.ndarray, c32: np.float32, loss: str, target_activation: str,
                    slope: np.float32, sigma: np.ndarray, use_noise: np.ndarray) -> np.ndarray:
    """Targets of samples x (N, M, d) with their eps (N, M) (None without noise): (N, M)."""
    u = dot(a32, x)
    u = u + c32
    if loss == "mse":
        t = act_forward(target_activation, u, slope)
        if use_noise.any():
            se = sigma * eps
            t = np.where(use_noise, t + se, t)
        return t
    v = u
    if use_noise.any():
        se = sigma * eps
        v = np.where(use_noise, v + se, v)
    return np.where(v > _ZERO, _ONE, _ZERO)


# --------------------------------------------------------------------------------------
# §3b / §3c: the optimizers, on a parameter array P (M, k) with its gradient G (M, k);
# per-member values are (M, 1) columns.
# --------------------------------------------------------------------------------------

def sgd_update(P, G, buf, t: int, *, neg_lr, wd, use_wd, mu, use_mu, one_minus_tau, nesterov: bool):
    """SPEC §3b: returns (P, buf)."""
    d = np.where(use_wd, G + wd * P, G)
    if t == 0:
        v = d
    else:
        v = mu * buf + one_minus_tau * d
    buf = np.where(use_mu, v, buf)
    dm = d + mu * v if nesterov else v
    d = np.where(use_mu, dm, d)
    return P + neg_lr * d, buf


def lerp(a, e, w: np.float32):
    """torch.lerp(a, e, w) on CPU, w a float32 scalar (SPEC §3c)."""
    if abs(float(w)) < 0.5:
        return a + w * (e - a)
    return e - (e - a) * (_ONE - w)


def adam_tables(steps: int, betas):
    """bc1[t] (float64) and bc2s[t] (float32) of SPEC §3c, s = min(t + 1, 2**24)."""
    beta1, beta2 = float(betas[0]), float(betas[1])
    bc1, bc2s = [], []
    for t in range(steps):
        s = min(t + 1, 2**24)
        bc1.append(1 - beta1**s)
        bc2s.append(F32((1 - beta2**s) ** 0.5))
    return np.array(bc1, dtype=np.float64), np.array(bc2s, dtype=np.float32)


def adam_update(P, G, m, v, vmax, t: int, *, lr64, wd, use_wd, eps32, w1, b2, w2, bc1, bc2s, amsgrad: bool,
                decoupled: bool, adamw_factor=None):
    """SPEC §3c, Adam (AdamW with ``decoupled``): returns (P, m, v, vmax)."""
    if decoupled:
        P = np.where(use_wd, P * adamw_factor, P)
        g = G
    else:
        g = np.where(use_wd, G + wd * P, G)
    m = lerp(m, g, w1)
    v = v * b2
    w2g = w2 * g
    v = v + w2g * g
    if amsgrad:
        vmax = np.maximum(vmax, v)  # NaN wins
        vv = vmax
    else:
        vv = v
    den = np.sqrt(vv)  # IEEE sqrt
    den = den / bc2s[t]
    den = den + eps32
    c = (-(lr64 / bc1[t])).astype(np.float32)  # float64 on the host, then f32
    cm = c * m
    P = P + cm / den
    return P, m, v, vmax


# --------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------

@dataclass
class RunV3:
    weight: np.ndarray       # float32 (M, d), (M,) for d = 1; NaN where diverged
    bias: np.ndarray         # float32 (M,); +0.0 without bias; NaN where diverged
    diverged_at: np.ndarray  # int64 (M,)


def _per_member(v, m: int) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.full(m, arr[0])
    assert arr.size == m, (arr.size, m)
    return arr.astype(np.float32)


def _per_member64(v, m: int) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.full(m, arr[0])
    assert arr.size == m, (arr.size, m)
    return arr


def train_v3(seeds, lrs, steps: int, *, inputs: int = 1, bias: bool = True, activation: str = "identity",
             loss: str = "mse", leaky_slope: float = 0.01, init_scale=1.0, problem: str = "teacher", a=2.0,
             c: float = 1.0, target_activation=None, lo: float = 1.0, hi: float = 5.0, x_dist: str = "uniform",
             x_mean: float = 0.0, x_std: float = 1.0, noise=0.0, batch_size: int = 1, optimizer: str = "sgd",
             momentum=0.0, weight_decay=0.0, dampening: float = 0.0, nesterov: bool = False,
             betas=(0.9, 0.999), eps=1e-8, amsgrad: bool = False) -> RunV3:
    """A run as SPEC §6 describes it (with §2, §2b, §3b, §3c, §4), for seeds in [0, 2**64).

    ``optimizer``: "sgd" (momentum, weight_decay, dampening, nesterov), "adam" (weight_decay,
    eps, betas, amsgrad) or "adamw" (Adam with decoupled weight decay; ``weight_decay`` as given,
    no default of its own here). ``problem="linear"`` (v2's) is the teacher with d = 1.
    """
    d = int(inputs)
    assert 1 <= d <= 4096, d
    if problem == "linear":
        assert d == 1, "problem='linear' has one input"
    elif problem != "teacher":
        raise ValueError(f"problem {problem!r}")
    assert activation in ACTIVATIONS and loss in LOSSES, (activation, loss)
    if loss == "bce":
        assert activation == "identity", "bce needs the identity"
    tact = activation if target_activation is None else target_activation
    assert tact in ACTIVATIONS, tact

    seeds = S._u64(seeds).reshape(-1)
    m = seeds.size
    f = F32
    slope = f(leaky_slope)
    a32 = np.asarray(a, dtype=np.float64).astype(np.float32).reshape(-1)
    if a32.size == 1:
        a32 = np.full(d, a32[0], np.float32)
    assert a32.shape == (d,), a32.shape
    c32, lo32, span32 = f(c), f(lo), f(float(hi) - float(lo))
    mean32, std32 = f(x_mean), f(x_std)
    sigma = _per_member(noise, m)
    use_noise = sigma != 0
    bsz = int(batch_size)
    batch32 = f(bsz)
    col = lambda v: v[:, None]  # noqa: E731  (M,) -> (M, 1)

    w, b = init_v3(seeds, d, bias=bias, init_scale=init_scale)
    P = np.concatenate([w, b[:, None]], axis=1) if bias else w.copy()  # (M, d [+1])

    # optimizer state and per-member values
    if optimizer == "sgd":
        neg_lr = col(-_per_member(lrs, m))
        mu = col(_per_member(momentum, m))
        wd = col(_per_member(weight_decay, m))
        use_mu, use_wd = mu != 0, wd != 0
        one_minus_tau = f(1.0 - float(dampening))
        buf = np.zeros_like(P)
    elif optimizer in ("adam", "adamw"):
        lr64 = col(_per_member64(lrs, m))
        wd64 = col(_per_member64(weight_decay, m))
        wd = wd64.astype(np.float32)
        use_wd = wd != 0
        eps32 = col(_per_member(eps, m))
        b2 = f(betas[1])
        w1 = f(1.0 - float(betas[0]))
        w2 = f(1.0 - float(betas[1]))
        bc1, bc2s = adam_tables(steps, betas)
        adamw_factor = (1 - lr64 * wd64).astype(np.float32) if optimizer == "adamw" else None
        mom = np.zeros_like(P)
        sq = np.zeros_like(P)
        sqmax = np.zeros_like(P)
    else:
        raise ValueError(f"optimizer {optimizer!r}")

    div = np.full(m, -1, dtype=np.int64)
    chunk = max(1, (1 << 20) // max(1, bsz * m * d))  # steps whose samples are drawn at once
    with np.errstate(all="ignore"):
        for t0 in range(0, steps, chunk):
            t1 = min(steps, t0 + chunk)
            n0, n1 = t0 * bsz, t1 * bsz
            X = data_x(seeds, n0, n1, d, x_dist=x_dist, lo32=lo32, span32=span32, mean32=mean32, std32=std32)
            E = noise_eps(seeds, n0, n1) if use_noise.any() else None
            T = teacher_targets(X, E, a32=a32, c32=c32, loss=loss, target_activation=tact, slope=slope,
                                sigma=sigma, use_noise=use_noise)
            _check32(T)
            for t in range(t0, t1):
                j0 = t * bsz - n0
                x = X[j0:j0 + bsz]          # (B, M, d)
                tg = T[j0:j0 + bsz]         # (B, M)
                wcur = P[:, :d]
                z = dot(wcur[None], x)      # (B, M)
                if bias:
                    z = z + P[:, d][None]
                if loss == "mse":
                    y = act_forward(activation, z, slope)
                    diff = y - tg
                    gy = _TWO * diff
                    gz = act_backward(activation, z, y, gy, slope)
                else:
                    gz = bce_grad(z, tg)
                gwj = gz[:, :, None] * x   # (B, M, d): gw_i = gz * x_i per sample
                gw, gb = gwj[0], gz[0]
                for j in range(1, bsz):    # left to right over the samples
                    gw = gw + gwj[j]
                    gb = gb + gz[j]
                if bsz > 1:
                    gw = gw / batch32
                    gb = gb / batch32
                G = np.concatenate([gw, gb[:, None]], axis=1) if bias else gw
                if optimizer == "sgd":
                    P, buf = sgd_update(P, G, buf, t, neg_lr=neg_lr, wd=wd, use_wd=use_wd, mu=mu, use_mu=use_mu,
                                        one_minus_tau=one_minus_tau, nesterov=nesterov)
                    _check32(P, buf)
                else:
                    P, mom, sq, sqmax = adam_update(
                        P, G, mom, sq, sqmax, t, lr64=lr64, wd=wd, use_wd=use_wd, eps32=eps32, w1=w1, b2=b2,
                        w2=w2, bc1=bc1, bc2s=bc2s, amsgrad=amsgrad, decoupled=optimizer == "adamw",
                        adamw_factor=adamw_factor)
                    _check32(P, mom, sq, sqmax)
                newly = (div < 0) & ~np.isfinite(P).all(axis=1)
                div[newly] = t

    gone = div >= 0
    nan = F32("nan")
    w = np.where(gone[:, None], nan, P[:, :d]).astype(np.float32)
    b = P[:, d] if bias else np.zeros(m, np.float32)
    b = np.where(gone, nan, b).astype(np.float32)  # §4: a diverged member's b is NaN, with bias or not
    if d == 1:
        w = w[:, 0].copy()
    _check32(w, b)
    return RunV3(weight=w, bias=b, diverged_at=div)
