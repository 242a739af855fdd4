"""Other ways to write Philox4x32-10 in torch ops for the compiled CPU path (issue 11 item 5).

    python bench/philox_formulations.py [--members 1048576] [--repeats 9]

On AVX2 without AVX-512, Inductor vectorizes ``fastneuron.rng.philox4x32``'s int64
words 4 lanes at a time, and ATen multiplies int64 lanes one by one (``emulate`` in
``vec256_int.h``: extract, scalar ``imul``, insert); a C compiler would use
``vpmuludq``. Two formulations with the same words, bit for bit, avoid that multiply:

- ``i32``: words as int32 bit patterns (8 lanes), the low half of each product by
  ``vpmulld``, the high half from 16-bit limbs, all native int32 vector code;
- ``f64``: exact float64 partial products (a*Mh and a*Ml are below 2**48), joined in int64.

For each (the current one first) this checks the words against the current function
(eager, 2**20 counters with the edge words planted in, the three stream keys, Python-int
and 0-dim counters; compiled, the data stream's shape) and times a compiled call that
draws 3 blocks of 4 samples for every member: cold compile (own Inductor cache) and the
median of the timed calls, side by side in one process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

from fastneuron.rng import philox4x32, seed_word, uint32_to_uniform

MASK32 = 0xFFFFFFFF
ROUND_A, ROUND_B, KEY_A, KEY_B = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85


def _s32(x: int) -> int:
    """A word as the int32 value with its bits."""
    x &= MASK32
    return x - 2**32 if x >= 2**31 else x


def _limbs(m: int) -> tuple:
    """(mh, ml) with m = mh * 2**16 + ml, ml signed so that a*ml fits int32 for a < 2**16."""
    ml, mh = m & 0xFFFF, m >> 16
    if ml >= 2**15:
        ml, mh = ml - 2**16, mh + 1
    return mh, ml


def _mulhilo32(a, m: int):
    """(hi, lo) of the 32x32-bit product a*m as int32 bit patterns; ``a`` an int32 tensor."""
    if not isinstance(a, torch.Tensor):
        p = (a & MASK32) * m
        return _s32(p >> 32), _s32(p)
    if a.dim() == 0:
        # The block index: Inductor computes 0-dim values in scalar C++, where an int32
        # product that overflows is undefined (GCC miscompiled it): int64 limbs < 2**49.
        a64 = a.to(torch.int64) & MASK32
        x, y = a64 * (m >> 16), a64 * (m & 0xFFFF)
        return ((x + (y >> 16)) >> 16).to(torch.int32), (((x & 0xFFFF) << 16) + y).to(torch.int32)
    mh, ml = _limbs(m)
    al, ah = a & 0xFFFF, (a >> 16) & 0xFFFF
    t = al * ml
    w = ah * ml + (t >> 16)
    v = al * mh + (w & 0xFFFF)
    return ah * mh + (w >> 16) + ((v >> 16) & 0xFFFF), a * _s32(m)


def philox_i32(c0, c1, c2, c3, key=(0, 0), rounds: int = 10):
    """``philox4x32`` with int32 words and 16-bit limbs (same words)."""
    k0, k1 = key
    c0, c1, c2, c3 = (c.to(torch.int32) if isinstance(c, torch.Tensor) else _s32(c) for c in (c0, c1, c2, c3))
    for _ in range(rounds):
        hi0, lo0 = _mulhilo32(c0, ROUND_A)
        hi2, lo2 = _mulhilo32(c2, ROUND_B)
        c0, c1, c2, c3 = hi2 ^ c1 ^ _s32(k0), lo2, hi0 ^ c3 ^ _s32(k1), lo0
        k0, k1 = (k0 + KEY_A) & MASK32, (k1 + KEY_B) & MASK32
    return tuple(c.to(torch.int64) & MASK32 if isinstance(c, torch.Tensor) else c & MASK32 for c in (c0, c1, c2, c3))


_MAGIC = 0x4330000000000000  # the bits of 2.0**52


def _f64_constants(m: int) -> tuple:
    # d2's bits e satisfy (e << 16) == -MAGIC mod 2**64, so the magic cancels when joined.
    low = ((-_MAGIC) % 2**64) >> 16 & (2**48 - 1)
    return float(m >> 16), float(m & 0xFFFF), 2.0**52 + float(low)


def _product_f64(a, m: int):
    """a*m mod 2**64 as int64, from two exact float64 products (each below 2**48)."""
    if not isinstance(a, torch.Tensor):
        p = (a & MASK32) * m
        return p - 2**64 if p >= 2**63 else p
    if a.dim() == 0:
        return a * m
    mh, ml, d2 = _f64_constants(m)
    ad = (a | _MAGIC).view(torch.float64) - 2.0**52
    return ((ad * mh + d2).view(torch.int64) << 16) + (ad * ml + 2.0**52).view(torch.int64)


def philox_f64(c0, c1, c2, c3, key=(0, 0), rounds: int = 10):
    """``philox4x32`` with exact float64 partial products (same words)."""
    k0, k1 = key
    for _ in range(rounds):
        p0, p2 = _product_f64(c0, ROUND_A), _product_f64(c2, ROUND_B)
        c0, c1, c2, c3 = ((p2 >> 32) ^ c1 ^ k0) & MASK32, p2, ((p0 >> 32) ^ c3 ^ k1) & MASK32, p0
        k0, k1 = (k0 + KEY_A) & MASK32, (k1 + KEY_B) & MASK32
    return c0, c1 & MASK32, c2, c3 & MASK32


FORMULATIONS = {"current": philox4x32, "i32": philox_i32, "f64": philox_f64}


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def check(f) -> bool:
    """Eager and compiled words of ``f`` equal the current function's."""
    g = torch.Generator().manual_seed(0)
    c = [torch.randint(0, 2**32, (2**20,), dtype=torch.int64, generator=g) for _ in range(4)]
    edge = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32 - 2, 0xFFFF, 0x10000, 0xFFFF0000, 0x8000FFFF])
    pairs = torch.cartesian_prod(edge, edge).T
    for i in range(4):
        c[i][:pairs.shape[1]] = pairs[i % 2]
    ok = True
    for key in ((0, 0), (1, 0), (2, 0), (MASK32, MASK32)):
        ok &= _same(philox4x32(*c, key=key), f(*c, key=key))
        for q in (0, 5, 2**32 - 1, 2**40 + 7, torch.tensor(2**33 + 12345)):
            words = (q & MASK32, q >> 32, c[2], c[3])
            ok &= _same(philox4x32(*words, key=key), f(*words, key=key))
    s_lo, s_hi = c[2].to(torch.int32), c[3].to(torch.int32)
    for key in ((0, 0), (1, 0), (2, 0)):
        def block(q, s_lo, s_hi, f=f, key=key):
            return f(q & MASK32, q >> 32, seed_word(s_lo), seed_word(s_hi), key=key)
        torch._dynamo.reset()
        compiled = torch.compile(block, fullgraph=True)
        for q in (0, 2**32 - 1, 2**33 + 5):
            ok &= _same(block(torch.tensor(q), s_lo, s_hi, f=philox4x32), compiled(torch.tensor(q), s_lo, s_hi))
    return ok


def _draws(f):
    def draws(s_lo, s_hi, q):
        total = None
        for j in range(3):
            for word in f((q + j) & MASK32, (q + j) >> 32, seed_word(s_lo), seed_word(s_hi)):
                x = 1.0 + 4.0 * uint32_to_uniform(word)
                total = x if total is None else total + x
        return total
    return draws


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=2**20)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--only", default=",".join(FORMULATIONS), help="formulations to run, comma-separated")
    args = ap.parse_args(argv)
    names = args.only.split(",")
    g = torch.Generator().manual_seed(1)
    halves = torch.randint(-2**63, 2**63 - 1, (args.members,), dtype=torch.int64, generator=g).view(torch.int32)
    s_lo, s_hi = halves[0::2].clone(), halves[1::2].clone()
    torch._dynamo.mark_dynamic(s_lo, 0)
    torch._dynamo.mark_dynamic(s_hi, 0)
    options = {"cpp.dynamic_threads": True, "cpp.vec_isa_ok": True}  # as fastneuron.kernels.compiled
    want = _draws(philox4x32)(s_lo, s_hi, torch.tensor(777))
    fns, cold = {}, {}
    for name in names:
        same = check(FORMULATIONS[name])
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"philox_{name}_")
        torch._dynamo.reset()
        fns[name] = torch.compile(_draws(FORMULATIONS[name]), fullgraph=True, options=options)
        t0 = time.perf_counter()
        out = fns[name](s_lo, s_hi, torch.tensor(777))
        cold[name] = time.perf_counter() - t0
        print(f"{name}: words equal to the current function's: {same}; compiled draws equal: "
              f"{torch.equal(out, want)}; cold compile {cold[name]:.1f} s", flush=True)
    times = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved, so that load changes hit every formulation alike
        for name in names:
            t0 = time.perf_counter()
            fns[name](s_lo, s_hi, torch.tensor(777))
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[names[0]])
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:8s} median {med * 1e3:7.2f} ms a call, {med / (3 * args.members) * 1e9:5.2f} ns a block "
              f"and member, {base / med:.2f}x {names[0]}")
    print(f"M = {args.members}, {args.repeats} timed calls each, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
