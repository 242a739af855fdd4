"""Philox4x32-10 and the SPEC's random streams, in torch integer ops (SPEC §2), and
their standard normal draws (SPEC §2b, :mod:`fastneuron.normal`).

Every word is held in an int64 tensor with a value in [0, 2**32); the 32x32-bit
products of a round wrap in int64 and keep all 64 bits of the unsigned product.
Written with plain elementwise ops only, so that the same code runs eagerly
on CPU and CUDA and fuses under ``torch.compile``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from .normal import normal_block

MASK32 = 0xFFFFFFFF
PHILOX_ROUND_A = 0xD2511F53  # multiplies c0
PHILOX_ROUND_B = 0xCD9E8D57  # multiplies c2
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUNDS = 10

#: Stream keys (k0, k1) of SPEC §2; the seed sits in the counter.
DATA_KEY = (0, 0)
INIT_KEY = (1, 0)
NOISE_KEY = (2, 0)

#: Triton's ``uint_to_uniform_float`` scale, as the float32 it becomes (a double
#: holding exactly that float32, so that any later cast to float32 is exact).
UNIFORM_SCALE = float(np.float32(4.6566127342e-10))


def _low(p):
    """A product kept whole in int64 tensors; a Python int (unbounded) is cut to 32 bits."""
    return p if isinstance(p, torch.Tensor) else p & MASK32


def philox4x32(c0, c1, c2, c3, key=(0, 0), rounds: int = PHILOX_ROUNDS):
    """Philox4x32 (``rounds`` rounds) of counter (c0, c1, c2, c3) under ``key = (k0, k1)``.

    Counter words are int64 tensors (or Python ints) holding values in [0, 2**32);
    they broadcast. Returns four int64 tensors of words in [0, 2**32), equal to
    ``tl.philox(k0 | k1 << 32, c0, c1, c2, c3)``.
    """
    k0, k1 = key
    for _ in range(rounds):
        # 32x32-bit products in int64: the multiply wraps mod 2**64, so p's 64 bits are
        # the unsigned product's; hi = p >> 32 (masked: the shift is arithmetic).
        # c1 and c3 keep p whole: only their low 32 bits (lo0, lo2) ever matter, and
        # the mask after the next xor drops the rest. Two masks a round instead of four.
        p0 = c0 * PHILOX_ROUND_A
        p2 = c2 * PHILOX_ROUND_B
        c0, c1, c2, c3 = ((p2 >> 32) ^ c1 ^ k0) & MASK32, _low(p2), ((p0 >> 32) ^ c3 ^ k1) & MASK32, _low(p0)
        k0 = (k0 + PHILOX_KEY_A) & MASK32
        k1 = (k1 + PHILOX_KEY_B) & MASK32
    return c0, c1 & MASK32, c2, c3 & MASK32


def uint32_to_uniform(word: torch.Tensor) -> torch.Tensor:
    """A word in [0, 2**32) to float32 in [0, 1), as Triton's ``uint_to_uniform_float``.

    The word is read as int32 ``i`` (``to(int32)`` keeps the low 32 bits); negative
    ``i`` becomes ``~i``, which is ``i ^ (i >> 31)`` without a branch or select.
    """
    i = word.to(torch.int32)
    i = i ^ (i >> 31)
    return i.to(torch.float32) * UNIFORM_SCALE


def split_seeds(seeds: torch.Tensor):
    """(s_lo, s_hi): the low and high 32-bit words of seeds stored as int64 two's
    complement of [0, 2**64), each kept as the bit pattern of an int32 (4 bytes a
    member instead of 8: training 2**20 members on 2 cores needed 69 bytes a member
    with int64 words, 61 with these). :func:`seed_word` reads them back."""
    if sys.byteorder == "little":  # the two halves of each int64, without an int64 temporary
        halves = seeds.contiguous().view(torch.int32)
        return halves[0::2].clone(), halves[1::2].clone()
    return seeds.to(torch.int32), (seeds >> 32).to(torch.int32)


def consecutive_words(first: int, n: int, device=None) -> torch.Tensor:
    """Words ``first, first + 1, ..., first + n - 1`` (all below 2**32) as int32 bit
    patterns: one int32 arange on each side of 2**31, no int64 temporary."""
    if first < 0 or first + n > 2**32:
        raise ValueError(f"words {first} .. {first + n - 1} are not all in [0, 2**32)")
    out = torch.empty(n, dtype=torch.int32, device=device)
    cut = min(n, max(0, 2**31 - first))  # the words below 2**31, then those above
    if cut:
        torch.arange(first, first + cut, dtype=torch.int32, device=device, out=out[:cut])
    if cut < n:
        a = max(first, 2**31) - 2**32  # the int32 bit pattern of the first word above 2**31
        torch.arange(a, a + n - cut, dtype=torch.int32, device=device, out=out[cut:])
    return out


def seed_word(s: torch.Tensor) -> torch.Tensor:
    """A seed word (int32 bit pattern, or int64 in [0, 2**32)) as int64 in [0, 2**32)."""
    return s.to(torch.int64) & MASK32


def coordinate_key(key: tuple, inputs: int, device=None) -> tuple:
    """Stream ``key``'s keys for coordinates 0 .. inputs-1 (SPEC §6b: coordinate i in the
    key's high word): ``key`` itself for one input, else (k0, int64 (inputs, 1) tensor),
    which broadcasts a (M,) counter to (inputs, M) words."""
    if inputs == 1:
        return key
    return key[0], key[1] + torch.arange(inputs, dtype=torch.int64, device=device).reshape(inputs, 1)


def init_params(s_lo: torch.Tensor, s_hi: torch.Tensor):
    """Initial (w0, b0), each U(-1, 1) as ``nn.Linear(1, 1)``: the init stream, words 0 and 1."""
    r0, r1, _, _ = philox4x32(0, 0, seed_word(s_lo), seed_word(s_hi), key=INIT_KEY)
    w0 = -1.0 + 2.0 * uint32_to_uniform(r0)
    b0 = -1.0 + 2.0 * uint32_to_uniform(r1)
    return w0, b0


def data_block(s_lo, s_hi, q, lo: torch.Tensor, span: torch.Tensor, inputs: int = 1):
    """Samples 4q .. 4q+3 of each member's data stream: four float32 x tensors, (M,)
    or, with ``inputs`` d > 1, (d, M) (coordinate i from key (0, i), SPEC §6b).

    ``q`` is a Python int or an int64 tensor (any value in [0, 2**64) that fits int64).
    """
    lo_w = seed_word(s_lo)
    words = philox4x32(q & MASK32, q >> 32, lo_w, seed_word(s_hi), key=coordinate_key(DATA_KEY, inputs, lo_w.device))
    return tuple(lo + span * uint32_to_uniform(r) for r in words)


def normal_data_block(s_lo, s_hi, q, mean, std, inputs: int = 1):
    """Samples 4q .. 4q+3 of each member's data stream drawn from N(mean, std**2): four
    float32 x tensors, ``x = mean + std*z`` (``std*z`` rounded first, then ``+ mean``),
    z from :func:`fastneuron.normal.normal_block` of the same Philox words as
    :func:`data_block` (key DATA_KEY, counter (q & 0xFFFFFFFF, q >> 32, s_lo, s_hi)).

    ``mean`` and ``std`` are float32 tensors (broadcasting) or Python floats holding
    float32 values exactly.
    """
    lo_w = seed_word(s_lo)
    words = philox4x32(q & MASK32, q >> 32, lo_w, seed_word(s_hi), key=coordinate_key(DATA_KEY, inputs, lo_w.device))
    return tuple(mean + std * z for z in normal_block(*words))


def noise_block(s_lo, s_hi, q):
    """Label noise eps of samples 4q .. 4q+3: four float32 N(0, 1) tensors, from
    :func:`fastneuron.normal.normal_block` of the words of key NOISE_KEY with the data
    stream's counter (q & 0xFFFFFFFF, q >> 32, s_lo, s_hi)."""
    words = philox4x32(q & MASK32, q >> 32, seed_word(s_lo), seed_word(s_hi), key=NOISE_KEY)
    return normal_block(*words)
