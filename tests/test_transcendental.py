"""SPEC §2c: exp32, tanh32 and erf32 bit for bit the same in torch eager, torch.compile,
the NumPy oracle (tests/spec_numpy.py §2c) and the Triton helpers (under TRITON_INTERPRET=1
without CUDA, as conftest.py arranges); their accuracy against float64; no subnormal
intermediate in the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spec_numpy as sn
from conftest import requires_triton
from fastneuron import transcendental as tr

try:
    import triton
    import triton.language as tl

    from fastneuron.kernels.triton_math import _erf32, _exp32, _tanh32
except ImportError:  # the Triton tests skip (requires_triton)
    triton = None

NAMES = ("exp32", "tanh32", "erf32")
#: Every float32 bit pattern with this stride (odd: all exponents and low mantissa bits show).
SWEEP_STRIDE = 1021
N_COMPILE = 2 ** 18 + 7  # odd: Inductor's vectorized loop has a tail
N_TRITON = 2 ** 14
N_ACCURACY = 10 ** 6

#: The branch thresholds of §2c (bits of |x|); the sweep takes each +-2 ulp, both signs.
THRESHOLDS = [
    0x00800000,  # 2**-126: subnormals below
    0x31800000,  # 2**-28: exp32 = 1 below, erf32's smallest range
    0x42B17217,  # exp32: largest finite
    0x42AEAC4F,  # exp32: most negative nonzero (with the sign bit)
    0x39800000,  # tanh32 = x below 2**-12
    0x3F200000,  # tanh32: exp32 from 0.625
    0x41200000,  # tanh32: clamp at 10
    0x3F580000, 0x3FA00000, 0x4036DB6E, 0x40C00000,  # erf32: 0.84375, 1.25, 1/0.35, 6
    0x3EB17218, 0x3F851592,  # 0.5*ln2, 1.5*ln2 (k = 0, 1)
    0x3F800000, 0x7F7FFFFF,
]
SPECIALS = [0x00000000, 0x00000001, 0x00000002, 0x007FFFFF, 0x7F800000, 0x7FC00000, 0x7F800001, 0x7FFFFFFF,
            0x7FC12345, 0x41100000, 0x40800000, 0x3F000000]


def _special_bits() -> np.ndarray:
    near = [t + d for t in THRESHOLDS for d in range(-2, 3)]
    b = np.array(SPECIALS + near, dtype=np.int64)
    b = b[(b >= 0) & (b <= 0x7FFFFFFF)]
    return np.concatenate([b, b | 0x80000000])


def _sweep_bits() -> np.ndarray:
    return np.concatenate([np.arange(0, 2 ** 32, SWEEP_STRIDE, dtype=np.int64), _special_bits()])


def _floats(bits: np.ndarray) -> np.ndarray:
    return bits.astype(np.uint32).view(np.float32)


def _bits(z) -> torch.Tensor:
    """int32 bit patterns of a float32 tensor or array."""
    if isinstance(z, np.ndarray):
        assert z.dtype == np.float32
        z = torch.from_numpy(z.copy())
    assert z.dtype == torch.float32
    return z.contiguous().view(torch.int32)


def assert_same_bits(got, want, x, what: str) -> None:
    """torch.equal on the int32 views; on failure, how many differ and the first few."""
    gb, wb = _bits(got).reshape(-1), _bits(want).reshape(-1)
    assert gb.shape == wb.shape, (what, gb.shape, wb.shape)
    if torch.equal(gb, wb):
        return
    diff = (gb != wb).nonzero().reshape(-1)
    xb = _bits(np.asarray(x, np.float32)).reshape(-1)
    first = ", ".join(f"x={int(xb[i]) & 0xFFFFFFFF:#010x}: {int(gb[i]) & 0xFFFFFFFF:#010x} vs "
                      f"{int(wb[i]) & 0xFFFFFFFF:#010x}" for i in diff[:5].tolist())
    raise AssertionError(f"{what}: {diff.numel()} of {gb.numel()} differ in their bits; first: {first}")


def _ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 ulp at |exact| (normal range)."""
    exact = np.asarray(exact, np.float64)
    mag = np.maximum(np.abs(exact), np.finfo(np.float32).tiny)
    ulp = np.exp2(np.floor(np.log2(mag)) - 23)
    return np.abs(got.astype(np.float64) - exact) / ulp


# --- bit equality ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sweep():
    """(x, {name: oracle result}): the oracle runs with its subnormal check on."""
    assert sn.CHECK_NO_SUBNORMAL
    x = _floats(_sweep_bits())
    return x, {name: getattr(sn, name)(x) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_eager_equals_numpy(sweep, name):
    x, want = sweep
    got = getattr(tr, name)(torch.from_numpy(x))
    assert_same_bits(got, want[name], x, f"eager {name} vs numpy")


def test_no_subnormal_anywhere(sweep):
    """The oracle asserted, on every call of the sweep, that no intermediate was subnormal
    or non-finite; no result is subnormal either, and the checker does catch one."""
    _, want = sweep
    for name in NAMES:
        ia = want[name].view(np.int32) & 0x7FFFFFFF
        assert not ((ia > 0) & (ia < 0x00800000)).any(), name
    with pytest.raises(AssertionError, match="subnormal"):
        sn._no_subnormal({"v": np.array([1.0, 1e-40], np.float32)})


def test_special_values():
    inf = np.float32(np.inf)
    tiny_sub = np.array(1, np.uint32).view(np.float32)[()]
    x = np.array([0.0, -0.0, inf, -inf, tiny_sub, -tiny_sub, 88.72283, 88.72284, -87.33654, -87.33655,
                  1e30, -1e30], np.float32)
    e, t, f = (getattr(tr, n)(torch.from_numpy(x)).numpy() for n in NAMES)
    assert e.tolist() == [1.0, 1.0, np.inf, 0.0, 1.0, 1.0, e[6], np.inf, e[8], 0.0, np.inf, 0.0]
    assert np.isfinite(e[6]) and e[6] > 3.4e38 and e[8] >= 2.0 ** -126
    for r in (t, f):
        assert r.tolist() == [0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 1.0, 1.0, -1.0, -1.0, 1.0, -1.0]
        assert list(np.signbit(r[:6])) == [False, True, False, True, False, True]
    # a NaN comes back as it is (its bits: sign and payload)
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFC12345], np.uint32).view(np.float32)
    for n in NAMES:
        got = getattr(tr, n)(torch.from_numpy(nans.copy())).numpy()
        assert got.view(np.uint32).tolist() == nans.view(np.uint32).tolist(), n


def test_odd_and_shapes(sweep):
    """tanh32 and erf32 are odd bit for bit; any shape goes in and comes out."""
    x, want = sweep
    keep = ~np.isnan(x)
    neg = -x[keep]
    for name in ("tanh32", "erf32"):
        assert np.array_equal(getattr(sn, name)(neg).view(np.uint32), (-want[name][keep]).view(np.uint32))
    x2 = torch.from_numpy(x[:4096].copy()).reshape(64, 64)
    for name in NAMES:
        got = getattr(tr, name)(x2)
        assert got.shape == (64, 64) and got.dtype == torch.float32
        assert_same_bits(got.reshape(-1), want[name][:4096], x[:4096], f"{name} 2-d")


#: Known answers (bits of x -> bits of the result).
KNOWN = {
    "exp32": {0x3F800000: 0x402DF854, 0xBF800000: 0x3EBC5AB2, 0x41200000: 0x46AC14EE, 0xC1200000: 0x383E6BCE,
              0x42B17217: 0x7F7FFF84, 0xC2AEAC4F: 0x00800026},
    "tanh32": {0x3F000000: 0x3EEC9A9F, 0x3F800000: 0x3F42F7D6, 0x40000000: 0x3F76CA83, 0x3F200000: 0x3F0DFA40,
               0x3F1FFFFF: 0x3F0DFA3F},
    "erf32": {0x3F000000: 0x3F053F7B, 0x3F800000: 0x3F57BB3D, 0x40000000: 0x3F7ECD71, 0x3FA00000: 0x3F6C432F,
              0x3F580000: 0x3F4468E7},
}

@pytest.mark.parametrize("name", NAMES)
def test_known_answers(name):
    xs = np.array(list(KNOWN[name]), np.uint32).view(np.float32)
    got = getattr(tr, name)(torch.from_numpy(xs)).numpy().view(np.uint32)
    assert [hex(v) for v in got] == [hex(v) for v in KNOWN[name].values()]


def test_compiled_equals_eager(sweep):
    """torch.compile (Inductor's vectorized C++ on CPU, dim 0 dynamic) of one function
    computing all three, on a stride through all bit patterns plus the specials."""
    torch._dynamo.reset()

    def all3(v):
        return tr.exp32(v), tr.tanh32(v), tr.erf32(v)

    fn = torch.compile(all3, dynamic=True, fullgraph=True)
    bits = np.concatenate([np.arange(0, 2 ** 32, 2 ** 32 // (N_COMPILE - _special_bits().size), dtype=np.int64),
                           _special_bits()])[:N_COMPILE]
    x = torch.from_numpy(_floats(bits))
    for name, got in zip(NAMES, fn(x)):
        assert_same_bits(got, getattr(tr, name)(x), x.numpy(), f"torch.compile {name} vs eager")


# --- Triton, under the interpreter without CUDA ------------------------------------------

if triton is not None:
    @triton.jit
    def _math_kernel(x_ptr, e_ptr, t_ptr, f_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        tl.store(e_ptr + offs, _exp32(x), mask=mask)
        tl.store(t_ptr + offs, _tanh32(x), mask=mask)
        tl.store(f_ptr + offs, _erf32(x), mask=mask)


@requires_triton
@pytest.mark.interpreter
def test_triton_equals_eager():
    g = np.random.default_rng(2026)
    sp = _special_bits()
    bits = np.concatenate([sp, np.arange(0, 2 ** 32, 2 ** 32 // 4096, dtype=np.int64) + 12345,
                           g.integers(0x00800000, 0x41200000, N_TRITON - sp.size - 4096) | (g.integers(0, 2, 1) << 31)])
    x = _floats(bits)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    xt = torch.from_numpy(x).to(dev)
    outs = [torch.empty_like(xt) for _ in NAMES]
    _math_kernel[(triton.cdiv(x.size, 1024),)](xt, *outs, x.size, BLOCK=1024, enable_fp_fusion=False)
    for name, got in zip(NAMES, outs):
        assert_same_bits(got.cpu(), getattr(tr, name)(torch.from_numpy(x)), x, f"triton {name} vs eager")


# --- accuracy ----------------------------------------------------------------------------

def _random_bits(g, lo: int, hi: int, n: int) -> np.ndarray:
    """n bit patterns in [lo, hi) (uniform in the bits: every binade alike), plus both ends."""
    return np.concatenate([g.integers(lo, hi, n), np.arange(lo, lo + 64), np.arange(hi - 64, hi)])


@pytest.mark.parametrize("name,ref,bound,ranges", [
    ("exp32", np.exp, tr.EXP_MAX_ULP, [(0x31800000, 0x42B17218, 0), (0x31800000, 0x42AEAC50, 0x80000000)]),
    ("tanh32", np.tanh, tr.TANH_MAX_ULP, [(0x00800000, 0x41200000, 0), (0x3F000000, 0x3F400000, 0x80000000)]),
    ("erf32", lambda v: torch.special.erf(torch.from_numpy(v)).numpy(), tr.ERF_MAX_ULP,
     [(0x00800000, 0x40C00000, 0), (0x3F400000, 0x40000000, 0x80000000)]),
])
def test_accuracy(name, ref, bound, ranges):
    g = np.random.default_rng(13)
    bits = np.concatenate([_random_bits(g, lo, hi, N_ACCURACY // len(ranges)) | sign for lo, hi, sign in ranges])
    x = _floats(bits)
    got = getattr(tr, name)(torch.from_numpy(x)).numpy()
    err = _ulp_error(got, ref(x.astype(np.float64)))
    assert err.max() <= bound, (name, err.max(), x[err.argmax()])
