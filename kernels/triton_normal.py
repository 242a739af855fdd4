"""Standard normal draws from Philox words for the Triton kernels (SPEC §2b).

The same operations, in the same order, as :mod:`fastneuron.normal` (whose docstrings
list them): float32 ``+ - *`` (kernels are compiled with ``enable_fp_fusion=False``, so
no FMA), ``tl.math.div_rn`` and ``tl.math.sqrt_rn`` for the IEEE division and square
root, integer and bit operations, exact conversions and selects. No libdevice
transcendental. Triton inlines these helpers into the kernels that call them.
"""

from __future__ import annotations

import triton
import triton.language as tl

# The float32 constants of fastneuron.normal (Python floats holding float32 values exactly).
LOG_SHIFT = tl.constexpr(0x004AFB0D)
LOG_SQRTHALF_BITS = tl.constexpr(0x3F3504F3)
LN2_HI = tl.constexpr(0.6931381225585938)  # 0x3F317180
LN2_LO = tl.constexpr(9.05800061445916e-06)  # 0x3717F7D1
LG1 = tl.constexpr(0.6666666269302368)  # 0x3F2AAAAA
LG2 = tl.constexpr(0.40000972151756287)  # 0x3ECCCE13
LG3 = tl.constexpr(0.2849878668785095)  # 0x3E91E9EE
LG4 = tl.constexpr(0.24279078841209412)  # 0x3E789E26
S1 = tl.constexpr(6.2831854820251465)  # 0x40C90FDB
S3 = tl.constexpr(-41.34186553955078)  # 0xC2255E12
S5 = tl.constexpr(81.62562561035156)  # 0x42A34052
S7 = tl.constexpr(-76.77496337890625)  # 0xC2998CC8
C2 = tl.constexpr(-19.739208221435547)  # 0xC19DE9E6
C4 = tl.constexpr(64.93914794921875)  # 0x4281E0D8
C6 = tl.constexpr(-85.42452239990234)  # 0xC2AAD95B
C8 = tl.constexpr(58.62105941772461)  # 0x426A7BF7
TWO_M24 = tl.constexpr(5.960464477539063e-08)  # 2**-24


@triton.jit
def _log32(u):
    """log of float32 ``u`` in [2**-24, 1], as :func:`fastneuron.normal.log32`."""
    i = u.to(tl.int32, bitcast=True)
    ix = i + LOG_SHIFT
    k = (ix >> 23) - 127
    ix = (ix & 0x007FFFFF) + LOG_SQRTHALF_BITS
    x = ix.to(tl.float32, bitcast=True)
    f = x - 1.0
    s = tl.math.div_rn(f, f + 2.0)
    z = s * s
    w = z * z
    t1 = w * (w * LG4 + LG2)
    t2 = z * (w * LG3 + LG1)
    r = t2 + t1
    hfsq = (f * 0.5) * f
    dk = k.to(tl.float32)
    lg = s * (hfsq + r)
    lg = lg + dk * LN2_LO
    lg = lg - hfsq
    lg = lg + f
    lg = lg + dk * LN2_HI
    return lg


@triton.jit
def _sincos2pi(v):
    """(cos(2*pi*v), sin(2*pi*v)) of float32 ``v`` in [0, 1), as
    :func:`fastneuron.normal.sincos2pi`."""
    t = v * 4.0
    j = (t + 0.5).to(tl.int32)
    f = v - j.to(tl.float32) * 0.25
    z = f * f
    ps = S7 * z + S5
    ps = ps * z + S3
    ps = ps * z + S1
    s = f * ps
    pc = C8 * z + C6
    pc = pc * z + C4
    pc = pc * z + C2
    c = z * pc + 1.0
    q = j & 3
    cos = tl.where(q == 0, c, tl.where(q == 1, -s, tl.where(q == 2, -c, s)))
    sin = tl.where(q == 0, s, tl.where(q == 1, c, tl.where(q == 2, -s, -c)))
    return cos, sin


@triton.jit
def _box_muller(ra, rb):
    """Two standard normals from uint32 words ra, rb, as :func:`fastneuron.normal.box_muller`."""
    u = ((ra >> 8) + 1).to(tl.float32) * TWO_M24
    v = (rb >> 8).to(tl.float32) * TWO_M24
    rad = tl.math.sqrt_rn(_log32(u) * -2.0)
    c, s = _sincos2pi(v)
    return rad * c, rad * s


@triton.jit
def _normal_block(r0, r1, r2, r3):
    """Four float32 standard normals from the four uint32 words of one Philox block,
    as :func:`fastneuron.normal.normal_block`."""
    z0, z1 = _box_muller(r0, r1)
    z2, z3 = _box_muller(r2, r3)
    return z0, z1, z2, z3
