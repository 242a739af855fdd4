"""float32 ``exp32``, ``tanh32`` and ``erf32``, bit for bit the same on every backend (SPEC §2c).

No library transcendental is used (SLEEF, libdevice, libm and NumPy differ by an ulp
between them): everything is correctly rounded float32 ``+ - * /``, each rounded
separately (no FMA, no reassociation), exact integer and bit operations, exact
int <-> float conversions and selects, in the fixed order that SPEC §2c lists one rounded
operation a line (the docstrings below repeat it).

- ``exp32``: FreeBSD ``e_expf.c``'s reduction ``x = k*ln2 + r`` (Cody-Waite, ln2 in a hi
  and a lo part) and its rational form ``1 - ((lo - r*c/(2 - c)) - hi)``, with one formula
  for every k (no separate k = 0 branch), and the scaling by ``2**k`` in two exact steps
  ``2**(k >> 1)`` and ``2**(k - (k >> 1))`` so that nothing overflows early at k = 128.
- ``tanh32``: an odd polynomial ``a + a*z*T(z)`` (z = a*a) for 2**-12 <= |x| < 0.625 (a
  relative minimax fit, float32 coefficients), ``1 - 2/(exp32(2|x|) + 1)`` above, ``x``
  itself below.
- ``erf32``: FreeBSD ``s_erff.c``'s ranges and rational approximations, its two ``expf``
  calls being ``exp32``.

Special values and the subnormal policy: no intermediate and no result is ever subnormal,
so a flush-to-zero mode (GPUs) cannot change a bit. Subnormal inputs count as zeros of
their sign for tanh32 and erf32 (giving ±0) and as tiny for exp32 (giving 1);
``exp32(x) = +0`` for x < -87.336540 (``0xC2AEAC4F``, the most negative x with
``e**x >= 2**-126``), ``+inf`` for x > 88.722832 (``0x42B17217``), ``exp32(-inf) = +0``,
``exp32(+inf) = +inf``; ``tanh32`` and ``erf32`` are odd (``f(-x)`` is ``f(x)`` with the
sign bit set, so ``f(-0) = -0``) and give ±1 at ±inf; a NaN input is returned as it is
(its bits unchanged).

Measured errors over every float32 input where the function is not saturated (SPEC §2c),
in float32 ulps of the exact value: exp32 < 0.92, tanh32 < 1.31, erf32 < 0.97; the bounds
the tests assert are :data:`EXP_MAX_ULP`, :data:`TANH_MAX_ULP`, :data:`ERF_MAX_ULP`.

Written with elementwise torch ops only (``torch.where`` for the selects,
``tensor.view(torch.int32)`` / ``.view(torch.float32)`` for the bit casts, no ``.item()``,
no data-dependent Python control flow), so it runs eagerly on CPU and CUDA and traces
under ``torch.compile``; float constants are Python floats holding float32 values
exactly. Every division has a tensor divisor (Inductor would turn a division by a Python
constant into a multiplication by its reciprocal); ``2 / d`` and ``1 / d`` are
``reciprocal(d) * 2`` and ``reciprocal(d)`` for torch, which are the same correctly
rounded values (scaling by 2 is exact).
"""

from __future__ import annotations

import numpy as np
import torch

#: The error bounds (float32 ulps of the exact value) the tests assert; see SPEC §2c.
EXP_MAX_ULP = 1.0
TANH_MAX_ULP = 2.0
ERF_MAX_ULP = 2.0


def _f32(bits: int) -> float:
    """The float32 with these bits, as the Python float holding exactly that value."""
    return float(np.array(bits, dtype=np.uint32).view(np.float32))


# --- exp32: FreeBSD e_expf.c ----------------------------------------------------------
EXP_INVLN2 = _f32(0x3FB8AA3B)  # 1.44269502162933349609
EXP_LN2_HI = _f32(0x3F317200)  # 0.693145751953125, 9 trailing zero bits: k*EXP_LN2_HI exact
EXP_LN2_LO = _f32(0x35BFBE8E)  # 1.42860676533018704504e-06
EXP_P1 = _f32(0x3E2AAA8F)  # 0xaaaa8f * 2**-26 = 0.16666625440120697021
EXP_P2 = _f32(0xBB355215)  # -0xb55215 * 2**-32 = -0.00276673329062759876
#: Bits of 88.722832: the largest x whose exp32 is finite (x above gives +inf).
EXP_HI_BITS = 0x42B17217
#: Bits of |-87.336540|: the most negative x with e**x >= 2**-126 (x below gives +0).
EXP_LO_BITS = 0x42AEAC4F
#: Bits of 2**-28: |x| below gives exp32(x) = 1.
EXP_SMALL_BITS = 0x31800000

# --- tanh32 ---------------------------------------------------------------------------
#: tanh(a) ~ a + a*z*T(z), z = a*a, 2**-12 <= a < 0.625: relative minimax fit of
#: (tanh(a) - a)/(a*z) with weight z, each coefficient rounded to float32 in turn
#: (lowest degree first, the rest refitted); |fit error of tanh| < 2**-27.8 relative.
TANH_T0 = _f32(0xBEAAAA9A)  # -0.3333328366279602
TANH_T1 = _f32(0x3E0883B0)  # 0.133314847946167
TANH_T2 = _f32(0xBD5C2199)  # -0.05374297872185707
TANH_T3 = _f32(0x3CA927EF)  # 0.020648924633860588
TANH_T4 = _f32(0xBBBB4691)  # -0.005715199280530214
TANH_TINY_BITS = 0x39800000  # 2**-12: |x| below gives tanh32(x) = x
TANH_MID_BITS = 0x3F200000  # 0.625: |x| from here on uses exp32
TANH_CLAMP_BITS = 0x41200000  # 10.0: |x| from here on computes at 10 (giving 1)

# --- erf32: FreeBSD s_erff.c ------------------------------------------------------------
ERF_ERX = _f32(0x3F58560B)  # 0.84506291151
ERF_EFX8 = _f32(0x3F8375D4)  # 1.0270333290 (8 * (2/sqrt(pi) - 1))
#: erf(x) = x + x*PP(z)/QQ(z), z = x*x, on 2**-28 <= |x| < 0.84375 (coefficients c0 .. cn).
ERF_PP = tuple(map(_f32, (0x3E0375D4, 0xBEA66BEB, 0xBCE9528F, 0xBBBD1489, 0xB7C756B1)))
ERF_QQ = tuple(map(_f32, (0x3F800000, 0x3ECBBBCE, 0x3D852A63, 0x3BA68116, 0x390AEE49, 0xB684E21A)))
#: erf(x) = ERX + PA(s)/QA(s), s = |x| - 1, on 0.84375 <= |x| < 1.25.
ERF_PA = tuple(map(_f32, (0xBB1ACDC6, 0x3ED46805, 0xBEBE9208, 0x3EA2FE54, 0xBDE31CC2, 0x3D1151B3, 0xBB0DF9C0)))
ERF_QA = tuple(map(_f32, (0x3F800000, 0x3DD9F331, 0x3F0A5785, 0x3D931AE7, 0x3E013307, 0x3C5F6E13, 0x3C445AA3)))
#: erfc(x) = exp(-z*z - 0.5625) * exp((z - x)*(z + x) + R(s)/S(s)) / x, s = 1/(x*x):
#: RA/SA on 1.25 <= |x| < 1/0.35, RB/SB on 1/0.35 <= |x| < 6.
ERF_RA = tuple(map(_f32, (0xBC21A093, 0xBF31A0B7, 0xC128F022, 0xC2798057, 0xC322658C, 0xC3389AE7, 0xC2A2932B,
                          0xC11D077E)))
ERF_SA = tuple(map(_f32, (0x3F800000, 0x419D35CE, 0x4309A863, 0x43D9486F, 0x442158C9, 0x43D6810B, 0x42D9451F,
                          0x40D23F7C, 0xBD777F97)))
ERF_RB = tuple(map(_f32, (0xBC21A092, 0xBF4C9DD4, 0xC18E104B, 0xC320A2EA, 0xC41F6441, 0xC480230B, 0xC3F1C275)))
ERF_SB = tuple(map(_f32, (0x3F800000, 0x41F2B459, 0x43A2E571, 0x44C01759, 0x4547FDBB, 0x451F90CE, 0x43ED43A7,
                          0xC1B38712)))
ERF_SMALL_BITS = 0x31800000  # 2**-28
ERF_A_BITS = 0x3F580000  # 0.84375
ERF_B_BITS = 0x3FA00000  # 1.25
ERF_D_BITS = 0x4036DB6E  # float32(1/0.35) = 2.857142925
ERF_ONE_BITS = 0x40C00000  # 6.0: |x| from here on gives ±1

_SIGN = -0x80000000  # int32 0x80000000
_ABS = 0x7FFFFFFF
_INF_BITS = 0x7F800000
_MIN_NORMAL_BITS = 0x00800000


def _poly(c, z: torch.Tensor) -> torch.Tensor:
    """``poly(z; c0 .. cn)`` (SPEC §2c): ``p = cn * z``, then for i = n-1 .. 1
    ``p = p + ci; p = p * z``, last ``p = p + c0``; each line rounded."""
    p = z * c[-1]
    for ci in c[-2:0:-1]:
        p = p + ci
        p = p * z
    return p + c[0]


def _abs_flushed(x: torch.Tensor):
    """(hx, ix, sgn, a): the bits of x, of |x|, the sign bit, and |x| as float32 with
    subnormals replaced by +0 (bit work and a select only)."""
    hx = x.view(torch.int32)
    ix = hx & _ABS
    sgn = hx & _SIGN
    ia = torch.where(ix < _MIN_NORMAL_BITS, 0, ix)
    return hx, ix, sgn, ia.view(torch.float32)


def _signed(r: torch.Tensor, sgn: torch.Tensor) -> torch.Tensor:
    """``float(bits(r) | sgn)``: r (>= 0) with the sign bit sgn."""
    return (r.view(torch.int32) | sgn).view(torch.float32)


def exp32(x: torch.Tensor) -> torch.Tensor:
    """e**x of float32 ``x`` (any shape, any value). Operations in order (int32 on the bits,
    float32 otherwise, each rounded)::

        hx    = bits(x); ix = hx & 0x7FFFFFFF
        over  = hx > 0x42B17217                 # x > 88.722832 (+inf, +NaN)
        under = hx < 0 and ix > 0x42AEAC4F      # x < -87.336540 (-inf, -NaN)
        small = ix < 0x31800000                 # |x| < 2**-28
        xw    = x if not (over or under or small) else +0
        h     = -0.5 if hx < 0 else 0.5
        k     = int32(xw * INVLN2 + h)          # product rounded, sum rounded, truncation
        t     = float32(k)                      # exact
        hi    = xw - t * LN2_HI                 # t*LN2_HI exact
        lo    = t * LN2_LO
        r     = hi - lo
        rr    = r * r
        c     = r - rr * (P1 + rr * P2)         # rr*P2, + P1, rr*., r - .
        q     = (r * c) / (2 - c)
        y     = 1 - ((lo - q) - hi)
        k1    = k >> 1; k2 = k - k1             # arithmetic shift
        y     = (y * 2**k1) * 2**k2             # 2**ki = float(bits((ki + 127) << 23)); first exact
        result = 1 if small; +inf if over; +0 if under; x if NaN; else y
    """
    hx = x.view(torch.int32)
    ix = hx & _ABS
    neg = hx < 0
    nan = ix > _INF_BITS
    over = hx > EXP_HI_BITS
    under = neg & (ix > EXP_LO_BITS)
    small = ix < EXP_SMALL_BITS
    xw = torch.where(over | under | small, 0.0, x)
    h = ((hx & _SIGN) | 0x3F000000).view(torch.float32)  # 0.5 with the sign of x
    kf = xw * EXP_INVLN2
    kf = kf + h
    k = kf.to(torch.int32)
    t = k.to(torch.float32)
    hi = xw - t * EXP_LN2_HI
    lo = t * EXP_LN2_LO
    r = hi - lo
    rr = r * r
    c = rr * EXP_P2
    c = c + EXP_P1
    c = rr * c
    c = r - c
    q = (r * c) / (2.0 - c)
    y = lo - q
    y = y - hi
    y = 1.0 - y
    k1 = k >> 1
    k2 = k - k1
    y = y * ((k1 + 127) << 23).view(torch.float32)
    y = y * ((k2 + 127) << 23).view(torch.float32)
    out = torch.where(small, 1.0, y)
    out = torch.where(over, float("inf"), out)
    out = torch.where(under, 0.0, out)
    return torch.where(nan, x, out)


def tanh32(x: torch.Tensor) -> torch.Tensor:
    """tanh of float32 ``x`` (any shape, any value), on a = |x| (subnormals as +0), the
    sign bit of x put back at the end. Operations in order::

        tiny = ix < 0x39800000                  # |x| < 2**-12: tanh32 = a
        big  = ix >= 0x3F200000                 # |x| >= 0.625
        ap   = a if not (tiny or big) else +0
        z    = ap * ap
        tp   = ap + ap * (z * poly(z; T0 .. T4))
        ae   = min(a, 10) if big else 1         # selects on the bits
        e    = exp32(ae + ae)                   # ae + ae exact
        te   = 1 - 2 / (e + 1)
        r    = te if big; a if tiny; else tp
        result = float(bits(r) | sign bit of x); x if NaN
    """
    _, ix, sgn, a = _abs_flushed(x)
    nan = ix > _INF_BITS
    tiny = ix < TANH_TINY_BITS
    big = ix >= TANH_MID_BITS
    ap = torch.where(tiny | big, 0.0, a)
    z = ap * ap
    p = _poly((TANH_T0, TANH_T1, TANH_T2, TANH_T3, TANH_T4), z)
    p = z * p
    p = ap * p
    tp = ap + p
    ae = torch.where(ix < TANH_CLAMP_BITS, a, 10.0)
    ae = torch.where(big, ae, 1.0)
    e = exp32(ae + ae)
    den = e + 1.0
    q = 2.0 / den
    te = 1.0 - q
    r = torch.where(big, te, tp)
    r = torch.where(tiny, a, r)
    return torch.where(nan, x, _signed(r, sgn))


def erf32(x: torch.Tensor) -> torch.Tensor:
    """erf of float32 ``x`` (any shape, any value), on a = |x| (subnormals as +0), the
    sign bit of x put back at the end. FreeBSD s_erff.c, every range computed on its own
    working value (a inside the range, a safe constant outside), then selected::

        x0 = a if ix < 0x31800000 else 0        # |x| < 2**-28
        r0 = (x0 * 8 + EFX8 * x0) * 0.125       # products exact but EFX8*x0; sum rounded
        xa = a if 0x31800000 <= ix < 0x3F580000 else 0          # |x| < 0.84375
        z  = xa * xa
        ra = xa + xa * (poly(z; PP) / poly(z; QQ))
        xb = a if ix < 0x3FA00000 else 1                        # |x| < 1.25
        sb = xb - 1
        rb = ERX + poly(sb; PA) / poly(sb; QA)
        xc = a if 0x3FA00000 <= ix < 0x40C00000 else 2          # 1.25 <= |x| < 6
        s  = 1 / (xc * xc)
        R, S = (poly(s; RA), poly(s; SA)) if ix < 0x4036DB6E else (poly(s; RB), poly(s; SB))
        zc = float(bits(xc) & 0xFFFFF000)
        e1 = exp32(((-zc) * zc) - 0.5625)
        e2 = exp32((zc - xc) * (zc + xc) + R / S)
        rc = 1 - (e1 * e2) / xc
        r  = r0, ra, rb, rc or 1 by range (|x| >= 6: 1)
        result = float(bits(r) | sign bit of x); x if NaN
    """
    _, ix, sgn, a = _abs_flushed(x)
    nan = ix > _INF_BITS
    # |x| < 2**-28
    x0 = torch.where(ix < ERF_SMALL_BITS, a, 0.0)
    r0 = x0 * 8.0
    r0 = r0 + x0 * ERF_EFX8
    r0 = r0 * 0.125
    # 2**-28 <= |x| < 0.84375
    xa = torch.where((ix >= ERF_SMALL_BITS) & (ix < ERF_A_BITS), a, 0.0)
    z = xa * xa
    y = _poly(ERF_PP, z) / _poly(ERF_QQ, z)
    ra = xa + xa * y
    # 0.84375 <= |x| < 1.25
    xb = torch.where(ix < ERF_B_BITS, a, 1.0)
    sb = xb - 1.0
    rb = ERF_ERX + _poly(ERF_PA, sb) / _poly(ERF_QA, sb)
    # 1.25 <= |x| < 6
    xc = torch.where((ix >= ERF_B_BITS) & (ix < ERF_ONE_BITS), a, 2.0)
    s = torch.reciprocal(xc * xc)
    md = ix < ERF_D_BITS
    rr = torch.where(md, _poly(ERF_RA, s), _poly(ERF_RB, s))
    ss = torch.where(md, _poly(ERF_SA, s), _poly(ERF_SB, s))
    zc = (xc.view(torch.int32) & -0x1000).view(torch.float32)
    u1 = (-zc) * zc
    u1 = u1 - 0.5625
    e1 = exp32(u1)
    u2 = (zc - xc) * (zc + xc)
    u2 = u2 + rr / ss
    e2 = exp32(u2)
    rc = (e1 * e2) / xc
    rc = 1.0 - rc
    r = torch.where(ix >= ERF_ONE_BITS, 1.0, rc)
    r = torch.where(ix < ERF_B_BITS, rb, r)
    r = torch.where(ix < ERF_A_BITS, ra, r)
    r = torch.where(ix < ERF_SMALL_BITS, r0, r)
    return torch.where(nan, x, _signed(r, sgn))
