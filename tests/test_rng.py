"""fastneuron.rng: Philox4x32-10 known answers, Triton's tl.philox / uint_to_uniform_float, the
SPEC's init and data streams (SPEC §2)."""

from __future__ import annotations


import numpy as np
import pytest
import spec_numpy as S
import torch
from conftest import SPEC_VECTORS, requires_triton

from fastneuron import rng

MASK32 = 0xFFFFFFFF
U64_MAX = 2**64 - 1
EDGE_SEEDS = [0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, U64_MAX]
# counters q of the data stream: (q & MASK32, q >> 32) are (c0, c1), so c1 > 0 from 2**32 on
EDGE_Q = [0, 1, 3, 2**31, 2**32 - 1, 2**32, 2**32 + 5, 2**33 + 7, 2**40 + 3, 2**62, 2**63 + 1, U64_MAX]

VECTORS = SPEC_VECTORS

# SPEC §2's own Random123 answers, and words of spec-vectors.json
KNOWN = [
    ((0, 0), (0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32, MASK32), (MASK32,) * 4, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
] + [
    ((int(v["seed"]) & MASK32, int(v["seed"]) >> 32), tuple(int(w, 16) for w in v["counter"]),
     tuple(int(w, 16) for w in v["words"]))
    for v in VECTORS["philox4x32_10"]
]
UNIFORM_EDGES = {0: 0x00000000, 1: 0x2FFFFFFF, 0x7FFFFFFF: 0x3F7FFFFF, 0x80000000: 0x3F7FFFFF,
                 0xFFFFFFFF: 0x00000000}
UNIFORM_KNOWN = {**UNIFORM_EDGES, **{int(v["word"], 16): int(v["u_bits"], 16) for v in VECTORS["uniform"]}}


def _random_u64(n: int, seed: int) -> list[int]:
    return [int(s) for s in np.random.default_rng(seed).integers(0, 2**64, size=n, dtype=np.uint64)]


def _i64(values) -> torch.Tensor:
    """Values in [0, 2**64) as int64 two's complement."""
    return torch.tensor([v - 2**64 if v >= 2**63 else v for v in values], dtype=torch.int64)


def _words(values) -> torch.Tensor:
    """uint32 words in int64 tensors, as fastneuron.rng keeps them."""
    return torch.tensor(list(values), dtype=torch.int64)


def _f32_bits(u: torch.Tensor) -> torch.Tensor:
    return u.view(torch.int32).to(torch.int64) & MASK32


# --- known answers -------------------------------------------------------------------------


@pytest.mark.parametrize("key,counter,words", KNOWN, ids=lambda v: "-".join(f"{x:x}" for x in v)
                         if isinstance(v, tuple) else None)
def test_philox_known_answers_python_ints(key, counter, words):
    out = rng.philox4x32(*counter, key=key)
    assert tuple(int(w) for w in out) == words


@pytest.mark.parametrize("key,counter,words", KNOWN)
def test_philox_known_answers_tensors(key, counter, words):
    out = rng.philox4x32(*(_words([c]) for c in counter), key=key)
    for o in out:
        assert o.dtype == torch.int64
    assert tuple(int(o[0]) for o in out) == words


def test_philox_ints_and_tensors_agree():
    """The same words from Python ints, 1-element tensors, broadcast tensors and mixes."""
    keys = [(0, 0), (1, 0), (MASK32, MASK32), (0x12345678, 0x9ABCDEF0)]
    counters = [(q & MASK32, q >> 32, s & MASK32, s >> 32) for q in EDGE_Q[:6] for s in EDGE_SEEDS]
    for key in keys:
        c = [_words(col) for col in zip(*counters)]
        batched = rng.philox4x32(*c, key=key)
        mixed = rng.philox4x32(c[0], 0, c[2], c[3], key=key)  # c1 given as a Python int 0
        for i, ctr in enumerate(counters):
            ints = rng.philox4x32(*ctr, key=key)
            assert all(isinstance(v, int) for v in ints)
            assert all(0 <= v <= MASK32 for v in ints)
            assert tuple(int(b[i]) for b in batched) == ints, (key, ctr)
            if ctr[1] == 0:
                assert tuple(int(b[i]) for b in mixed) == ints, (key, ctr)


def test_philox_matches_numpy_spec():
    """fastneuron's torch-int64 Philox against the independent uint64 NumPy one, many inputs."""
    gen = np.random.default_rng(0)
    n = 4096
    counters = gen.integers(0, 2**32, size=(4, n), dtype=np.uint64)
    counters[:, :8] = MASK32  # all-ones words (the int64 product wraps there)
    counters[:, 8:16] = 0
    for key in [(0, 0), (1, 0), (MASK32, MASK32), (0x9E3779B9, 0xBB67AE85), (7, 2**31)]:
        ours = rng.philox4x32(*(torch.from_numpy(c.astype(np.int64)) for c in counters), key=key)
        theirs = S.philox(key, *counters)
        for o, t in zip(ours, theirs):
            assert torch.equal(o, torch.from_numpy(t.astype(np.int64))), key


def test_philox_rounds_argument():
    # fewer rounds differ (sanity of the parameter), ten are the default
    c = (1, 2, 3, 4)
    assert rng.philox4x32(*c) == rng.philox4x32(*c, rounds=10)
    assert rng.philox4x32(*c, rounds=7) != rng.philox4x32(*c)
    assert rng.philox4x32(*c, rounds=7) == tuple(int(w) for w in S.philox((0, 0), *c, rounds=7))


@pytest.mark.parametrize("word,bits", sorted(UNIFORM_KNOWN.items()), ids=lambda v: f"{v:08x}")
def test_uint32_to_uniform_known(word, bits):
    u = rng.uint32_to_uniform(_words([word]))
    assert u.dtype == torch.float32
    assert int(_f32_bits(u)[0]) == bits
    assert 0.0 <= float(u[0]) < 1.0


def test_uint32_to_uniform_edges_and_range():
    words = list(UNIFORM_EDGES) + [2**31 - 2, 2**31 + 1, 0xFFFFFFFE, 0x00800000]
    u = rng.uint32_to_uniform(_words(words))
    expect = S.uniform(np.array(words, dtype=np.uint32))
    assert torch.equal(u.view(torch.int32), torch.from_numpy(expect.view(np.int32)))
    assert float(u.max()) < 1.0 and float(u.min()) >= 0.0
    # symmetric: word w and ~w map to the same float (i < 0 becomes ~i)
    w = _words(s & MASK32 for s in _random_u64(1000, 1))
    assert torch.equal(rng.uint32_to_uniform(w), rng.uint32_to_uniform(w ^ MASK32))
    # largest value is the float32 just below 1
    assert float(rng.uint32_to_uniform(_words([0x7FFFFFFF]))[0]) == float(np.nextafter(np.float32(1),
                                                                                    np.float32(0)))


def test_uint32_to_uniform_all_random_words_match_numpy():
    w = np.random.default_rng(2).integers(0, 2**32, size=100_000, dtype=np.uint64)
    ours = rng.uint32_to_uniform(torch.from_numpy(w.astype(np.int64)))
    assert torch.equal(ours.view(torch.int32), torch.from_numpy(S.uniform(w.astype(np.uint32)).view(np.int32)))


# --- the SPEC's streams --------------------------------------------------------------------


def test_split_seeds():
    seeds = EDGE_SEEDS + _random_u64(20, 3)
    s_lo, s_hi = rng.split_seeds(_i64(seeds))
    assert s_lo.dtype == s_hi.dtype == torch.int32  # bit patterns, 4 bytes a member
    assert rng.seed_word(s_lo).tolist() == [s & MASK32 for s in seeds]
    assert rng.seed_word(s_hi).tolist() == [s >> 32 for s in seeds]
    # int64 words in [0, 2**32) read back unchanged
    assert rng.seed_word(torch.tensor([0, MASK32, 2**31])).tolist() == [0, MASK32, 2**31]


def test_init_stream():
    seeds = EDGE_SEEDS + _random_u64(50, 4)
    w0, b0 = rng.init_params(*rng.split_seeds(_i64(seeds)))
    ew, eb = S.init(seeds)
    assert torch.equal(w0.view(torch.int32), torch.from_numpy(ew.view(np.int32)))
    assert torch.equal(b0.view(torch.int32), torch.from_numpy(eb.view(np.int32)))
    # SPEC §2 literally: key (1, 0), counter (0, 0, s_lo, s_hi), words 0 and 1
    for i, s in enumerate(seeds[:7]):
        r = rng.philox4x32(0, 0, s & MASK32, s >> 32, key=(1, 0))
        u0 = rng.uint32_to_uniform(_words([r[0]]))[0]
        u1 = rng.uint32_to_uniform(_words([r[1]]))[0]
        assert float(w0[i]) == float(np.float32(-1) + np.float32(2) * np.float32(float(u0)))
        assert float(b0[i]) == float(np.float32(-1) + np.float32(2) * np.float32(float(u1)))
    assert bool(((w0 >= -1) & (w0 < 1) & (b0 >= -1) & (b0 < 1)).all())


@pytest.mark.parametrize("q", EDGE_Q)
def test_data_block(q):
    seeds = EDGE_SEEDS + _random_u64(10, 5)
    s_lo, s_hi = rng.split_seeds(_i64(seeds))
    lo, span = torch.tensor(1.0), torch.tensor(4.0)
    block = rng.data_block(s_lo, s_hi, q, lo, span)  # q as a Python int, any size
    seeds_np = np.array(seeds, dtype=np.uint64)
    for k in range(4):
        expect = S.sample(seeds_np, 4 * q + k, np.float32(1), np.float32(4))
        assert torch.equal(block[k].view(torch.int32), torch.from_numpy(expect.view(np.int32))), (q, k)
        assert bool(((block[k] >= 1) & (block[k] < 5)).all())
    if q < 2**63:  # the same with q as a 0-dim int64 tensor
        block_t = rng.data_block(s_lo, s_hi, torch.tensor(q), lo, span)
        for a, b in zip(block, block_t):
            assert torch.equal(a, b)


# --- Triton's tl.philox and tl.uint_to_uniform_float, under the interpreter ----------------

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the tests below are skipped then
    triton = None

if triton is not None:

    @triton.jit
    def _philox_kernel(key_ptr, c0_ptr, c1_ptr, c2_ptr, c3_ptr, words_ptr, u_ptr, N: tl.constexpr):
        offs = tl.arange(0, N)
        key = tl.load(key_ptr + offs).to(tl.uint64, bitcast=True)  # int64 storage of [0, 2**64)
        c0 = tl.load(c0_ptr + offs).to(tl.uint32)  # int64 storage of [0, 2**32)
        c1 = tl.load(c1_ptr + offs).to(tl.uint32)
        c2 = tl.load(c2_ptr + offs).to(tl.uint32)
        c3 = tl.load(c3_ptr + offs).to(tl.uint32)
        r0, r1, r2, r3 = tl.philox(key, c0, c1, c2, c3)
        tl.store(words_ptr + 0 * N + offs, r0.to(tl.int64))
        tl.store(words_ptr + 1 * N + offs, r1.to(tl.int64))
        tl.store(words_ptr + 2 * N + offs, r2.to(tl.int64))
        tl.store(words_ptr + 3 * N + offs, r3.to(tl.int64))
        tl.store(u_ptr + 0 * N + offs, tl.uint_to_uniform_float(r0))
        tl.store(u_ptr + 1 * N + offs, tl.uint_to_uniform_float(r1))
        tl.store(u_ptr + 2 * N + offs, tl.uint_to_uniform_float(r2))
        tl.store(u_ptr + 3 * N + offs, tl.uint_to_uniform_float(r3))

    @triton.jit
    def _stream_kernel(s_ptr, q_ptr, words_ptr, STREAM: tl.constexpr, N: tl.constexpr):
        """As SPEC §2 writes a stream in Triton: tl.philox(STREAM, q_lo, q_hi, s_lo, s_hi)."""
        offs = tl.arange(0, N)
        s = tl.load(s_ptr + offs).to(tl.uint64, bitcast=True)
        q = tl.load(q_ptr + offs).to(tl.uint64, bitcast=True)
        r0, r1, r2, r3 = tl.philox(STREAM, (q & 0xFFFFFFFF).to(tl.uint32), (q >> 32).to(tl.uint32),
                                   (s & 0xFFFFFFFF).to(tl.uint32), (s >> 32).to(tl.uint32))
        tl.store(words_ptr + 0 * N + offs, r0.to(tl.int64))
        tl.store(words_ptr + 1 * N + offs, r1.to(tl.int64))
        tl.store(words_ptr + 2 * N + offs, r2.to(tl.int64))
        tl.store(words_ptr + 3 * N + offs, r3.to(tl.int64))

    @triton.jit
    def _uniform_kernel(w_ptr, u_ptr, N: tl.constexpr):
        offs = tl.arange(0, N)
        w = tl.load(w_ptr + offs).to(tl.uint32)
        tl.store(u_ptr + offs, tl.uint_to_uniform_float(w))


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pad_pow2(cols, fill=0):
    n = 1 << max(4, (len(cols[0]) - 1).bit_length())
    return n, [list(c) + [fill] * (n - len(c)) for c in cols]


def _run_philox_kernel(keys, counters):
    """tl.philox(key_i, counter_i) for each i; returns (words (4, n) int64, uniforms (4, n) float32)."""
    m = len(keys)
    n, (keys_p, *ctr_p) = _pad_pow2([keys, *zip(*counters)])
    dev = _device()
    args = [_i64(keys_p).to(dev)] + [_words(c).to(dev) for c in ctr_p]
    words = torch.empty(4 * n, dtype=torch.int64, device=dev)
    u = torch.empty(4 * n, dtype=torch.float32, device=dev)
    _philox_kernel[(1,)](*args, words, u, N=n)
    return words.view(4, n)[:, :m].cpu(), u.view(4, n)[:, :m].cpu()


@pytest.mark.interpreter
@requires_triton
@pytest.mark.parametrize("key,counter,words", KNOWN)
def test_tl_philox_known_answers(key, counter, words):
    k = key[0] | key[1] << 32
    got, _ = _run_philox_kernel([k], [counter])
    assert tuple(int(w) for w in got[:, 0]) == words


@pytest.mark.interpreter
@requires_triton
def test_tl_philox_many_keys_and_counters():
    """tl.philox with a 64-bit key (low word k0, high word k1) equals rng.philox4x32(key=(k0, k1))."""
    keys = EDGE_SEEDS + _random_u64(9, 6)
    ctrs = [(0, 0, 0, 0), (MASK32,) * 4, (1, 0, 0, 0), (0, 1, 0, 0), (5, 1, 7, 3), (0xDEADBEEF, 2**31, 1, MASK32)]
    gen = np.random.default_rng(7)
    ctrs += [tuple(int(v) for v in gen.integers(0, 2**32, size=4, dtype=np.uint64)) for _ in range(10)]
    all_keys = [k for k in keys for _ in ctrs]
    all_ctrs = [c for _ in keys for c in ctrs]
    got, got_u = _run_philox_kernel(all_keys, all_ctrs)
    for i, k in enumerate(keys):
        sl = slice(i * len(ctrs), (i + 1) * len(ctrs))
        ours = rng.philox4x32(*(_words(col) for col in zip(*ctrs)), key=(k & MASK32, k >> 32))
        for j in range(4):
            assert torch.equal(got[j, sl], ours[j]), f"key {k:#x} word {j}"
            u = rng.uint32_to_uniform(ours[j])
            assert torch.equal(got_u[j, sl].view(torch.int32), u.view(torch.int32)), f"key {k:#x} word {j}"


@pytest.mark.interpreter
@requires_triton
@pytest.mark.parametrize("stream,key", [(0, rng.DATA_KEY), (1, rng.INIT_KEY)], ids=["data", "init"])
def test_tl_philox_spec_streams(stream, key):
    """The SPEC's layout: seed in (c2, c3), sample block q in (c0, c1), c1 > 0 from q = 2**32 on."""
    seeds = EDGE_SEEDS + _random_u64(5, 8)
    qs = EDGE_Q + _random_u64(4, 9)
    pairs = [(s, q) for s in seeds for q in qs]
    n, (s_col, q_col) = _pad_pow2([[p[0] for p in pairs], [p[1] for p in pairs]])
    dev = _device()
    words = torch.empty(4 * n, dtype=torch.int64, device=dev)
    _stream_kernel[(1,)](_i64(s_col).to(dev), _i64(q_col).to(dev), words, STREAM=stream, N=n)
    got = words.view(4, n)[:, :len(pairs)].cpu()
    assert key == (stream, 0)
    ours = rng.philox4x32(_words([q & MASK32 for _, q in pairs]), _words([q >> 32 for _, q in pairs]),
                          _words([s & MASK32 for s, _ in pairs]), _words([s >> 32 for s, _ in pairs]), key=key)
    for j in range(4):
        bad = (got[j] != ours[j]).nonzero().flatten().tolist()
        assert not bad, f"stream {stream} word {j}: {len(bad)} of {len(pairs)} differ, first (seed, q) {pairs[bad[0]]}"
    # and the stream functions built on it
    if stream == 1:
        sl = [i for i, (_, q) in enumerate(pairs) if q == 0]
        w0, b0 = rng.init_params(_words([pairs[i][0] & MASK32 for i in sl]), _words([pairs[i][0] >> 32 for i in sl]))
        assert torch.equal(w0, -1.0 + 2.0 * rng.uint32_to_uniform(got[0, sl]))
        assert torch.equal(b0, -1.0 + 2.0 * rng.uint32_to_uniform(got[1, sl]))


@pytest.mark.interpreter
@requires_triton
def test_tl_uint_to_uniform_float():
    words = sorted(UNIFORM_KNOWN) + [2**31 - 2, 2**31 + 1, 0xFFFFFFFE, 0x00800000, 0x00FFFFFF, 0x01000001]
    words += [int(w) for w in np.random.default_rng(10).integers(0, 2**32, size=200, dtype=np.uint64)]
    n, (col,) = _pad_pow2([words])
    dev = _device()
    u = torch.empty(n, dtype=torch.float32, device=dev)
    _uniform_kernel[(1,)](_words(col).to(dev), u, N=n)
    got = u[:len(words)].cpu()
    ours = rng.uint32_to_uniform(_words(words))
    assert torch.equal(got.view(torch.int32), ours.view(torch.int32))
    for i, w in enumerate(words):
        if w in UNIFORM_KNOWN:
            assert int(_f32_bits(got[i:i + 1])[0]) == UNIFORM_KNOWN[w], f"{w:08x}"
