"""``backend="triton"`` for SPEC §6: the full neuron ``act(w . x + b)`` with d inputs, on the
linear or the teacher problem, with SGD, Adam, AdamW or RMSprop.

:mod:`.triton_sgd` and :mod:`.triton_adam` keep v2's one-input neuron on the linear problem
(and the teacher problem where it computes exactly that, see :func:`as_linear`): their code
and speed are unchanged. Everything else of SPEC §6 runs here, in one of two kernels that
share their helpers (:func:`layout` picks one):

- ``neuron_kernel`` (small d, see REGISTER_BUDGET): a program holds BLOCK members x DB
  coordinates (DB = the next power of two >= d) as 2-D tiles ``[DB, BLOCK]`` (coordinates
  first, members last, as the (d, M) tensors), the weight and its optimizer state in
  registers for a whole chunk of steps, as the v2 kernels do. Steps go in Philox-aligned
  groups unrolled at compile time (with XCACHE one Philox call per coordinate and four
  samples), the rest in a loop over samples.
- ``neuron_chunked_kernel`` (larger d): the weight and its state stay in their (d, M)
  tensors; each step walks the coordinates in chunks of DB = :data:`CHUNK` (a power of two),
  once for the forward pass of every sample of the batch and once for the update, drawing a
  chunk's x afresh each time (a Philox call per coordinate and sample, twice). With B > 1 the
  samples' dL/dz wait in a scratch (B, M) tensor between the two passes.

On a GPU a program runs one member a thread (BLOCK = 128): Triton then keeps a member's
coordinates in its thread's registers, so the tree, the broadcasts of per-member values and
the finite checks need no shuffle or shared memory. The kernels do not specialize on
n_members: with M % 16 == 0 Triton would vectorize the (d, M) loads by 4 members a thread and
move every tile through shared memory to the one-member layout (twice the instructions).

The dot product is SPEC §6c's pairwise tree, done by hand (:func:`_tree`): the products,
padded with -0.0 to DB rows, are reshaped to ``[DB/2, 2, BLOCK]`` and each pair summed (one
rounded addition), log2(DB) levels. A chunk of DB = 2**k coordinates starting at a multiple of
DB is a whole subtree of the tree of P = 2**K >= d products, so the chunked kernel trees each
chunk and combines the chunk sums with a binary-counter stack (:func:`_push`, :func:`_fold`):
the same additions in the same order as the eager reference's ``model.tree_sum``, in
LOG2(P/DB) + 1 rows of registers whatever d.

Random numbers (SPEC §6b): coordinate i of the data stream is Philox under key (0, i), the
coordinate in the key's high word (``tl.philox``'s seed ``i << 32``), counter (q & 0xFFFFFFFF,
q >> 32, s_lo, s_hi); the kernels pass the key's high word as a tensor of the tile's
coordinates (:func:`_philox_rows`). Label noise is one normal per sample (key (2, 0)), as v2.
The init (SPEC §6b) is drawn on the host side by :func:`fastneuron.model.init_params` (torch,
on the members' device): once a run, d Philox calls a member.

Bit-exactness as in the v2 kernels: every float op one separately rounded float32 op,
``enable_fp_fusion=False``, ``tl.math.div_rn`` for every division; the transcendentals are
:mod:`.triton_math`'s ``_exp32``, ``_tanh32``, ``_erf32`` (SPEC §2c). ``python -m
fastneuron.kernels.sass --kernel neuron --kernel neuron_chunked`` counts their instructions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Optional

import numpy as np
import torch
import triton
import triton.language as tl
from triton.language.random import philox_impl

from fastneuron._validate import check_int
from fastneuron.kernels import triton_adam
from fastneuron.kernels.triton_adam import _adam, _rmsprop, _step_size
from fastneuron.kernels.triton_common import (FLT_MAX, MUL_WIDE_A, MUL_WIDE_B, PHILOX_KEY_A, PHILOX_KEY_B,
                                              PHILOX_ROUND_A, PHILOX_ROUND_B, PTX_PHILOX, _check_members_base,
                                              _check_tensor, _member_words, _mul_wide, _philox, check_schedule)
from fastneuron.kernels.triton_math import _erf32, _exp32, _tanh32
from fastneuron.kernels.triton_normal import _box_muller, _normal_block
from fastneuron.kernels import triton_sgd
from fastneuron.kernels.triton_sgd import _sgd
from fastneuron.model import ACTIVATIONS, NeuronFlags
from fastneuron.model import init_params as model_init_params
from fastneuron.optim import SGD, SGDFlags
from fastneuron.problems import LinearConstants, LinearFlags, LinearTarget, Teacher, TeacherFlags
from fastneuron.reference import Constants, History, Members, State, StepConfig
from fastneuron.reference import neg_lr64 as member_neg_lr64

#: ``neuron_kernel`` holds, per member, DB floats in each of its tiles: w, its gradient sum,
#: the optimizer's state slots, and x: with XCACHE the four samples of a Philox block (one
#: Philox call per coordinate and 4 samples), else the sample's own (one call per sample; at
#: B = 1 ptxas shares the 4 steps' calls anyway). It runs d inputs when DB * (6 + slots) <=
#: REGISTER_BUDGET (XCACHE), or else DB * (3 + slots) <= UNCACHED_BUDGET: SGD d <= 64 (with
#: momentum too), Adam d <= 32; larger d run in ``neuron_chunked_kernel``, CHUNK coordinates at
#: a time. (d = 64 and Adam at d = 32 spill some registers: still 3-4x fewer instructions than
#: the chunked kernel's, see bench/results/sass-neuron-2026-12-07.txt.)
REGISTER_BUDGET = 224
UNCACHED_BUDGET = 256
CHUNK = 16

#: Warps per program on a GPU; a program runs one member a thread (BLOCK = 32 * warps): its
#: DB coordinates then sit in the thread's registers, and the tree, the broadcasts of a
#: member's values over its coordinates and the finite checks need no shuffle or shared
#: memory (with two or more threads a member, Triton's layouts move the tiles through shared
#: memory: twice the instructions, see ``python -m fastneuron.kernels.sass``).
NEURON_NUM_WARPS = 4
#: Under the interpreter every op costs about the same whatever its size: big programs, and
#: big chunks (the chunks' combination is the same code whatever their size: the tests check
#: it with small ones too).
INTERPRET_CHUNK = 128
INTERPRET_TILE_ELEMENTS = 16384
INTERPRET_MAX_BLOCK = 1024

#: SPEC §6 forbids contracting products into sums: no FMA.
NEURON_ENABLE_FP_FUSION = False

#: Steps whose samples number at most this many per Philox-aligned group are unrolled.
NEURON_MAX_UNROLLED_SAMPLES = 32

#: SPEC §6e's constants: f32(1/sqrt(2)) (0x3f3504f3) and f32(2/sqrt(pi)) (0x3f906ebb).
INV_SQRT2 = tl.constexpr(0.7071067690849304)
TWO_OVER_SQRT_PI = tl.constexpr(1.1283792257308960)

#: Activation codes (the kernels' ACT and TACT constexprs): the index in model.ACTIVATIONS.
IDENTITY = tl.constexpr(0)
RELU = tl.constexpr(1)
LEAKY_RELU = tl.constexpr(2)
SIGMOID = tl.constexpr(3)
TANH = tl.constexpr(4)
ERF = tl.constexpr(5)
ABS = tl.constexpr(6)
SQUARE = tl.constexpr(7)

#: Optimizer codes (OPTIMIZER): triton_adam's three, and SGD.
N_ADAM = tl.constexpr(0)
N_ADAMW = tl.constexpr(1)
N_RMSPROP = tl.constexpr(2)
N_SGD = tl.constexpr(3)
OPTIMIZER_CODES = {"adam": 0, "adamw": 1, "rmsprop": 2, "sgd": 3}

#: The run-wide float32 constants, in the order the kernels read them from ``prob_ptr``:
#: k1..k3 are the optimizer's (SGD: f32(1 - dampening); Adam/AdamW: w1, b2, w2; RMSprop:
#: momentum), slope_m the model's leaky slope, slope_t the teacher's.
PROB_NAMES = ("a", "c", "lo", "span", "batch", "x_mean", "x_std", "slope_m", "slope_t", "k1", "k2", "k3")


# ----------------------------------------------------------------------------- helpers

@triton.jit
def _philox_rows(key1, c0, c1, c2, c3, BLOCK: tl.constexpr, DB: tl.constexpr):
    """Philox4x32-10 under key (0, key1) for a ``[DB, BLOCK]`` tile: ``key1`` (uint32) the
    tile's coordinates ([DB, 1]), counter (c0, c1) scalars and (c2, c3) the members' seed
    words ([1, BLOCK]): the words of ``tl.philox(key1 << 32, c0, c1, c2, c3)``."""
    key1 = tl.broadcast_to(key1, (DB, BLOCK))
    c0 = tl.broadcast_to(c0, (DB, BLOCK))
    c1 = tl.broadcast_to(c1, (DB, BLOCK))
    c2 = tl.broadcast_to(c2, (DB, BLOCK))
    c3 = tl.broadcast_to(c3, (DB, BLOCK))
    key0 = tl.full((DB, BLOCK), 0, tl.uint32)
    if PTX_PHILOX:
        for _ in tl.static_range(10):
            hi_b, lo_b = _mul_wide(c2, PHILOX_ROUND_B, MUL_WIDE_B)
            hi_a, lo_a = _mul_wide(c0, PHILOX_ROUND_A, MUL_WIDE_A)
            c0 = hi_b ^ c1 ^ key0
            c2 = hi_a ^ c3 ^ key1
            c1 = lo_b
            c3 = lo_a
            key0 = key0 + PHILOX_KEY_A
            key1 = key1 + PHILOX_KEY_B
    else:
        c0, c1, c2, c3 = philox_impl(c0, c1, c2, c3, key0, key1)
    return c0, c1, c2, c3


@triton.jit
def _x_words(r0, r1, r2, r3, lo, span, x_mean, x_std, NORMAL: tl.constexpr):
    """The four samples of a block of words: ``lo + span*u`` or ``x_mean + x_std*z``."""
    if NORMAL:
        z0, z1, z2, z3 = _normal_block(r0, r1, r2, r3)
        x0 = x_mean + x_std * z0
        x1 = x_mean + x_std * z1
        x2 = x_mean + x_std * z2
        x3 = x_mean + x_std * z3
    else:
        x0 = lo + span * tl.uint_to_uniform_float(r0)
        x1 = lo + span * tl.uint_to_uniform_float(r1)
        x2 = lo + span * tl.uint_to_uniform_float(r2)
        x3 = lo + span * tl.uint_to_uniform_float(r3)
    return x0, x1, x2, x3


@triton.jit
def _x_block(q, s_lo, s_hi, key1, lo, span, x_mean, x_std, BLOCK: tl.constexpr, DB: tl.constexpr,
             NORMAL: tl.constexpr):
    """Samples 4q .. 4q+3, coordinates ``key1`` ([DB, 1] uint32) of each member: four
    ``[DB, BLOCK]`` x tiles (SPEC §6b); ``q`` an int64 scalar, s_lo/s_hi uint32 [1, BLOCK]."""
    q = tl.cast(q, tl.int64)
    c0 = (q & 0xFFFFFFFF).to(tl.uint32)
    c1 = (q >> 32).to(tl.uint32)
    r0, r1, r2, r3 = _philox_rows(key1, c0, c1, s_lo, s_hi, BLOCK, DB)
    return _x_words(r0, r1, r2, r3, lo, span, x_mean, x_std, NORMAL)


@triton.jit
def _x_sample(n, s_lo, s_hi, key1, lo, span, x_mean, x_std, BLOCK: tl.constexpr, DB: tl.constexpr,
              NORMAL: tl.constexpr):
    """Sample ``n`` (int64 scalar), coordinates ``key1``: word n % 4 of block n // 4 (a
    normal: only the Box-Muller pair that holds it, the same bits as :func:`_x_block`'s)."""
    q = tl.cast(n // 4, tl.int64)
    r = n % 4
    r0, r1, r2, r3 = _philox_rows(key1, (q & 0xFFFFFFFF).to(tl.uint32), (q >> 32).to(tl.uint32), s_lo, s_hi,
                                  BLOCK, DB)
    if NORMAL:
        za, zb = _box_muller(tl.where(r >= 2, r2, r0), tl.where(r >= 2, r3, r1))
        x = x_mean + x_std * tl.where(r % 2 == 0, za, zb)
    else:
        word = tl.where(r == 0, r0, tl.where(r == 1, r1, tl.where(r == 2, r2, r3)))
        x = lo + span * tl.uint_to_uniform_float(word)
    return x


@triton.jit
def _x_word(q, R: tl.constexpr, s_lo, s_hi, key1, lo, span, x_mean, x_std, BLOCK: tl.constexpr, DB: tl.constexpr,
            NORMAL: tl.constexpr):
    """Sample 4q + R (R constexpr) alone: word R of the block (a normal: its Box-Muller pair
    only), the same bits as :func:`_x_block`'s."""
    q = tl.cast(q, tl.int64)
    r0, r1, r2, r3 = _philox_rows(key1, (q & 0xFFFFFFFF).to(tl.uint32), (q >> 32).to(tl.uint32), s_lo, s_hi,
                                  BLOCK, DB)
    if NORMAL:
        if R < 2:
            za, zb = _box_muller(r0, r1)
        else:
            za, zb = _box_muller(r2, r3)
        if R % 2 == 0:
            z = za
        else:
            z = zb
        x = x_mean + x_std * z
    else:
        if R == 0:
            word = r0
        elif R == 1:
            word = r1
        elif R == 2:
            word = r2
        else:
            word = r3
        x = lo + span * tl.uint_to_uniform_float(word)
    return x


@triton.jit
def _noise_block(q, s_lo, s_hi, sigma):
    """``sigma*eps`` of samples 4q .. 4q+3 (key (2, 0), SPEC §2b): four [BLOCK] tensors."""
    q = tl.cast(q, tl.int64)
    c0 = (q & 0xFFFFFFFF).to(tl.uint32)
    c1 = (q >> 32).to(tl.uint32)
    n0, n1, n2, n3 = _philox(2, 0, c0, c1, s_lo, s_hi)
    g0, g1, g2, g3 = _normal_block(n0, n1, n2, n3)
    return sigma * g0, sigma * g1, sigma * g2, sigma * g3


@triton.jit
def _noise_sample(n, s_lo, s_hi, sigma):
    """``sigma*eps`` of sample ``n`` alone (its Box-Muller pair only)."""
    q = tl.cast(n // 4, tl.int64)
    r = n % 4
    n0, n1, n2, n3 = _philox(2, 0, (q & 0xFFFFFFFF).to(tl.uint32), (q >> 32).to(tl.uint32), s_lo, s_hi)
    za, zb = _box_muller(tl.where(r >= 2, n2, n0), tl.where(r >= 2, n3, n1))
    return sigma * tl.where(r % 2 == 0, za, zb)


@triton.jit
def _tree(p, BLOCK: tl.constexpr, DB: tl.constexpr, LOG2: tl.constexpr):
    """SPEC §6c's pairwise tree over the first dimension of ``p`` ([DB, BLOCK], DB = 2**LOG2,
    padded with -0.0): adjacent pairs summed, level by level. Returns [BLOCK].

    A level reshapes the n rows to [n/2, 2, BLOCK] (row 2k+j at [k, j]) and sums over the
    pair's axis: a sum of two terms is one rounded addition, p_2k + p_2k+1 (IEEE addition
    is commutative, so which of the two the reduction takes first makes no difference)."""
    for level in tl.static_range(LOG2):
        p = tl.sum(tl.reshape(p, (DB >> (level + 1), 2, BLOCK)), axis=1)
    return tl.reshape(p, (BLOCK,))


@triton.jit
def _level(stack, levels, lev):
    """Row ``lev`` of ``stack`` ([NSTACK, BLOCK]), exactly: a sum of -0.0s and that row's
    value v, in any order, is v (-0.0 + v == v for every v)."""
    return tl.sum(tl.where(levels == lev, stack, -0.0), axis=0)


@triton.jit
def _push(stack, carry, k, levels, LOG2_NCHUNK: tl.constexpr):
    """Chunk ``k``'s sum ``carry`` into the binary-counter stack of SPEC §6c's tree over
    chunk sums (k = the chunks pushed so far): row lev holds the sum of a whole subtree of
    2**lev chunks exactly when bit lev of k is 1. The trailing ones of k are the pending left
    subtrees this chunk completes: each is added on the left (left + right, as the tree
    does), and the carry goes to the level of k's lowest 0 bit."""
    tz = k * 0  # k's trailing ones
    for lev in tl.static_range(LOG2_NCHUNK):
        tz = tz + tl.where((((k >> lev) & 1) == 1) & (tz == lev), 1, 0)
    for lev in tl.static_range(LOG2_NCHUNK):
        carry = tl.where(lev < tz, _level(stack, levels, lev) + carry, carry)
    return tl.where(levels == tz, carry[None, :], stack)


@triton.jit
def _fold(stack, levels, N_REAL: tl.constexpr, LOG2_NCHUNK: tl.constexpr):
    """The tree's root after N_REAL chunks were pushed: the chunks past them (padding) sum
    to -0.0, and v + -0.0 == v, so the root is the pending subtrees (the set bits of N_REAL)
    added right to left: the lowest level's, then each higher (further left) one on its left."""
    acc = tl.full([stack.shape[1]], -0.0, tl.float32)
    for lev in tl.static_range(LOG2_NCHUNK + 1):
        if (N_REAL >> lev) & 1:
            acc = _level(stack, levels, lev) + acc
    return acc


@triton.jit
def _sigmoid32(z):
    """``1 / (1 + exp32(-z))``, three roundings (SPEC §6e)."""
    e = _exp32(-z)
    d = 1.0 + e
    return tl.math.div_rn(tl.full(d.shape, 1.0, tl.float32), d)


@triton.jit
def _activate(z, slope, ACT: tl.constexpr):
    """y = act(z), SPEC §6e's forward column (as ``model.activate``)."""
    if ACT == RELU:
        y = tl.where(z < 0, 0.0, z)
    elif ACT == LEAKY_RELU:
        y = tl.where(z > 0, z, z * slope)
    elif ACT == SIGMOID:
        y = _sigmoid32(z)
    elif ACT == TANH:
        y = _tanh32(z)
    elif ACT == ERF:
        y = _erf32(z * INV_SQRT2)
    elif ACT == ABS:
        y = tl.abs(z)
    elif ACT == SQUARE:
        y = z * z
    else:
        y = z
    return y


@triton.jit
def _activation_grad(z, y, gy, slope, ACT: tl.constexpr):
    """gz from gy, SPEC §6e's backward column (as ``model.activation_grad``)."""
    if ACT == RELU:
        gz = tl.where(z <= 0, 0.0, gy)
    elif ACT == LEAKY_RELU:
        gz = tl.where(z > 0, gy, gy * slope)
    elif ACT == SIGMOID:
        gz = (gy * (1.0 - y)) * y
    elif ACT == TANH:
        gz = gy * (1.0 - y * y)
    elif ACT == ERF:
        v = z * INV_SQRT2
        e = _exp32(-(v * v))
        gv = (TWO_OVER_SQRT_PI * e) * gy
        gz = gv * INV_SQRT2
    elif ACT == ABS:
        sgn = tl.where(z > 0, 1.0, tl.where(z < 0, -1.0, 0.0))
        gz = gy * sgn
    elif ACT == SQUARE:
        gz = gy * (2.0 * z)
    else:
        gz = gy
    return gz


@triton.jit
def _output_grad(s, u, b, e, sigma, c, slope_m, slope_t, BIAS: tl.constexpr, ACT: tl.constexpr,
                 TACT: tl.constexpr, BCE: tl.constexpr, NOISE: tl.constexpr):
    """dL/dz of one sample (SPEC §6d, §6e) from the trees ``s`` = w . x and ``u`` = a . x
    ([BLOCK]), the bias, and the noise term ``e`` = sigma*eps (read where sigma != 0)."""
    if BIAS:
        z = s + b
    else:
        z = s
    u = u + c
    if BCE:
        v = u
        if NOISE:
            v = tl.where(sigma != 0, v + e, v)
        t = tl.where(v > 0, 1.0, 0.0)
        gz = _sigmoid32(z) - t
    else:
        t = _activate(u, slope_t, TACT)
        if NOISE:
            t = tl.where(sigma != 0, t + e, t)
        y = _activate(z, slope_m, ACT)
        gy = 2.0 * (y - t)
        gz = _activation_grad(z, y, gy, slope_m, ACT)
    return gz


@triton.jit
def _opt_update(p, g, s0, s1, s2, first, lr, c, inv_bc2s, oa, ob, oc, od, k1, k2, k3,
                OPTIMIZER: tl.constexpr, WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr,
                NESTEROV: tl.constexpr, AMSGRAD: tl.constexpr, LERP_SMALL: tl.constexpr, CENTERED: tl.constexpr):
    """One parameter's update (SPEC §3b-§3d), elementwise on tiles: SGD (``_sgd``: s0 the
    momentum buffer; oa = momentum, ob = weight decay, k1 = f32(1 - dampening)), Adam/AdamW
    (``_adam``: s0..s2 exp_avg, exp_avg_sq, max_exp_avg_sq; c = f32(-lr/bc1), oa = eps, ob =
    wd, oc = AdamW's decay, k1..k3 = w1, b2, w2) or RMSprop (``_rmsprop``: s0..s2
    square_avg, grad_avg, momentum_buffer; oa = eps, ob = wd, oc = alpha, od = f32(1 -
    alpha), k1 = momentum)."""
    if OPTIMIZER == N_SGD:
        p, s0 = _sgd(p, g, s0, first, lr, oa, ob, k1, WEIGHT_DECAY, MOMENTUM, NESTEROV)
    elif OPTIMIZER == N_RMSPROP:
        p, s0, s1, s2 = _rmsprop(p, g, s0, s1, s2, lr, oa, ob, oc, od, k1, WEIGHT_DECAY, CENTERED, MOMENTUM)
    else:
        p, s0, s1, s2 = _adam(p, g, s0, s1, s2, c, inv_bc2s, oa, ob, oc, k1, k2, k3,
                              OPTIMIZER, WEIGHT_DECAY, AMSGRAD, LERP_SMALL)
    return p, s0, s1, s2


@triton.jit
def _step_scalars(t, i, neg_lr, neg_lr64, fac_ptr, tab_ptr, OPTIMIZER: tl.constexpr, SCHEDULE: tl.constexpr):
    """Step ``t`` (``i``-th of the launch): the float32 -lr (SGD with a schedule: f32(-lr*f[t]),
    SPEC §3d), Adam's c = f32(-lr/bc1[t]) and 1/bc2s[t] (from the host's table, see
    ``triton_adam.step_tables``)."""
    lr = neg_lr
    c = neg_lr
    inv_bc2s = 1.0
    if OPTIMIZER == N_SGD:
        if SCHEDULE:
            lr = (neg_lr64 * tl.load(fac_ptr + t)).to(tl.float32)
    elif OPTIMIZER != N_RMSPROP:
        bc1 = tl.load(tab_ptr + 3 * i)
        inv_bc1 = tl.load(tab_ptr + 3 * i + 1)
        inv_bc2s = tl.load(tab_ptr + 3 * i + 2)
        c = _step_size(neg_lr64, bc1, inv_bc1)
    return lr, c, inv_bc2s


@triton.jit
def _member_options(oa_ptr, ob_ptr, oc_ptr, od_ptr, offs, mask, USED: tl.constexpr):
    """The optimizer's per-member options oa..od ([BLOCK]); bits 3..6 of USED (8, 16, 32, 64) say
    which are read (the others are placeholders: 1.0 for oa and oc, 0.0 for ob and od)."""
    oa = tl.full(offs.shape, 1.0, tl.float32)
    ob = tl.zeros(offs.shape, dtype=tl.float32)
    oc = tl.full(offs.shape, 1.0, tl.float32)
    od = tl.zeros(offs.shape, dtype=tl.float32)
    if USED & 8:
        oa = tl.load(oa_ptr + offs, mask=mask, other=1.0)
    if USED & 16:
        ob = tl.load(ob_ptr + offs, mask=mask, other=0.0)
    if USED & 32:
        oc = tl.load(oc_ptr + offs, mask=mask, other=1.0)
    if USED & 64:
        od = tl.load(od_ptr + offs, mask=mask, other=0.0)
    return oa, ob, oc, od


@triton.jit
def _run_values(prob_ptr):
    """The run-wide float32 values (``prob``'s layout, see the launcher): a (or a[0]), c, lo,
    span, B, x_mean, x_std, the model's and the teacher's leaky slopes, the optimizer's k1..k3."""
    return (tl.load(prob_ptr + 0), tl.load(prob_ptr + 1), tl.load(prob_ptr + 2), tl.load(prob_ptr + 3),
            tl.load(prob_ptr + 4), tl.load(prob_ptr + 5), tl.load(prob_ptr + 6), tl.load(prob_ptr + 7),
            tl.load(prob_ptr + 8), tl.load(prob_ptr + 9), tl.load(prob_ptr + 10), tl.load(prob_ptr + 11))


@triton.jit
def _member_values(s_lo_ptr, s_hi_ptr, neg_lr_ptr, neg_lr64_ptr, noise_ptr, oa_ptr, ob_ptr, oc_ptr, od_ptr, offs,
                   mask, s_lo_stride, s_lo_step, s_hi_stride, lr_stride, lr64_stride, BLOCK: tl.constexpr,
                   USED: tl.constexpr, NOISE: tl.constexpr):
    """The block's per-member values: seed words, -lr (float32 and float64),
    label noise sigma (0 without), zeros and the optimizer's options."""
    s_lo, s_hi, neg_lr = _member_words(s_lo_ptr, s_hi_ptr, neg_lr_ptr, offs, mask, s_lo_stride, s_lo_step,
                                       s_hi_stride, lr_stride)
    zero = tl.zeros([BLOCK], dtype=tl.float32)
    oa, ob, oc, od = _member_options(oa_ptr, ob_ptr, oc_ptr, od_ptr, offs, mask, USED)
    neg_lr64 = tl.load(neg_lr64_ptr + offs * lr64_stride, mask=mask, other=0.0)
    sigma = zero
    if NOISE:
        sigma = tl.load(noise_ptr + offs, mask=mask, other=0.0)
    return s_lo, s_hi, neg_lr, neg_lr64, sigma, zero, oa, ob, oc, od


@triton.jit
def _load_slot(ptr, at, mask, zeros, USE: tl.constexpr):
    """An optimizer state slot (read where the optimizer has it, else ``zeros``)."""
    if USE:
        out = tl.load(ptr + at, mask=mask, other=0.0)
    else:
        out = zeros
    return out


@triton.jit
def _store_slot(ptr, at, x, mask, USE: tl.constexpr):
    if USE:
        tl.store(ptr + at, x, mask=mask)


@triton.jit
def _bad(w, valid):
    """[BLOCK] int32: how many valid coordinates of each member's w ([DB, BLOCK]) are not finite."""
    return tl.sum(tl.where(valid & (tl.abs(w) <= FLT_MAX), 0, tl.where(valid, 1, 0)), axis=0)


@triton.jit
def _sample_grad(w, b, x, e, sigma, a, c, slope_m, slope_t, valid, BLOCK: tl.constexpr, DB: tl.constexpr,
                 LOG2: tl.constexpr, PAD: tl.constexpr, BIAS: tl.constexpr, ACT: tl.constexpr,
                 TACT: tl.constexpr, BCE: tl.constexpr, NOISE: tl.constexpr):
    """One sample of the register kernel: (gz * x, gz), gz = dL/dz ([DB, BLOCK], [BLOCK])."""
    p = w * x
    pa = a * x
    if PAD:
        p = tl.where(valid, p, -0.0)
        pa = tl.where(valid, pa, -0.0)
    s = _tree(p, BLOCK, DB, LOG2)
    u = _tree(pa, BLOCK, DB, LOG2)
    gz = _output_grad(s, u, b, e, sigma, c, slope_m, slope_t, BIAS, ACT, TACT, BCE, NOISE)
    return gz[None, :] * x, gz


# ------------------------------------------------------------------- register kernel

@triton.jit
def _finish(t, i, gw, gb, w, b, w0, w1, w2, b0, b1, b2, n_bad, valid, neg_lr, neg_lr64, fac_ptr, tab_ptr,
            oa, ob, oc, od, k1, k2, k3, batch,
            BATCH: tl.constexpr, OPTIMIZER: tl.constexpr, WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr,
            NESTEROV: tl.constexpr, AMSGRAD: tl.constexpr, LERP_SMALL: tl.constexpr, CENTERED: tl.constexpr,
            SCHEDULE: tl.constexpr, BIAS: tl.constexpr):
    """Step ``t`` from the summed gradients: batch mean, the optimizer's update of w (and b),
    and the divergence count (as ``triton_sgd._finish_step``)."""
    if BATCH > 1:
        gw = tl.math.div_rn(gw, batch)
        gb = tl.math.div_rn(gb, batch)
    lr, c, inv_bc2s = _step_scalars(t, i, neg_lr, neg_lr64, fac_ptr, tab_ptr, OPTIMIZER, SCHEDULE)
    first = t == 0
    w, w0, w1, w2 = _opt_update(w, gw, w0, w1, w2, first, lr[None, :], c[None, :], inv_bc2s, oa[None, :],
                                ob[None, :], oc[None, :], od[None, :], k1, k2, k3, OPTIMIZER, WEIGHT_DECAY,
                                MOMENTUM, NESTEROV, AMSGRAD, LERP_SMALL, CENTERED)
    if BIAS:
        b, b0, b1, b2 = _opt_update(b, gb, b0, b1, b2, first, lr, c, inv_bc2s, oa, ob, oc, od, k1, k2, k3,
                                    OPTIMIZER, WEIGHT_DECAY, MOMENTUM, NESTEROV, AMSGRAD, LERP_SMALL, CENTERED)
    ok = (_bad(w, valid) == 0) & (tl.abs(b) <= FLT_MAX)
    n_bad = n_bad + tl.where(ok, 0, 1)
    return w, b, w0, w1, w2, b0, b1, b2, n_bad


@triton.jit
def _log_tile(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr, n_members, D: tl.constexpr, offs, tile_at, mask,
              tile_mask, every):
    """Write (w, b) to history row ``row`` ((L, d, M) and (L, M)) when ``t`` is the next logged step."""
    if t == next_log:
        tl.store(hist_w_ptr + row * D * n_members + tile_at, w, mask=tile_mask)
        tl.store(hist_b_ptr + row * n_members + offs, b, mask=mask)
        next_log += every
        row += 1
    return next_log, row


@triton.jit(do_not_specialize=["t0", "nsteps", "log_every", "n_members"])
def neuron_kernel(
    s_lo_ptr, s_hi_ptr, neg_lr_ptr, neg_lr64_ptr, oa_ptr, ob_ptr, oc_ptr, od_ptr, noise_ptr,
    prob_ptr, a_ptr, tab_ptr, fac_ptr,
    w_ptr, b_ptr, s0w_ptr, s0b_ptr, s1w_ptr, s1b_ptr, s2w_ptr, s2b_ptr, div_ptr,
    hist_w_ptr, hist_b_ptr, gz_ptr,
    n_members, t0, nsteps, log_every, s_lo_stride, s_lo_step, s_hi_stride, lr_stride, lr64_stride,
    BLOCK: tl.constexpr, D: tl.constexpr, DB: tl.constexpr, LOG2: tl.constexpr, NSTACK: tl.constexpr,
    LOG2_NCHUNK: tl.constexpr, BATCH: tl.constexpr, GROUP: tl.constexpr, UNROLL: tl.constexpr,
    OPTIMIZER: tl.constexpr, WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
    AMSGRAD: tl.constexpr, LERP_SMALL: tl.constexpr, CENTERED: tl.constexpr, SCHEDULE: tl.constexpr,
    BIAS: tl.constexpr, ACT: tl.constexpr, TACT: tl.constexpr, BCE: tl.constexpr, A_VEC: tl.constexpr,
    HISTORY: tl.constexpr, NOISE: tl.constexpr, NORMAL: tl.constexpr, USED: tl.constexpr, XCACHE: tl.constexpr,
):
    """Steps ``t0 .. t0 + nsteps - 1`` of BLOCK members with d = D inputs (D <= DB = 2**LOG2),
    every parameter and its optimizer state in registers (see the module docstring). XCACHE:
    the four samples of a Philox block kept from the block's first sample on (else each
    sample draws its own word).

    Pointers (M = ``n_members``): as ``triton_adam.adam_kernel``'s, with the weight's (d, M)
    (w_ptr, s0w..s2w, and the history's (L, d, M)): element (i, m) at ``i*M + m``, and

    - ``oa_ptr`` .. ``od_ptr``: float32 (M,), the optimizer's per-member options (see
      :func:`_opt_update`); ``neg_lr64_ptr``: float64 (M,), -lr as given (Adam, AdamW, SGD
      with SCHEDULE); ``fac_ptr``: the schedule's float64 factors (SCHEDULE);
      ``tab_ptr``: Adam's (nsteps, 3) float64 table;
    - ``prob_ptr``: float32 (12,), :data:`PROB_NAMES`; ``a_ptr``: float32 (d,), the teacher's
      a (read when A_VEC; else the scalar ``prob_ptr[0]``);
    - ``gz_ptr``: unused here (the chunked kernel's scratch).

    NSTACK, LOG2_NCHUNK: unused here (1, 0). ACT/TACT: activation codes of the model and the
    teacher's target; BCE: loss="bce"; BIAS: the model has b (else b stays as loaded); USED:
    bits 0..2 the state slots s0..s2 the optimizer has, bits 3..6 the options oa..od it reads
    (the others are placeholders, never read or written).
    """
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_members
    cols = tl.arange(0, DB)
    valid = (cols < D)[:, None]
    key1 = cols.to(tl.uint32)[:, None]
    tile_at = cols.to(tl.int64)[:, None] * n_members + offs[None, :]
    tile_mask = mask[None, :] & valid

    s_lo, s_hi, neg_lr, neg_lr64, sigma, zero, oa, ob, oc, od = _member_values(
        s_lo_ptr, s_hi_ptr, neg_lr_ptr, neg_lr64_ptr, noise_ptr, oa_ptr, ob_ptr, oc_ptr, od_ptr, offs, mask,
        s_lo_stride, s_lo_step, s_hi_stride, lr_stride, lr64_stride, BLOCK, USED, NOISE)
    s_lo_c = s_lo[None, :]
    s_hi_c = s_hi[None, :]
    a, c, lo, span, batch, x_mean, x_std, slope_m, slope_t, k1, k2, k3 = _run_values(prob_ptr)
    if A_VEC:
        a = tl.load(a_ptr + cols, mask=cols < D, other=0.0)[:, None]

    w = tl.load(w_ptr + tile_at, mask=tile_mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    diverged_at = tl.load(div_ptr + offs, mask=mask, other=-1)
    zt = tl.zeros([DB, BLOCK], dtype=tl.float32)
    w0 = _load_slot(s0w_ptr, tile_at, tile_mask, zt, USED & 1)
    w1 = _load_slot(s1w_ptr, tile_at, tile_mask, zt, USED & 2)
    w2 = _load_slot(s2w_ptr, tile_at, tile_mask, zt, USED & 4)
    b0 = _load_slot(s0b_ptr, offs, mask, zero, USED & 1)
    b1 = _load_slot(s1b_ptr, offs, mask, zero, USED & 2)
    b2 = _load_slot(s2b_ptr, offs, mask, zero, USED & 4)

    t_start = t0.to(tl.int64)
    t_end = t_start + nsteps
    every = log_every.to(tl.int64)
    row = (t_start + every - 1) // every
    next_log = row * every

    n_bad = tl.zeros([BLOCK], dtype=tl.int32)  # see triton_sgd.sgd_kernel
    x0 = zt
    x1 = zt
    x2 = zt
    x3 = zt
    e0 = zero
    e1 = zero
    e2 = zero
    e3 = zero
    PAD: tl.constexpr = D < DB
    t_loop = t_start
    if UNROLL:
        n_groups = (t_end - t_start) // GROUP
        for g in range(0, n_groups):
            ig = tl.cast(g, tl.int64) * GROUP
            tg = t_start + ig
            qg = (tg * BATCH) // 4  # exact: tg*B is a multiple of 4
            for k in tl.static_range(GROUP):
                for j in tl.static_range(BATCH):
                    if (k * BATCH + j) % 4 == 0:
                        if XCACHE:
                            x0, x1, x2, x3 = _x_block(qg + (k * BATCH + j) // 4, s_lo_c, s_hi_c, key1, lo, span,
                                                      x_mean, x_std, BLOCK, DB, NORMAL)
                        if NOISE:
                            e0, e1, e2, e3 = _noise_block(qg + (k * BATCH + j) // 4, s_lo, s_hi, sigma)
                        x = x0
                        e = e0
                    elif (k * BATCH + j) % 4 == 1:
                        x = x1
                        e = e1
                    elif (k * BATCH + j) % 4 == 2:
                        x = x2
                        e = e2
                    else:
                        x = x3
                        e = e3
                    if not XCACHE:  # this sample's word of its block alone
                        x = _x_word(qg + (k * BATCH + j) // 4, (k * BATCH + j) % 4, s_lo_c, s_hi_c, key1, lo, span,
                                    x_mean, x_std, BLOCK, DB, NORMAL)
                    gxw, gxb = _sample_grad(w, b, x, e, sigma, a, c, slope_m, slope_t, valid, BLOCK, DB, LOG2,
                                            PAD, BIAS, ACT, TACT, BCE, NOISE)
                    if j == 0:
                        gw = gxw
                        gb = gxb
                    else:
                        gw = gw + gxw
                        gb = gb + gxb
                w, b, w0, w1, w2, b0, b1, b2, n_bad = _finish(
                    tg + k, ig + k, gw, gb, w, b, w0, w1, w2, b0, b1, b2, n_bad, valid, neg_lr, neg_lr64, fac_ptr,
                    tab_ptr, oa, ob, oc, od, k1, k2, k3, batch, BATCH, OPTIMIZER, WEIGHT_DECAY, MOMENTUM,
                    NESTEROV, AMSGRAD, LERP_SMALL, CENTERED, SCHEDULE, BIAS)
                if HISTORY:
                    next_log, row = _log_tile(tg + k, w, b, next_log, row, hist_w_ptr, hist_b_ptr, n_members, D,
                                              offs, tile_at, mask, tile_mask, every)
        t_loop = t_start + n_groups * GROUP

    for t_i in range(t_loop, t_end):
        t = tl.cast(t_i, tl.int64)  # (the interpreter's loop counter is int32)
        gw = tl.full([DB, BLOCK], -0.0, tl.float32)  # -0.0 + v == v: the sums start with their first term
        gb = tl.full([BLOCK], -0.0, tl.float32)
        for j in range(0, BATCH):
            n = t * BATCH + j
            r = n % 4
            if r == 0:
                if XCACHE:
                    x0, x1, x2, x3 = _x_block(n // 4, s_lo_c, s_hi_c, key1, lo, span, x_mean, x_std, BLOCK, DB,
                                              NORMAL)
                if NOISE:
                    e0, e1, e2, e3 = _noise_block(n // 4, s_lo, s_hi, sigma)
            if XCACHE:
                x = tl.where(r == 0, x0, tl.where(r == 1, x1, tl.where(r == 2, x2, x3)))
            else:
                x = _x_sample(n, s_lo_c, s_hi_c, key1, lo, span, x_mean, x_std, BLOCK, DB, NORMAL)
            e = tl.where(r == 0, e0, tl.where(r == 1, e1, tl.where(r == 2, e2, e3)))
            gxw, gxb = _sample_grad(w, b, x, e, sigma, a, c, slope_m, slope_t, valid, BLOCK, DB, LOG2, PAD, BIAS,
                                    ACT, TACT, BCE, NOISE)
            gw = gw + gxw
            gb = gb + gxb
        w, b, w0, w1, w2, b0, b1, b2, n_bad = _finish(
            t, t - t_start, gw, gb, w, b, w0, w1, w2, b0, b1, b2, n_bad, valid, neg_lr, neg_lr64, fac_ptr, tab_ptr,
            oa, ob, oc, od, k1, k2, k3, batch, BATCH, OPTIMIZER, WEIGHT_DECAY, MOMENTUM, NESTEROV, AMSGRAD,
            LERP_SMALL, CENTERED, SCHEDULE, BIAS)
        if HISTORY:
            next_log, row = _log_tile(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr, n_members, D, offs, tile_at,
                                      mask, tile_mask, every)

    tl.store(w_ptr + tile_at, w, mask=tile_mask)
    tl.store(b_ptr + offs, b, mask=mask)
    diverged_at = tl.where((diverged_at < 0) & (n_bad > 0), t_end - n_bad.to(tl.int64), diverged_at)
    tl.store(div_ptr + offs, diverged_at, mask=mask)
    _store_slot(s0w_ptr, tile_at, w0, tile_mask, USED & 1)
    _store_slot(s1w_ptr, tile_at, w1, tile_mask, USED & 2)
    _store_slot(s2w_ptr, tile_at, w2, tile_mask, USED & 4)
    _store_slot(s0b_ptr, offs, b0, mask, USED & 1)
    _store_slot(s1b_ptr, offs, b1, mask, USED & 2)
    _store_slot(s2b_ptr, offs, b2, mask, USED & 4)


# -------------------------------------------------------------------- chunked kernel

@triton.jit(do_not_specialize=["t0", "nsteps", "log_every", "n_members"])
def neuron_chunked_kernel(
    s_lo_ptr, s_hi_ptr, neg_lr_ptr, neg_lr64_ptr, oa_ptr, ob_ptr, oc_ptr, od_ptr, noise_ptr,
    prob_ptr, a_ptr, tab_ptr, fac_ptr,
    w_ptr, b_ptr, s0w_ptr, s0b_ptr, s1w_ptr, s1b_ptr, s2w_ptr, s2b_ptr, div_ptr,
    hist_w_ptr, hist_b_ptr, gz_ptr,
    n_members, t0, nsteps, log_every, s_lo_stride, s_lo_step, s_hi_stride, lr_stride, lr64_stride,
    BLOCK: tl.constexpr, D: tl.constexpr, DB: tl.constexpr, LOG2: tl.constexpr, NSTACK: tl.constexpr,
    LOG2_NCHUNK: tl.constexpr, BATCH: tl.constexpr, GROUP: tl.constexpr, UNROLL: tl.constexpr,
    OPTIMIZER: tl.constexpr, WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
    AMSGRAD: tl.constexpr, LERP_SMALL: tl.constexpr, CENTERED: tl.constexpr, SCHEDULE: tl.constexpr,
    BIAS: tl.constexpr, ACT: tl.constexpr, TACT: tl.constexpr, BCE: tl.constexpr, A_VEC: tl.constexpr,
    HISTORY: tl.constexpr, NOISE: tl.constexpr, NORMAL: tl.constexpr, USED: tl.constexpr, XCACHE: tl.constexpr,
):
    """``neuron_kernel``'s steps for d = D > DB inputs, in chunks of DB = 2**LOG2 coordinates
    (NCHUNK = 2**LOG2_NCHUNK chunks cover the next power of two >= D): the weight and its
    state are read from and written to their (d, M) tensors chunk by chunk, every step.

    Per step: for each sample j of the batch, the forward pass over the chunks (x drawn, w
    loaded, each chunk's tree pushed on the chunk sums' stack of NSTACK rows, then folded: the
    same tree as SPEC §6c's) gives gz_j, kept in ``gz_ptr`` (float32 (B, M)) when B > 1; then
    the update pass over the chunks draws each sample's x again, sums gz_j * x_j left to right
    and updates the chunk. Steps run in a plain loop (GROUP, UNROLL unused)."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_members
    cols0 = tl.arange(0, DB)
    levels = tl.arange(0, NSTACK)[:, None]
    N_REAL: tl.constexpr = (D + DB - 1) // DB  # chunks holding some coordinate < D

    s_lo, s_hi, neg_lr, neg_lr64, sigma, zero, oa, ob, oc, od = _member_values(
        s_lo_ptr, s_hi_ptr, neg_lr_ptr, neg_lr64_ptr, noise_ptr, oa_ptr, ob_ptr, oc_ptr, od_ptr, offs, mask,
        s_lo_stride, s_lo_step, s_hi_stride, lr_stride, lr64_stride, BLOCK, USED, NOISE)
    s_lo_c = s_lo[None, :]
    s_hi_c = s_hi[None, :]
    a_s, c, lo, span, batch, x_mean, x_std, slope_m, slope_t, k1, k2, k3 = _run_values(prob_ptr)

    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    b0 = _load_slot(s0b_ptr, offs, mask, zero, USED & 1)
    b1 = _load_slot(s1b_ptr, offs, mask, zero, USED & 2)
    b2 = _load_slot(s2b_ptr, offs, mask, zero, USED & 4)
    diverged_at = tl.load(div_ptr + offs, mask=mask, other=-1)

    t_start = t0.to(tl.int64)
    t_end = t_start + nsteps
    every = log_every.to(tl.int64)
    row = (t_start + every - 1) // every
    next_log = row * every
    n_bad = tl.zeros([BLOCK], dtype=tl.int32)
    gz = zero
    for t_i in range(t_start, t_end):
        t = tl.cast(t_i, tl.int64)
        # Forward: dL/dz of each sample of the step, at the step's old w.
        for j in range(0, BATCH):
            n = t * BATCH + j
            sums = tl.full([NSTACK, BLOCK], -0.0, tl.float32)
            asums = tl.full([NSTACK, BLOCK], -0.0, tl.float32)
            for k in range(0, N_REAL):
                cols = k * DB + cols0
                valid = (cols < D)[:, None]
                at = cols.to(tl.int64)[:, None] * n_members + offs[None, :]
                x = _x_sample(n, s_lo_c, s_hi_c, cols.to(tl.uint32)[:, None], lo, span, x_mean, x_std, BLOCK, DB,
                              NORMAL)
                w = tl.load(w_ptr + at, mask=mask[None, :] & valid, other=0.0)
                if A_VEC:
                    a = tl.load(a_ptr + cols, mask=cols < D, other=0.0)[:, None]
                else:
                    a = a_s
                p = tl.where(valid, w * x, -0.0)
                pa = tl.where(valid, a * x, -0.0)
                sums = _push(sums, _tree(p, BLOCK, DB, LOG2), k, levels, LOG2_NCHUNK)
                asums = _push(asums, _tree(pa, BLOCK, DB, LOG2), k, levels, LOG2_NCHUNK)
            s = _fold(sums, levels, N_REAL, LOG2_NCHUNK)
            u = _fold(asums, levels, N_REAL, LOG2_NCHUNK)
            e = zero
            if NOISE:
                e = _noise_sample(n, s_lo, s_hi, sigma)
            gz = _output_grad(s, u, b, e, sigma, c, slope_m, slope_t, BIAS, ACT, TACT, BCE, NOISE)
            if BATCH > 1:
                tl.store(gz_ptr + tl.cast(j, tl.int64) * n_members + offs, gz, mask=mask)
        lr, cc, inv_bc2s = _step_scalars(t, t - t_start, neg_lr, neg_lr64, fac_ptr, tab_ptr, OPTIMIZER, SCHEDULE)
        first = t == 0
        logged = t == next_log
        # Update, chunk by chunk.
        bad = tl.zeros([BLOCK], dtype=tl.int32)
        for k in range(0, N_REAL):
            cols = k * DB + cols0
            valid = (cols < D)[:, None]
            at = cols.to(tl.int64)[:, None] * n_members + offs[None, :]
            tmask = mask[None, :] & valid
            gw = tl.full([DB, BLOCK], -0.0, tl.float32)
            for j in range(0, BATCH):
                x = _x_sample(t * BATCH + j, s_lo_c, s_hi_c, cols.to(tl.uint32)[:, None], lo, span, x_mean, x_std,
                              BLOCK, DB, NORMAL)
                if BATCH > 1:
                    gz = tl.load(gz_ptr + tl.cast(j, tl.int64) * n_members + offs, mask=mask, other=0.0)
                gw = gw + gz[None, :] * x
            if BATCH > 1:
                gw = tl.math.div_rn(gw, batch)
            w = tl.load(w_ptr + at, mask=tmask, other=0.0)
            zc = tl.zeros([DB, BLOCK], dtype=tl.float32)
            w0 = _load_slot(s0w_ptr, at, tmask, zc, USED & 1)
            w1 = _load_slot(s1w_ptr, at, tmask, zc, USED & 2)
            w2 = _load_slot(s2w_ptr, at, tmask, zc, USED & 4)
            w, w0, w1, w2 = _opt_update(w, gw, w0, w1, w2, first, lr[None, :], cc[None, :], inv_bc2s, oa[None, :],
                                        ob[None, :], oc[None, :], od[None, :], k1, k2, k3, OPTIMIZER, WEIGHT_DECAY,
                                        MOMENTUM, NESTEROV, AMSGRAD, LERP_SMALL, CENTERED)
            tl.store(w_ptr + at, w, mask=tmask)
            _store_slot(s0w_ptr, at, w0, tmask, USED & 1)
            _store_slot(s1w_ptr, at, w1, tmask, USED & 2)
            _store_slot(s2w_ptr, at, w2, tmask, USED & 4)
            bad += _bad(w, valid)
            if HISTORY:
                if logged:
                    tl.store(hist_w_ptr + row * D * n_members + at, w, mask=tmask)
        if BIAS:
            gb = tl.full([BLOCK], -0.0, tl.float32)
            for j in range(0, BATCH):
                if BATCH > 1:
                    gz = tl.load(gz_ptr + tl.cast(j, tl.int64) * n_members + offs, mask=mask, other=0.0)
                gb = gb + gz
            if BATCH > 1:
                gb = tl.math.div_rn(gb, batch)
            b, b0, b1, b2 = _opt_update(b, gb, b0, b1, b2, first, lr, cc, inv_bc2s, oa, ob, oc, od, k1, k2, k3,
                                        OPTIMIZER, WEIGHT_DECAY, MOMENTUM, NESTEROV, AMSGRAD, LERP_SMALL, CENTERED)
        ok = (bad == 0) & (tl.abs(b) <= FLT_MAX)
        n_bad = n_bad + tl.where(ok, 0, 1)
        if HISTORY:
            if logged:
                tl.store(hist_b_ptr + row * n_members + offs, b, mask=mask)
                next_log += every
                row += 1

    tl.store(b_ptr + offs, b, mask=mask)
    diverged_at = tl.where((diverged_at < 0) & (n_bad > 0), t_end - n_bad.to(tl.int64), diverged_at)
    tl.store(div_ptr + offs, diverged_at, mask=mask)
    _store_slot(s0b_ptr, offs, b0, mask, USED & 1)
    _store_slot(s1b_ptr, offs, b1, mask, USED & 2)
    _store_slot(s2b_ptr, offs, b2, mask, USED & 4)


# ----------------------------------------------------------------------------- host side

def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def layout(d: int, slots: int = 0, chunk: int = 0) -> dict:
    """The kernel and its coordinate constexprs for d inputs and ``slots`` optimizer state
    tensors: ``neuron_kernel`` with DB = P, the next power of two >= d, when DB * (6 + slots)
    <= :data:`REGISTER_BUDGET` (XCACHE) or DB * (3 + slots) <= :data:`UNCACHED_BUDGET`; else
    ``neuron_chunked_kernel`` with DB = :data:`CHUNK`, the P /
    DB = 2**LOG2_NCHUNK chunk sums combined by a stack of NSTACK >= LOG2_NCHUNK + 1 rows
    (``chunk``: DB instead of CHUNK)."""
    p = _pow2_at_least(d)
    for tiles, cache, budget in ((6, True, REGISTER_BUDGET), (3, False, UNCACHED_BUDGET)):
        if p * (tiles + slots) <= budget:
            return dict(chunked=False, D=d, DB=p, LOG2=p.bit_length() - 1, NSTACK=1, LOG2_NCHUNK=0, XCACHE=cache)
    db = min(chunk or CHUNK, p)
    log2_nchunk = (p // db).bit_length() - 1
    return dict(chunked=True, D=d, DB=db, LOG2=db.bit_length() - 1, NSTACK=_pow2_at_least(log2_nchunk + 1),
                LOG2_NCHUNK=log2_nchunk, XCACHE=False)


def neuron_block_size(**_) -> int:
    """BLOCK on a GPU, whatever the constexprs: one member a thread (see NEURON_NUM_WARPS)."""
    return 32 * NEURON_NUM_WARPS


def _interpreting() -> bool:
    return not isinstance(neuron_kernel, triton.runtime.JITFunction)


def _block_size(cx: dict, m: int, block_size: Optional[int]) -> int:
    if block_size:
        bs = block_size
    elif _interpreting():
        bs = max(1, min(INTERPRET_MAX_BLOCK, INTERPRET_TILE_ELEMENTS // cx["DB"], _pow2_at_least(m)))
    else:
        bs = neuron_block_size(**cx)
    if bs < 1 or bs & (bs - 1):
        raise ValueError(f"block_size must be a power of 2, got {bs}")
    return bs


def as_linear(config: StepConfig, consts: Constants):
    """(config, consts) of the linear problem when the run is v2's neuron on the teacher
    problem with one input and the identity target (SPEC §6d: then ``teacher`` computes
    exactly ``linear``'s bits), so that the v2 kernels run it; else None."""
    if config.problem is not Teacher or config.model != NeuronFlags():
        return None
    pf = config.problem_flags if config.problem_flags is not None else TeacherFlags()
    if pf.inputs != 1 or pf.bce or pf.target_activation != "identity":
        return None
    pc = consts.problem
    if pc.a.dim() != 0:
        return None
    linear_consts = LinearConstants(a=pc.a, c=pc.c, lo=pc.lo, span=pc.span, x_mean=pc.x_mean, x_std=pc.x_std)
    return (dataclasses.replace(config, problem=LinearTarget, problem_flags=LinearFlags(noise=pf.noise,
                                                                                        normal=pf.normal)),
            consts._replace(problem=linear_consts))


class TritonStepper(triton_sgd.TritonStepper):
    """The Triton backend's :class:`~fastneuron.kernels.Stepper`: v2's kernels
    (:mod:`.triton_sgd`, :mod:`.triton_adam`) for v2's neuron on the linear problem, and
    for the teacher runs that compute exactly its bits (:func:`as_linear`); this module's
    kernels for the rest of SPEC §6."""

    def init(self, members: Members, config: StepConfig):
        if config.model != NeuronFlags():
            return init(members, config)
        return super().init(members, config)

    def __call__(self, state: State, t0, members: Members, consts: Constants, *, nsteps: int, config: StepConfig,
                 history: Optional[History] = None) -> State:
        if config.problem is not LinearTarget or config.model != NeuronFlags():
            linear = as_linear(config, consts)
            if linear is None:
                return step(state, t0, members, consts, nsteps=nsteps, config=config, history=history,
                            block_size=self.block_size)
            config, consts = linear
        return super().__call__(state, t0, members, consts, nsteps=nsteps, config=config, history=history)


def init(members: Members, config: StepConfig):
    """Initial (w, b) (SPEC §6b): :func:`fastneuron.model.init_params`, on the members' device."""
    from fastneuron.reference import dense_members, seed_words
    return model_init_params(*seed_words(dense_members(members)), config.model, members.model_options)


def _problem(config: StepConfig) -> dict:
    """The problem's constexprs and flags: NOISE, NORMAL, TACT, BCE."""
    pf = config.problem_flags
    if config.problem is LinearTarget:
        pf = pf if pf is not None else LinearFlags()
        return dict(NOISE=bool(pf.noise), NORMAL=bool(pf.normal), TACT=0, BCE=False)
    if config.problem is not Teacher:
        raise ValueError(f"the Triton kernels run the linear and the teacher problem, not {config.problem.__name__}")
    pf = pf if pf is not None else TeacherFlags()
    if pf.inputs != config.model.inputs:
        raise ValueError(f"config.problem_flags.inputs ({pf.inputs}) != config.model.inputs ({config.model.inputs})")
    return dict(NOISE=bool(pf.noise), NORMAL=bool(pf.normal), TACT=ACTIVATIONS.index(pf.target_activation),
                BCE=bool(pf.bce))


def _optimizer(config: StepConfig) -> tuple[str, dict]:
    name = getattr(config.optimizer, "name", None)
    if config.optimizer is SGD:
        flags = config.flags
        if not isinstance(flags, SGDFlags):
            raise ValueError(f"config.flags must be SGDFlags, got {type(flags).__name__}")
        if flags.nesterov and not flags.momentum:
            raise ValueError("config.flags.nesterov needs config.flags.momentum")
        return "sgd", dict(OPTIMIZER=3, WEIGHT_DECAY=bool(flags.weight_decay), MOMENTUM=bool(flags.momentum),
                           NESTEROV=bool(flags.nesterov), AMSGRAD=False, LERP_SMALL=True, CENTERED=False)
    if name not in triton_adam.OPTIMIZER_CODES:
        raise ValueError(f"the Triton kernels run sgd, adam, adamw and rmsprop, not {name!r}")
    kf = triton_adam.kernel_flags(name, config.flags)
    return name, dict(kf, NESTEROV=False)


def state_names(name: str, kf: dict) -> tuple:
    if name == "sgd":
        return ("momentum_buffer",) if kf["MOMENTUM"] else ()
    return triton_adam.state_names(name, kf)


#: Where each optimizer's state goes among the kernels' slots s0..s2.
_SLOTS = dict(triton_adam._SLOTS)


def _check_weight_like(name: str, x, shape: tuple, device) -> None:
    _check_tensor(name, x, torch.float32, shape, device)
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def step(state: State, t0, members: Members, consts: Constants, *, nsteps: int, config: StepConfig,
         history: Optional[History] = None, block_size: Optional[int] = None) -> State:
    """Steps ``t0 .. t0 + nsteps - 1`` of SPEC §6's neuron for a block of members (the
    :class:`~fastneuron.kernels.Stepper` call of ``TritonStepper`` for what the v2 kernels do
    not run): checks every input, then one launch. The state is updated in place and returned."""
    model = config.model
    d = model.inputs
    name, kf = _optimizer(config)
    pk = _problem(config)
    batch = check_int("config.batch_size", config.batch_size, 1)
    if config.schedule and name != "sgd":
        raise ValueError("the Triton kernels have an lr schedule for SGD only (SPEC §3d)")
    opts = members.options
    if name == "sgd":
        needed = [n for n in ("momentum", "weight_decay") if kf[n.upper()]]
    else:
        needed = ["eps"] + (["weight_decay"] if kf["WEIGHT_DECAY"] else []) + \
            (["alpha", "one_minus_alpha"] if name == "rmsprop" else []) + \
            (["decay"] if name == "adamw" and kf["WEIGHT_DECAY"] else [])
    lr64 = None
    if name in ("adam", "adamw") or config.schedule:
        lr64 = member_neg_lr64(members)
    noise = [("noise", getattr(members.problem_options, "noise", None))] if pk["NOISE"] else []
    s_lo = _check_members_base(members, [(n, getattr(opts, n, None)) for n in needed] + noise, _interpreting(), lr64)
    m, dev = s_lo.numel(), s_lo.device
    t0 = check_int("t0", int(t0) if isinstance(t0, torch.Tensor) else t0, 0)
    nsteps = check_int("nsteps", nsteps, 0)
    if (t0 * batch) % 4:
        raise ValueError(f"t0 * batch_size must be a multiple of 4, got t0={t0}, batch_size={batch}")
    factors = check_schedule(config, consts, t0 + nsteps, dev)
    wshape = (m,) if d == 1 else (d, m)
    names = state_names(name, kf)
    for part in ("weight_state", "bias_state"):
        if len(getattr(state, part)) != len(names):
            raise ValueError(f"state.{part} must hold {', '.join(names) or 'nothing'} ({len(names)} tensors), "
                             f"got {len(getattr(state, part))}")
    _check_weight_like("state.weight", state.weight, wshape, dev)
    _check_weight_like("state.bias", state.bias, (m,), dev)
    _check_tensor("state.diverged_at", state.diverged_at, torch.int64, (m,), dev)
    if not state.diverged_at.is_contiguous():
        raise ValueError("state.diverged_at must be contiguous")
    for i, n in enumerate(names):
        _check_weight_like(f"state.weight_state[{i}] ({n})", state.weight_state[i], wshape, dev)
        _check_weight_like(f"state.bias_state[{i}] ({n})", state.bias_state[i], (m,), dev)
    if history is not None:
        check_int("history.log_every", history.log_every, 1)
        rows = history.bias.shape[0] if history.bias is not None and history.bias.dim() == 2 else -1
        _check_weight_like("history.weight", history.weight, (rows, *wshape), dev)
        _check_weight_like("history.bias", history.bias, (rows, m), dev)
        last = t0 + nsteps - 1
        if last >= 0 and last // history.log_every >= rows:
            raise ValueError(f"history.weight has {rows} rows, but step {last} is logged in row "
                             f"{last // history.log_every}")

    # Run-wide constants, in PROB_NAMES order.
    pc = consts.problem
    a = pc.a
    a_vec = a.dim() != 0
    if a_vec:
        _check_tensor("consts.problem.a", a, torch.float32, (d, 1), dev)
        a_values = a.reshape(d).contiguous()
        a_scalar = torch.zeros((), dtype=torch.float32, device=dev)
    else:
        _check_tensor("consts.problem.a", a, torch.float32, (), dev)
        a_scalar, a_values = a, None
    zero = torch.zeros((), dtype=torch.float32, device=dev)
    slope_m = consts.model.slope if consts.model is not None else zero
    slope_t = getattr(pc, "slope", zero)
    oc = consts.optimizer
    if name == "sgd":
        kvals = [oc.one_minus_dampening, zero, zero]
    elif name == "rmsprop":
        kvals = [oc.momentum, zero, zero]
    else:
        kvals = [oc.w1, oc.b2, oc.w2]
    values = dict(a=a_scalar, c=pc.c, lo=pc.lo, span=pc.span, batch=consts.batch, x_mean=pc.x_mean, x_std=pc.x_std,
                  slope_m=slope_m, slope_t=slope_t, k1=kvals[0], k2=kvals[1], k3=kvals[2])
    for key in PROB_NAMES:
        _check_tensor(f"constant {key}", values[key], torch.float32, (), dev)
    prob = torch.stack([values[key] for key in PROB_NAMES])
    tables = None
    if name in ("adam", "adamw"):
        for label, x, dtype in (("bc1", oc.bc1, torch.float64), ("bc2s", oc.bc2s, torch.float32)):
            if not isinstance(x, torch.Tensor) or x.dtype != dtype or x.dim() != 1 or x.device != dev:
                raise ValueError(f"consts.optimizer.{label} must be a 1-D {dtype} tensor on {dev}")
            if x.numel() < t0 + nsteps:
                raise ValueError(f"consts.optimizer.{label} has {x.numel()} rows, but steps up to "
                                 f"{t0 + nsteps - 1} need {t0 + nsteps}")
        tables = triton_adam.step_tables(oc.bc1[t0:t0 + nsteps], oc.bc2s[t0:t0 + nsteps])

    # Per-member options in the kernel's slots oa..od, and the state's in s0..s2 (see
    # _opt_update); a slot not used is a placeholder the kernel never touches (USED).
    if name == "sgd":
        slots_o = [opts.momentum if kf["MOMENTUM"] else None, opts.weight_decay if kf["WEIGHT_DECAY"] else None,
                   None, None]
    elif name == "rmsprop":
        slots_o = [opts.eps, opts.weight_decay if kf["WEIGHT_DECAY"] else None, opts.alpha, opts.one_minus_alpha]
    else:
        slots_o = [opts.eps, opts.weight_decay if kf["WEIGHT_DECAY"] else None,
                   opts.decay if name == "adamw" and kf["WEIGHT_DECAY"] else None, None]
    w, b = state.weight, state.bias
    slots = [[None, None] for _ in range(3)]
    for i, n in enumerate(names):
        slots[0 if name == "sgd" else _SLOTS[n]] = [state.weight_state[i], state.bias_state[i]]
    used = sum(1 << i for i, pair in enumerate(slots) if pair[0] is not None) + \
        sum(8 << i for i, x in enumerate(slots_o) if x is not None)
    slots_o = [x if x is not None else members.neg_lr for x in slots_o]
    s = [x if x is not None else (w if k == 0 else b) for pair in slots for k, x in enumerate(pair)]

    cx = layout(d, bin(used & 7).count("1"), INTERPRET_CHUNK if _interpreting() else CHUNK)
    chunked = cx.pop("chunked")
    group = 4 // math.gcd(batch, 4)
    cx.update(BATCH=batch, GROUP=group, UNROLL=group * batch <= NEURON_MAX_UNROLLED_SAMPLES, **kf,
              SCHEDULE=factors is not None, BIAS=bool(model.bias), ACT=ACTIVATIONS.index(model.activation),
              A_VEC=a_vec, HISTORY=history is not None, USED=used, **pk)
    if model.loss == "bce":
        cx["BCE"] = True
    bs = _block_size(cx, m, block_size)
    gz = torch.empty((batch, m), dtype=torch.float32, device=dev) if chunked and batch > 1 else w
    hw, hb = (history.weight, history.bias) if history is not None else (w, b)
    kernel = neuron_chunked_kernel if chunked else neuron_kernel
    grid = (triton.cdiv(m, bs),)
    on_device = torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()
    with on_device, np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the interpreter's numpy
        kernel[grid](
            members.s_lo, members.s_hi, members.neg_lr, lr64 if lr64 is not None else prob.to(torch.float64),
            *slots_o, members.problem_options.noise if pk["NOISE"] else members.neg_lr,
            prob, a_values if a_values is not None else prob, tables if tables is not None else prob,
            factors if factors is not None else prob,
            w, b, *s, state.diverged_at, hw, hb, gz,
            m, t0, nsteps, history.log_every if history is not None else 1,
            members.s_lo.stride(0), members.s_lo_step, members.s_hi.stride(0), members.neg_lr.stride(0),
            0 if lr64 is None else lr64.stride(0),
            BLOCK=bs, **cx,
            num_warps=NEURON_NUM_WARPS, enable_fp_fusion=NEURON_ENABLE_FP_FUSION,
        )
    return state
