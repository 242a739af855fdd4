"""What the Triton kernels share: Philox4x32-10 and the data stream (SPEC §2), Gaussian x
and label noise (SPEC §2b, the normals of :mod:`.triton_normal`), the linear problem's
gradient (SPEC §3), the history writes, and the launchers' input checks.

``triton_sgd.sgd_kernel`` and ``triton_adam.adam_kernel`` call these ``@triton.jit``
helpers; Triton inlines them, so a kernel compiles as if they were written in its own
module. ``fastneuron.kernels.sass`` compiles this module's source together with each
kernel's (its triton imports, constants and ``@triton.jit`` functions).

Under ``TRITON_INTERPRET=1`` (set before import) the helpers run on CPU tensors, as the
kernels do; :data:`PTX_PHILOX` is then False and ``_philox`` calls ``tl.philox`` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import triton
import triton.language as tl

from fastneuron._validate import check_int
from fastneuron.kernels.triton_normal import _normal_block
from fastneuron.problems import LinearFlags

if TYPE_CHECKING:
    from fastneuron.reference import History

#: The largest finite float32: |p| <= FLT_MAX is False for inf and NaN.
FLT_MAX = tl.constexpr(3.4028234663852886e38)

#: Philox's 32x32->64-bit products as one ``mul.wide.u32`` (inline PTX) on CUDA, where
#: ``tl.philox``'s separate ``mul.hi``/``mul.lo`` cost two IMADs; the interpreter cannot
#: run inline PTX, so under ``TRITON_INTERPRET=1`` the kernel calls ``tl.philox`` itself.
PTX_PHILOX = tl.constexpr(not triton.knobs.runtime.interpret)

#: Philox4x32's round multipliers and key increments (as ``tl.philox``).
PHILOX_ROUND_A = tl.constexpr(0xD2511F53)
PHILOX_ROUND_B = tl.constexpr(0xCD9E8D57)
PHILOX_KEY_A = tl.constexpr(0x9E3779B9)
PHILOX_KEY_B = tl.constexpr(0xBB67AE85)
#: ``mul.wide.u32`` by each round multiplier: $0 = high word, $1 = low word, $2 = the factor.
MUL_WIDE_A = tl.constexpr("{ .reg .b64 p; mul.wide.u32 p, $2, %d; mov.b64 {$1, $0}, p; }" % PHILOX_ROUND_A.value)
MUL_WIDE_B = tl.constexpr("{ .reg .b64 p; mul.wide.u32 p, $2, %d; mov.b64 {$1, $0}, p; }" % PHILOX_ROUND_B.value)


@triton.jit
def _mul_wide(a, M: tl.constexpr, ASM: tl.constexpr):
    """(hi, lo) 32-bit words of the 64-bit product ``a * M`` (``a`` uint32) by ``ASM``,
    the ``mul.wide.u32`` by M (:data:`MUL_WIDE_A` for PHILOX_ROUND_A, :data:`MUL_WIDE_B`
    for PHILOX_ROUND_B): exact integer arithmetic, the words of ``umulhi`` and ``*``."""
    return tl.inline_asm_elementwise(ASM, "=r,=r,r", [a], dtype=(tl.uint32, tl.uint32), is_pure=True, pack=1)


@triton.jit
def _philox(k0: tl.constexpr, k1: tl.constexpr, c0, c1, c2, c3):
    """Philox4x32-10 of counter (c0..c3) (uint32) under the constant key (k0, k1): the
    same words as ``tl.philox(k0 + (k1 << 32), c0, c1, c2, c3)``, with each round's two
    products from one ``mul.wide.u32`` on CUDA (see :data:`PTX_PHILOX`)."""
    if PTX_PHILOX:
        key0 = tl.full(c0.shape, k0, tl.uint32)
        key1 = tl.full(c0.shape, k1, tl.uint32)
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
        c0, c1, c2, c3 = tl.philox(k0 + (k1 << 32), c0, c1, c2, c3)
    return c0, c1, c2, c3


@triton.jit
def _member_words(s_lo_ptr, s_hi_ptr, neg_lr_ptr, offs, mask, s_lo_stride, s_lo_step, s_hi_stride, lr_stride):
    """Members ``offs``' seed words (uint32) and -lr: s_lo ``s_lo_ptr[i*s_lo_stride] +
    i*s_lo_step`` (mod 2**32), s_hi ``s_hi_ptr[i*s_hi_stride]``, -lr ``neg_lr_ptr[i*lr_stride]``
    (a stride 0: one value every member shares; ``s_lo_step`` 1: a range of seeds)."""
    s_lo = tl.load(s_lo_ptr + offs * s_lo_stride, mask=mask, other=0).to(tl.uint32) + \
        (offs * s_lo_step).to(tl.uint32)
    s_hi = tl.load(s_hi_ptr + offs * s_hi_stride, mask=mask, other=0).to(tl.uint32)
    neg_lr = tl.load(neg_lr_ptr + offs * lr_stride, mask=mask, other=0.0)
    return s_lo, s_hi, neg_lr


@triton.jit
def _data_block(q, s_lo, s_hi, lo, span, x_mean, x_std, sigma, NORMAL: tl.constexpr, NOISE: tl.constexpr):
    """Samples 4q .. 4q+3 of each member's data stream: counter (q & 0xFFFFFFFF, q >> 32,
    s_lo, s_hi); ``q`` is an int64 scalar, s_lo/s_hi uint32. Returns x0..x3 (key (0, 0):
    ``lo + span*u`` (SPEC §2), or ``x_mean + x_std*z`` when NORMAL (SPEC §2b)) and, when
    NOISE, e0..e3 = ``sigma*eps`` with eps the normals of key (2, 0) (else e = x,
    placeholders the kernel never reads)."""
    q = tl.cast(q, tl.int64)
    c0 = (q & 0xFFFFFFFF).to(tl.uint32)
    c1 = (q >> 32).to(tl.uint32)
    r0, r1, r2, r3 = _philox(0, 0, c0, c1, s_lo, s_hi)
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
    e0 = x0
    e1 = x1
    e2 = x2
    e3 = x3
    if NOISE:
        n0, n1, n2, n3 = _philox(2, 0, c0, c1, s_lo, s_hi)
        g0, g1, g2, g3 = _normal_block(n0, n1, n2, n3)
        e0 = sigma * g0
        e1 = sigma * g1
        e2 = sigma * g2
        e3 = sigma * g3
    return x0, x1, x2, x3, e0, e1, e2, e3


@triton.jit
def _draw(n, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo, span, x_mean, x_std, sigma,
          NORMAL: tl.constexpr, NOISE: tl.constexpr):
    """Sample ``n`` (int64 scalar), its noise term and the block of four it belongs to:
    the block is drawn afresh when ``n % 4 == 0``, else (x0..x3, e0..e3) hold it already.
    Returns (x, e, x0, x1, x2, x3, e0, e1, e2, e3)."""
    r = n % 4
    if r == 0:
        x0, x1, x2, x3, e0, e1, e2, e3 = _data_block(n // 4, s_lo, s_hi, lo, span, x_mean, x_std, sigma,
                                                     NORMAL, NOISE)
    x = tl.where(r == 0, x0, tl.where(r == 1, x1, tl.where(r == 2, x2, x3)))
    e = tl.where(r == 0, e0, tl.where(r == 1, e1, tl.where(r == 2, e2, e3)))
    return x, e, x0, x1, x2, x3, e0, e1, e2, e3


@triton.jit
def _grad(w, b, x, e, sigma, a, c, NOISE: tl.constexpr):
    """(g*x, g) of one sample, g = 2*(w*x + b - target), each op rounded (SPEC §3); the
    target ``a*x + c``, plus the noise term ``e`` where the member's ``sigma != 0``."""
    y = w * x + b
    target = a * x + c
    if NOISE:
        target = tl.where(sigma != 0, target + e, target)
    g = 2.0 * (y - target)
    return g * x, g


@triton.jit
def _unrolled_grad(qg, K: tl.constexpr, w, b, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo, span, x_mean, x_std,
                   sigma, a, c, BATCH: tl.constexpr, NORMAL: tl.constexpr, NOISE: tl.constexpr):
    """The summed gradient (gw, gb) of step ``K`` of an unrolled group whose first sample
    is the first of Philox block ``qg``: samples K*B .. K*B + B - 1 of the group (their
    words are constexpr), a new block drawn every fourth. Returns (gw, gb, x0..x3, e0..e3)."""
    for j in tl.static_range(BATCH):
        if (K * BATCH + j) % 4 == 0:
            x0, x1, x2, x3, e0, e1, e2, e3 = _data_block(qg + (K * BATCH + j) // 4, s_lo, s_hi, lo, span, x_mean,
                                                         x_std, sigma, NORMAL, NOISE)
            x = x0
            e = e0
        elif (K * BATCH + j) % 4 == 1:
            x = x1
            e = e1
        elif (K * BATCH + j) % 4 == 2:
            x = x2
            e = e2
        else:
            x = x3
            e = e3
        gxw, gxb = _grad(w, b, x, e, sigma, a, c, NOISE)
        if j == 0:
            gw = gxw
            gb = gxb
        else:
            gw = gw + gxw
            gb = gb + gxb
    return gw, gb, x0, x1, x2, x3, e0, e1, e2, e3


@triton.jit
def _grad_step(n, w, b, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo, span, x_mean, x_std, sigma, a, c,
               BATCH: tl.constexpr, NORMAL: tl.constexpr, NOISE: tl.constexpr):
    """The summed gradient (gw, gb) of the step whose first sample is ``n`` (int64 scalar,
    any alignment: the loop over samples of steps left over from the unrolled groups).
    Returns (gw, gb, x0..x3, e0..e3)."""
    x, e, x0, x1, x2, x3, e0, e1, e2, e3 = _draw(n, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo, span,
                                                 x_mean, x_std, sigma, NORMAL, NOISE)
    gw, gb = _grad(w, b, x, e, sigma, a, c, NOISE)
    if BATCH > 1:
        for j in range(1, BATCH):
            x, e, x0, x1, x2, x3, e0, e1, e2, e3 = _draw(n + j, x0, x1, x2, x3, e0, e1, e2, e3, s_lo, s_hi, lo,
                                                         span, x_mean, x_std, sigma, NORMAL, NOISE)
            gxw, gxb = _grad(w, b, x, e, sigma, a, c, NOISE)
            gw = gw + gxw
            gb = gb + gxb
    return gw, gb, x0, x1, x2, x3, e0, e1, e2, e3


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



def _check_tensor(name: str, x, dtype: torch.dtype, shape: tuple, device: torch.device) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}, got {x.dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but members.s_lo is on {device}: all tensors must share a device")


def _check_history(history: History, last_step: int, m: int, device: torch.device) -> None:
    """Check the history: float32 (L, M), contiguous, with a row for every logged step up
    to ``last_step`` (the kernel writes row ``t // log_every``)."""
    check_int("history.log_every", history.log_every, 1)
    for name in ("weight", "bias"):
        if getattr(history, name) is None:
            raise ValueError(f"history.{name} is None: pass both rows or no history")
    rows = history.weight.shape[0] if history.weight.dim() == 2 else -1
    for name in ("weight", "bias"):
        h = getattr(history, name)
        _check_tensor(f"history.{name}", h, torch.float32, (rows, m), device)
        if not h.is_contiguous():
            raise ValueError(f"history.{name} must be contiguous")
    if last_step >= 0 and last_step // history.log_every >= rows:
        raise ValueError(f"history.weight has {rows} rows, but step {last_step} is logged in row "
                         f"{last_step // history.log_every}")


def _check_members_base(members, options, interpreting: bool, neg_lr64: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Validate the per-member tensors (s_lo, s_hi, neg_lr and ``options``, pairs (name,
    tensor or None) of the optimizer's options a kernel reads, and ``neg_lr64`` when the
    kernel reads it: -lr in float64, see :func:`~fastneuron.reference.neg_lr64`); returns
    s_lo. s_hi, neg_lr and neg_lr64 may be one value expanded (stride 0), and s_lo too with
    ``s_lo_step`` 1 (:class:`~fastneuron.reference.Members`): the kernels take their strides."""
    s_lo = members.s_lo
    if not isinstance(s_lo, torch.Tensor) or s_lo.dim() != 1 or s_lo.numel() == 0:
        raise ValueError("members.s_lo must be a non-empty 1-D tensor")
    dev = s_lo.device
    if dev.type == "cpu":
        if not interpreting:
            raise ValueError("members.s_lo is on the CPU: the Triton kernel needs CUDA tensors "
                             "(or TRITON_INTERPRET=1 set before importing fastneuron's Triton kernels)")
    elif dev.type != "cuda":
        raise ValueError(f"members.s_lo is on {dev}: the Triton kernel needs CUDA tensors")
    m = s_lo.numel()
    named = [("s_lo", s_lo, torch.int32), ("s_hi", members.s_hi, torch.int32),
             ("neg_lr", members.neg_lr, torch.float32)]
    for name, x in options:
        if x is None:
            raise ValueError(f"members.options.{name} is None but the kernel needs it")
        named.append((f"options.{name}", x, torch.float32))
    if neg_lr64 is not None:
        named.append(("neg_lr64", neg_lr64, torch.float64))
    step = members.s_lo_step
    if step not in (0, 1) or (step and m > 1 and s_lo.stride(0) != 0):
        raise ValueError(f"members.s_lo_step must be 0, or 1 with s_lo one value expanded (stride 0); got "
                         f"{step!r} with s_lo's stride {s_lo.stride(0)}")
    shared = ("s_hi", "neg_lr", "neg_lr64", "s_lo") if step else ("s_hi", "neg_lr", "neg_lr64")
    for name, x, dtype in named:
        _check_tensor(f"members.{name}", x, dtype, (m,), dev)
        if not x.is_contiguous() and not (name in shared and x.stride(0) == 0):
            raise ValueError(f"members.{name} must be contiguous" +
                             (" or one value expanded (stride 0)" if name in shared else ""))
    return s_lo


def problem_kernel_flags(config) -> LinearFlags:
    """The linear problem's flags (noise, Gaussian x) the kernels specialize on."""
    flags = config.problem_flags if config.problem_flags is not None else LinearFlags()
    if not isinstance(flags, LinearFlags):
        raise ValueError(f"config.problem_flags must be LinearFlags, got {type(flags).__name__}")
    return flags


def problem_member_options(members, flags: LinearFlags) -> list:
    """(name, tensor) of the problem's per-member options the kernel reads (for the check)."""
    if not flags.noise:
        return []
    return [("noise", getattr(members.problem_options, "noise", None))]


def check_schedule(config, consts, need: int, device: torch.device):
    """The lr schedule's float64 factor table (SPEC §3d) when ``config.schedule``, checked
    to cover steps up to ``need - 1`` on ``device``; else None."""
    if not config.schedule:
        return None
    f = consts.lr_factors
    if not isinstance(f, torch.Tensor) or f.dtype != torch.float64 or f.dim() != 1 or f.device != device:
        raise ValueError(f"consts.lr_factors must be a 1-D torch.float64 tensor on {device}")
    if f.numel() < need:
        raise ValueError(f"consts.lr_factors has {f.numel()} rows, but steps up to {need - 1} need {need}")
    if not f.is_contiguous():
        raise ValueError("consts.lr_factors must be contiguous")
    return f
