"""SPEC §2b: standard normals from Philox words, bit for bit the same in torch eager,
torch.compile, the NumPy oracle (tests/spec_numpy.py) and the Triton helpers (under
TRITON_INTERPRET=1 without CUDA); their accuracy against float64; their distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import spec_numpy as sn
from conftest import requires_triton
from fastneuron import normal, rng

try:
    import triton
    import triton.language as tl

    from fastneuron.kernels.triton_normal import _log32, _normal_block, _sincos2pi
except ImportError:  # the Triton tests skip (requires_triton)
    triton = None

N_ACCURACY = 10 ** 6
N_KS = 10 ** 6
N_EQUAL = 2 ** 17 + 7  # odd: Inductor's vectorized loop has a tail
N_TRITON_RANDOM = 2048

#: Edge words: ra >> 8 == 0 (u = 2**-24, the largest |z|), ra >> 8 == 2**24 - 1 (u = 1,
#: z = +-0), and rb giving v = 0, 1/8, 1/4, 1/2, 3/4, 7/8 and 1 - 2**-24, 0 and 0xFFFFFFFF.
EDGE_RA = [0, 0xFF, 0x100, 0xFFFFFF00, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0xB504F300, 0x12345678]
EDGE_RB = [0, 0xFF, 0x20000000, 0x40000000, 0x40000100, 0x3FFFFF00, 0x80000000, 0xC0000000, 0xE0000000,
           0xFFFFFF00, 0xFFFFFFFF, 0x1FFFFF00, 0x9E3779B9]


def _edge_pairs():
    ra, rb = np.meshgrid(np.array(EDGE_RA, np.uint64), np.array(EDGE_RB, np.uint64), indexing="ij")
    return ra.reshape(-1), rb.reshape(-1)


def _words(n: int, seed: int):
    """Four uint64 arrays of uint32 words: every edge pair (as (r0, r1) and as (r2, r3)),
    then random words, n in all."""
    ea, eb = _edge_pairs()
    g = np.random.default_rng(seed)
    words = [g.integers(0, 2 ** 32, n, dtype=np.uint64) for _ in range(4)]
    e = ea.size
    words[0][:e], words[1][:e] = ea, eb
    words[2][e:2 * e], words[3][e:2 * e] = ea, eb
    return words


def _torch_words(words):
    return [torch.from_numpy(w.astype(np.int64)) for w in words]


def _bits(z) -> torch.Tensor:
    """int32 bit patterns of a float32 tensor or array."""
    if isinstance(z, np.ndarray):
        assert z.dtype == np.float32
        z = torch.from_numpy(z.copy())
    assert z.dtype == torch.float32
    return z.contiguous().view(torch.int32)


def assert_same_bits(got, want, what: str) -> None:
    """torch.equal on the int32 views; on failure, how many differ and the worst."""
    gb, wb = _bits(got), _bits(want)
    assert gb.shape == wb.shape, (what, gb.shape, wb.shape)
    if torch.equal(gb, wb):
        return
    diff = (gb != wb).nonzero().reshape(-1)
    gi, wi = gb[diff].to(torch.int64), wb[diff].to(torch.int64)
    worst = int((gi - wi).abs().argmax())
    i = int(diff[worst])
    g, w = gb.view(torch.float32)[i].item(), wb.view(torch.float32)[i].item()
    raise AssertionError(f"{what}: {diff.numel()} of {gb.numel()} differ in their bits; worst at {i}: "
                         f"{g!r} ({int(gb[i]) & 0xFFFFFFFF:#010x}) vs {w!r} ({int(wb[i]) & 0xFFFFFFFF:#010x}), "
                         f"{int((gi - wi).abs().max())} ulp apart")


def _ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 ulp at |exact| (normal range)."""
    exact = np.asarray(exact, np.float64)
    mag = np.maximum(np.abs(exact), np.finfo(np.float32).tiny)
    ulp = np.exp2(np.floor(np.log2(mag)) - 23)
    return np.abs(got.astype(np.float64) - exact) / ulp


# --- bit equality --------------------------------------------------------------------

@pytest.fixture(scope="module")
def equal_words():
    return _words(N_EQUAL, seed=20261130)


@pytest.fixture(scope="module")
def eager_z(equal_words):
    return normal.normal_block(*_torch_words(equal_words))


def test_eager_equals_numpy(equal_words, eager_z):
    want = sn.normal_block(*equal_words)
    for k in range(4):
        assert_same_bits(eager_z[k], want[k], f"eager z{k} vs numpy")


def test_compiled_equals_eager(equal_words, eager_z):
    """torch.compile (Inductor's vectorized C++ on CPU, dim 0 dynamic as the compiled
    backend's) of box_muller, on both pairs of words at once: normal_block is two calls
    of box_muller, and compiling one (not normal_block) halves the C++ to compile."""
    torch._dynamo.reset()
    fn = torch.compile(normal.box_muller, dynamic=True, fullgraph=True)
    r0, r1, r2, r3 = _torch_words(equal_words)
    za, zb = fn(torch.cat([r0, r2]), torch.cat([r1, r3]))
    n = r0.numel()
    got = (za[:n], zb[:n], za[n:], zb[n:])
    for k in range(4):
        assert_same_bits(got[k].contiguous(), eager_z[k], f"torch.compile z{k} vs eager")


def test_functions_equal_numpy():
    """log32 and sincos2pi on their own, on every edge value and random ones."""
    g = np.random.default_rng(7)
    n_u = np.concatenate([np.arange(1, 4097), np.arange(2 ** 24 - 4096, 2 ** 24 + 1),
                          g.integers(1, 2 ** 24 + 1, 2 ** 16)])
    u = n_u.astype(np.float32) * np.float32(2.0 ** -24)
    assert_same_bits(normal.log32(torch.from_numpy(u)), sn.log32(u), "log32 vs numpy")
    m = np.concatenate([np.arange(0, 2 ** 24, 2 ** 19), np.arange(0, 2 ** 24, 2 ** 22) + 1,
                        np.arange(2 ** 22, 2 ** 24 + 1, 2 ** 22) - 1, g.integers(0, 2 ** 24, 2 ** 16)])
    v = m.astype(np.float32) * np.float32(2.0 ** -24)
    c, s = normal.sincos2pi(torch.from_numpy(v))
    cn, sn_ = sn.sincos2pi(v)
    assert_same_bits(c, cn, "cos2pi vs numpy")
    assert_same_bits(s, sn_, "sin2pi vs numpy")
    assert_same_bits(normal.cos2pi(torch.from_numpy(v)), cn, "cos2pi()")
    assert_same_bits(normal.sin2pi(torch.from_numpy(v)), sn_, "sin2pi()")


def test_edge_values():
    """Exact endpoints and the sign of every zero, as SPEC §2b states them."""
    f = lambda x: torch.tensor([x], dtype=torch.float32)  # noqa: E731
    one_bits = lambda t: int(t.view(torch.int32)[0]) & 0xFFFFFFFF  # noqa: E731
    assert one_bits(normal.log32(f(1.0))) == 0x00000000  # log32(1) = +0
    quarters = {0.0: (1.0, 0x00000000), 0.25: (0x80000000, 1.0), 0.5: (-1.0, 0x80000000), 0.75: (0x00000000, -1.0)}
    for v, (cw, sw) in quarters.items():
        c, s = normal.sincos2pi(f(v))
        for got, want in ((c, cw), (s, sw)):
            if isinstance(want, float):
                assert got.item() == want, (v, got)
            else:
                assert one_bits(got) == want, (v, hex(one_bits(got)))
    w = lambda x: torch.tensor([x], dtype=torch.int64)  # noqa: E731
    # smallest u, v = 0: z0 = sqrt(-2*log32(2**-24)), the largest |z|, z1 = +0
    z0, z1, _, _ = normal.normal_block(w(0), w(0), w(0), w(0))
    assert z0.item() == pytest.approx(math.sqrt(24 * 2 * math.log(2)), rel=1e-6)
    assert 5.76 < z0.item() < 5.77 and one_bits(z1) == 0
    assert one_bits(z0) == 0x40B89456  # 5.7681074
    # u = 1: rad = sqrt(-0) = -0, so z = -0 * c and -0 * s
    z0, z1, z2, z3 = normal.normal_block(w(0xFFFFFFFF), w(0), w(0xFFFFFF00), w(0x40000000))
    assert [one_bits(z) for z in (z0, z1, z2, z3)] == [0x80000000, 0x80000000, 0x00000000, 0x80000000]
    # v = 1 - 2**-24: cos ~ 1, sin ~ -2*pi*2**-24
    z0, z1, _, _ = normal.normal_block(w(0), w(0xFFFFFFFF), w(0), w(0))
    assert z0.item() == pytest.approx(5.7681074, rel=1e-6)
    assert z1.item() == pytest.approx(-5.7681074 * 2 * math.pi * 2.0 ** -24, rel=1e-5)


def test_rng_streams_equal_numpy():
    """noise_block: key (2, 0), the data stream's counter; normal_data_block: the data
    stream's words, mean + std*z. Against the NumPy oracle."""
    seeds = np.array([0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 64 - 1, 0x0123456789ABCDEF, 12345], dtype=np.uint64)
    s_lo, s_hi = rng.split_seeds(torch.from_numpy(seeds.view(np.int64)))
    lo, hi = sn.split_seeds(seeds)
    mean, std = torch.tensor(1.5), torch.tensor(0.3)
    for q in (0, 1, 2 ** 32 - 1, 2 ** 32 + 5, 2 ** 62 + 3):
        ctr = (np.uint64(q & 0xFFFFFFFF), np.uint64(q >> 32), lo, hi)
        want = sn.normal_block(*(w.astype(np.uint64) for w in sn.philox((2, 0), *ctr)))
        got = rng.noise_block(s_lo, s_hi, q)
        for k in range(4):
            assert_same_bits(got[k], want[k], f"noise_block q={q} z{k}")
        zd = sn.normal_block(*(w.astype(np.uint64) for w in sn.philox(sn.DATA_KEY, *ctr)))
        got = rng.normal_data_block(s_lo, s_hi, q, mean, std)
        for k in range(4):
            want = np.float32(1.5) + np.float32(0.3) * zd[k]
            assert_same_bits(got[k], want, f"normal_data_block q={q} x{k}")
    assert rng.NOISE_KEY == (2, 0)


#: (seed, q) -> bits of noise_block's z0..z3 (SPEC §2b, "Known answers").
NOISE_KNOWN = {
    (0, 0): (0xBFA751CA, 0x3CB7061F, 0xBE3A4B1B, 0x3E083F76),
    (0, 1): (0x3E8B7122, 0x4011141C, 0xBE8B0994, 0x3C06BD57),
    (1, 0): (0x3E467941, 0xBF13E6B2, 0x3F438EED, 0x3FDCA37E),
    (2 ** 64 - 1, 1): (0xBF726574, 0x3F922017, 0xBFF4B976, 0xBF1E4F8A),
}


def test_known_answers():
    for (seed, q), want in NOISE_KNOWN.items():
        s_lo, s_hi = rng.split_seeds(torch.tensor([seed - 2 ** 64 if seed >= 2 ** 63 else seed]))
        got = [int(z.view(torch.int32)[0]) & 0xFFFFFFFF for z in rng.noise_block(s_lo, s_hi, q)]
        assert got == list(want), (seed, q, [hex(g) for g in got])
        zn = sn.normal_block(*(w.astype(np.uint64) for w in sn.philox((2, 0), q, 0, *sn.split_seeds([seed]))))
        assert [int(z.view(np.uint32)[0]) for z in zn] == list(want)


# --- Triton, under the interpreter without CUDA ------------------------------------------

if triton is not None:
    @triton.jit
    def _normal_words_kernel(r_ptr, z_ptr, n, BLOCK: tl.constexpr):
        """z[4i + k] = normal k of the block of words r[4i .. 4i + 3] (int32 bit patterns)."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        r0 = tl.load(r_ptr + 4 * offs + 0, mask=mask, other=0).to(tl.uint32, bitcast=True)
        r1 = tl.load(r_ptr + 4 * offs + 1, mask=mask, other=0).to(tl.uint32, bitcast=True)
        r2 = tl.load(r_ptr + 4 * offs + 2, mask=mask, other=0).to(tl.uint32, bitcast=True)
        r3 = tl.load(r_ptr + 4 * offs + 3, mask=mask, other=0).to(tl.uint32, bitcast=True)
        z0, z1, z2, z3 = _normal_block(r0, r1, r2, r3)
        tl.store(z_ptr + 4 * offs + 0, z0, mask=mask)
        tl.store(z_ptr + 4 * offs + 1, z1, mask=mask)
        tl.store(z_ptr + 4 * offs + 2, z2, mask=mask)
        tl.store(z_ptr + 4 * offs + 3, z3, mask=mask)

    @triton.jit
    def _functions_kernel(u_ptr, v_ptr, log_ptr, cos_ptr, sin_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        u = tl.load(u_ptr + offs, mask=mask, other=1.0)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0)
        tl.store(log_ptr + offs, _log32(u), mask=mask)
        c, s = _sincos2pi(v)
        tl.store(cos_ptr + offs, c, mask=mask)
        tl.store(sin_ptr + offs, s, mask=mask)


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@requires_triton
@pytest.mark.interpreter
def test_triton_normal_block_equals_numpy():
    words = _words(_edge_pairs()[0].size * 2 + N_TRITON_RANDOM, seed=99)
    n = words[0].size
    packed = np.stack(words, axis=1).reshape(-1).astype(np.uint32).view(np.int32)
    r = torch.from_numpy(packed).to(_device())
    z = torch.empty(4 * n, dtype=torch.float32, device=_device())
    block = 512
    _normal_words_kernel[(triton.cdiv(n, block),)](r, z, n, BLOCK=block, enable_fp_fusion=False)
    got = z.cpu().reshape(n, 4)
    want = sn.normal_block(*words)
    for k in range(4):
        assert_same_bits(got[:, k].contiguous(), want[k], f"triton z{k} vs numpy")


@requires_triton
@pytest.mark.interpreter
def test_triton_functions_equal_numpy():
    g = np.random.default_rng(5)
    n_u = np.concatenate([np.arange(1, 257), np.arange(2 ** 24 - 256, 2 ** 24 + 1), g.integers(1, 2 ** 24 + 1, 1024)])
    m = np.concatenate([np.arange(0, 2 ** 24, 2 ** 21), np.arange(0, 2 ** 24, 2 ** 22) + 1,
                        np.arange(2 ** 22, 2 ** 24 + 1, 2 ** 22) - 1, g.integers(0, 2 ** 24, 1024)])
    n = min(n_u.size, m.size)
    u = n_u[:n].astype(np.float32) * np.float32(2.0 ** -24)
    v = m[:n].astype(np.float32) * np.float32(2.0 ** -24)
    dev = _device()
    ut, vt = torch.from_numpy(u).to(dev), torch.from_numpy(v).to(dev)
    lg, c, s = (torch.empty(n, dtype=torch.float32, device=dev) for _ in range(3))
    _functions_kernel[(triton.cdiv(n, 512),)](ut, vt, lg, c, s, n, BLOCK=512, enable_fp_fusion=False)
    cn, sn_ = sn.sincos2pi(v)
    assert_same_bits(lg.cpu(), sn.log32(u), "triton log32")
    assert_same_bits(c.cpu(), cn, "triton cos2pi")
    assert_same_bits(s.cpu(), sn_, "triton sin2pi")


# --- accuracy ----------------------------------------------------------------------------

def test_log32_accuracy():
    g = np.random.default_rng(11)
    n_u = np.concatenate([np.arange(1, 2 ** 14), np.arange(2 ** 24 - 2 ** 14, 2 ** 24),
                          g.integers(1, 2 ** 24, N_ACCURACY)])
    u = n_u.astype(np.float32) * np.float32(2.0 ** -24)
    got = normal.log32(torch.from_numpy(u)).numpy()
    err = _ulp_error(got, np.log(n_u * 2.0 ** -24))
    assert err.max() <= normal.LOG_MAX_ULP, (err.max(), u[err.argmax()])
    assert normal.log32(torch.tensor([1.0])).item() == 0.0


def test_sincos2pi_accuracy():
    g = np.random.default_rng(12)
    m = np.concatenate([np.arange(0, 2 ** 12), g.integers(0, 2 ** 24, N_ACCURACY)])
    m = m[m % 2 ** 22 != 0]  # the exact quarters are checked in test_edge_values
    v = m.astype(np.float32) * np.float32(2.0 ** -24)
    c, s = (t.numpy() for t in normal.sincos2pi(torch.from_numpy(v)))
    ang = 2 * np.pi * (m * 2.0 ** -24)
    ec, es = _ulp_error(c, np.cos(ang)), _ulp_error(s, np.sin(ang))
    assert ec.max() <= normal.SINCOS_MAX_ULP, (ec.max(), v[ec.argmax()])
    assert es.max() <= normal.SINCOS_MAX_ULP, (es.max(), v[es.argmax()])


def test_normal_accuracy():
    """z against sqrt(-2 ln u) cos(2 pi v) in float64, from the words' u and v."""
    g = np.random.default_rng(13)
    a = g.integers(0, 2 ** 24, N_ACCURACY)
    a[:4096] = np.arange(4096)  # the smallest u, the largest |z|
    b = g.integers(0, 2 ** 24, N_ACCURACY)
    za, zb = (t.numpy() for t in normal.box_muller(torch.from_numpy(a << 8), torch.from_numpy(b << 8)))
    rad = np.sqrt(-2 * np.log((a + 1) * 2.0 ** -24))
    ang = 2 * np.pi * (b * 2.0 ** -24)
    ea, eb = _ulp_error(za, rad * np.cos(ang)), _ulp_error(zb, rad * np.sin(ang))
    ea[za == 0] = 0  # u = 1, or v at a quarter: an exact zero against a double's ~1e-16
    eb[zb == 0] = 0
    assert ea.max() <= normal.Z_MAX_ULP, (ea.max(), a[ea.argmax()], b[ea.argmax()])
    assert eb.max() <= normal.Z_MAX_ULP, (eb.max(), a[eb.argmax()], b[eb.argmax()])
    assert np.abs(za).max() <= 5.7681075 and np.abs(zb).max() <= 5.7681075


# --- distribution ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def noise():
    """10**6 normals of the noise stream, block q = 0 of 250000 members, with the same
    words' Box-Muller in float64 (numpy's log, cos, sin)."""
    m = N_KS // 4
    seeds = torch.arange(m, dtype=torch.int64) * 2654435761 + 12345
    s_lo, s_hi = rng.split_seeds(seeds)
    z = torch.cat(rng.noise_block(s_lo, s_hi, 0)).double().numpy()
    w = [x.numpy() for x in rng.philox4x32(0, 0, rng.seed_word(s_lo), rng.seed_word(s_hi), key=rng.NOISE_KEY)]
    z64 = []
    for ra, rb in ((w[0], w[1]), (w[2], w[3])):
        rad = np.sqrt(-2 * np.log(((ra >> 8) + 1) * 2.0 ** -24))
        ang = 2 * np.pi * ((rb >> 8) * 2.0 ** -24)
        z64 += [rad * np.cos(ang), rad * np.sin(ang)]
    return z, np.concatenate(z64)


def _ks_statistic(z: np.ndarray) -> float:
    z = np.sort(z)
    n = z.size
    cdf = np.array([0.5 * (1.0 + math.erf(x / math.sqrt(2.0))) for x in z.tolist()])
    i = np.arange(1, n + 1)
    return float(max((i / n - cdf).max(), (cdf - (i - 1) / n).max()))


def test_kolmogorov_smirnov(noise):
    """D below the 1e-3 critical value 1.95/sqrt(n), and equal (to 1e-6) to the D of the
    same words through float64 Box-Muller: the float32 draw adds nothing the words do not
    bring. (Block q = 3 of these seeds has sqrt(n)*D = 1.959 in float32 and in float64
    alike: a 1e-3 event of the words themselves.)"""
    z, z64 = noise
    d, d64 = _ks_statistic(z), _ks_statistic(z64)
    assert d < 1.95 / math.sqrt(z.size), d
    assert abs(d - d64) < 1e-6, (d, d64)


def test_mean_and_variance(noise):
    z, _ = noise
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert np.isfinite(z).all() and np.abs(z).max() <= 5.7681075
