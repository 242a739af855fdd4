"""Adam, AdamW and RMSprop behind the optimizer seam (SPEC §3c).

Each is ``torch.optim``'s single-tensor path (``foreach=False, fused=False``) on a
float32 parameter, one rounded operation a line, without fused multiply-adds and with
an IEEE square root (SPEC §3c says why those two are pinned down). What torch computes
in float64 from the step count alone (Adam's bias corrections) is computed here on the
host, by Python's ``**`` as torch does, into tables indexed by the step
(:meth:`Adam.constants`); the per-member float64 work (``lr / bias_correction1``,
AdamW's ``1 - lr*wd``, RMSprop's ``1 - alpha``) starts from the Python floats the user
gave, as torch's does (the run keeps their float64 values: :meth:`Adam.float64_options`,
``LR_FLOAT64``), and is IEEE division, multiplication and subtraction, exact on every
device. What does not depend on the step is computed once per block of members
(:meth:`Adam.derived_options`, :meth:`RMSprop.derived_options`).

Registered in :data:`fastneuron.optim.OPTIMIZERS` by :mod:`fastneuron.optim`; this
module imports only :mod:`fastneuron._validate` (no import circle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import numpy as np
import torch

from ._validate import Bound, check_float, distinct

#: torch.optim's float32 step counter stops at 2**24 (float32 ``+1`` is exact below it only).
STEP_COUNT_MAX = 2**24
#: The shortest length of Adam's step tables (see :meth:`Adam.constants`).
TABLE_MIN = 4096

#: torch.optim options fastneuron does not compute, with the value that means "off"
#: (accepted, since it is what fastneuron does anyway) and why another is refused.
_TORCH_ONLY = {
    "maximize": (False, "fastneuron minimizes the loss"),
    "foreach": (None, "fastneuron computes the single-tensor path (foreach=False, fused=False)"),
    "fused": (None, "fastneuron computes the single-tensor path (foreach=False, fused=False)"),
    "capturable": (False, "capturable=True is torch.optim's CUDA-graph path, which rounds differently"),
    "differentiable": (False, "fastneuron does not differentiate through the optimizer"),
}


def _check_torch_only(opt_name: str, obj) -> None:
    for name, (off, why) in _TORCH_ONLY.items():
        if not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        if value is False or value is off or isinstance(value, np.bool_) and not value:
            continue
        raise ValueError(f"{name}={value!r} is not supported by fastneuron's {opt_name}: {why}")


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def sqrt_rn(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root (SPEC §3c): through float64, whose
    rounding can never cross a float32 midpoint (torch's eager CPU float32 sqrt cannot be
    used: it is MKL's, one ulp off on about 17% of inputs).

    Traced by torch.compile for the CPU, it is the float32 sqrt itself: Inductor's C++
    computes it with the IEEE instruction (``_mm256_sqrt_ps``/``_mm512_sqrt_ps``,
    ``std::sqrt`` in scalar code), the same correctly rounded value without the two
    conversions to float64 and back (a third of the cost of a normal draw, SPEC §2b). The
    two differ only in the bits of the NaN of a negative input, which no caller has."""
    if torch.compiler.is_compiling() and x.device.type == "cpu":
        return x.sqrt()
    return x.double().sqrt().float()


def lerp(a: torch.Tensor, e: torch.Tensor, w, w_small, one_minus_w) -> torch.Tensor:
    """``torch.lerp(a, e, w)`` as torch's CPU kernel computes it (SPEC §3c), without FMA:
    ``a + w*(e - a)`` when ``|w| < 0.5`` (``w_small``: a bool, or a bool tensor per
    member), else ``e - (e - a)*(1 - w)``."""
    diff = e - a
    if w_small is True:
        return a + w * diff
    if w_small is False:
        return e - diff * one_minus_w
    return torch.where(w_small, a + w * diff, e - diff * one_minus_w)


# -- Adam and AdamW -------------------------------------------------------------------


class AdamOptions(NamedTuple):
    """Per-member options on the device, float32 (M,); weight_decay is None when 0 for all.

    ``decay`` (AdamW with weight decay, else None): ``f32(1 - lr*wd)`` from the float64
    lr and wd as given (:meth:`Adam.derived_options`)."""

    weight_decay: Optional[torch.Tensor]
    eps: torch.Tensor
    decay: Optional[torch.Tensor] = None


class AdamFlags(NamedTuple):
    weight_decay: bool = False  # named like the option: False means no member uses it (not carried)
    amsgrad: bool = False
    decoupled: bool = False  # AdamW: p = p*(1 - lr*wd) instead of g = g + wd*p
    w1_small: bool = True  # |f32(1 - beta1)| < 0.5: which formula lerp takes


class AdamConstants(NamedTuple):
    b2: torch.Tensor  # float32(beta2)
    w1: torch.Tensor  # float32(1 - beta1), the subtraction in float64
    one_minus_w1: torch.Tensor  # 1 - w1 in float32 (lerp's second formula)
    w2: torch.Tensor  # float32(1 - beta2), the subtraction in float64
    bc1: torch.Tensor  # float64 (steps,): 1 - beta1**s at step t, s = min(t + 1, 2**24)
    bc2s: torch.Tensor  # float32 (steps,): float32((1 - beta2**s) ** 0.5)


def padded_table(values: np.ndarray, steps: int) -> np.ndarray:
    """A per-step table of ``steps`` rows padded with ones (never read past ``steps``) to a
    power of two >= :data:`TABLE_MIN`: runs of other lengths then share a compiled graph,
    which specializes on the tables' length."""
    pad = max(TABLE_MIN, 1 << max(0, steps - 1).bit_length()) - steps
    return np.concatenate([values, np.ones(pad, values.dtype)])


def step_counts(steps: int) -> list:
    """torch.optim's step count after the increment of step t = 0 .. steps-1, as the
    Python float its ``.item()`` gives."""
    return [float(min(t + 1, STEP_COUNT_MAX)) for t in range(steps)]


def bias_correction_tables(beta1: float, beta2: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(bc1 float64, bc2s float32), each (steps,), computed as torch.optim.Adam's
    ``_single_tensor_adam`` does on the host: ``1 - beta1**step`` and
    ``(1 - beta2**step) ** 0.5`` with Python floats (C ``pow``), the latter rounded to
    float32 where the division by it casts it (SPEC §3c)."""
    counts = step_counts(steps)
    bc1 = np.array([1 - beta1 ** s for s in counts], dtype=np.float64)
    bc2s = np.array([(1 - beta2 ** s) ** 0.5 for s in counts], dtype=np.float64).astype(np.float32)
    return bc1, bc2s


@dataclass(frozen=True)
class Adam:
    """``torch.optim.Adam(lr, betas, eps, weight_decay, amsgrad, foreach=False, fused=False)``
    per member (SPEC §3c): per-member ``lrs``, ``weight_decay`` and ``eps``; run-wide
    ``betas``, ``amsgrad`` and ``decoupled_weight_decay`` (True: AdamW)."""

    name: ClassVar[str] = "adam"
    MEMBER_OPTIONS: ClassVar[dict[str, Bound]] = {
        "weight_decay": Bound(default=0.0, lo=0.0),
        "eps": Bound(default=1e-8, lo=0.0),
    }
    MemberOptions: ClassVar[type] = AdamOptions
    DECOUPLED: ClassVar[Optional[bool]] = None  # None: the option decides (Adam); True: AdamW
    #: :meth:`update` gets -lr in float64, as given (torch divides the Python float lr by the
    #: bias correction in float64: SPEC §3c).
    LR_FLOAT64: ClassVar[bool] = True

    betas: tuple = (0.9, 0.999)
    amsgrad: bool = False
    decoupled_weight_decay: bool = False
    maximize: bool = False
    foreach: Optional[bool] = None
    fused: Optional[bool] = None
    capturable: bool = False
    differentiable: bool = False

    def __post_init__(self) -> None:
        _check_torch_only(self.name, self)
        betas = self.betas
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise ValueError(f"betas must be two numbers (beta1, beta2), got {betas!r}")
        b = tuple(check_float(f"betas[{i}]", v) for i, v in enumerate(betas))
        for i, v in enumerate(b):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {v}")
        object.__setattr__(self, "betas", b)
        object.__setattr__(self, "amsgrad", _check_bool("amsgrad", self.amsgrad))
        decoupled = _check_bool("decoupled_weight_decay", self.decoupled_weight_decay)
        if self.DECOUPLED is not None and decoupled != self.DECOUPLED:
            raise ValueError(f"decoupled_weight_decay={decoupled} is not an option of {self.name} "
                             f"(it is always {self.DECOUPLED})")
        object.__setattr__(self, "decoupled_weight_decay", decoupled if self.DECOUPLED is None else self.DECOUPLED)

    def settings(self) -> dict:
        s = {"beta1": self.betas[0], "beta2": self.betas[1], "amsgrad": self.amsgrad}
        if self.DECOUPLED is None:
            s["decoupled_weight_decay"] = self.decoupled_weight_decay
        return s

    def _w1(self) -> np.float32:
        return np.float32(1 - self.betas[0])

    def flags(self, member_options: dict) -> AdamFlags:
        wd = distinct(member_options["weight_decay"])
        return AdamFlags(weight_decay=bool((wd != 0).any()), amsgrad=self.amsgrad,
                         decoupled=self.decoupled_weight_decay, w1_small=bool(abs(self._w1()) < 0.5))

    def state_names(self, flags: AdamFlags) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if flags.amsgrad else ())

    def float64_options(self) -> tuple[str, ...]:
        """The per-member options whose float64 value (the Python float given) torch's
        arithmetic uses: AdamW's ``weight_decay`` (``1 - lr*wd`` in float64)."""
        return ("weight_decay",) if self.decoupled_weight_decay else ()

    def derived_options(self, flags: AdamFlags, float64: dict) -> dict:
        """AdamW's ``decay`` = ``f32(1 - lr*wd)`` per member, from the float64 values as
        given (``float64``: "lrs" and "weight_decay", float64 tensors on the device): the
        product and the subtraction in float64, as torch's ``p.mul_(1 - lr*wd)``."""
        if not (flags.decoupled and flags.weight_decay):
            return {}
        return {"decay": (1.0 - float64["lrs"] * float64["weight_decay"]).float().contiguous()}

    def constants(self, device: torch.device, steps: int) -> AdamConstants:
        beta1, beta2 = self.betas
        bc1, bc2s = (padded_table(x, steps) for x in bias_correction_tables(beta1, beta2, steps))
        w1 = self._w1()

        def f32(v):
            return torch.tensor(np.float32(v), device=device)

        return AdamConstants(b2=f32(beta2), w1=f32(w1), one_minus_w1=f32(np.float32(1) - w1), w2=f32(1 - beta2),
                             bc1=torch.from_numpy(bc1).to(device), bc2s=torch.from_numpy(bc2s).to(device))

    @staticmethod
    def update(flags: AdamFlags, p, d, state: tuple, t, neg_lr, options: AdamOptions, consts: AdamConstants):
        """One parameter's Adam/AdamW update (SPEC §3c) from its gradient ``d`` at step
        ``t`` (0-dim int64); ``neg_lr`` is -lr in float64, as given (``LR_FLOAT64``).
        Returns (p, state); the state starts at zero."""
        m, v = state[0], state[1]
        if flags.weight_decay:
            wd = options.weight_decay
            if flags.decoupled:  # p.mul_(1 - lr*wd): f32(1 - lr*wd) from the float64 values
                p = torch.where(wd != 0, p * options.decay, p)
            else:  # grad.add(p, alpha=wd)
                d = torch.where(wd != 0, d + wd * p, d)
        m = lerp(m, d, consts.w1, flags.w1_small, consts.one_minus_w1)  # exp_avg.lerp_(g, 1 - beta1)
        v = v * consts.b2  # exp_avg_sq.mul_(beta2)
        v = v + (consts.w2 * d) * d  # .addcmul_(g, g, value=1 - beta2)
        if flags.amsgrad:
            vmax = torch.maximum(state[2], v)
            den = sqrt_rn(vmax)
            new_state = (m, v, vmax)
        else:
            den = sqrt_rn(v)
            new_state = (m, v)
        at = t.reshape(1)  # the step's entry of the host tables (a tensor index: no .item() in traced code)
        den = den / consts.bc2s[at]
        den = den + options.eps
        c = (neg_lr.double() / consts.bc1[at]).float()  # value = -(lr / bias_correction1), in float64
        p = p + (c * m) / den  # p.addcdiv_(m, den, value=c)
        return p, new_state


@dataclass(frozen=True)
class AdamW(Adam):
    """``torch.optim.AdamW(lr, betas, eps, weight_decay, amsgrad, foreach=False, fused=False)``
    per member: Adam with decoupled weight decay, whose default is 0.01 as torch's."""

    name: ClassVar[str] = "adamw"
    MEMBER_OPTIONS: ClassVar[dict[str, Bound]] = {
        "weight_decay": Bound(default=0.01, lo=0.0),
        "eps": Bound(default=1e-8, lo=0.0),
    }
    DECOUPLED: ClassVar[Optional[bool]] = True

    decoupled_weight_decay: bool = True


# -- RMSprop ------------------------------------------------------------------------


class RMSpropOptions(NamedTuple):
    """Per-member options on the device, float32 (M,); weight_decay is None when 0 for all.

    ``one_minus_alpha``: ``f32(1 - alpha)`` from the float64 alpha as given
    (:meth:`RMSprop.derived_options`)."""

    alpha: torch.Tensor
    eps: torch.Tensor
    weight_decay: Optional[torch.Tensor]
    one_minus_alpha: Optional[torch.Tensor] = None


class RMSpropFlags(NamedTuple):
    weight_decay: bool = False  # named like the option: False means no member uses it (not carried)
    centered: bool = False
    momentum: bool = False  # momentum > 0 (run-wide)


class RMSpropConstants(NamedTuple):
    momentum: torch.Tensor  # float32(momentum)


@dataclass(frozen=True)
class RMSprop:
    """``torch.optim.RMSprop(lr, alpha, eps, weight_decay, momentum, centered, foreach=False)``
    per member (SPEC §3c): per-member ``lrs``, ``alpha``, ``eps`` and ``weight_decay``;
    run-wide ``momentum`` and ``centered``."""

    name: ClassVar[str] = "rmsprop"
    MEMBER_OPTIONS: ClassVar[dict[str, Bound]] = {
        "alpha": Bound(default=0.99, lo=0.0, hi=1.0),
        "eps": Bound(default=1e-8, lo=0.0),
        "weight_decay": Bound(default=0.0, lo=0.0),
    }
    MemberOptions: ClassVar[type] = RMSpropOptions

    momentum: float = 0.0
    centered: bool = False
    maximize: bool = False
    foreach: Optional[bool] = None
    capturable: bool = False
    differentiable: bool = False

    def __post_init__(self) -> None:
        _check_torch_only(self.name, self)
        momentum = check_float("momentum", self.momentum)
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        object.__setattr__(self, "momentum", momentum)
        object.__setattr__(self, "centered", _check_bool("centered", self.centered))

    def settings(self) -> dict:
        return {"momentum": self.momentum, "centered": self.centered}

    def flags(self, member_options: dict) -> RMSpropFlags:
        wd = distinct(member_options["weight_decay"])
        return RMSpropFlags(weight_decay=bool((wd != 0).any()), centered=self.centered, momentum=self.momentum > 0)

    def state_names(self, flags: RMSpropFlags) -> tuple[str, ...]:
        return ("square_avg",) + (("grad_avg",) if flags.centered else ()) + \
            (("momentum_buffer",) if flags.momentum else ())

    def float64_options(self) -> tuple[str, ...]:
        """The per-member options whose float64 value (the Python float given) torch's
        arithmetic uses: ``alpha`` (``1 - alpha`` in float64)."""
        return ("alpha",)

    def derived_options(self, flags: RMSpropFlags, float64: dict) -> dict:
        """``one_minus_alpha`` = ``f32(1 - alpha)`` per member, the subtraction in float64
        on alpha as given (``float64["alpha"]``, a float64 tensor on the device), as
        torch's ``value=1 - alpha`` and ``lerp_(g, 1 - alpha)``."""
        return {"one_minus_alpha": (1.0 - float64["alpha"]).float().contiguous()}

    def constants(self, device: torch.device, steps: int) -> RMSpropConstants:
        return RMSpropConstants(momentum=torch.tensor(np.float32(self.momentum), device=device))

    @staticmethod
    def update(flags: RMSpropFlags, p, d, state: tuple, t, neg_lr, options: RMSpropOptions, consts: RMSpropConstants):
        """One parameter's RMSprop update (SPEC §3c). Returns (p, state); the state starts at zero."""
        if flags.weight_decay:
            wd = options.weight_decay
            d = torch.where(wd != 0, d + wd * p, d)  # grad.add(p, alpha=wd)
        alpha = options.alpha
        wa = options.one_minus_alpha  # f32(1 - alpha), the subtraction in float64 (derived_options)
        v = state[0] * alpha  # square_avg.mul_(alpha)
        v = v + (wa * d) * d  # .addcmul_(g, g, value=1 - alpha)
        new_state = [v]
        k = 1
        if flags.centered:
            ga = lerp(state[k], d, wa, wa.abs() < 0.5, 1.0 - wa)  # grad_avg.lerp_(g, 1 - alpha)
            new_state.append(ga)
            k += 1
            avg = sqrt_rn(v + (-ga) * ga)  # square_avg.addcmul(ga, ga, value=-1).sqrt_()
        else:
            avg = sqrt_rn(v)
        avg = avg + options.eps
        if flags.momentum:
            buf = state[k] * consts.momentum  # buf.mul_(momentum)
            buf = buf + d / avg  # .addcdiv_(g, avg)
            new_state.append(buf)
            p = p + neg_lr * buf  # p.add_(buf, alpha=-lr)
        else:
            p = p + (neg_lr * d) / avg  # p.addcdiv_(g, avg, value=-lr)
        return p, tuple(new_state)
