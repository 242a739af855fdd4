"""``backend="triton"``: one Triton kernel that keeps every member's SGD in registers.

One program instance owns a BLOCK of members. It draws (or loads) their (w, b), then
runs a chunk of steps with everything in registers: the samples x come from
Philox4x32-10 inside the kernel (SPEC §2, data stream; ``tl.philox``'s rounds, with
``mul.wide.u32`` products on CUDA), the update is SPEC §3/§3b line for line, divergence
(SPEC §4) is counted per step (an int32 per member, see ``sgd_kernel``), and logged steps
are written straight into the history. Nothing but the logged history touches memory between the
chunk's first and last step.

Callers use :class:`TritonStepper`, a :class:`fastneuron.kernels.Stepper`: the engine
runs it in chunks of :data:`CHUNK_STEPS` steps (a multiple of 4: each launch starts at
a sample index ``n = t*B`` that is a multiple of 4, at the start of a Philox block),
with the state updated in place between launches, so that it can show progress,
checkpoint and resume between chunks. It has kernels for the SGD optimizer
(:class:`fastneuron.optim.SGD`, its flags as constexprs) on the linear problem
(:class:`fastneuron.problems.LinearTarget`, with its label noise and Gaussian x, SPEC §2b,
as the constexprs NOISE and NORMAL), with or without an lr schedule (SPEC §3d, SCHEDULE:
the step's float64 factor read from a table), and hands Adam, AdamW and RMSprop to
:mod:`.triton_adam`'s kernel. Philox, the samples, the gradient and the history writes
are :mod:`.triton_common`'s, shared by both kernels.

Bit-exactness: every float op is a separately rounded float32 op, as in
:mod:`fastneuron.reference`. The kernel is compiled with ``enable_fp_fusion=False``
(no FMA contraction of ``w*x + b``), and the batch mean divides with
``tl.math.div_rn`` (IEEE round to nearest; a plain ``/`` of float32 may lower to an
approximate division on NVIDIA). Batch sums run left to right from the first term.

Without CUDA, the kernel runs under ``TRITON_INTERPRET=1`` (set before import) on CPU
tensors; that is how the tests check it.
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
from fastneuron.optim import SGD, SGDFlags
from fastneuron.problems import LinearFlags, LinearTarget
from fastneuron.reference import Constants, History, Members, State, StepConfig
from fastneuron.reference import neg_lr64 as member_neg_lr64

from fastneuron.kernels import triton_adam

# Shared with triton_adam.py: Philox and the data stream, the gradient, history writes,
# input checks (the names stay importable from here).
from fastneuron.kernels.triton_common import (  # noqa: F401
    FLT_MAX, MUL_WIDE_A, MUL_WIDE_B, PHILOX_KEY_A, PHILOX_KEY_B, PHILOX_ROUND_A, PHILOX_ROUND_B, PTX_PHILOX,
    _check_history, _check_members_base, _check_tensor, check_schedule, problem_kernel_flags,
    problem_member_options, _data_block, _draw, _grad, _grad_step, _log, _member_words, _mul_wide,
    _philox, _unrolled_grad)

#: Steps per launch: a multiple of 4 (see the module docstring). Long enough that launch
#: overhead (~10 us) is nothing against a chunk's work, short enough for the progress
#: bar to move on big runs.
CHUNK_STEPS = 2048

#: Members per program and warps per program on a GPU. 256 members over 4 warps (128
#: threads) gives each thread 2 members: two independent Philox multiply chains to
#: overlap. ptxas (sm_90a) puts the fullest variant (momentum, weight decay, nesterov,
#: history) at 62 registers and the batch variants at MAX_REGISTERS = 64, with no
#: spills, so 8 such blocks fit on an SM. 1e6 members make ~4000 programs, enough to
#: fill every SM of a big GPU several times; small runs (a few thousand members) still
#: spread over a dozen SMs.
BLOCK_SIZE = 256
NUM_WARPS = 4

#: Members per program when the kernel draws normals (NOISE or NORMAL, SPEC §2b): one
#: member a thread. A Box–Muller block keeps a member's four samples and, with NOISE, its
#: four noise terms live across a group, and its IEEE division and square root add
#: slow-path calls that save registers on the stack: two members a thread do not fit in
#: MAX_REGISTERS without spilling (see ``python -m fastneuron.kernels.sass``).
BOX_MULLER_BLOCK_SIZE = 128

#: Registers per thread at most (ptxas ``.maxnreg``): 64 keeps 8 blocks of NUM_WARPS
#: warps per SM for every variant. Without it, B > 1 (``tl.math.div_rn``'s inline fast
#: path and slow-path call) takes 69-72; with it ptxas spills nothing (see
#: ``python -m fastneuron.kernels.sass``, which compiles with it and checks).
MAX_REGISTERS = 64

#: SPEC §3 forbids contracting w*x + b into an FMA, so this stays False; only
#: bench/gpu_check.sh flips it, to measure what the exactness costs on a GPU.
ENABLE_FP_FUSION = False

#: Under the interpreter a program costs the same Python overhead per op whatever its
#: size, so fewer, bigger programs run much faster.
INTERPRET_BLOCK_SIZE = 1024

#: Steps whose samples number at most this many per Philox-aligned group (``G*B``, see
#: the kernel) are unrolled at compile time; longer batches run a loop over samples.
MAX_UNROLLED_SAMPLES = 32

#: The problem's flags when it uses no option (no label noise, uniform x).
NO_PROBLEM_OPTIONS = LinearFlags()

#: The run-wide constants, in the order the kernel reads them from ``prob_ptr``.
_CONSTANT_NAMES = ("a", "c", "lo", "span", "batch", "one_minus_dampening", "x_mean", "x_std")


def _interpreting() -> bool:
    return not isinstance(sgd_kernel, triton.runtime.JITFunction)


def launch_block_size(NOISE: bool = False, NORMAL: bool = False, **_) -> int:
    """BLOCK on a GPU for these constexprs: :data:`BOX_MULLER_BLOCK_SIZE` when the kernel
    draws normals (NOISE or NORMAL), else :data:`BLOCK_SIZE`. ``_launch`` and
    ``fastneuron.kernels.sass.launch_constexprs`` both use this rule (other constexprs are
    ignored)."""
    return BOX_MULLER_BLOCK_SIZE if NOISE or NORMAL else BLOCK_SIZE


@triton.jit
def _sgd(p, d, buf, first, neg_lr, mu, wd, undamped,
         WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr):
    """One parameter's ``torch.optim.SGD`` update (SPEC §3b), as ``reference.sgd_update``:
    an option that is 0 for a member is skipped for it (a select), not computed with 0."""
    if WEIGHT_DECAY:
        d = tl.where(wd != 0, d + wd * p, d)
    if MOMENTUM:
        v = tl.where(first, d, mu * buf + undamped * d)
        if NESTEROV:
            d_m = d + mu * v
        else:
            d_m = v
        d = tl.where(mu != 0, d_m, d)
        buf = v
    p = p + neg_lr * d
    return p, buf


@triton.jit
def _finish_step(t, gw, gb, w, b, vw, vb, n_bad, neg_lr, mu, wd, undamped, batch,
                 BATCH: tl.constexpr, WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr,
                 NESTEROV: tl.constexpr):
    """Step ``t`` from the summed gradients: batch mean, update, and the divergence count
    ``n_bad`` (int32): the steps of this launch after which w or b is not finite (SPEC §4;
    see ``sgd_kernel`` for why that count gives the first diverged step)."""
    if BATCH > 1:
        gw = tl.math.div_rn(gw, batch)
        gb = tl.math.div_rn(gb, batch)
    first = t == 0
    w, vw = _sgd(w, gw, vw, first, neg_lr, mu, wd, undamped, WEIGHT_DECAY, MOMENTUM, NESTEROV)
    b, vb = _sgd(b, gb, vb, first, neg_lr, mu, wd, undamped, WEIGHT_DECAY, MOMENTUM, NESTEROV)
    finite = (tl.abs(w) <= FLT_MAX) & (tl.abs(b) <= FLT_MAX)
    n_bad = n_bad + tl.where(finite, 0, 1)
    return w, b, vw, vb, n_bad


@triton.jit(do_not_specialize=["t0", "nsteps", "log_every"])
def sgd_kernel(
    s_lo_ptr, s_hi_ptr, neg_lr_ptr, mu_ptr, wd_ptr, noise_ptr, prob_ptr, fac_ptr, neg_lr64_ptr,
    w_ptr, b_ptr, vw_ptr, vb_ptr, div_ptr,
    hist_w_ptr, hist_b_ptr,
    n_members, t0, nsteps, log_every, s_lo_stride, s_lo_step, s_hi_stride, lr_stride, lr64_stride,
    BLOCK: tl.constexpr, BATCH: tl.constexpr, GROUP: tl.constexpr, UNROLL: tl.constexpr,
    INIT: tl.constexpr, WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr,
    NESTEROV: tl.constexpr, HISTORY: tl.constexpr, NOISE: tl.constexpr, NORMAL: tl.constexpr,
    SCHEDULE: tl.constexpr,
):
    """Steps ``t0 .. t0 + nsteps - 1`` of SGD for BLOCK members (SPEC §2-§4).

    Pointers (M = ``n_members``; L = number of logged steps of the whole run):

    - ``s_lo_ptr``, ``s_hi_ptr``: int32 (M,), the seed's low / high 32-bit words (bit patterns):
      member i's are ``s_lo_ptr[i*s_lo_stride] + i*s_lo_step`` (mod 2**32) and
      ``s_hi_ptr[i*s_hi_stride]``.
    - ``neg_lr_ptr``: float32 (M,), -lr; member i's at ``neg_lr_ptr + i*lr_stride``.
    - ``mu_ptr``, ``wd_ptr``: float32 (M,), momentum / weight decay; read only when
      MOMENTUM / WEIGHT_DECAY (otherwise any placeholder).
    - ``noise_ptr``: float32 (M,), the label noise sigma; read only when NOISE (SPEC §2b).
    - ``prob_ptr``: float32 (8,): a, c, lo, span = float32(hi - lo), float32(B), float32(1 - tau),
      x_mean, x_std (the last two read only when NORMAL: x ~ N(x_mean, x_std**2), SPEC §2b).
    - ``fac_ptr``: float64 (>= t0 + nsteps,), the lr schedule's factors f[t] (SPEC §3d);
      read only when SCHEDULE: step t uses -lr_t = f32(neg_lr64 * f[t]).
    - ``neg_lr64_ptr``: float64 (M,), -lr as given (the Python float, SPEC §3d); member i's
      at ``neg_lr64_ptr + i*lr64_stride``; read only when SCHEDULE.
    - ``w_ptr``, ``b_ptr``: float32 (M,), the parameters: read at the start unless INIT
      (then drawn from the init stream), written at the end.
    - ``vw_ptr``, ``vb_ptr``: float32 (M,), the momentum buffers (read unless INIT,
      written at the end); used only when MOMENTUM.
    - ``div_ptr``: int64 (M,), the first diverged step or -1 (read unless INIT, written).
    - ``hist_w_ptr``, ``hist_b_ptr``: float32 (L, M): row r gets (w, b) after step
      r*log_every; used only when HISTORY.

    Scalars: ``t0`` (with ``t0*B % 4 == 0``), ``nsteps``, ``log_every`` (any value >= 1
    when not HISTORY); the strides ``s_lo_stride``, ``s_hi_stride``, ``lr_stride``: 1, or 0
    when every member shares the value (the tensor holds one, expanded), and likewise
    ``lr64_stride``; ``s_lo_step``: 0, or 1 for a range of seeds (with ``s_lo_stride`` 0:
    the first member's word, plus i).

    One program instance takes members ``pid*BLOCK .. pid*BLOCK + BLOCK - 1`` and runs
    all ``nsteps`` steps with their state in registers. Steps go in groups of GROUP
    (``GROUP*B % 4 == 0``), so each group starts a Philox block; when UNROLL, a group's
    GROUP*B samples are unrolled at compile time, one ``_philox`` call per four
    samples (for B = 1: one call per four steps). Steps left over (``nsteps % GROUP``,
    or all of them when not UNROLL) run in a loop over samples that draws a block when
    it reaches a multiple of 4.
    """
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_members

    s_lo, s_hi, neg_lr = _member_words(s_lo_ptr, s_hi_ptr, neg_lr_ptr, offs, mask, s_lo_stride, s_lo_step,
                                       s_hi_stride, lr_stride)
    zero = tl.zeros([BLOCK], dtype=tl.float32)
    mu = zero
    wd = zero
    if MOMENTUM:
        mu = tl.load(mu_ptr + offs, mask=mask, other=0.0)
    if WEIGHT_DECAY:
        wd = tl.load(wd_ptr + offs, mask=mask, other=0.0)
    sigma = zero
    if NOISE:
        sigma = tl.load(noise_ptr + offs, mask=mask, other=0.0)
    a = tl.load(prob_ptr + 0)
    c = tl.load(prob_ptr + 1)
    lo = tl.load(prob_ptr + 2)
    span = tl.load(prob_ptr + 3)
    batch = tl.load(prob_ptr + 4)
    undamped = tl.load(prob_ptr + 5)  # float32(1 - tau)
    x_mean = tl.load(prob_ptr + 6)
    x_std = tl.load(prob_ptr + 7)
    neg_lr64 = tl.zeros([BLOCK], dtype=tl.float64)
    if SCHEDULE:  # -lr as given (float64), SPEC §3d
        neg_lr64 = tl.load(neg_lr64_ptr + offs * lr64_stride, mask=mask, other=0.0)

    vw = zero
    vb = zero
    if INIT:
        # Init stream (SPEC §2): key (1, 0), counter (0, 0, s_lo, s_hi); words 0 and 1.
        z = tl.zeros([BLOCK], dtype=tl.uint32)
        r0, r1, _, _ = _philox(1, 0, z, z, s_lo, s_hi)
        w = -1.0 + 2.0 * tl.uint_to_uniform_float(r0)
        b = -1.0 + 2.0 * tl.uint_to_uniform_float(r1)
        diverged_at = tl.full([BLOCK], -1, dtype=tl.int64)
    else:
        w = tl.load(w_ptr + offs, mask=mask, other=0.0)
        b = tl.load(b_ptr + offs, mask=mask, other=0.0)
        diverged_at = tl.load(div_ptr + offs, mask=mask, other=-1)
        if MOMENTUM:
            vw = tl.load(vw_ptr + offs, mask=mask, other=0.0)
            vb = tl.load(vb_ptr + offs, mask=mask, other=0.0)

    t_start = t0.to(tl.int64)
    t_end = t_start + nsteps
    every = log_every.to(tl.int64)
    # The first logged step at or after t_start, and its history row.
    row = (t_start + every - 1) // every
    next_log = row * every

    # Divergence (SPEC §4) as a count: a non-finite w or b never becomes finite again
    # (p + (-lr)*d of a non-finite p is not finite), so the steps after which w or b is
    # not finite are the last n_bad of the launch, and the first of them is t_end - n_bad.
    # An int32 count costs less per step than an int64 select (n_bad <= nsteps < 2**31).
    n_bad = tl.zeros([BLOCK], dtype=tl.int32)
    x0 = zero
    x1 = zero
    x2 = zero
    x3 = zero
    e0 = zero
    e1 = zero
    e2 = zero
    e3 = zero
    lr_t = neg_lr
    t_loop = t_start
    if UNROLL:
        n_groups = (t_end - t_start) // GROUP
        for g in range(0, n_groups):
            tg = t_start + tl.cast(g, tl.int64) * GROUP
            qg = (tg * BATCH) // 4  # exact: tg*B is a multiple of 4
            for k in tl.static_range(GROUP):
                t = tg + k
                gw, gb, x0, x1, x2, x3, e0, e1, e2, e3 = _unrolled_grad(
                    qg, k, w, b, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo, span, x_mean, x_std, sigma, a, c,
                    BATCH, NORMAL, NOISE)
                if SCHEDULE:
                    lr_t = (neg_lr64 * tl.load(fac_ptr + t)).to(tl.float32)
                w, b, vw, vb, n_bad = _finish_step(t, gw, gb, w, b, vw, vb, n_bad, lr_t, mu, wd, undamped,
                                                 batch, BATCH, WEIGHT_DECAY, MOMENTUM, NESTEROV)
                if HISTORY:
                    next_log, row = _log(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr,
                                         n_members, offs, mask, every)
        t_loop = t_start + n_groups * GROUP

    for t_i in range(t_loop, t_end):
        t = tl.cast(t_i, tl.int64)  # (the interpreter's loop counter is int32)
        gw, gb, x0, x1, x2, x3, e0, e1, e2, e3 = _grad_step(
            t * BATCH, w, b, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo, span, x_mean, x_std, sigma, a, c,
            BATCH, NORMAL, NOISE)
        if SCHEDULE:
            lr_t = (neg_lr64 * tl.load(fac_ptr + t)).to(tl.float32)
        w, b, vw, vb, n_bad = _finish_step(t, gw, gb, w, b, vw, vb, n_bad, lr_t, mu, wd, undamped,
                                         batch, BATCH, WEIGHT_DECAY, MOMENTUM, NESTEROV)
        if HISTORY:
            next_log, row = _log(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr,
                                 n_members, offs, mask, every)

    tl.store(w_ptr + offs, w, mask=mask)
    tl.store(b_ptr + offs, b, mask=mask)
    diverged_at = tl.where((diverged_at < 0) & (n_bad > 0), t_end - n_bad.to(tl.int64), diverged_at)
    tl.store(div_ptr + offs, diverged_at, mask=mask)
    if MOMENTUM:
        tl.store(vw_ptr + offs, vw, mask=mask)
        tl.store(vb_ptr + offs, vb, mask=mask)


def _launch(members: Members, constants: torch.Tensor, flags: SGDFlags, batch: int, state, t0: int, nsteps: int,
            history: Optional[History], *, init: bool, block_size: Optional[int], problem_flags=NO_PROBLEM_OPTIONS,
            factors: Optional[torch.Tensor] = None, neg_lr64: Optional[torch.Tensor] = None) -> None:
    """One launch of :func:`sgd_kernel` on checked inputs; ``state`` = (w, b, vw, vb, diverged_at)
    is read (unless ``init``) and written in place, on the tensors' device. ``factors``:
    the lr schedule's float64 table (None: constant lr), with ``neg_lr64`` (-lr as given,
    float64 (M,))."""
    w, b, vw, vb, diverged_at = state
    m = w.numel()
    bs = block_size or (INTERPRET_BLOCK_SIZE if _interpreting() else
                        launch_block_size(NOISE=problem_flags.noise, NORMAL=problem_flags.normal))
    if bs < 1 or bs & (bs - 1):
        raise ValueError(f"block_size must be a power of 2, got {bs}")
    if (t0 * batch) % 4:
        raise ValueError(f"t0 * batch_size must be a multiple of 4, got t0={t0}, batch_size={batch}")
    group = 4 // math.gcd(batch, 4)  # steps per Philox-aligned group: group*B % 4 == 0
    hw, hb = (history.weight, history.bias) if history is not None else (w, w)  # placeholders when unused
    opts = members.options
    grid = (triton.cdiv(m, bs),)
    on_device = torch.cuda.device(w.device) if w.device.type == "cuda" else contextlib.nullcontext()
    with on_device, np.errstate(over="ignore", invalid="ignore"):  # the interpreter's numpy, on divergence
        sgd_kernel[grid](
            members.s_lo, members.s_hi, members.neg_lr,
            opts.momentum if flags.momentum else members.neg_lr,
            opts.weight_decay if flags.weight_decay else members.neg_lr,
            members.problem_options.noise if problem_flags.noise else members.neg_lr,
            constants, constants if factors is None else factors, members.neg_lr if neg_lr64 is None else neg_lr64,
            w, b, w if vw is None else vw, w if vb is None else vb, diverged_at, hw, hb,
            m, t0, nsteps, history.log_every if history is not None else 1,
            members.s_lo.stride(0), members.s_lo_step, members.s_hi.stride(0), members.neg_lr.stride(0),
            0 if neg_lr64 is None else neg_lr64.stride(0),
            BLOCK=bs, BATCH=batch, GROUP=group, UNROLL=group * batch <= MAX_UNROLLED_SAMPLES,
            INIT=init, WEIGHT_DECAY=flags.weight_decay, MOMENTUM=flags.momentum,
            NESTEROV=flags.nesterov, HISTORY=history is not None, NOISE=problem_flags.noise,
            NORMAL=problem_flags.normal, SCHEDULE=factors is not None,
            num_warps=NUM_WARPS, enable_fp_fusion=ENABLE_FP_FUSION, maxnreg=MAX_REGISTERS,
        )


class TritonStepper:
    """The Triton backend as a :class:`fastneuron.kernels.Stepper`: chunks of
    :data:`CHUNK_STEPS` steps on a block of members, the state updated in place and the
    logged rows written by the kernel itself."""

    chunk_steps = CHUNK_STEPS
    #: The kernels read a shared lr and a seed range's words as one value (stride 0).
    dense_members = False

    def __init__(self, block_size: Optional[int] = None) -> None:
        self.block_size = block_size

    def init(self, members: Members, config: StepConfig):
        """Initial (w0, b0) from the init stream (a launch of 0 steps)."""
        s_lo = _check_members(members, SGDFlags())
        m, dev = s_lo.numel(), s_lo.device
        w = torch.empty(m, dtype=torch.float32, device=dev)
        b = torch.empty_like(w)
        diverged_at = torch.empty(m, dtype=torch.int64, device=dev)
        constants = torch.zeros(len(_CONSTANT_NAMES), dtype=torch.float32, device=dev)
        _launch(members, constants, SGDFlags(), 1, (w, b, None, None, diverged_at), 0, 0, None, init=True,
                block_size=self.block_size)
        return w, b

    def __call__(self, state: State, t0: int, members: Members, consts: Constants, *, nsteps: int,
                 config: StepConfig, history: Optional[History] = None) -> State:
        """Steps ``t0 .. t0 + nsteps - 1`` (``t0``: int or 0-dim tensor, ``t0*B % 4 == 0``).
        Adam, AdamW and RMSprop run :mod:`.triton_adam`'s kernel (by ``config.optimizer.name``).
        v2's neuron on the linear problem only: :class:`.triton_neuron.TritonStepper` (the
        backend's stepper) hands everything else to SPEC §6's kernels."""
        if getattr(config.optimizer, "name", None) in triton_adam.OPTIMIZER_CODES:
            return triton_adam.step(state, t0, members, consts, nsteps=nsteps, config=config, history=history,
                                    block_size=self.block_size)
        flags, batch = _check_config(config)
        problem_flags = problem_kernel_flags(config)
        lr64 = member_neg_lr64(members) if config.schedule else None  # SPEC §3d: the lr as given
        s_lo = _check_members(members, flags, problem_flags, lr64)
        m, dev = s_lo.numel(), s_lo.device
        constants = _check_constants(consts, dev)
        t0 = check_int("t0", int(t0) if isinstance(t0, torch.Tensor) else t0, 0)
        nsteps = check_int("nsteps", nsteps, 0)
        factors = check_schedule(config, consts, t0 + nsteps, dev)
        buffers = (state.weight_state, state.bias_state)
        if flags.momentum and not all(len(x) == 1 for x in buffers):
            raise ValueError("state.weight_state and state.bias_state must hold the momentum buffer")
        named = [("weight", state.weight), ("bias", state.bias), ("diverged_at", state.diverged_at)]
        if flags.momentum:
            named += [("weight_state[0]", state.weight_state[0]), ("bias_state[0]", state.bias_state[0])]
        for name, x in named:
            _check_tensor(f"state.{name}", x, torch.int64 if name == "diverged_at" else torch.float32, (m,), dev)
            if not x.is_contiguous():
                raise ValueError(f"state.{name} must be contiguous")
        if history is not None:
            _check_history(history, t0 + nsteps - 1, m, dev)
        vw, vb = (state.weight_state[0], state.bias_state[0]) if flags.momentum else (None, None)
        _launch(members, constants, flags, batch, (state.weight, state.bias, vw, vb, state.diverged_at), t0,
                nsteps, history, init=False, block_size=self.block_size, problem_flags=problem_flags,
                factors=factors, neg_lr64=lr64)
        return state


def _check_config(config: StepConfig) -> tuple[SGDFlags, int]:
    """The kernel's flags and batch size; ValueError for what it has no kernel for."""
    if config.optimizer is not SGD or config.problem is not LinearTarget:
        raise ValueError(f"the Triton kernel runs SGD on the linear problem, not {config.optimizer.__name__} "
                         f"on {config.problem.__name__}")
    flags = config.flags
    if not isinstance(flags, SGDFlags):
        raise ValueError(f"config.flags must be SGDFlags, got {type(flags).__name__}")
    if flags.nesterov and not flags.momentum:
        raise ValueError("config.flags.nesterov needs config.flags.momentum")
    return flags, check_int("config.batch_size", config.batch_size, 1)


def _check_members(members: Members, flags: SGDFlags, problem_flags=NO_PROBLEM_OPTIONS,
                   neg_lr64: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Validate the per-member tensors against the flags (and ``neg_lr64``, when given);
    returns s_lo."""
    options = [(name, getattr(members.options, name)) for name in ("momentum", "weight_decay") if getattr(flags, name)]
    return _check_members_base(members, options + problem_member_options(members, problem_flags), _interpreting(),
                               neg_lr64)


def _check_constants(consts: Constants, device: torch.device) -> torch.Tensor:
    """The run-wide constants as one float32 (6,) tensor on ``device``, in kernel order."""
    values = dict(consts.problem._asdict(), batch=consts.batch,
                  one_minus_dampening=consts.optimizer.one_minus_dampening)
    for name in _CONSTANT_NAMES:
        _check_tensor(f"consts.{name}", values[name], torch.float32, (), device)
    return torch.stack([values[name] for name in _CONSTANT_NAMES])
