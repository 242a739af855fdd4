"""Random settings: valid ones give the same bits on the eager and compile backends,
invalid ones give a ValueError and nothing else.

``backend="compile"`` builds one graph per option set (batch size, momentum on,
weight decay on, nesterov, logging on), each a few seconds of compiling on CPU. The
strategies draw from four option sets only, so that the whole file takes well under
two minutes; within a set every value is free (seeds over [0, 2**64), per-member lrs
from stable to diverging, momenta and weight decays including zeros, dampening,
a, c, lo, hi, steps 0..40, any log_every).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastneuron

U64_MAX = 2**64 - 1

#: (batch_size, momentum, weight_decay, nesterov, log): one compiled graph each.
PROFILES = [
    (1, False, False, False, False),
    (3, True, True, False, True),
    (1, True, False, True, True),
    (3, False, True, False, False),
]

seeds_st = st.one_of(st.just(0), st.just(U64_MAX), st.just(2**63), st.integers(0, U64_MAX), st.integers(0, 100))
lr_st = st.one_of(st.floats(1e-4, 0.05), st.floats(0.05, 50.0), st.sampled_from([1e-3, 0.01, 0.5, 20.0]))


@st.composite
def valid_settings(draw) -> dict:
    batch, has_mu, has_wd, nesterov, log = draw(st.sampled_from(PROFILES))
    m = draw(st.integers(1, 6))
    kw = dict(
        seeds=draw(st.lists(seeds_st, min_size=m, max_size=m)),
        lrs=draw(st.lists(lr_st, min_size=m, max_size=m)),
        steps=draw(st.integers(0, 40)),
        batch_size=batch,
        log_every=draw(st.integers(1, 12)) if log else None,
        a=draw(st.floats(-3, 3)), c=draw(st.floats(-3, 3)),
    )
    lo = draw(st.floats(-4, 4))
    kw.update(lo=lo, hi=lo + draw(st.floats(0.01, 6)))
    if has_mu:
        low = 0.05 if nesterov else 0.0
        mus = draw(st.lists(st.one_of(st.just(low), st.floats(low, 0.99)), min_size=m, max_size=m))
        if not any(mus):
            mus[0] = 0.9  # keep momentum on: the option set decides the graph
        kw["momentum"] = mus
        kw["dampening"] = 0.0 if nesterov else draw(st.one_of(st.just(0.0), st.floats(0.0, 0.9)))
        kw["nesterov"] = nesterov
    if has_wd:
        wds = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.5)), min_size=m, max_size=m))
        if not any(wds):
            wds[0] = 1e-2
        kw["weight_decay"] = wds
    return kw


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32) if x.dtype == torch.float32 else x


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kw=valid_settings())
def test_eager_and_compile_agree(kw):
    e = fastneuron.train(**kw, backend="eager", progress=False)
    c = fastneuron.train(**kw, backend="compile", progress=False)
    for name in ("weight", "bias", "diverged_at", "history_steps"):
        assert torch.equal(bits(getattr(e, name)), bits(getattr(c, name))), name
    if kw["log_every"]:
        assert torch.equal(bits(e.history_weight), bits(c.history_weight))
        assert torch.equal(bits(e.history_bias), bits(c.history_bias))
    else:
        assert e.history_weight is None and c.history_weight is None
    # Diverged members, and only they, are NaN.
    div = e.diverged_at >= 0
    assert torch.equal(torch.isnan(e.weight), div) and torch.equal(torch.isnan(e.bias), div)


def test_profiles_cover_the_options():
    """The option sets reach every option (a guard on PROFILES, not on fastneuron)."""
    assert {p[0] for p in PROFILES} == {1, 3}
    for i in range(1, 5):
        assert {p[i] for p in PROFILES} == {False, True}


# -- invalid settings ------------------------------------------------------------------

BASE = dict(seeds=[0, 1, 2], lrs=0.01, steps=5)

bad_number = st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -1e39])
negative = st.floats(max_value=-1e-30)

#: Each draws one change that makes BASE invalid.
INVALID_KINDS = [
    st.builds(lambda s: dict(seeds=[0, s]), st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64))),
    st.builds(lambda s: dict(seeds=[0, s]), st.one_of(st.floats(allow_nan=True), st.just(True), st.text(max_size=3))),
    st.just(dict(seeds=[])),
    st.just(dict(seeds=7)),
    st.just(dict(seeds="012")),
    st.builds(lambda v: dict(seeds=np.array([1.0, v])), st.floats(0, 10)),
    st.builds(lambda v: dict(seeds=torch.tensor([-1 - v, 5])), st.integers(0, 2**62)),
    st.builds(lambda v: dict(lrs=v), st.one_of(st.floats(max_value=0.0), bad_number, st.floats(0, 1e-46))),
    st.builds(lambda v: dict(lrs=[0.01, v, 0.01]), st.one_of(st.floats(max_value=0.0), bad_number)),
    st.builds(lambda n: dict(lrs=[0.01] * n), st.integers(2, 6).filter(lambda n: n != 3)),
    st.just(dict(lrs=[])),
    st.just(dict(lrs="0.01")),
    st.just(dict(lrs=[0.01, None, 0.01])),
    st.builds(lambda v: dict(momentum=v), st.one_of(negative, st.floats(min_value=1.0), bad_number)),
    st.builds(lambda v: dict(weight_decay=v), st.one_of(negative, bad_number)),
    st.builds(lambda v: dict(dampening=v), st.one_of(negative, st.floats(min_value=1.0), bad_number)),
    st.builds(lambda v: dict(nesterov=v), st.sampled_from([1, 0, "yes", None, 1.0])),
    st.builds(lambda mu: dict(nesterov=True, momentum=mu), st.sampled_from([0.0, [0.5, 0.0, 0.5]])),
    st.builds(lambda v: dict(steps=v), st.one_of(st.integers(max_value=-1), st.floats(0, 100), st.just(True),
                                                 st.just("5"), st.just(None))),
    st.builds(lambda v: dict(batch_size=v), st.one_of(st.integers(max_value=0), st.floats(1, 4), st.just(True))),
    st.builds(lambda v: dict(log_every=v), st.one_of(st.integers(max_value=0), st.floats(1, 4), st.just(False))),
    st.builds(lambda k, v: {k: v}, st.sampled_from(["a", "c", "lo", "hi"]), st.one_of(bad_number, st.just("1"),
                                                                                    st.just(None))),
    st.builds(lambda lo, d: dict(lo=lo, hi=lo - d), st.floats(-10, 10), st.floats(0, 10)),
    st.just(dict(lo=1.0, hi=1.0 + 1e-12)),  # equal in float32
    st.just(dict(lo=-3e38, hi=3e38)),  # hi - lo overflows float32
    st.builds(lambda v: dict(backend=v), st.sampled_from(["", "jax", "EAGER", None, 1])),
    st.builds(lambda v: dict(device=v), st.sampled_from(["tpu", "gpu", "cuda:x", 3.5, "meta"])),
    st.builds(lambda v: dict(member_block=v), st.one_of(st.integers(max_value=0), st.floats(1, 8))),
    st.builds(lambda v: dict(checkpoint_every=v), st.one_of(st.floats(max_value=-1e-9), bad_number)),
]
INVALID = st.one_of(*INVALID_KINDS)


@settings(max_examples=25, deadline=None)
@given(change=INVALID, backend=st.sampled_from(["eager", "compile", "auto"]))
def test_invalid_settings_raise_value_error(change, backend):
    kw = {**BASE, "backend": backend, **change}
    with pytest.raises(ValueError):
        fastneuron.train(**kw, progress=False)


@pytest.mark.parametrize("strategy", INVALID_KINDS, ids=range(len(INVALID_KINDS)))
def test_each_kind_of_invalid_setting(strategy):
    """Every kind of change above, a few draws each (25 draws of the mix may miss some)."""

    @settings(max_examples=3, deadline=None, database=None)
    @given(change=strategy)
    def check(change):
        with pytest.raises(ValueError):
            fastneuron.train(**{**BASE, "backend": "eager", **change}, progress=False)

    check()
