"""SPEC.md v1 written again in NumPy, independently of fastneuron (no torch, no fastneuron).

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
          lo: float = 1.0, hi: float = 5.0, log_every: Optional[int] = None) -> Run:
    """A run as SPEC.md §1-§5 describes it, for seeds in [0, 2**64) and lrs > 0.

    The history holds the raw (w, b) after steps 0, k, 2k, ... (non-finite values of a
    diverged member as the arithmetic left them); the final (w, b) are NaN where diverged.
    """
    seeds = _u64(seeds).reshape(-1)
    m = seeds.size
    s_lo, s_hi = split_seeds(seeds)
    f = np.float32
    neg_lr = -_per_member(lrs, m)
    mu = _per_member(momentum, m)
    wd = _per_member(weight_decay, m)
    a32, c32, lo32 = f(a), f(c), f(lo)
    span32 = f(float(hi) - float(lo))
    one_minus_tau = f(1.0 - float(dampening))  # (1 - tau) rounded to float32 first
    batch32 = f(batch_size)
    two = f(2)
    use_wd = wd != 0
    use_mu = mu != 0

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
                    block = [lo32 + span32 * uniform(r) for r in words]
                    block_q = q
                x = block[n % 4]
                y = w * x
                y = y + b
                tgt = a32 * x
                tgt = tgt + c32
                g = two * (y - tgt)
                gx = g * x
                gw = gx if gw is None else gw + gx
                gb = g if gb is None else gb + g
            if batch_size > 1:
                gw = gw / batch32
                gb = gb / batch32
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
                new.append(p + neg_lr * d)
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
