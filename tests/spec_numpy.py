"""SPEC.md written again in NumPy, independently of fastneuron (no torch, no fastneuron):
v1 (§1-§5), and v2's normals (§2b), label noise, Gaussian inputs and lr schedules (§3d).

This is a second reading of the contract, used by the tests as an oracle. Integer work is
done in uint64 arrays holding uint32 values (products of two 32-bit words fit in 64 bits
exactly); float work is float32 arrays and ``np.float32`` constants only, one NumPy
operation per SPEC line, so every line is separately rounded float32 arithmetic
(NumPy never fuses a multiply and an add). :func:`train` checks that nothing was upcast
to float64 on the way.

Vectorized over members: every per-member quantity is an array of shape (M,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

U32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_MUL_C0 = np.uint64(0xD2511F53)
_MUL_C2 = np.uint64(0xCD9E8D57)
_KEY_INC0 = np.uint64(0x9E3779B9)
_KEY_INC1 = np.uint64(0xBB67AE85)
_SCALE = np.float32(4.6566127342e-10)

DATA_KEY = (0, 0)
INIT_KEY = (1, 0)
NOISE_KEY = (2, 0)


def _u64(v) -> np.ndarray:
    """Python ints / arrays of values in [0, 2**64) as a uint64 array (no sign games)."""
    if isinstance(v, np.ndarray):
        if v.dtype == np.uint64:
            return v
        assert v.dtype.kind in "iu" and (v.dtype.kind == "u" or (v >= 0).all()), v.dtype
        return v.astype(np.uint64)
    if isinstance(v, (list, tuple, range)):
        return np.array([int(x) for x in v], dtype=np.uint64)
    return np.array(int(v), dtype=np.uint64)


def philox(key, c0, c1, c2, c3, rounds: int = 10):
    """Philox4x32-``rounds``: four uint32 arrays (broadcast) of counter words, key (k0, k1).

    Returns four uint32 arrays.
    """
    k0 = _u64(int(key[0]) & 0xFFFFFFFF)
    k1 = _u64(int(key[1]) & 0xFFFFFFFF)
    c0, c1, c2, c3 = (_u64(c) & U32 for c in (c0, c1, c2, c3))
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    for _ in range(rounds):
        p0 = c0 * _MUL_C0  # < 2**64: exact
        p2 = c2 * _MUL_C2
        hi0, lo0 = p0 >> _SHIFT32, p0 & U32
        hi2, lo2 = p2 >> _SHIFT32, p2 & U32
        c0, c1, c2, c3 = hi2 ^ c1 ^ k0, lo2, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _KEY_INC0) & U32
        k1 = (k1 + _KEY_INC1) & U32
    return tuple(np.asarray(c, dtype=np.uint64).astype(np.uint32) for c in (c0, c1, c2, c3))


def uniform(word) -> np.ndarray:
    """uint32 word(s) to float32 in [0, 1), as Triton's ``uint_to_uniform_float``."""
    i = np.asarray(word, dtype=np.uint32).view(np.int32)
    i = np.where(i < 0, ~i, i)  # ~i == -i - 1
    u = i.astype(np.float32) * _SCALE
    assert u.dtype == np.float32
    return u


def split_seeds(seeds):
    s = _u64(seeds)
    return s & U32, s >> _SHIFT32


def init(seeds):
    """(w0, b0) float32 arrays: the init stream, key (1, 0), counter (0, 0, s_lo, s_hi)."""
    s_lo, s_hi = split_seeds(seeds)
    zero = np.zeros_like(s_lo)
    r0, r1, _, _ = philox(INIT_KEY, zero, zero, s_lo, s_hi)
    one, two = np.float32(1), np.float32(2)
    return -one + two * uniform(r0), -one + two * uniform(r1)


def sample(seeds, n: int, lo32: np.float32, span32: np.float32):
    """Sample n (0-based) of each member's data stream, float32 (M,)."""
    s_lo, s_hi = split_seeds(seeds)
    q = n // 4
    words = philox(DATA_KEY, q & 0xFFFFFFFF, q >> 32, s_lo, s_hi)
    return lo32 + span32 * uniform(words[n % 4])


@dataclass
class Run:
    weight: np.ndarray  # float32 (M,), NaN where diverged
    bias: np.ndarray
    diverged_at: np.ndarray  # int64 (M,)
    history_steps: np.ndarray  # int64 (L,)
    history_weight: Optional[np.ndarray]  # float32 (L, M): raw values after each logged step
    history_bias: Optional[np.ndarray]


def _per_member(v, m: int) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.full(m, arr[0])
    assert arr.size == m
    return arr.astype(np.float32)


def _check32(*arrays):
    for a in arrays:
        assert a.dtype == np.float32, f"float64 crept in: {a.dtype}"


def train(seeds, lrs, steps: int, *, batch_size: int = 1, momentum=0.0, weight_decay=0.0,
          dampening: float = 0.0, nesterov: bool = False, a: float = 2.0, c: float = 1.0,
          lo: float = 1.0, hi: float = 5.0, log_every: Optional[int] = None, noise=0.0,
          x_dist: str = "uniform", x_mean: float = 0.0, x_std: float = 1.0,
          lr_factors: Optional[np.ndarray] = None) -> Run:
    """A run as SPEC.md §1-§5 describes it, for seeds in [0, 2**64) and lrs > 0.

    v2: ``noise`` (per member sigma, §2b), ``x_dist="normal"`` with ``x_mean``, ``x_std``
    (§2b), ``lr_factors`` (float64 (steps,), the schedule's f[t], §3d: applied to the lrs
    as given, in float64, not to their float32 values).

    The history holds the raw (w, b) after steps 0, k, 2k, ... (non-finite values of a
    diverged member as the arithmetic left them); the final (w, b) are NaN where diverged.
    """
    seeds = _u64(seeds).reshape(-1)
    m = seeds.size
    s_lo, s_hi = split_seeds(seeds)
    f = np.float32
    neg_lr = -_per_member(lrs, m)
    neg_lr64 = -np.broadcast_to(np.asarray(lrs, dtype=np.float64).reshape(-1), (m,))  # §3d: the lrs as given
    mu = _per_member(momentum, m)
    wd = _per_member(weight_decay, m)
    a32, c32, lo32 = f(a), f(c), f(lo)
    span32 = f(float(hi) - float(lo))
    one_minus_tau = f(1.0 - float(dampening))  # (1 - tau) rounded to float32 first
    batch32 = f(batch_size)
    two = f(2)
    use_wd = wd != 0
    use_mu = mu != 0
    sigma = _per_member(noise, m)
    use_noise = sigma != 0
    mean32, std32 = f(x_mean), f(x_std)

    w, b = init(seeds)
    bufs = [np.zeros(m, np.float32), np.zeros(m, np.float32)]
    div = np.full(m, -1, dtype=np.int64)
    logged = list(range(0, steps, log_every)) if log_every else []
    hist_w = np.empty((len(logged), m), np.float32) if log_every else None
    hist_b = np.empty((len(logged), m), np.float32) if log_every else None

    block_q, block = None, None
    with np.errstate(all="ignore"):
        for t in range(steps):
            gw = gb = None
            for j in range(batch_size):
                n = t * batch_size + j
                q = n // 4
                if q != block_q:
                    words = philox(DATA_KEY, _u64(q & 0xFFFFFFFF), _u64(q >> 32), s_lo, s_hi)
                    if x_dist == "normal":
                        block = [mean32 + std32 * z for z in normal_block(*words)]
                    else:
                        block = [lo32 + span32 * uniform(r) for r in words]
                    if use_noise.any():
                        eps = normal_block(*philox(NOISE_KEY, _u64(q & 0xFFFFFFFF), _u64(q >> 32), s_lo, s_hi))
                    block_q = q
                x = block[n % 4]
                y = w * x
                y = y + b
                tgt = a32 * x
                tgt = tgt + c32
                if use_noise.any():
                    tgt = np.where(use_noise, tgt + sigma * eps[n % 4], tgt)
                g = two * (y - tgt)
                gx = g * x
                gw = gx if gw is None else gw + gx
                gb = g if gb is None else gb + g
            if batch_size > 1:
                gw = gw / batch32
                gb = gb / batch32
            step_neg_lr = neg_lr
            if lr_factors is not None:  # §3d: f32(-(lr * f[t])), lr the float64 given, the product in float64
                step_neg_lr = (neg_lr64 * np.float64(lr_factors[t])).astype(np.float32)
            new = []
            for k, (p, gp) in enumerate(((w, gw), (b, gb))):
                d = np.where(use_wd, gp + wd * p, gp)
                if t == 0:
                    v = d
                else:
                    v = mu * bufs[k] + one_minus_tau * d
                bufs[k] = np.where(use_mu, v, bufs[k])
                if nesterov:
                    dm = d + mu * v
                else:
                    dm = v
                d = np.where(use_mu, dm, d)
                new.append(p + step_neg_lr * d)
            w, b = new
            _check32(w, b, *bufs)
            newly = (div < 0) & ~(np.isfinite(w) & np.isfinite(b))
            div[newly] = t
            if log_every and t % log_every == 0:
                hist_w[t // log_every] = w
                hist_b[t // log_every] = b
    gone = div >= 0
    nan = np.float32("nan")
    w = np.where(gone, nan, w).astype(np.float32)
    b = np.where(gone, nan, b).astype(np.float32)
    return Run(weight=w, bias=b, diverged_at=div, history_steps=np.array(logged, dtype=np.int64),
               history_weight=hist_w, history_bias=hist_b)


# ======================================================================================
# §2b: normals. Standard normal draws from the four words of a Philox block, written
# from the SPEC text alone: float32 arrays and np.float32 constants (from their bits),
# one rounded operation a line, int32 bit work, np.where for the selects.
# ======================================================================================

def _f32_bits(bits: int) -> np.float32:
    return np.array(bits, dtype=np.uint32).view(np.float32)[()]


_N_LN2_HI = _f32_bits(0x3F317180)
_N_LN2_LO = _f32_bits(0x3717F7D1)
_N_LG1 = _f32_bits(0x3F2AAAAA)
_N_LG2 = _f32_bits(0x3ECCCE13)
_N_LG3 = _f32_bits(0x3E91E9EE)
_N_LG4 = _f32_bits(0x3E789E26)
_N_S1 = _f32_bits(0x40C90FDB)
_N_S3 = _f32_bits(0xC2255E12)
_N_S5 = _f32_bits(0x42A34052)
_N_S7 = _f32_bits(0xC2998CC8)
_N_C2 = _f32_bits(0xC19DE9E6)
_N_C4 = _f32_bits(0x4281E0D8)
_N_C6 = _f32_bits(0xC2AAD95B)
_N_C8 = _f32_bits(0x426A7BF7)


def log32(u: np.ndarray) -> np.ndarray:
    """SPEC §2b log32 of float32 u in [2**-24, 1]."""
    u = np.asarray(u, dtype=np.float32)
    i = u.view(np.int32)
    ix = i + np.int32(0x3F800000 - 0x3F3504F3)
    k = (ix >> np.int32(23)) - np.int32(127)
    ix = (ix & np.int32(0x007FFFFF)) + np.int32(0x3F3504F3)
    x = ix.view(np.float32)
    one = np.float32(1)
    two = np.float32(2)
    half = np.float32(0.5)
    f = x - one
    d = two + f
    s = f / d
    z = s * s
    w = z * z
    t1 = _N_LG4 * w
    t1 = t1 + _N_LG2
    t1 = t1 * w
    t2 = _N_LG3 * w
    t2 = t2 + _N_LG1
    t2 = t2 * z
    r = t2 + t1
    hfsq = half * f
    hfsq = hfsq * f
    dk = k.astype(np.float32)
    lg = hfsq + r
    lg = s * lg
    lg = lg + dk * _N_LN2_LO
    lg = lg - hfsq
    lg = lg + f
    lg = lg + dk * _N_LN2_HI
    _check32(lg)
    return lg


def sincos2pi(v: np.ndarray):
    """SPEC §2b (cos(2*pi*v), sin(2*pi*v)) of float32 v in [0, 1)."""
    v = np.asarray(v, dtype=np.float32)
    t = v * np.float32(4)
    t = t + np.float32(0.5)
    j = t.astype(np.int32)  # truncation; t >= 0.5
    jf = j.astype(np.float32)
    jf = jf * np.float32(0.25)
    f = v - jf
    z = f * f
    ps = _N_S7 * z
    ps = ps + _N_S5
    ps = ps * z
    ps = ps + _N_S3
    ps = ps * z
    ps = ps + _N_S1
    s = f * ps
    pc = _N_C8 * z
    pc = pc + _N_C6
    pc = pc * z
    pc = pc + _N_C4
    pc = pc * z
    pc = pc + _N_C2
    c = z * pc
    c = c + np.float32(1)
    q = j & np.int32(3)
    cos = np.where(q == 0, c, np.where(q == 1, -s, np.where(q == 2, -c, s)))
    sin = np.where(q == 0, s, np.where(q == 1, c, np.where(q == 2, -s, -c)))
    _check32(cos, sin)
    return cos, sin


def box_muller(ra, rb):
    """SPEC §2b: two float32 normals from uint32 words ra, rb (uint64 arrays)."""
    ra = _u64(ra)
    rb = _u64(rb)
    nu = (ra >> np.uint64(8)) + np.uint64(1)
    nv = rb >> np.uint64(8)
    scale = np.float32(2.0 ** -24)
    u = nu.astype(np.float32) * scale
    v = nv.astype(np.float32) * scale
    lg = log32(u)
    m2l = np.float32(-2) * lg
    rad = np.sqrt(m2l)  # NumPy's float32 sqrt is IEEE's
    c, s = sincos2pi(v)
    za = rad * c
    zb = rad * s
    _check32(za, zb)
    return za, zb


def normal_block(r0, r1, r2, r3):
    """SPEC §2b: (z0, z1, z2, z3) of one Philox block's words (uint64 arrays of uint32)."""
    z0, z1 = box_muller(r0, r1)
    z2, z3 = box_muller(r2, r3)
    return z0, z1, z2, z3
