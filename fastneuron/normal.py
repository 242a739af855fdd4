"""Standard normal draws from Philox words, bit for bit the same on every backend (SPEC §2b).

No library transcendental is used (SLEEF, libdevice, libm and NumPy differ by an ulp
between them): everything is correctly rounded float32 ``+ - * /`` and ``sqrt``, each
rounded separately (no FMA, no reassociation), exact integer and bit operations,
exact int <-> float conversions and selects. Our own ``log32`` (FreeBSD's ``logf``
reduction and polynomial, without its special cases) and ``sincos2pi`` (argument
reduction in turns to the nearest quarter turn, then fixed polynomials) are evaluated
in a fixed order, written here one rounded operation per line.

Words to normals (Box-Muller), for the pairs ``(ra, rb) = (r0, r1)`` and ``(r2, r3)``
of one Philox block::

    u   = float32((ra >> 8) + 1) * 2**-24      # in [2**-24, 1], exact, never 0
    v   = float32(rb >> 8) * 2**-24            # in [0, 1), exact
    rad = sqrt(-2 * log32(u))                  # -2*L is exact; IEEE sqrt
    c, s = sincos2pi(v)                        # cos(2*pi*v), sin(2*pi*v)
    za  = rad * c
    zb  = rad * s

giving ``(z0, z1, z2, z3) = (za, zb)`` of (r0, r1), then of (r2, r3).

Measured errors, exhaustively over every input the draw can produce (all 2**24 u, all
2**24 v), in float32 ulps of the exact value: ``log32`` < 0.83, ``cos2pi``/``sin2pi``
< 1.57 (away from the exact zeros at v = 1/4, 3/4), ``rad`` < 0.99, and ``za``/``zb``
< 3.3 on 1.6e7 random pairs plus every smallest-u word; the bounds tests assert are
:data:`LOG_MAX_ULP`, :data:`SINCOS_MAX_ULP`, :data:`Z_MAX_ULP`.

Written with elementwise torch ops only (so it runs eagerly on CPU and CUDA and fuses
under ``torch.compile``); float constants are Python floats that are exactly float32
values, so they mean the same whether a kernel holds them as float or double. There is
no division by a constant (which Inductor could turn into a multiplication by the
reciprocal): the only division, ``f / (2 + f)``, has a tensor divisor. The square root
is :func:`fastneuron.optim_adam.sqrt_rn` (through float64: exact), as torch's CPU
float32 sqrt is not correctly rounded.
"""

from __future__ import annotations

import numpy as np
import torch

from .optim_adam import sqrt_rn

#: The error bounds (float32 ulps of the exact value) the tests assert; see the docstring.
LOG_MAX_ULP = 1.0
SINCOS_MAX_ULP = 2.0
Z_MAX_ULP = 4.0


def _f32(bits: int) -> float:
    """The float32 with these bits, as the Python float holding exactly that value."""
    return float(np.array(bits, dtype=np.uint32).view(np.float32))


# --- log32: FreeBSD e_logf.c's constants ---------------------------------------------
#: ``0x3f800000 - 0x3f3504f3``: moves mantissas >= sqrt(2) into the next binade.
LOG_SHIFT = 0x004AFB0D
#: Bits of float32(sqrt(0.5)) (0.70710677): the reduced x lies in [sqrt(0.5), sqrt(2)).
LOG_SQRTHALF_BITS = 0x3F3504F3
LN2_HI = _f32(0x3F317180)  # 6.9313812256e-01, 7 trailing zero bits: k*LN2_HI is exact
LN2_LO = _f32(0x3717F7D1)  # 9.0580006145e-06
LG1 = _f32(0x3F2AAAAA)  # 0xaaaaaa * 2**-24 = 0.66666662693
LG2 = _f32(0x3ECCCE13)  # 0xccce13 * 2**-25 = 0.40000972152
LG3 = _f32(0x3E91E9EE)  # 0x91e9ee * 2**-25 = 0.28498786688
LG4 = _f32(0x3E789E26)  # 0xf89e26 * 2**-26 = 0.24279078841

# --- sincos2pi: polynomials in f (turns), f in [-1/8, 1/8], z = f*f ----------------------
#: sin(2*pi*f) ~ f*(S1 + z*(S3 + z*(S5 + z*S7))); float32 minimax-style fit (relative).
S1 = _f32(0x40C90FDB)  # 6.2831854820251465 (float32(2*pi))
S3 = _f32(0xC2255E12)  # -41.34186553955078
S5 = _f32(0x42A34052)  # 81.62562561035156
S7 = _f32(0xC2998CC8)  # -76.77496337890625
#: cos(2*pi*f) ~ 1 + z*(C2 + z*(C4 + z*(C6 + z*C8))).
C2 = _f32(0xC19DE9E6)  # -19.739208221435547
C4 = _f32(0x4281E0D8)  # 64.93914794921875
C6 = _f32(0xC2AAD95B)  # -85.42452239990234
C8 = _f32(0x426A7BF7)  # 58.62105941772461

TWO_M24 = 2.0 ** -24  # exact in float32


def log32(u: torch.Tensor) -> torch.Tensor:
    """Natural log of float32 ``u`` in [2**-24, 1] (positive normal floats in general).

    Operations in order (int32 on the bits of u, float32 otherwise, each rounded)::

        i    = bits(u)                          # int32
        ix   = i + 0x004AFB0D                   # 0x3f800000 - 0x3f3504f3
        k    = (ix >> 23) - 127                 # exponent, int32
        ix   = (ix & 0x007FFFFF) + 0x3F3504F3
        x    = float(bits ix)                   # in [sqrt(1/2), sqrt(2))
        f    = x - 1                            # exact
        s    = f / (2 + f)                      # 2 + f rounded, then IEEE division
        z    = s * s
        w    = z * z
        t1   = w * (LG2 + w * LG4)              # w*LG4, + LG2, * w
        t2   = z * (LG1 + w * LG3)              # w*LG3, + LG1, * z
        R    = t2 + t1
        hfsq = (0.5 * f) * f
        dk   = float32(k)                       # exact
        L    = s * (hfsq + R)
        L    = L + dk * LN2_LO
        L    = L - hfsq
        L    = L + f
        L    = L + dk * LN2_HI                  # exact product
        return L

    ``log32(1)`` is +0 (all terms are +0).
    """
    i = u.view(torch.int32)
    ix = i + LOG_SHIFT
    k = (ix >> 23) - 127
    ix = (ix & 0x007FFFFF) + LOG_SQRTHALF_BITS
    x = ix.view(torch.float32)
    f = x - 1.0
    s = f / (f + 2.0)
    z = s * s
    w = z * z
    t1 = w * (w * LG4 + LG2)
    t2 = z * (w * LG3 + LG1)
    r = t2 + t1
    hfsq = (f * 0.5) * f
    dk = k.to(torch.float32)
    lg = s * (hfsq + r)
    lg = lg + dk * LN2_LO
    lg = lg - hfsq
    lg = lg + f
    lg = lg + dk * LN2_HI
    return lg


def sincos2pi(v: torch.Tensor):
    """(cos(2*pi*v), sin(2*pi*v)) of float32 ``v`` in [0, 1) (any multiple of 2**-24 there).

    Operations in order (float32, each rounded; the reduction is exact)::

        t  = v * 4                               # exact
        j  = int32(t + 0.5)                      # t + 0.5 exact; truncation = round half up
        f  = v - float32(j) * 0.25               # exact, in [-1/8, 1/8]
        z  = f * f
        ps = ((S7 * z + S5) * z + S3) * z + S1   # Horner, each * and + rounded
        s  = f * ps                              # sin(2*pi*f)
        pc = ((C8 * z + C6) * z + C4) * z + C2
        c  = 1 + z * pc                          # cos(2*pi*f)
        q  = j & 3
        (cos, sin) = (c, s) if q == 0, (-s, c) if q == 1, (-c, -s) if q == 2, (s, -c) if q == 3

    Negation flips the sign bit. Exact quarters: v = 0 gives (1, +0), v = 1/4 gives
    (-0, 1), v = 1/2 gives (-1, -0), v = 3/4 gives (+0, -1).
    """
    t = v * 4.0
    j = (t + 0.5).to(torch.int32)
    jf = j.to(torch.float32)  # exact, 0 .. 4
    f = v - jf * 0.25
    z = f * f
    ps = S7 * z + S5
    ps = ps * z + S3
    ps = ps * z + S1
    s = f * ps
    pc = C8 * z + C6
    pc = pc * z + C4
    pc = pc * z + C2
    c = z * pc + 1.0
    # The quadrant q = j & 3 read off float compares of jf (j = 4 is q = 0): the same
    # selection, with float masks where int ones cost a conversion per select in compiled
    # code (a compiled normal_block went from 9.9 to 6.0 ns a word; a noisy run gained 3%).
    q0 = (jf == 0.0) | (jf == 4.0)
    q1 = jf == 1.0
    q2 = jf == 2.0
    cos = torch.where(q0, c, torch.where(q1, -s, torch.where(q2, -c, s)))
    sin = torch.where(q0, s, torch.where(q1, c, torch.where(q2, -s, -c)))
    return cos, sin


def cos2pi(v: torch.Tensor) -> torch.Tensor:
    """cos(2*pi*v): the first value of :func:`sincos2pi`."""
    return sincos2pi(v)[0]


def sin2pi(v: torch.Tensor) -> torch.Tensor:
    """sin(2*pi*v): the second value of :func:`sincos2pi`."""
    return sincos2pi(v)[1]


def box_muller(ra: torch.Tensor, rb: torch.Tensor):
    """Two standard normals (za, zb) from words ra, rb (int64 tensors in [0, 2**32))::

        u   = float32((ra >> 8) + 1) * 2**-24   # exact, in [2**-24, 1]
        v   = float32(rb >> 8) * 2**-24         # exact, in [0, 1)
        rad = sqrt(-2 * log32(u))               # -2*L exact, IEEE sqrt
        c, s = sincos2pi(v)
        za  = rad * c
        zb  = rad * s

    u = 1 (``ra >> 8 == 2**24 - 1``) gives L = +0, rad = sqrt(-0) = -0 and z = -0 * c.
    """
    # (ra >> 8) < 2**24 fits int32; int32 -> float32 is one instruction, int64 -> float32 is
    # not (AVX2 has no such conversion): a compiled run with label noise went from 7.4e7 to
    # 8.9e7 neuron-steps/s (2**20 members, 2 cores of the cpu family 23 machine).
    u = ((ra >> 8).to(torch.int32) + 1).to(torch.float32) * TWO_M24
    v = (rb >> 8).to(torch.int32).to(torch.float32) * TWO_M24
    rad = sqrt_rn(log32(u) * -2.0)
    c, s = sincos2pi(v)
    return rad * c, rad * s


def normal_block(r0: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, r3: torch.Tensor):
    """Four float32 standard normals (z0, z1, z2, z3) from the four words of one Philox
    block (int64 tensors of values in [0, 2**32), as :func:`fastneuron.rng.philox4x32`
    returns them): ``(z0, z1) = box_muller(r0, r1)``, ``(z2, z3) = box_muller(r2, r3)``."""
    z0, z1 = box_muller(r0, r1)
    z2, z3 = box_muller(r2, r3)
    return z0, z1, z2, z3
