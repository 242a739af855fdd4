"""The optimizer seam: a toy optimizer defined here, and registered, trains on every
backend that runs any optimizer (eager, compile), checkpoints its state and resumes
exactly, saves and loads its per-member option, and is refused by the Triton backend
with the reason. Nothing outside this module and the registry knows about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import numpy as np
import pytest
import torch
import spec_numpy as S
from compare import assert_same_results

import fastneuron
from fastneuron.optim import OPTIMIZERS, Bound, register_optimizer


class SignumOptions(NamedTuple):
    beta: Optional[torch.Tensor]


class SignumFlags(NamedTuple):
    beta: bool  # named like the option: False means no member uses it (it is not carried)


class SignumConstants(NamedTuple):
    pass


@dataclass(frozen=True)
class Signum:
    """Sign of a momentum average (Bernstein et al. 2018), reference only:
    ``m = beta*m + (1 - beta)*g`` (``m = g`` at step 0), ``p = p - lr*sign(m)``;
    with ``beta = 0`` for every member, plain sign-SGD without state."""

    name: ClassVar[str] = "test-signum"
    MEMBER_OPTIONS: ClassVar[dict] = {"beta": Bound(default=0.0, lo=0.0, hi=1.0)}
    MemberOptions: ClassVar[type] = SignumOptions

    def settings(self) -> dict:
        return {}

    def flags(self, member_options: dict) -> SignumFlags:
        return SignumFlags(beta=bool((member_options["beta"] != 0).any()))

    def state_names(self, flags: SignumFlags) -> tuple:
        return ("avg",) if flags.beta else ()

    def constants(self, device, steps) -> SignumConstants:
        return SignumConstants()

    @staticmethod
    def update(flags, p, d, state, t, neg_lr, options, consts):
        if flags.beta:
            beta = options.beta
            d = torch.where(t == 0, d, beta * state[0] + (1.0 - beta) * d)
            state = (d,)
        return p + neg_lr * torch.sign(d), state


@pytest.fixture(autouse=True, scope="module")
def signum():
    register_optimizer(Signum)
    yield
    del OPTIMIZERS[Signum.name]


SEEDS = [0, 1, 7, 2**64 - 1, 12345]
LRS = [0.01, 0.003, 0.02, 0.001, 0.5]


def numpy_signum(seeds, lrs, steps, beta):
    """The same rule member by member in NumPy float32, on the SPEC's streams."""
    seeds = np.asarray(seeds, dtype=np.uint64)
    w, b = S.init(seeds)
    lrs = np.asarray(lrs, dtype=np.float32)
    beta = np.float32(beta)
    mw = mb = None
    lo32, span32 = np.float32(1.0), np.float32(4.0)
    for t in range(steps):
        x = S.sample(seeds, t, lo32, span32)
        g = np.float32(2) * ((w * x + b) - (np.float32(2) * x + np.float32(1)))
        gw, gb = g * x, g
        if beta:
            mw = gw if t == 0 else beta * mw + (np.float32(1) - beta) * gw
            mb = gb if t == 0 else beta * mb + (np.float32(1) - beta) * gb
            gw, gb = mw, mb
        w = w + (-lrs) * np.sign(gw)
        b = b + (-lrs) * np.sign(gb)
    return w, b


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_eager_matches_numpy(beta):
    r = fastneuron.train(SEEDS, LRS, 41, optimizer="test-signum", beta=beta, backend="eager")
    w, b = numpy_signum(SEEDS, LRS, 41, beta)
    assert np.array_equal(r.weight.numpy(), w), (r.weight, w)
    assert np.array_equal(r.bias.numpy(), b), (r.bias, b)
    assert r.settings["optimizer"] == "test-signum" and list(r.member_options) == ["beta"]


def test_compile_equals_eager():
    kw = dict(optimizer="test-signum", beta=[0.0, 0.9, 0.5, 0.0, 0.99], log_every=5)
    ref = fastneuron.train(SEEDS, LRS, 29, backend="eager", **kw)
    got = fastneuron.train(SEEDS, LRS, 29, backend="compile", **kw)
    assert_same_results(ref, got, members=True)


def test_checkpoint_resume_and_files(tmp_path):
    kw = dict(optimizer="test-signum", beta=0.9, backend="eager", member_block=2)
    ref = fastneuron.train(SEEDS, LRS, 40, **kw)
    partial = fastneuron.train(SEEDS, LRS, 40, checkpoint=tmp_path / "c.ckpt", checkpoint_every=0, **kw)
    with np.load(tmp_path / "c.ckpt") as z:
        assert {"avg_weight", "avg_bias"} <= set(z.files)
    assert_same_results(ref, partial)
    resumed = fastneuron.train(SEEDS, LRS, 40, resume=tmp_path / "c.ckpt", **kw)
    assert_same_results(ref, resumed)
    ref.save(tmp_path / "r.npz")
    assert_same_results(ref, fastneuron.load(tmp_path / "r.npz"), members=True)
    assert torch.equal(fastneuron.load(tmp_path / "r.npz").beta, ref.beta)


def test_unknown_option_and_triton_refusal():
    with pytest.raises(ValueError, match="unknown option 'momentum'.*beta"):
        fastneuron.train(SEEDS, LRS, 4, optimizer="test-signum", momentum=0.9, backend="eager")
    with pytest.raises(ValueError, match="backend 'triton'.*no kernel for optimizer 'test-signum'"):
        fastneuron.train(SEEDS, LRS, 4, optimizer="test-signum", backend="triton", device="cpu")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fastneuron.train(SEEDS, LRS, 4, optimizer="nope")
