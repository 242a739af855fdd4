"""float32 exp32, tanh32 and erf32 for the Triton kernels (SPEC §2c).

The same operations, in the same order, as :mod:`fastneuron.transcendental` (whose
docstrings list them): float32 ``+ - *`` (kernels are compiled with
``enable_fp_fusion=False``, so no FMA), ``tl.math.div_rn`` for every IEEE division,
integer and bit operations, exact conversions and selects. No libdevice transcendental,
and no intermediate is ever subnormal, so flush-to-zero cannot change a bit. Triton
inlines these helpers into the kernels that call them. Polynomials are written out in
Horner form, ``poly(z; c0 .. cn)``: ``p = z*cn``, then ``p + ci`` and ``* z`` down to
``c1``, last ``p + c0``.
"""

from __future__ import annotations

import triton
import triton.language as tl

# The float32 constants of fastneuron.transcendental (Python floats holding float32 values
# exactly), with their bit patterns.
EXP_INVLN2 = tl.constexpr(1.4426950216293335)  # 0x3FB8AA3B
EXP_LN2_HI = tl.constexpr(0.693145751953125)  # 0x3F317200
EXP_LN2_LO = tl.constexpr(1.428606765330187e-06)  # 0x35BFBE8E
EXP_P1 = tl.constexpr(0.16666625440120697)  # 0x3E2AAA8F
EXP_P2 = tl.constexpr(-0.0027667332906275988)  # 0xBB355215
EXP_HI_BITS = tl.constexpr(0x42B17217)  # 88.722832
EXP_LO_BITS = tl.constexpr(0x42AEAC4F)  # |-87.336540|
EXP_SMALL_BITS = tl.constexpr(0x31800000)  # 2**-28

TANH_T0 = tl.constexpr(-0.3333328366279602)  # 0xBEAAAA9A
TANH_T1 = tl.constexpr(0.133314847946167)  # 0x3E0883B0
TANH_T2 = tl.constexpr(-0.05374297872185707)  # 0xBD5C2199
TANH_T3 = tl.constexpr(0.020648924633860588)  # 0x3CA927EF
TANH_T4 = tl.constexpr(-0.005715199280530214)  # 0xBBBB4691
TANH_TINY_BITS = tl.constexpr(0x39800000)  # 2**-12
TANH_MID_BITS = tl.constexpr(0x3F200000)  # 0.625
TANH_CLAMP_BITS = tl.constexpr(0x41200000)  # 10.0

ERF_ERX = tl.constexpr(0.8450629115104675)  # 0x3F58560B
ERF_EFX8 = tl.constexpr(1.0270333290100098)  # 0x3F8375D4
ERF_PP0 = tl.constexpr(0.12837916612625122)  # 0x3E0375D4
ERF_PP1 = tl.constexpr(-0.32504209876060486)  # 0xBEA66BEB
ERF_PP2 = tl.constexpr(-0.028481749817728996)  # 0xBCE9528F
ERF_PP3 = tl.constexpr(-0.005770270247012377)  # 0xBBBD1489
ERF_PP4 = tl.constexpr(-2.3763017452438362e-05)  # 0xB7C756B1
ERF_QQ1 = tl.constexpr(0.3979172110557556)  # 0x3ECBBBCE
ERF_QQ2 = tl.constexpr(0.06502225250005722)  # 0x3D852A63
ERF_QQ3 = tl.constexpr(0.0050813062116503716)  # 0x3BA68116
ERF_QQ4 = tl.constexpr(0.0001324947370449081)  # 0x390AEE49
ERF_QQ5 = tl.constexpr(-3.9602282413397916e-06)  # 0xB684E21A
ERF_PA0 = tl.constexpr(-0.0023621185682713985)  # 0xBB1ACDC6
ERF_PA1 = tl.constexpr(0.41485610604286194)  # 0x3ED46805
ERF_PA2 = tl.constexpr(-0.3722078800201416)  # 0xBEBE9208
ERF_PA3 = tl.constexpr(0.31834661960601807)  # 0x3EA2FE54
ERF_PA4 = tl.constexpr(-0.11089469492435455)  # 0xBDE31CC2
ERF_PA5 = tl.constexpr(0.03547830507159233)  # 0x3D1151B3
ERF_PA6 = tl.constexpr(-0.002166375517845154)  # 0xBB0DF9C0
ERF_QA1 = tl.constexpr(0.10642088204622269)  # 0x3DD9F331
ERF_QA2 = tl.constexpr(0.5403979420661926)  # 0x3F0A5785
ERF_QA3 = tl.constexpr(0.07182865589857101)  # 0x3D931AE7
ERF_QA4 = tl.constexpr(0.12617121636867523)  # 0x3E013307
ERF_QA5 = tl.constexpr(0.01363708358258009)  # 0x3C5F6E13
ERF_QA6 = tl.constexpr(0.011984500102698803)  # 0x3C445AA3
ERF_RA0 = tl.constexpr(-0.009864944033324718)  # 0xBC21A093
ERF_RA1 = tl.constexpr(-0.6938585638999939)  # 0xBF31A0B7
ERF_RA2 = tl.constexpr(-10.558626174926758)  # 0xC128F022
ERF_RA3 = tl.constexpr(-62.37533187866211)  # 0xC2798057
ERF_RA4 = tl.constexpr(-162.39666748046875)  # 0xC322658C
ERF_RA5 = tl.constexpr(-184.60508728027344)  # 0xC3389AE7
ERF_RA6 = tl.constexpr(-81.28743743896484)  # 0xC2A2932B
ERF_RA7 = tl.constexpr(-9.814329147338867)  # 0xC11D077E
ERF_SA1 = tl.constexpr(19.65127182006836)  # 0x419D35CE
ERF_SA2 = tl.constexpr(137.6577606201172)  # 0x4309A863
ERF_SA3 = tl.constexpr(434.5658874511719)  # 0x43D9486F
ERF_SA4 = tl.constexpr(645.3872680664062)  # 0x442158C9
ERF_SA5 = tl.constexpr(429.0081481933594)  # 0x43D6810B
ERF_SA6 = tl.constexpr(108.63500213623047)  # 0x42D9451F
ERF_SA7 = tl.constexpr(6.570249557495117)  # 0x40D23F7C
ERF_SA8 = tl.constexpr(-0.06042441353201866)  # 0xBD777F97
ERF_RB0 = tl.constexpr(-0.009864943102002144)  # 0xBC21A092
ERF_RB1 = tl.constexpr(-0.7992832660675049)  # 0xBF4C9DD4
ERF_RB2 = tl.constexpr(-17.75795555114746)  # 0xC18E104B
ERF_RB3 = tl.constexpr(-160.63638305664062)  # 0xC320A2EA
ERF_RB4 = tl.constexpr(-637.5664672851562)  # 0xC41F6441
ERF_RB5 = tl.constexpr(-1025.0950927734375)  # 0xC480230B
ERF_RB6 = tl.constexpr(-483.5191955566406)  # 0xC3F1C275
ERF_SB1 = tl.constexpr(30.33806037902832)  # 0x41F2B459
ERF_SB2 = tl.constexpr(325.7925109863281)  # 0x43A2E571
ERF_SB3 = tl.constexpr(1536.7296142578125)  # 0x44C01759
ERF_SB4 = tl.constexpr(3199.858154296875)  # 0x4547FDBB
ERF_SB5 = tl.constexpr(2553.05029296875)  # 0x451F90CE
ERF_SB6 = tl.constexpr(474.5285339355469)  # 0x43ED43A7
ERF_SB7 = tl.constexpr(-22.44095230102539)  # 0xC1B38712
ERF_SMALL_BITS = tl.constexpr(0x31800000)  # 2**-28
ERF_A_BITS = tl.constexpr(0x3F580000)  # 0.84375
ERF_B_BITS = tl.constexpr(0x3FA00000)  # 1.25
ERF_D_BITS = tl.constexpr(0x4036DB6E)  # float32(1/0.35)
ERF_ONE_BITS = tl.constexpr(0x40C00000)  # 6.0

SIGN_BIT = tl.constexpr(-0x80000000)  # int32 0x80000000
ABS_MASK = tl.constexpr(0x7FFFFFFF)
INF_BITS = tl.constexpr(0x7F800000)
MIN_NORMAL_BITS = tl.constexpr(0x00800000)


@triton.jit
def _exp32(x):
    """e**x of float32 ``x``, as :func:`fastneuron.transcendental.exp32`."""
    hx = x.to(tl.int32, bitcast=True)
    ix = hx & ABS_MASK
    neg = hx < 0
    nan = ix > INF_BITS
    over = hx > EXP_HI_BITS
    under = neg & (ix > EXP_LO_BITS)
    small = ix < EXP_SMALL_BITS
    xw = tl.where(over | under | small, 0.0, x)
    h = ((hx & SIGN_BIT) | 0x3F000000).to(tl.float32, bitcast=True)
    kf = xw * EXP_INVLN2
    kf = kf + h
    k = kf.to(tl.int32)
    t = k.to(tl.float32)
    hi = xw - t * EXP_LN2_HI
    lo = t * EXP_LN2_LO
    r = hi - lo
    rr = r * r
    c = rr * EXP_P2
    c = c + EXP_P1
    c = rr * c
    c = r - c
    q = tl.math.div_rn(r * c, 2.0 - c)
    y = lo - q
    y = y - hi
    y = 1.0 - y
    k1 = k >> 1
    k2 = k - k1
    y = y * ((k1 + 127) << 23).to(tl.float32, bitcast=True)
    y = y * ((k2 + 127) << 23).to(tl.float32, bitcast=True)
    out = tl.where(small, 1.0, y)
    out = tl.where(over, float("inf"), out)
    out = tl.where(under, 0.0, out)
    return tl.where(nan, x, out)


@triton.jit
def _tanh32(x):
    """tanh of float32 ``x``, as :func:`fastneuron.transcendental.tanh32`."""
    hx = x.to(tl.int32, bitcast=True)
    ix = hx & ABS_MASK
    sgn = hx & SIGN_BIT
    a = tl.where(ix < MIN_NORMAL_BITS, 0, ix).to(tl.float32, bitcast=True)
    nan = ix > INF_BITS
    tiny = ix < TANH_TINY_BITS
    big = ix >= TANH_MID_BITS
    ap = tl.where(tiny | big, 0.0, a)
    z = ap * ap
    p = z * TANH_T4
    p = p + TANH_T3
    p = p * z
    p = p + TANH_T2
    p = p * z
    p = p + TANH_T1
    p = p * z
    p = p + TANH_T0
    p = z * p
    p = ap * p
    tp = ap + p
    ae = tl.where(ix < TANH_CLAMP_BITS, a, 10.0)
    ae = tl.where(big, ae, 1.0)
    e = _exp32(ae + ae)
    den = e + 1.0
    q = tl.math.div_rn(tl.full(den.shape, 2.0, tl.float32), den)
    te = 1.0 - q
    r = tl.where(big, te, tp)
    r = tl.where(tiny, a, r)
    out = (r.to(tl.int32, bitcast=True) | sgn).to(tl.float32, bitcast=True)
    return tl.where(nan, x, out)


@triton.jit
def _erf32(x):
    """erf of float32 ``x``, as :func:`fastneuron.transcendental.erf32`."""
    hx = x.to(tl.int32, bitcast=True)
    ix = hx & ABS_MASK
    sgn = hx & SIGN_BIT
    a = tl.where(ix < MIN_NORMAL_BITS, 0, ix).to(tl.float32, bitcast=True)
    nan = ix > INF_BITS
    # |x| < 2**-28
    x0 = tl.where(ix < ERF_SMALL_BITS, a, 0.0)
    r0 = x0 * 8.0
    r0 = r0 + x0 * ERF_EFX8
    r0 = r0 * 0.125
    # 2**-28 <= |x| < 0.84375
    xa = tl.where((ix >= ERF_SMALL_BITS) & (ix < ERF_A_BITS), a, 0.0)
    z = xa * xa
    pr = z * ERF_PP4
    pr = pr + ERF_PP3
    pr = pr * z
    pr = pr + ERF_PP2
    pr = pr * z
    pr = pr + ERF_PP1
    pr = pr * z
    pr = pr + ERF_PP0
    ps = z * ERF_QQ5
    ps = ps + ERF_QQ4
    ps = ps * z
    ps = ps + ERF_QQ3
    ps = ps * z
    ps = ps + ERF_QQ2
    ps = ps * z
    ps = ps + ERF_QQ1
    ps = ps * z
    ps = ps + 1.0
    y = tl.math.div_rn(pr, ps)
    ra = xa + xa * y
    # 0.84375 <= |x| < 1.25
    xb = tl.where(ix < ERF_B_BITS, a, 1.0)
    sb = xb - 1.0
    pb = sb * ERF_PA6
    pb = pb + ERF_PA5
    pb = pb * sb
    pb = pb + ERF_PA4
    pb = pb * sb
    pb = pb + ERF_PA3
    pb = pb * sb
    pb = pb + ERF_PA2
    pb = pb * sb
    pb = pb + ERF_PA1
    pb = pb * sb
    pb = pb + ERF_PA0
    qb = sb * ERF_QA6
    qb = qb + ERF_QA5
    qb = qb * sb
    qb = qb + ERF_QA4
    qb = qb * sb
    qb = qb + ERF_QA3
    qb = qb * sb
    qb = qb + ERF_QA2
    qb = qb * sb
    qb = qb + ERF_QA1
    qb = qb * sb
    qb = qb + 1.0
    rb = ERF_ERX + tl.math.div_rn(pb, qb)
    # 1.25 <= |x| < 6
    xc = tl.where((ix >= ERF_B_BITS) & (ix < ERF_ONE_BITS), a, 2.0)
    s = tl.math.div_rn(tl.full(xc.shape, 1.0, tl.float32), xc * xc)
    r1 = s * ERF_RA7
    r1 = r1 + ERF_RA6
    r1 = r1 * s
    r1 = r1 + ERF_RA5
    r1 = r1 * s
    r1 = r1 + ERF_RA4
    r1 = r1 * s
    r1 = r1 + ERF_RA3
    r1 = r1 * s
    r1 = r1 + ERF_RA2
    r1 = r1 * s
    r1 = r1 + ERF_RA1
    r1 = r1 * s
    r1 = r1 + ERF_RA0
    s1 = s * ERF_SA8
    s1 = s1 + ERF_SA7
    s1 = s1 * s
    s1 = s1 + ERF_SA6
    s1 = s1 * s
    s1 = s1 + ERF_SA5
    s1 = s1 * s
    s1 = s1 + ERF_SA4
    s1 = s1 * s
    s1 = s1 + ERF_SA3
    s1 = s1 * s
    s1 = s1 + ERF_SA2
    s1 = s1 * s
    s1 = s1 + ERF_SA1
    s1 = s1 * s
    s1 = s1 + 1.0
    r2 = s * ERF_RB6
    r2 = r2 + ERF_RB5
    r2 = r2 * s
    r2 = r2 + ERF_RB4
    r2 = r2 * s
    r2 = r2 + ERF_RB3
    r2 = r2 * s
    r2 = r2 + ERF_RB2
    r2 = r2 * s
    r2 = r2 + ERF_RB1
    r2 = r2 * s
    r2 = r2 + ERF_RB0
    s2 = s * ERF_SB7
    s2 = s2 + ERF_SB6
    s2 = s2 * s
    s2 = s2 + ERF_SB5
    s2 = s2 * s
    s2 = s2 + ERF_SB4
    s2 = s2 * s
    s2 = s2 + ERF_SB3
    s2 = s2 * s
    s2 = s2 + ERF_SB2
    s2 = s2 * s
    s2 = s2 + ERF_SB1
    s2 = s2 * s
    s2 = s2 + 1.0
    md = ix < ERF_D_BITS
    rr = tl.where(md, r1, r2)
    ss = tl.where(md, s1, s2)
    zc = (xc.to(tl.int32, bitcast=True) & -0x1000).to(tl.float32, bitcast=True)
    u1 = (-zc) * zc
    u1 = u1 - 0.5625
    e1 = _exp32(u1)
    u2 = (zc - xc) * (zc + xc)
    u2 = u2 + tl.math.div_rn(rr, ss)
    e2 = _exp32(u2)
    rc = tl.math.div_rn(e1 * e2, xc)
    rc = 1.0 - rc
    r = tl.where(ix >= ERF_ONE_BITS, 1.0, rc)
    r = tl.where(ix < ERF_B_BITS, rb, r)
    r = tl.where(ix < ERF_A_BITS, ra, r)
    r = tl.where(ix < ERF_SMALL_BITS, r0, r)
    out = (r.to(tl.int32, bitcast=True) | sgn).to(tl.float32, bitcast=True)
    return tl.where(nan, x, out)
