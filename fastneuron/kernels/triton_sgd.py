"""``backend="triton"``: one Triton kernel that keeps every member's SGD in registers.

One program instance owns a BLOCK of members. It draws (or loads) their (w, b), then
runs a chunk of steps with everything in registers: the samples x come from
``tl.philox`` inside the kernel (SPEC §2, data stream), the update is SPEC §3/§3b line
for line, divergence (SPEC §4) is tracked per step, and logged steps are written
straight into the history. Nothing but the logged history touches memory between the
chunk's first and last step.

Callers use :class:`TritonStepper`, the stepper of ``fastneuron._driver`` (and so of
``fastneuron.train``): the driver runs it in chunks of :data:`CHUNK_STEPS` steps (a
multiple of 4: each launch starts at a sample index ``n = t*B`` that is a multiple of
4, at the start of a Philox block), with the state updated in place between launches,
so that it can show progress, checkpoint and resume between chunks.

Bit-exactness: every float op is a separately rounded float32 op, as in
:mod:`fastneuron.reference`. The kernel is compiled with ``enable_fp_fusion=False``
(no FMA contraction of ``w*x + b``), and the batch mean divides with
``tl.math.div_rn`` (IEEE round to nearest; a plain ``/`` of float32 may lower to an
approximate division on NVIDIA). Batch sums run left to right from the first term.

Without CUDA, the kernel runs under ``TRITON_INTERPRET=1`` (set before import) on CPU
tensors; that is how the tests check it.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import triton
import triton.language as tl

from fastneuron.reference import Members, Problem, State, StepOptions

#: Steps per launch: a multiple of 4 (see the module docstring). Long enough that launch
#: overhead (~10 us) is nothing against a chunk's work, short enough for the progress
#: bar to move on big runs.
CHUNK_STEPS = 2048

#: Members per program and warps per program on a GPU. 256 members over 4 warps (128
#: threads) gives each thread 2 members: two independent Philox multiply chains to
#: overlap. ptxas (sm_90a) puts the fullest variant (momentum, weight decay, nesterov,
#: history) at 63 registers with no spills, so 8 such blocks fit on an SM. 1e6 members
#: make ~4000 programs, enough to fill every SM of a big GPU several times; small runs
#: (a few thousand members) still spread over a dozen SMs.
BLOCK_SIZE = 256
NUM_WARPS = 4

#: SPEC §3 forbids contracting w*x + b into an FMA, so this stays False; only
#: bench/gpu_check.sh flips it, to measure what the exactness costs on a GPU.
ENABLE_FP_FUSION = False

#: Under the interpreter a program costs the same Python overhead per op whatever its
#: size, so fewer, bigger programs run much faster.
INTERPRET_BLOCK_SIZE = 1024

#: Steps whose samples number at most this many per Philox-aligned group (``G*B``, see
#: the kernel) are unrolled at compile time; longer batches run a loop over samples.
MAX_UNROLLED_SAMPLES = 32

#: The largest finite float32: |p| <= FLT_MAX is False for inf and NaN.
FLT_MAX = tl.constexpr(3.4028234663852886e38)

#: Settings of :class:`Problem`, in the order the kernel reads them from one tensor.
_PROBLEM_FIELDS = ("a", "c", "lo", "span", "batch", "one_minus_dampening")


def _interpreting() -> bool:
    return not isinstance(sgd_kernel, triton.runtime.JITFunction)


@triton.jit
def _data_block(q, s_lo, s_hi, lo, span):
    """Samples 4q .. 4q+3 of each member's data stream (SPEC §2): key (0, 0), counter
    (q & 0xFFFFFFFF, q >> 32, s_lo, s_hi). ``q`` is an int64 scalar; s_lo/s_hi uint32."""
    q = tl.cast(q, tl.int64)
    c0 = (q & 0xFFFFFFFF).to(tl.uint32)
    c1 = (q >> 32).to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(0, c0, c1, s_lo, s_hi)
    x0 = lo + span * tl.uint_to_uniform_float(r0)
    x1 = lo + span * tl.uint_to_uniform_float(r1)
    x2 = lo + span * tl.uint_to_uniform_float(r2)
    x3 = lo + span * tl.uint_to_uniform_float(r3)
    return x0, x1, x2, x3


@triton.jit
def _draw(n, x0, x1, x2, x3, s_lo, s_hi, lo, span):
    """Sample ``n`` (int64 scalar) with the block of four it belongs to: the block is
    drawn afresh when ``n % 4 == 0``, else (x0..x3) hold it already."""
    r = n % 4
    if r == 0:
        x0, x1, x2, x3 = _data_block(n // 4, s_lo, s_hi, lo, span)
    x = tl.where(r == 0, x0, tl.where(r == 1, x1, tl.where(r == 2, x2, x3)))
    return x, x0, x1, x2, x3


@triton.jit
def _grad(w, b, x, a, c):
    """(g*x, g) of one sample, g = 2*(w*x + b - (a*x + c)), each op rounded (SPEC §3)."""
    y = w * x + b
    target = a * x + c
    g = 2.0 * (y - target)
    return g * x, g


@triton.jit
def _sgd(p, d, buf, first, neg_lr, mu, wd, one_minus_dampening,
         WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr):
    """One parameter's ``torch.optim.SGD`` update (SPEC §3b), as ``reference.sgd_update``:
    an option that is 0 for a member is skipped for it (a select), not computed with 0."""
    if WEIGHT_DECAY:
        d = tl.where(wd != 0, d + wd * p, d)
    if MOMENTUM:
        v = tl.where(first, d, mu * buf + one_minus_dampening * d)
        if NESTEROV:
            d_m = d + mu * v
        else:
            d_m = v
        d = tl.where(mu != 0, d_m, d)
        buf = v
    p = p + neg_lr * d
    return p, buf


@triton.jit
def _finish_step(t, gw, gb, w, b, vw, vb, div, neg_lr, mu, wd, omd, batch,
                 BATCH: tl.constexpr, WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr,
                 NESTEROV: tl.constexpr):
    """Step ``t`` from the summed gradients: batch mean, update, divergence (SPEC §4)."""
    if BATCH > 1:
        gw = tl.math.div_rn(gw, batch)
        gb = tl.math.div_rn(gb, batch)
    first = t == 0
    w, vw = _sgd(w, gw, vw, first, neg_lr, mu, wd, omd, WEIGHT_DECAY, MOMENTUM, NESTEROV)
    b, vb = _sgd(b, gb, vb, first, neg_lr, mu, wd, omd, WEIGHT_DECAY, MOMENTUM, NESTEROV)
    finite = (tl.abs(w) <= FLT_MAX) & (tl.abs(b) <= FLT_MAX)
    div = tl.where((div < 0) & ~finite, t, div)
    return w, b, vw, vb, div


@triton.jit
def _log(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr, n_members, offs, mask, log_every):
    """Write (w, b) to history row ``row`` when ``t`` is the next logged step."""
    if t == next_log:
        at = row * n_members + offs  # int64: row * M can pass 2**31
        tl.store(hist_w_ptr + at, w, mask=mask)
        tl.store(hist_b_ptr + at, b, mask=mask)
        next_log += log_every
        row += 1
    return next_log, row


@triton.jit(do_not_specialize=["t0", "nsteps", "log_every"])
def sgd_kernel(
    s_lo_ptr, s_hi_ptr, neg_lr_ptr, mu_ptr, wd_ptr, prob_ptr,
    w_ptr, b_ptr, vw_ptr, vb_ptr, div_ptr,
    hist_w_ptr, hist_b_ptr,
    n_members, t0, nsteps, log_every,
    BLOCK: tl.constexpr, BATCH: tl.constexpr, GROUP: tl.constexpr, UNROLL: tl.constexpr,
    INIT: tl.constexpr, WEIGHT_DECAY: tl.constexpr, MOMENTUM: tl.constexpr,
    NESTEROV: tl.constexpr, HISTORY: tl.constexpr,
):
    """Steps ``t0 .. t0 + nsteps - 1`` of SGD for BLOCK members (SPEC §2-§4).

    Pointers (M = ``n_members``; L = number of logged steps of the whole run):

    - ``s_lo_ptr``, ``s_hi_ptr``: int32 (M,), the seed's low / high 32-bit words (bit patterns).
    - ``neg_lr_ptr``: float32 (M,), -lr.
    - ``mu_ptr``, ``wd_ptr``: float32 (M,), momentum / weight decay; read only when
      MOMENTUM / WEIGHT_DECAY (otherwise any placeholder).
    - ``prob_ptr``: float32 (6,): a, c, lo, span = float32(hi - lo), float32(B), float32(1 - tau).
    - ``w_ptr``, ``b_ptr``: float32 (M,), the parameters: read at the start unless INIT
      (then drawn from the init stream), written at the end.
    - ``vw_ptr``, ``vb_ptr``: float32 (M,), the momentum buffers (read unless INIT,
      written at the end); used only when MOMENTUM.
    - ``div_ptr``: int64 (M,), the first diverged step or -1 (read unless INIT, written).
    - ``hist_w_ptr``, ``hist_b_ptr``: float32 (L, M): row r gets (w, b) after step
      r*log_every; used only when HISTORY.

    Scalars: ``t0`` (with ``t0*B % 4 == 0``), ``nsteps``, ``log_every`` (any value >= 1
    when not HISTORY).

    One program instance takes members ``pid*BLOCK .. pid*BLOCK + BLOCK - 1`` and runs
    all ``nsteps`` steps with their state in registers. Steps go in groups of GROUP
    (``GROUP*B % 4 == 0``), so each group starts a Philox block; when UNROLL, a group's
    GROUP*B samples are unrolled at compile time, one ``tl.philox`` call per four
    samples (for B = 1: one call per four steps). Steps left over (``nsteps % GROUP``,
    or all of them when not UNROLL) run in a loop over samples that draws a block when
    it reaches a multiple of 4.
    """
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_members

    s_lo = tl.load(s_lo_ptr + offs, mask=mask, other=0).to(tl.uint32)
    s_hi = tl.load(s_hi_ptr + offs, mask=mask, other=0).to(tl.uint32)
    neg_lr = tl.load(neg_lr_ptr + offs, mask=mask, other=0.0)
    zero = tl.zeros([BLOCK], dtype=tl.float32)
    mu = zero
    wd = zero
    if MOMENTUM:
        mu = tl.load(mu_ptr + offs, mask=mask, other=0.0)
    if WEIGHT_DECAY:
        wd = tl.load(wd_ptr + offs, mask=mask, other=0.0)
    a = tl.load(prob_ptr + 0)
    c = tl.load(prob_ptr + 1)
    lo = tl.load(prob_ptr + 2)
    span = tl.load(prob_ptr + 3)
    batch = tl.load(prob_ptr + 4)
    omd = tl.load(prob_ptr + 5)

    vw = zero
    vb = zero
    if INIT:
        # Init stream (SPEC §2): key (1, 0), counter (0, 0, s_lo, s_hi); words 0 and 1.
        z = tl.zeros([BLOCK], dtype=tl.uint32)
        r0, r1, _, _ = tl.philox(1, z, z, s_lo, s_hi)
        w = -1.0 + 2.0 * tl.uint_to_uniform_float(r0)
        b = -1.0 + 2.0 * tl.uint_to_uniform_float(r1)
        div = tl.full([BLOCK], -1, dtype=tl.int64)
    else:
        w = tl.load(w_ptr + offs, mask=mask, other=0.0)
        b = tl.load(b_ptr + offs, mask=mask, other=0.0)
        div = tl.load(div_ptr + offs, mask=mask, other=-1)
        if MOMENTUM:
            vw = tl.load(vw_ptr + offs, mask=mask, other=0.0)
            vb = tl.load(vb_ptr + offs, mask=mask, other=0.0)

    t_start = t0.to(tl.int64)
    t_end = t_start + nsteps
    every = log_every.to(tl.int64)
    # The first logged step at or after t_start, and its history row.
    row = (t_start + every - 1) // every
    next_log = row * every

    x0 = zero
    x1 = zero
    x2 = zero
    x3 = zero
    t_loop = t_start
    if UNROLL:
        n_groups = (t_end - t_start) // GROUP
        for g in range(0, n_groups):
            tg = t_start + tl.cast(g, tl.int64) * GROUP
            qg = (tg * BATCH) // 4  # exact: tg*B is a multiple of 4
            for k in tl.static_range(GROUP):
                t = tg + k
                for j in tl.static_range(BATCH):
                    # Sample k*B + j of the group (a constexpr): a new block every fourth.
                    if (k * BATCH + j) % 4 == 0:
                        x0, x1, x2, x3 = _data_block(qg + (k * BATCH + j) // 4, s_lo, s_hi, lo, span)
                        x = x0
                    elif (k * BATCH + j) % 4 == 1:
                        x = x1
                    elif (k * BATCH + j) % 4 == 2:
                        x = x2
                    else:
                        x = x3
                    gxw, gxb = _grad(w, b, x, a, c)
                    if j == 0:
                        gw = gxw
                        gb = gxb
                    else:
                        gw = gw + gxw
                        gb = gb + gxb
                w, b, vw, vb, div = _finish_step(t, gw, gb, w, b, vw, vb, div, neg_lr, mu, wd, omd,
                                                 batch, BATCH, WEIGHT_DECAY, MOMENTUM, NESTEROV)
                if HISTORY:
                    next_log, row = _log(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr,
                                         n_members, offs, mask, every)
        t_loop = t_start + n_groups * GROUP

    for t_i in range(t_loop, t_end):
        t = tl.cast(t_i, tl.int64)  # (the interpreter's loop counter is int32)
        n = t * BATCH
        x, x0, x1, x2, x3 = _draw(n, x0, x1, x2, x3, s_lo, s_hi, lo, span)
        gw, gb = _grad(w, b, x, a, c)
        if BATCH > 1:
            for j in range(1, BATCH):
                x, x0, x1, x2, x3 = _draw(n + j, x0, x1, x2, x3, s_lo, s_hi, lo, span)
                gxw, gxb = _grad(w, b, x, a, c)
                gw = gw + gxw
                gb = gb + gxb
        w, b, vw, vb, div = _finish_step(t, gw, gb, w, b, vw, vb, div, neg_lr, mu, wd, omd,
                                         batch, BATCH, WEIGHT_DECAY, MOMENTUM, NESTEROV)
        if HISTORY:
            next_log, row = _log(t, w, b, next_log, row, hist_w_ptr, hist_b_ptr,
                                 n_members, offs, mask, every)

    tl.store(w_ptr + offs, w, mask=mask)
    tl.store(b_ptr + offs, b, mask=mask)
    tl.store(div_ptr + offs, div, mask=mask)
    if MOMENTUM:
        tl.store(vw_ptr + offs, vw, mask=mask)
        tl.store(vb_ptr + offs, vb, mask=mask)


def _launch(hp: Members, probv: torch.Tensor, opts: StepOptions, state, t0: int, nsteps: int,
            log_every: Optional[int], hist, *, init: bool, block_size: Optional[int]) -> None:
    """One launch of :func:`sgd_kernel` on checked inputs; ``state`` = (w, b, vw, vb, div)
    is read (unless ``init``) and written in place."""
    w, b, vw, vb, div = state
    m = w.numel()
    bs = block_size or (INTERPRET_BLOCK_SIZE if _interpreting() else BLOCK_SIZE)
    if bs < 1 or bs & (bs - 1):
        raise ValueError(f"block_size must be a power of 2, got {bs}")
    batch = opts.batch_size
    if (t0 * batch) % 4:
        raise ValueError(f"t0 * batch_size must be a multiple of 4, got t0={t0}, batch_size={batch}")
    group = 4 // math.gcd(batch, 4)  # steps per Philox-aligned group: group*B % 4 == 0
    hw, hb = hist if hist is not None else (w, w)  # placeholders when unused
    grid = (triton.cdiv(m, bs),)
    with np.errstate(over="ignore", invalid="ignore"):  # the interpreter's numpy, on divergence
        sgd_kernel[grid](
            hp.s_lo, hp.s_hi, hp.neg_lr,
            hp.momentum if opts.momentum else hp.neg_lr,
            hp.weight_decay if opts.weight_decay else hp.neg_lr,
            probv, w, b, w if vw is None else vw, w if vb is None else vb, div, hw, hb,
            m, t0, nsteps, log_every if hist is not None else 1,
            BLOCK=bs, BATCH=batch, GROUP=group, UNROLL=group * batch <= MAX_UNROLLED_SAMPLES,
            INIT=init, WEIGHT_DECAY=opts.weight_decay, MOMENTUM=opts.momentum,
            NESTEROV=opts.nesterov, HISTORY=hist is not None,
            num_warps=NUM_WARPS, enable_fp_fusion=ENABLE_FP_FUSION,
        )


class TritonStepper:
    """The Triton backend as a stepper of ``fastneuron._driver``: chunks of
    :data:`CHUNK_STEPS` steps on a block of members, the state updated in place and the
    logged rows written by the kernel itself (``writes_history``)."""

    chunk_steps = CHUNK_STEPS
    writes_history = True

    def __init__(self, block_size: Optional[int] = None) -> None:
        self.block_size = block_size

    def init(self, hp: Members):
        """Initial (w0, b0) from the init stream (a launch of 0 steps)."""
        s_lo, _ = _check_members(hp, StepOptions())
        m, dev = s_lo.numel(), s_lo.device
        w = torch.empty(m, dtype=torch.float32, device=dev)
        b = torch.empty_like(w)
        div = torch.empty(m, dtype=torch.int64, device=dev)
        probv = torch.zeros(len(_PROBLEM_FIELDS), dtype=torch.float32, device=dev)
        _launch(hp, probv, StepOptions(), (w, b, None, None, div), 0, 0, None, None, init=True,
                block_size=self.block_size)
        return w, b

    def __call__(self, state: State, t0, hp: Members, prob: Problem, *, nsteps: int, opts: StepOptions,
                 log_every: Optional[int] = None, hist=None) -> State:
        """Steps ``t0 .. t0 + nsteps - 1`` (``t0``: int or 0-dim tensor, ``t0*B % 4 == 0``).

        ``hist``: None or (hist_w, hist_b), float32 (L, M) with row ``r`` for step
        ``r*log_every`` of the whole run."""
        s_lo, _ = _check_members(hp, opts)
        m, dev = s_lo.numel(), s_lo.device
        probv = _check_problem(prob, dev)
        t0 = _check_count("t0", int(t0) if isinstance(t0, torch.Tensor) else t0, 0)
        nsteps = _check_count("nsteps", nsteps, 0)
        for name in ("weight", "bias", "diverged_at") + (("buf_weight", "buf_bias") if opts.momentum else ()):
            x = getattr(state, name)
            _check_tensor(f"state.{name}", x, torch.int64 if name == "diverged_at" else torch.float32, (m,), dev)
            if not x.is_contiguous():
                raise ValueError(f"state.{name} must be contiguous")
        if hist is not None:
            log_every = _check_history(hist, log_every, t0 + nsteps - 1, m, dev)
        vw, vb = (state.buf_weight, state.buf_bias) if opts.momentum else (None, None)
        _launch(hp, probv, opts, (state.weight, state.bias, vw, vb, state.diverged_at), t0, nsteps,
                log_every, hist, init=False, block_size=self.block_size)
        return state


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_tensor(name: str, x, dtype: torch.dtype, shape: tuple, device: torch.device) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}, got {x.dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but hp.s_lo is on {device}: all tensors must share a device")


def _check_members(hp: Members, opts: StepOptions):
    """Validate the per-member tensors and the options; returns (s_lo, s_hi)."""
    s_lo = hp.s_lo
    if not isinstance(s_lo, torch.Tensor) or s_lo.dim() != 1 or s_lo.numel() == 0:
        raise ValueError("hp.s_lo must be a non-empty 1-D tensor")
    dev = s_lo.device
    if dev.type == "cpu":
        if not _interpreting():
            raise ValueError("hp.s_lo is on the CPU: the Triton kernel needs CUDA tensors "
                             "(or TRITON_INTERPRET=1 set before importing fastneuron.kernels.triton_sgd)")
    elif dev.type != "cuda":
        raise ValueError(f"hp.s_lo is on {dev}: the Triton kernel needs CUDA tensors")
    m = s_lo.numel()
    _check_tensor("hp.s_lo", s_lo, torch.int32, (m,), dev)
    _check_tensor("hp.s_hi", hp.s_hi, torch.int32, (m,), dev)
    _check_tensor("hp.neg_lr", hp.neg_lr, torch.float32, (m,), dev)
    for name, flag in (("momentum", opts.momentum), ("weight_decay", opts.weight_decay)):
        if flag:
            if getattr(hp, name) is None:
                raise ValueError(f"hp.{name} is None but opts.{name} is set")
            _check_tensor(f"hp.{name}", getattr(hp, name), torch.float32, (m,), dev)
    for name in ("s_lo", "s_hi", "neg_lr", "momentum", "weight_decay"):
        x = getattr(hp, name)
        if x is not None and not x.is_contiguous():
            raise ValueError(f"hp.{name} must be contiguous")
    b = opts.batch_size
    if not isinstance(b, int) or isinstance(b, bool) or b < 1:
        raise ValueError(f"opts.batch_size must be an int >= 1, got {b!r}")
    if opts.nesterov and not opts.momentum:
        raise ValueError("opts.nesterov needs opts.momentum")
    return s_lo, hp.s_hi


def _check_problem(prob: Problem, device: torch.device) -> torch.Tensor:
    """The settings as one float32 (6,) tensor on ``device``, in kernel order."""
    for name in _PROBLEM_FIELDS:
        _check_tensor(f"prob.{name}", getattr(prob, name), torch.float32, (), device)
    return torch.stack([getattr(prob, name) for name in _PROBLEM_FIELDS])


def _check_history(hist, log_every, last_step: int, m: int, device: torch.device) -> int:
    """Check (hist_w, hist_b): float32 (L, M), contiguous, with a row for every logged
    step up to ``last_step`` (the kernel writes row ``t // log_every``). Returns
    log_every as an int."""
    if log_every is None:
        raise ValueError("log_every is needed with hist_w and hist_b")
    log_every = _check_count("log_every", log_every, 1)
    hist_w, hist_b = hist
    for name, h in (("hist_w", hist_w), ("hist_b", hist_b)):
        if h is None:
            raise ValueError(f"{name} is None but the other history tensor is not: pass both or neither")
    rows = hist_w.shape[0] if hist_w.dim() == 2 else -1
    for name, h in (("hist_w", hist_w), ("hist_b", hist_b)):
        _check_tensor(name, h, torch.float32, (rows, m), device)
        if not h.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if last_step >= 0 and last_step // log_every >= rows:
        raise ValueError(f"hist_w has {rows} rows, but step {last_step} is logged in row "
                         f"{last_step // log_every}")
    return log_every
