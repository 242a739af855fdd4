"""The model seam: each member is one neuron ``act(w . x + b)`` (SPEC §6).

:class:`Neuron` holds the run-wide model settings (``inputs`` d, ``bias``, ``activation``,
``loss``, ``leaky_slope``) and the per-member ``init_scale``. The functions below are
SPEC §6's lines, one rounded float32 operation each, on tensors whose last dimension is
the members: a weight is (M,) when d = 1 (v2's shape, so a v2 run traces the very graph
it traced before) and (d, M) when d > 1 (coordinate-major: each coordinate's row is
contiguous, which is what the compiled path vectorizes over). They trace under
``torch.compile`` (no data-dependent Python control flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple, Optional

import numpy as np
import torch

from ._validate import Bound, check_float, distinct
from .rng import INIT_KEY, coordinate_key, philox4x32, seed_word, uint32_to_uniform
from .transcendental import erf32, exp32, tanh32

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "erf", "abs", "square")
LOSSES = ("mse", "bce")
MAX_INPUTS = 4096

#: f32(1/sqrt(2)) and f32(2/sqrt(pi)), SPEC §6e's erf lines.
INV_SQRT2 = float(np.float32(1.0 / math.sqrt(2.0)))
TWO_OVER_SQRT_PI = float(np.float32(2.0 / math.sqrt(math.pi)))


class NeuronFlags(NamedTuple):
    """What traced code and kernels specialize on; the defaults are v2's neuron."""

    inputs: int = 1
    bias: bool = True
    activation: str = "identity"
    loss: str = "mse"
    init_scale: bool = False  # some member's init_scale != 1


class NeuronOptions(NamedTuple):
    """Per-member model options on the device, float32 (M,), or None when unused."""

    init_scale: Optional[torch.Tensor] = None


class NeuronConstants(NamedTuple):
    slope: torch.Tensor  # f32(leaky_slope), 0-dim


def check_activation(name: str, value) -> str:
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, ACTIVATIONS))}; got {value!r}")
    return value


@dataclass(frozen=True)
class Neuron:
    """``nn.Linear(inputs, 1, bias=bias)``, then ``activation``, trained on ``loss``."""

    name: ClassVar[str] = "neuron"
    MEMBER_OPTIONS: ClassVar[dict] = {"init_scale": Bound(default=1.0, lo=0.0, lo_open=True)}
    MemberOptions: ClassVar[type] = NeuronOptions
    Flags: ClassVar[type] = NeuronFlags

    inputs: int = 1
    bias: bool = True
    activation: str = "identity"
    loss: str = "mse"
    leaky_slope: float = 0.01

    def __post_init__(self) -> None:
        d = self.inputs
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= int(d) <= MAX_INPUTS:
            raise ValueError(f"inputs must be an integer in [1, {MAX_INPUTS}], got {d!r}")
        object.__setattr__(self, "inputs", int(d))
        if not isinstance(self.bias, (bool, np.bool_)):
            raise ValueError(f"bias must be True or False, got {self.bias!r}")
        object.__setattr__(self, "bias", bool(self.bias))
        check_activation("activation", self.activation)
        if not isinstance(self.loss, str) or self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {self.loss!r}")
        if self.loss == "bce" and self.activation != "identity":
            raise ValueError(f"loss='bce' is BCEWithLogitsLoss on the pre-activation: it needs "
                             f"activation='identity', got activation={self.activation!r}")
        object.__setattr__(self, "leaky_slope", check_float("leaky_slope", self.leaky_slope))

    @property
    def init_bound(self) -> float:
        """r = f32(1 / sqrt(d)) (SPEC §6b), as a Python float holding that float32."""
        return float(np.float32(1.0 / math.sqrt(self.inputs)))

    def settings(self) -> dict:
        """The settings that differ from v2's neuron (none for a v2 run: it records what it did)."""
        out = {}
        for key, default in (("inputs", 1), ("bias", True), ("activation", "identity"), ("loss", "mse")):
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        if self.activation == "leaky_relu":
            out["leaky_slope"] = self.leaky_slope
        return out

    def flags(self, member_options: dict) -> NeuronFlags:
        scale = member_options.get("init_scale")
        used = scale is not None and bool((distinct(scale) != 1).any())
        return NeuronFlags(inputs=self.inputs, bias=self.bias, activation=self.activation, loss=self.loss,
                           init_scale=used)

    def constants(self, device: torch.device) -> NeuronConstants:
        return NeuronConstants(slope=torch.tensor(np.float32(self.leaky_slope), device=device))

    def weight_shape(self, m: int) -> tuple:
        """A block's weight tensor: (M,) for d = 1, (d, M) for d > 1."""
        return (m,) if self.inputs == 1 else (self.inputs, m)


def settings_model(settings: dict) -> Neuron:
    """The model a result's or checkpoint's ``settings`` describe (absent keys: v2's
    neuron); ValueError for bad ones."""
    return Neuron(**{f.name: settings[f.name] for f in fields(Neuron) if f.init and f.name in settings})


# -- SPEC §6b: the init ----------------------------------------------------------------

def init_params(s_lo, s_hi, flags: Optional[NeuronFlags] = None, options: Optional[NeuronOptions] = None):
    """Initial (w, b): w (M,) or (d, M), b (M,), SPEC §6b; with v2's flags, v1's init."""
    flags = flags or NeuronFlags()
    d = flags.inputs
    lo, hi = seed_word(s_lo), seed_word(s_hi)
    r0, r1, _, _ = philox4x32(0, 0, lo, hi, key=coordinate_key(INIT_KEY, d, lo.device))
    w = -1.0 + 2.0 * uint32_to_uniform(r0)
    if d > 1:
        r1 = r1[0]  # coordinate 0's block holds b's word
    b = -1.0 + 2.0 * uint32_to_uniform(r1)
    if d > 1:
        r = float(np.float32(1.0 / math.sqrt(d)))
        w = w * r
        b = b * r
    if flags.init_scale:
        w = w * options.init_scale
        b = b * options.init_scale
    if not flags.bias:
        b = torch.zeros_like(b)
    return w, b


# -- SPEC §6c: the dot product -----------------------------------------------------------

def tree_sum(p: torch.Tensor) -> torch.Tensor:
    """Sum over the coordinates (dim 0 of a (d, M) tensor) as SPEC §6c's pairwise tree:
    adjacent pairs, level by level, an odd last row passing up unchanged (the same as
    padding with -0.0). A (M,) tensor (d = 1) is its own sum."""
    if p.dim() == 1:
        return p
    while p.shape[0] > 1:
        n = p.shape[0]
        s = p[0:n - 1:2] + p[1:n:2]
        p = torch.cat([s, p[n - 1:n]]) if n % 2 else s
    return p[0]


def dot(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """w . x: each product rounded, then :func:`tree_sum`."""
    return tree_sum(w * x)


# -- SPEC §6e: forward and backward ----------------------------------------------------------

def sigmoid32(z: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp32(-z))``, three roundings (the divisor a tensor: a true division)."""
    e = exp32(-z)
    d = 1.0 + e
    return torch.ones_like(d) / d


def activate(activation: str, z: torch.Tensor, slope) -> torch.Tensor:
    """y = act(z) (SPEC §6e's forward column)."""
    if activation == "identity":
        return z
    if activation == "relu":
        return torch.where(z < 0, torch.zeros_like(z), z)  # torch.relu: -0.0 and NaN pass
    if activation == "leaky_relu":
        return torch.where(z > 0, z, z * slope)
    if activation == "sigmoid":
        return sigmoid32(z)
    if activation == "tanh":
        return tanh32(z)
    if activation == "erf":
        return erf32(z * INV_SQRT2)
    if activation == "abs":
        return torch.abs(z)
    if activation == "square":
        return z * z
    raise ValueError(f"unknown activation {activation!r}")


def activation_grad(activation: str, z: torch.Tensor, y: torch.Tensor, gy: torch.Tensor, slope) -> torch.Tensor:
    """gz from gy (SPEC §6e's backward column, as torch's autograd)."""
    if activation == "identity":
        return gy
    if activation == "relu":
        return torch.where(z <= 0, torch.zeros_like(gy), gy)
    if activation == "leaky_relu":
        return torch.where(z > 0, gy, gy * slope)
    if activation == "sigmoid":
        return (gy * (1.0 - y)) * y
    if activation == "tanh":
        return gy * (1.0 - y * y)
    if activation == "erf":
        v = z * INV_SQRT2
        e = exp32(-(v * v))
        gv = (TWO_OVER_SQRT_PI * e) * gy
        return gv * INV_SQRT2
    if activation == "abs":
        one = torch.ones_like(z)
        sgn = torch.where(z > 0, one, torch.where(z < 0, -one, torch.zeros_like(z)))
        return gy * sgn
    if activation == "square":
        return gy * (2.0 * z)
    raise ValueError(f"unknown activation {activation!r}")


def pre_activation(w, b, x, flags: NeuronFlags) -> torch.Tensor:
    """z = w . x + b (with bias=False, z = w . x)."""
    s = dot(w, x)
    return s + b if flags.bias else s


def output_grad(w, b, x, target, flags: NeuronFlags, consts: Optional[NeuronConstants]) -> torch.Tensor:
    """dL/dz of one sample at (w, b) (SPEC §6e): the loss's gradient through the activation."""
    z = pre_activation(w, b, x, flags)
    if flags.loss == "bce":
        return sigmoid32(z) - target
    slope = None if consts is None else consts.slope
    y = activate(flags.activation, z, slope)
    gy = 2.0 * (y - target)
    return activation_grad(flags.activation, z, y, gy, slope)
