"""``backend="triton"`` for Adam, AdamW and RMSprop: one Triton kernel, every member's
parameters and moments in registers for a whole chunk of steps.

The kernel is :mod:`.triton_sgd`'s with the update of SPEC §3c in place of §3b: the
samples come from Philox4x32-10 inside the kernel (the helpers of :mod:`.triton_common`),
the moments (the optimizer's ``state_names``, one array per parameter) are read once,
kept in registers across the chunk and written back at its end, divergence (SPEC §4) is
counted per step as in ``sgd_kernel``, and logged steps go straight into the history.

What depends on the step only and on run-wide betas (Adam's bias corrections) comes
from the host: the optimizer's constants hold them as tables indexed by the step
(``bc1`` float64, ``bc2s`` float32), and the launcher hands the kernel the rows of its
chunk with two correctly rounded float64 reciprocals beside them (:func:`step_tables`; a
device never calls ``pow``). With those, the SPEC's two divisions by a step's value cost
no division on the device, and give the same bits:

- ``c = f32(-(float64(lr) / bc1[t]))``: two of Markstein's corrections of ``lr * (1/bc1)``
  (one DMUL, four DFMA), the correctly rounded float64 quotient (:func:`_step_size`);
- ``sqrt(v) / bc2s[t]`` (a float32 division): ``f32(float64(x) * (1/bc2s))``, one DMUL
  (:func:`_div_by_table`, with why that is exact).

``tests/test_triton_adam.py`` checks both against the plain divisions on hard inputs.
The lr there is -lr in float64 as the user gave it (``members.neg_lr64``, SPEC §3c);
AdamW's ``f32(1 - lr*wd)`` and RMSprop's ``f32(1 - alpha)``, float64 arithmetic on the
values as given, come per member from the host's block of members (the optimizer's
``derived_options``: ``options.decay``, ``options.one_minus_alpha``).

Bit-exactness: every float32 line of SPEC §3c is one separately rounded float32 op. The
kernel is compiled with ``enable_fp_fusion=False`` (no FMA contraction), divides with
``tl.math.div_rn`` and takes square roots with ``tl.math.sqrt_rn`` (IEEE, round to
nearest; ``/`` and ``sqrt`` of float32 may lower to approximations on NVIDIA). The only
fmas are the four float64 ones of ``_step_size``, which compute a division.

:class:`fastneuron.kernels.triton_sgd.TritonStepper` dispatches here by
``config.optimizer.name``; :func:`step` is the entry it calls. Without CUDA the kernel
runs under ``TRITON_INTERPRET=1`` (set before import) on CPU tensors.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import numpy as np
import torch
import triton
import triton.language as tl

from fastneuron._validate import check_int
from fastneuron.kernels.triton_common import (FLT_MAX, _check_history, _check_members_base, _check_tensor,
                                              _grad_step, _log, _member_words, _unrolled_grad,
                                              problem_kernel_flags, problem_member_options)
from fastneuron.problems import LinearTarget
from fastneuron.reference import neg_lr64 as member_neg_lr64

#: Members per program and warps per program on a GPU: one member a thread (128 threads).
#: A member's Adam state (w, b, two or three moments each, -lr in float64, eps, wd, decay) leaves
#: no room for a second one within MAX_REGISTERS: with 2 members a thread (256) ptxas
#: spills to local memory inside the loop; with one it needs 64 registers and spills
#: nothing (``python -m fastneuron.kernels.sass``), 8 blocks per SM.
BLOCK_SIZE = 128
NUM_WARPS = 4

#: Registers per thread at most (ptxas ``.maxnreg``), as ``triton_sgd.MAX_REGISTERS``.
MAX_REGISTERS = 64

#: SPEC §3c: every line separately rounded, so no FMA contraction.
ENABLE_FP_FUSION = False

#: Under the interpreter, fewer and bigger programs run much faster.
INTERPRET_BLOCK_SIZE = 1024

#: Steps whose samples number at most this many per Philox-aligned group are unrolled.
MAX_UNROLLED_SAMPLES = 32

#: The kernel's OPTIMIZER constexpr.
ADAM = tl.constexpr(0)
ADAMW = tl.constexpr(1)
RMSPROP = tl.constexpr(2)
OPTIMIZER_CODES = {"adam": 0, "adamw": 1, "rmsprop": 2}

#: The run-wide float32 constants, in the order the kernel reads them from ``prob_ptr``:
#: a, c, lo, span, float32(B), then the optimizer's (Adam: w1 = f32(1 - beta1), b2 =
#: f32(beta2), w2 = f32(1 - beta2); RMSprop: f32(momentum), then unused), then x_mean, x_std.
N_CONSTANTS = 10


@triton.jit
def _lerp(a, e, w, SMALL: tl.constexpr):
    """``torch.lerp(a, e, w)`` on the CPU, one rounding a line (SPEC §3c): SMALL (|w| < 0.5)
    ``a + w*(e - a)``, else ``e - (e - a)*(1 - w)``."""
    d = e - a
    if SMALL:
        out = a + w * d
    else:
        out = e - d * (1.0 - w)
    return out


@triton.jit
def _div_by_table(x, inv_c):
    """``x / c`` of float32 x >= 0 (or inf, NaN) by the step's float32 ``c`` = bc2s[t] in
    (0, 1], correctly rounded (SPEC's float32 division), from ``inv_c`` = float64(1/c)
    correctly rounded (the host's table): f32(float64(x) * inv_c).

    Exact: the double product is within 2**-52 (relative) of x/c, while x/c, when not a
    float32 rounding boundary itself, is at least 2**-49 (relative; 2**-174 absolute below
    2**-126) from every boundary: x - m*c is a multiple of ulp(m)*ulp(c) for a midpoint m,
    and m*c (m's odd 25-bit significand times c's) never equals a float32 x. So the
    product rounds to float32 as x/c does, with one DMUL instead of a division."""
    return (x.to(tl.float64) * inv_c).to(tl.float32)


@triton.jit
def _step_size(neg_lr64, bc1, inv_bc1):
    """``f32(-(float64(lr) / bc1))`` per member (SPEC §3c, a float64 IEEE division), from
    ``inv_bc1`` = y = float64(1/bc1) correctly rounded (the host's table), by two of
    Markstein's corrections q' = RN(q + RN(L - q*B)*y) (each residual one fma):

    - q0 = RN(L*y) is within 1.5 ulp of L/B (y's relative error is at most 2**-53);
    - the first correction leaves an error of q0's times about 2**-52, so q1 is within
      half an ulp plus a hair of L/B: faithful (within one ulp);
    - the second is exact by Markstein's theorem (q faithful, y within half an ulp of 1/B:
      the residual is exact and RN(q + r*y) is RN(L/B)).

    No under- or overflow: |L| in (2**-150, 2**128) (a float64 lr as given whose float32
    value is finite and > 0), B in [2**-53, 1]. This is div.rn.f64's
    own fast path with the reciprocal made exact on the host, so no slow path is needed;
    the fmas compute the division, nothing of the SPEC's float32 arithmetic is fused."""
    q = neg_lr64 * inv_bc1
    r = tl.fma(-q, bc1, neg_lr64)
    q = tl.fma(r, inv_bc1, q)
    r = tl.fma(-q, bc1, neg_lr64)
    return tl.fma(r, inv_bc1, q).to(tl.float32)


@triton.jit
def _adam(p, g, m, v, vmax, c, inv_bc2s, eps, wd, decay, w1, b2, w2,
          OPTIMIZER: tl.constexpr, WEIGHT_DECAY: tl.constexpr, AMSGRAD: tl.constexpr, LERP_SMALL: tl.constexpr):
    """One parameter's Adam / AdamW update at a step (SPEC §3c), ``c`` = f32(-lr/bc1[t]),
    ``inv_bc2s`` = 1/bc2s[t] in float64; a member whose wd is 0 skips the weight decay (a
    select)."""
    if WEIGHT_DECAY:
        if OPTIMIZER == ADAMW:
            p = tl.where(wd != 0, p * decay, p)
        else:
            g = tl.where(wd != 0, g + wd * p, g)
    m = _lerp(m, g, w1, LERP_SMALL)
    v = v * b2
    v = v + (w2 * g) * g
    if AMSGRAD:
        vmax = tl.maximum(vmax, v, propagate_nan=tl.PropagateNan.ALL)
        den = tl.math.sqrt_rn(vmax)
    else:
        den = tl.math.sqrt_rn(v)
    den = _div_by_table(den, inv_bc2s)  # sqrt(v) / bc2s[t]
    den = den + eps
    p = p + tl.math.div_rn(c * m, den)
    return p, m, v, vmax


@triton.jit
def _rmsprop(p, g, v, ga, buf, neg_lr, eps, wd, alpha, wa, momentum,
             WEIGHT_DECAY: tl.constexpr, CENTERED: tl.constexpr, MOMENTUM: tl.constexpr):
    """One parameter's RMSprop update (SPEC §3c); per member: the weight decay is skipped
    where wd is 0, and the centered lerp's formula follows |wa| < 0.5."""
    if WEIGHT_DECAY:
        g = tl.where(wd != 0, g + wd * p, g)
    v = v * alpha
    v = v + (wa * g) * g
    if CENTERED:
        ga = tl.where(tl.abs(wa) < 0.5, _lerp(ga, g, wa, True), _lerp(ga, g, wa, False))
        avg = tl.math.sqrt_rn(v + (-ga) * ga)
    else:
        avg = tl.math.sqrt_rn(v)
    avg = avg + eps
    if MOMENTUM:
        buf = buf * momentum
        buf = buf + tl.math.div_rn(g, avg)
        p = p + neg_lr * buf
    else:
        p = p + tl.math.div_rn(neg_lr * g, avg)
    return p, v, ga, buf


@triton.jit
def _finish_step(i, gw, gb, w, b, mw, mb, vw, vb, xw, xb, n_bad, tab_ptr,
                 neg_lr, neg_lr64, eps, wd, decay, alpha, wa, c1, c2, c3, batch,
                 BATCH: tl.constexpr, OPTIMIZER: tl.constexpr, WEIGHT_DECAY: tl.constexpr,
                 AMSGRAD: tl.constexpr, LERP_SMALL: tl.constexpr, CENTERED: tl.constexpr,
                 MOMENTUM: tl.constexpr):
    """The ``i``-th step of the launch from the summed gradients: batch mean, update of w
    and b with their state, and the divergence count ``n_bad`` (as ``triton_sgd``)."""
    if BATCH > 1:
        gw = tl.math.div_rn(gw, batch)
        gb = tl.math.div_rn(gb, batch)
    if OPTIMIZER == RMSPROP:
        w, mw, vw, xw = _rmsprop(w, gw, mw, vw, xw, neg_lr, eps, wd, alpha, wa, c1,
                                 WEIGHT_DECAY, CENTERED, MOMENTUM)
        b, mb, vb, xb = _rmsprop(b, gb, mb, vb, xb, neg_lr, eps, wd, alpha, wa, c1,
                                 WEIGHT_DECAY, CENTERED, MOMENTUM)
    else:
        bc1 = tl.load(tab_ptr + 3 * i)  # 1 - beta1**s
        inv_bc1 = tl.load(tab_ptr + 3 * i + 1)  # float64(1 / bc1)
        inv_bc2s = tl.load(tab_ptr + 3 * i + 2)  # float64(1 / bc2s), bc2s = f32((1 - beta2**s) ** 0.5)
        c = _step_size(neg_lr64, bc1, inv_bc1)  # f32(-(lr / bc1))
        w, mw, vw, xw = _adam(w, gw, mw, vw, xw, c, inv_bc2s, eps, wd, decay, c1, c2, c3,
                              OPTIMIZER, WEIGHT_DECAY, AMSGRAD, LERP_SMALL)
        b, mb, vb, xb = _adam(b, gb, mb, vb, xb, c, inv_bc2s, eps, wd, decay, c1, c2, c3,
                              OPTIMIZER, WEIGHT_DECAY, AMSGRAD, LERP_SMALL)
    finite = (tl.abs(w) <= FLT_MAX) & (tl.abs(b) <= FLT_MAX)
    n_bad = n_bad + tl.where(finite, 0, 1)
    return w, b, mw, mb, vw, vb, xw, xb, n_bad


@triton.jit(do_not_specialize=["t0", "nsteps", "log_every"])
def adam_kernel(
    s_lo_ptr, s_hi_ptr, neg_lr_ptr, eps_ptr, wd_ptr, alpha_ptr, noise_ptr, prob_ptr, tab_ptr,
    neg_lr64_ptr, decay_ptr, wa_ptr,
    w_ptr, b_ptr, s0w_ptr, s0b_ptr, s1w_ptr, s1b_ptr, s2w_ptr, s2b_ptr, div_ptr,
    hist_w_ptr, hist_b_ptr,
    n_members, t0, nsteps, log_every, s_lo_stride, s_lo_step, s_hi_stride, lr_stride, lr64_stride,
    BLOCK: tl.constexpr, BATCH: tl.constexpr, GROUP: tl.constexpr, UNROLL: tl.constexpr,
    OPTIMIZER: tl.constexpr, WEIGHT_DECAY: tl.constexpr, AMSGRAD: tl.constexpr, LERP_SMALL: tl.constexpr,
    CENTERED: tl.constexpr, MOMENTUM: tl.constexpr, HISTORY: tl.constexpr, NOISE: tl.constexpr,
    NORMAL: tl.constexpr,
):
    """Steps ``t0 .. t0 + nsteps - 1`` of Adam, AdamW or RMSprop for BLOCK members (SPEC §2-§4).

    Pointers (M = ``n_members``; L = number of logged steps of the whole run):

    - ``s_lo_ptr``, ``s_hi_ptr``: int32 (M,), the seed's low / high 32-bit words (bit patterns):
      member i's are ``s_lo_ptr[i*s_lo_stride] + i*s_lo_step`` (mod 2**32) and
      ``s_hi_ptr[i*s_hi_stride]``.
    - ``neg_lr_ptr``: float32 (M,), -lr; member i's at ``neg_lr_ptr + i*lr_stride``; read
      by RMSprop.
    - ``neg_lr64_ptr``: float64 (M,), -lr as given (SPEC §3c); member i's at
      ``neg_lr64_ptr + i*lr64_stride``; read by Adam and AdamW.
    - ``decay_ptr``: float32 (M,), AdamW's f32(1 - lr*wd); read only when OPTIMIZER ==
      ADAMW and WEIGHT_DECAY.
    - ``wa_ptr``: float32 (M,), RMSprop's f32(1 - alpha); read only when OPTIMIZER == RMSPROP.
    - ``eps_ptr``: float32 (M,), eps.
    - ``wd_ptr``: float32 (M,), weight decay; read only when WEIGHT_DECAY.
    - ``alpha_ptr``: float32 (M,), RMSprop's alpha; read only when OPTIMIZER == RMSPROP.
    - ``noise_ptr``: float32 (M,), the label noise sigma; read only when NOISE (SPEC §2b).
    - ``prob_ptr``: float32 (10,): a, c, lo, span = float32(hi - lo), float32(B), then the
      optimizer's three: Adam/AdamW w1 = f32(1 - beta1), b2 = f32(beta2), w2 = f32(1 - beta2);
      RMSprop f32(momentum), 0, 0; then x_mean, x_std (read only when NORMAL, SPEC §2b).
    - ``tab_ptr``: float64 (nsteps, 3), Adam/AdamW only (else a placeholder): row i for
      step t0 + i holds bc1 = 1 - beta1**s, float64(1 / bc1) and float64(1 / bc2s) with
      bc2s = f32((1 - beta2**s) ** 0.5), the reciprocals correctly rounded (the host's
      IEEE division of the optimizer's tables, see :func:`step_tables`).
    - ``w_ptr``, ``b_ptr``: float32 (M,), the parameters, read at the start, written at the end.
    - ``s0w_ptr`` .. ``s2b_ptr``: float32 (M,), the state of w and of b, read at the start
      and written at the end: Adam/AdamW s0 = exp_avg, s1 = exp_avg_sq, s2 = max_exp_avg_sq
      (AMSGRAD); RMSprop s0 = square_avg, s1 = grad_avg (CENTERED), s2 = momentum_buffer
      (MOMENTUM). Slots not used are placeholders, never read or written.
    - ``div_ptr``: int64 (M,), the first diverged step or -1 (read and written).
    - ``hist_w_ptr``, ``hist_b_ptr``: float32 (L, M): row r gets (w, b) after step
      r*log_every; used only when HISTORY.

    Scalars: ``t0`` (with ``t0*B % 4 == 0``), ``nsteps``, ``log_every`` (any value >= 1
    when not HISTORY); the strides ``s_lo_stride``, ``s_hi_stride``, ``lr_stride``,
    ``lr64_stride``: 1, or 0 when every member shares the value (the tensor holds one,
    expanded); ``s_lo_step``:
    0, or 1 for a range of seeds (with ``s_lo_stride`` 0: the first member's word, plus i).

    One program instance takes members ``pid*BLOCK .. pid*BLOCK + BLOCK - 1`` and runs all
    ``nsteps`` steps with their parameters and state in registers, in groups of GROUP steps
    (``GROUP*B % 4 == 0``) unrolled at compile time when UNROLL, the rest in a loop over
    samples, exactly as ``triton_sgd.sgd_kernel``.
    """
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_members

    s_lo, s_hi, neg_lr = _member_words(s_lo_ptr, s_hi_ptr, neg_lr_ptr, offs, mask, s_lo_stride, s_lo_step,
                                       s_hi_stride, lr_stride)
    eps = tl.load(eps_ptr + offs, mask=mask, other=1.0)
    zero = tl.zeros([BLOCK], dtype=tl.float32)
    wd = zero
    if WEIGHT_DECAY:
        wd = tl.load(wd_ptr + offs, mask=mask, other=0.0)
    a = tl.load(prob_ptr + 0)
    c = tl.load(prob_ptr + 1)
    lo = tl.load(prob_ptr + 2)
    span = tl.load(prob_ptr + 3)
    batch = tl.load(prob_ptr + 4)
    c1 = tl.load(prob_ptr + 5)
    c2 = tl.load(prob_ptr + 6)
    c3 = tl.load(prob_ptr + 7)
    x_mean = tl.load(prob_ptr + 8)
    x_std = tl.load(prob_ptr + 9)
    sigma = zero
    if NOISE:
        sigma = tl.load(noise_ptr + offs, mask=mask, other=0.0)

    neg_lr64 = tl.zeros([BLOCK], dtype=tl.float64)
    decay = zero
    if OPTIMIZER != RMSPROP:
        neg_lr64 = tl.load(neg_lr64_ptr + offs * lr64_stride, mask=mask, other=0.0)  # -lr as given
        if OPTIMIZER == ADAMW:
            if WEIGHT_DECAY:
                decay = tl.load(decay_ptr + offs, mask=mask, other=1.0)  # f32(1 - lr*wd), float64 arithmetic
    alpha = zero
    wa = zero
    if OPTIMIZER == RMSPROP:
        alpha = tl.load(alpha_ptr + offs, mask=mask, other=0.0)
        wa = tl.load(wa_ptr + offs, mask=mask, other=0.0)  # f32(1 - alpha), the subtraction in float64

    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    diverged_at = tl.load(div_ptr + offs, mask=mask, other=-1)
    mw = tl.load(s0w_ptr + offs, mask=mask, other=0.0)
    mb = tl.load(s0b_ptr + offs, mask=mask, other=0.0)
    vw = zero
    vb = zero
    xw = zero
    xb = zero
    if OPTIMIZER == RMSPROP:
        if CENTERED:
            vw = tl.load(s1w_ptr + offs, mask=mask, other=0.0)
            vb = tl.load(s1b_ptr + offs, mask=mask, other=0.0)
        if MOMENTUM:
            xw = tl.load(s2w_ptr + offs, mask=mask, other=0.0)
            xb = tl.load(s2b_ptr + offs, mask=mask, other=0.0)
    else:
        vw = tl.load(s1w_ptr + offs, mask=mask, other=0.0)
        vb = tl.load(s1b_ptr + offs, mask=mask, other=0.0)
        if AMSGRAD:
            xw = tl.load(s2w_ptr + offs, mask=mask, other=0.0)
            xb = tl.load(s2b_ptr + offs, mask=mask, other=0.0)

    t_start = t0.to(tl.int64)
    t_end = t_start + nsteps
    every = log_every.to(tl.int64)
    row = (t_start + every - 1) // every
    next_log = row * every

    n_bad = tl.zeros([BLOCK], dtype=tl.int32)  # see sgd_kernel: the first bad step is t_end - n_bad
    x0 = zero
    x1 = zero
    x2 = zero
    x3 = zero
    e0 = zero
    e1 = zero
    e2 = zero
    e3 = zero
    t_loop = t_start
    if UNROLL:
        n_groups = (t_end - t_start) // GROUP
        for g in range(0, n_groups):
            ig = tl.cast(g, tl.int64) * GROUP  # the group's first row of the tables
            tg = t_start + ig
            qg = (tg * BATCH) // 4  # exact: tg*B is a multiple of 4
            for k in tl.static_range(GROUP):
                t = tg + k
                gw, gb, x0, x1, x2, x3, e0, e1, e2, e3 = _unrolled_grad(
                    qg, k, w, b, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo, span, x_mean, x_std, sigma, a, c,
                    BATCH, NORMAL, NOISE)
                w, b, mw, mb, vw, vb, xw, xb, n_bad = _finish_step(
                    ig + k, gw, gb, w, b, mw, mb, vw, vb, xw, xb, n_bad, tab_ptr,
                    neg_lr, neg_lr64, eps, wd, decay, alpha, wa, c1, c2, c3, batch,
                    BATCH, OPTIMIZER, WEIGHT_DECAY, AMSGRAD, LERP_SMALL, CENTERED, MOMENTUM)
                if HISTORY:
                    next_log, row = _log(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr,
                                         n_members, offs, mask, every)
        t_loop = t_start + n_groups * GROUP

    for t_i in range(t_loop, t_end):
        t = tl.cast(t_i, tl.int64)  # (the interpreter's loop counter is int32)
        gw, gb, x0, x1, x2, x3, e0, e1, e2, e3 = _grad_step(
            t * BATCH, w, b, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo, span, x_mean, x_std, sigma, a, c,
            BATCH, NORMAL, NOISE)
        w, b, mw, mb, vw, vb, xw, xb, n_bad = _finish_step(
            t - t_start, gw, gb, w, b, mw, mb, vw, vb, xw, xb, n_bad, tab_ptr,
            neg_lr, neg_lr64, eps, wd, decay, alpha, wa, c1, c2, c3, batch,
            BATCH, OPTIMIZER, WEIGHT_DECAY, AMSGRAD, LERP_SMALL, CENTERED, MOMENTUM)
        if HISTORY:
            next_log, row = _log(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr,
                                 n_members, offs, mask, every)

    tl.store(w_ptr + offs, w, mask=mask)
    tl.store(b_ptr + offs, b, mask=mask)
    diverged_at = tl.where((diverged_at < 0) & (n_bad > 0), t_end - n_bad.to(tl.int64), diverged_at)
    tl.store(div_ptr + offs, diverged_at, mask=mask)
    tl.store(s0w_ptr + offs, mw, mask=mask)
    tl.store(s0b_ptr + offs, mb, mask=mask)
    if OPTIMIZER == RMSPROP:
        if CENTERED:
            tl.store(s1w_ptr + offs, vw, mask=mask)
            tl.store(s1b_ptr + offs, vb, mask=mask)
        if MOMENTUM:
            tl.store(s2w_ptr + offs, xw, mask=mask)
            tl.store(s2b_ptr + offs, xb, mask=mask)
    else:
        tl.store(s1w_ptr + offs, vw, mask=mask)
        tl.store(s1b_ptr + offs, vb, mask=mask)
        if AMSGRAD:
            tl.store(s2w_ptr + offs, xw, mask=mask)
            tl.store(s2b_ptr + offs, xb, mask=mask)


def _launch(members, prob: torch.Tensor, tables, flags: dict, batch: int, state, t0: int, nsteps: int,
            history, *, block_size: Optional[int], problem_flags, neg_lr64: Optional[torch.Tensor] = None) -> None:
    """One launch of :func:`adam_kernel` on checked inputs.

    ``prob``: float32 (N_CONSTANTS,) in kernel order; ``tables``: float64 (nsteps, 3) as
    :func:`step_tables` gives for steps t0 .., or None (RMSprop); ``flags``: the kernel's
    option constexprs (OPTIMIZER, WEIGHT_DECAY, AMSGRAD, LERP_SMALL, CENTERED, MOMENTUM);
    ``state`` = (w, b, slots, diverged_at) with ``slots`` the three (state of w, state of
    b) pairs of the kernel's s0..s2 (None where unused), read and written in place;
    ``neg_lr64``: -lr as given, float64 (M,) (Adam and AdamW; None for RMSprop)."""
    w, b, slots, diverged_at = state
    m = w.numel()
    bs = block_size or (INTERPRET_BLOCK_SIZE if _interpreting() else BLOCK_SIZE)
    if bs < 1 or bs & (bs - 1):
        raise ValueError(f"block_size must be a power of 2, got {bs}")
    if (t0 * batch) % 4:
        raise ValueError(f"t0 * batch_size must be a multiple of 4, got t0={t0}, batch_size={batch}")
    group = 4 // math.gcd(batch, 4)  # steps per Philox-aligned group: group*B % 4 == 0
    hw, hb = (history.weight, history.bias) if history is not None else (w, w)  # placeholders when unused
    opts = members.options
    wd = opts.weight_decay if flags["WEIGHT_DECAY"] else members.neg_lr
    rmsprop = flags["OPTIMIZER"] == OPTIMIZER_CODES["rmsprop"]
    alpha = opts.alpha if rmsprop else members.neg_lr
    wa = opts.one_minus_alpha if rmsprop else members.neg_lr
    decay = opts.decay if flags["OPTIMIZER"] == OPTIMIZER_CODES["adamw"] and flags["WEIGHT_DECAY"] else members.neg_lr
    tab = tables if tables is not None else prob
    s = [x if x is not None else w for pair in slots for x in pair]
    grid = (triton.cdiv(m, bs),)
    on_device = torch.cuda.device(w.device) if w.device.type == "cuda" else contextlib.nullcontext()
    with on_device, np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the interpreter's numpy
        adam_kernel[grid](
            members.s_lo, members.s_hi, members.neg_lr, opts.eps, wd, alpha,
            members.problem_options.noise if problem_flags.noise else members.neg_lr, prob, tab,
            members.neg_lr if neg_lr64 is None else neg_lr64, decay, wa,
            w, b, *s, diverged_at, hw, hb,
            m, t0, nsteps, history.log_every if history is not None else 1,
            members.s_lo.stride(0), members.s_lo_step, members.s_hi.stride(0), members.neg_lr.stride(0),
            0 if neg_lr64 is None else neg_lr64.stride(0),
            BLOCK=bs, BATCH=batch, GROUP=group, UNROLL=group * batch <= MAX_UNROLLED_SAMPLES,
            HISTORY=history is not None, NOISE=problem_flags.noise, NORMAL=problem_flags.normal, **flags,
            num_warps=NUM_WARPS, enable_fp_fusion=ENABLE_FP_FUSION, maxnreg=MAX_REGISTERS,
        )


def _interpreting() -> bool:
    return not isinstance(adam_kernel, triton.runtime.JITFunction)


#: Where each optimizer's state (its ``state_names``) goes among the kernel's slots s0..s2.
_SLOTS = {"exp_avg": 0, "exp_avg_sq": 1, "max_exp_avg_sq": 2,
          "square_avg": 0, "grad_avg": 1, "momentum_buffer": 2}


def kernel_flags(name: str, flags) -> dict:
    """The kernel's option constexprs for optimizer ``name`` and its flags (a NamedTuple
    of :mod:`fastneuron.optim_adam`); ValueError for what the kernel has no code for."""
    if name not in OPTIMIZER_CODES:
        raise ValueError(f"the Triton Adam kernel runs {', '.join(OPTIMIZER_CODES)}, not {name!r}")
    out = dict(OPTIMIZER=OPTIMIZER_CODES[name], WEIGHT_DECAY=bool(flags.weight_decay), AMSGRAD=False,
               LERP_SMALL=True, CENTERED=False, MOMENTUM=False)
    if name == "rmsprop":
        out.update(CENTERED=bool(flags.centered), MOMENTUM=bool(flags.momentum))
    else:
        if bool(flags.decoupled) != (name == "adamw"):
            raise ValueError(f"config.flags.decoupled must be {name == 'adamw'} for {name}")
        out.update(AMSGRAD=bool(flags.amsgrad), LERP_SMALL=bool(flags.w1_small))
    return out


def state_names(name: str, kflags: dict) -> tuple:
    """The optimizer's state_names for these kernel flags (the seam's order)."""
    if name == "rmsprop":
        return ("square_avg",) + (("grad_avg",) if kflags["CENTERED"] else ()) + \
            (("momentum_buffer",) if kflags["MOMENTUM"] else ())
    return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if kflags["AMSGRAD"] else ())


def step_tables(bc1: torch.Tensor, bc2s: torch.Tensor) -> torch.Tensor:
    """The kernel's float64 (n, 3) table of a chunk from the optimizer's rows (bc1
    float64, bc2s float32): bc1, and the correctly rounded float64 reciprocals of bc1 and
    of bc2s, divided on the host (NumPy's IEEE float64 division), on bc1's device."""
    b1 = bc1.detach().to("cpu", torch.float64).numpy()
    c = bc2s.detach().to("cpu").numpy().astype(np.float64)
    with np.errstate(divide="ignore"):
        tab = np.stack([b1, 1.0 / b1, 1.0 / c], axis=1)
    return torch.from_numpy(np.ascontiguousarray(tab)).to(bc1.device)


def step(state, t0: int, members, consts, *, nsteps: int, config, history=None, block_size=None):
    """Steps ``t0 .. t0 + nsteps - 1`` of Adam, AdamW or RMSprop (``config.optimizer.name``)
    for a block of members, the :class:`~fastneuron.kernels.Stepper` call of
    ``TritonStepper`` for these optimizers: checks every input, then one launch. The
    state's tensors are updated in place and returned."""
    name = getattr(config.optimizer, "name", None)
    kflags = kernel_flags(name, config.flags)
    if config.problem is not LinearTarget:
        raise ValueError(f"the Triton kernel runs the linear problem, not {config.problem.__name__}")
    if config.schedule:
        raise ValueError("the Triton Adam kernel has no lr schedule (SPEC §3d covers SGD)")
    problem_flags = problem_kernel_flags(config)
    batch = check_int("config.batch_size", config.batch_size, 1)
    opts = members.options
    needed = ["eps"] + (["weight_decay"] if kflags["WEIGHT_DECAY"] else []) + \
        (["alpha", "one_minus_alpha"] if name == "rmsprop" else []) + \
        (["decay"] if name == "adamw" and kflags["WEIGHT_DECAY"] else [])
    lr64 = None if name == "rmsprop" else member_neg_lr64(members)  # -lr as given (SPEC §3c)
    s_lo = _check_members_base(members, [(n, getattr(opts, n, None)) for n in needed]
                               + problem_member_options(members, problem_flags), _interpreting(), lr64)
    m, dev = s_lo.numel(), s_lo.device
    t0 = check_int("t0", int(t0) if isinstance(t0, torch.Tensor) else t0, 0)
    nsteps = check_int("nsteps", nsteps, 0)
    names = state_names(name, kflags)
    for part in ("weight_state", "bias_state"):
        if len(getattr(state, part)) != len(names):
            raise ValueError(f"state.{part} must hold {', '.join(names)} ({len(names)} tensors), "
                             f"got {len(getattr(state, part))}")
    named = [("weight", state.weight), ("bias", state.bias), ("diverged_at", state.diverged_at)]
    named += [(f"{part}[{i}] ({n})", getattr(state, part)[i]) for part in ("weight_state", "bias_state")
              for i, n in enumerate(names)]
    for label, x in named:
        _check_tensor(f"state.{label}", x, torch.int64 if label == "diverged_at" else torch.float32, (m,), dev)
        if not x.is_contiguous():
            raise ValueError(f"state.{label} must be contiguous")
    if history is not None:
        _check_history(history, t0 + nsteps - 1, m, dev)

    oc = consts.optimizer
    if name == "rmsprop":
        optimizer_values = [("consts.optimizer.momentum", oc.momentum)]
        tables = None
    else:
        optimizer_values = [("consts.optimizer.w1", oc.w1), ("consts.optimizer.b2", oc.b2),
                            ("consts.optimizer.w2", oc.w2)]
        for label, x, dtype in (("bc1", oc.bc1, torch.float64), ("bc2s", oc.bc2s, torch.float32)):
            if not isinstance(x, torch.Tensor) or x.dtype != dtype or x.dim() != 1 or x.device != dev:
                raise ValueError(f"consts.optimizer.{label} must be a 1-D {dtype} tensor on {dev}")
            if x.numel() < t0 + nsteps:
                raise ValueError(f"consts.optimizer.{label} has {x.numel()} rows, but steps up to "
                                 f"{t0 + nsteps - 1} need {t0 + nsteps}")
        tables = step_tables(oc.bc1[t0:t0 + nsteps], oc.bc2s[t0:t0 + nsteps])
    pc = consts.problem
    values = [("consts.a", pc.a), ("consts.c", pc.c), ("consts.lo", pc.lo), ("consts.span", pc.span),
              ("consts.batch", consts.batch)] + optimizer_values
    values += [(None, torch.zeros((), dtype=torch.float32, device=dev))] * (N_CONSTANTS - 2 - len(values))
    values += [("consts.x_mean", pc.x_mean), ("consts.x_std", pc.x_std)]
    for label, x in values:
        _check_tensor(label or "constant", x, torch.float32, (), dev)
    prob = torch.stack([x for _, x in values])

    slots = [[None, None] for _ in range(3)]
    for i, n in enumerate(names):
        slots[_SLOTS[n]] = [state.weight_state[i], state.bias_state[i]]
    _launch(members, prob, tables, kflags, batch, (state.weight, state.bias, slots, state.diverged_at), t0, nsteps,
            history, block_size=block_size, problem_flags=problem_flags, neg_lr64=lr64)
    return state
