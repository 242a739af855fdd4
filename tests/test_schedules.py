"""Learning-rate schedules (SPEC §3d): fastneuron.schedules, and runs against torch.optim, bit for bit.

- Text: parse/describe round trips; bad text and bad parameters are ValueErrors naming
  ``lr_schedule``.
- Closed forms: each kind's factor table equals torch's scheduler with ``base_lr = 1``,
  exactly: ``_get_closed_form_lr()`` for StepLR, MultiStepLR, ExponentialLR,
  CosineAnnealingLR (eta_min = floor) and LinearLR (the warm-up); the product of two closed
  forms for a warm-up followed by another. The lrs one gets by stepping the schedulers
  (their recursive ``get_lr``, ``get_last_lr()``) equal ours exactly for StepLR, MultiStepLR
  and ExponentialLR when gamma is a power of two (every product is then exact), and to
  about 1e-12 otherwise (checked too, so that the difference is known).
- The oracle: ``torch.optim.SGD(lr, momentum, weight_decay, dampening, nesterov)`` (the lrs as
  typed, Python floats: LambdaLR's ``base_lr * factor`` is their float64 product) stepping one
  ``nn.Linear(1, 1)`` per member from the SPEC's init on the SPEC's x stream, with
  ``LambdaLR(opt, lambda t: table[t])`` (or torch's own StepLR / MultiStepLR / ExponentialLR,
  gamma 0.5) stepped after every optimizer step; the gradient of ``((y - (a*x + c))**2).mean()``
  is written into ``.grad`` as SPEC §3 computes it (autograd's is not the SPEC's to the last
  bit: tests/test_adam.py says more). It runs in a subprocess under
  ``ATEN_CPU_CAPABILITY=default`` (torch's AVX2 kernels fuse ``add(alpha=)`` into an FMA).
  ``fastneuron.train(..., lr_schedule=...)`` must give its final w and b bit for bit on the
  eager and compile backends, and on triton under the interpreter (small sizes).
"""

from __future__ import annotations

import math
import os
import pathlib
import sys

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_adam import torch_optim_run as adam_oracle  # noqa: E402  (its torch.optim driver, on the SPEC's streams)

from compare import assert_bits_equal  # noqa: E402
from conftest import requires_triton, run_oracle  # noqa: E402

import fastneuron  # noqa: E402
from fastneuron import schedules as S  # noqa: E402

U64_MAX = 2**64 - 1
PRIME = 1_000_003

requires_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="runs the kernel on CPU under TRITON_INTERPRET=1")


# --- text ------------------------------------------------------------------------------------

ROUND_TRIPS = [
    ("constant", "constant"),
    ("none", "constant"),
    ("step:size=30", "step:size=30,gamma=0.1"),
    ("STEP: gamma = 0.5 , size=7", "step:size=7,gamma=0.5"),
    ("multistep:milestones=100/250,gamma=0.3", "multistep:milestones=100/250,gamma=0.3"),
    ("multistep:milestones=0", "multistep:milestones=0,gamma=0.1"),
    ("exponential:gamma=0.999", "exponential:gamma=0.999"),
    ("exponential:gamma=1.5", "exponential:gamma=1.5"),
    ("cosine:t_max=3000", "cosine:t_max=3000,floor=0.0"),
    ("cosine:t_max=10,floor=1e-3", "cosine:t_max=10,floor=0.001"),
    ("cosine:t_max=10,floor=-0", "cosine:t_max=10,floor=0.0"),
    ("warmup:steps=5", "warmup:steps=5,start=0.3333333333333333"),
    ("warmup:steps=5,start=0", "warmup:steps=5,start=0.0"),
    ("warmup:steps=100,start=0.1+cosine:t_max=3000", "warmup:steps=100,start=0.1+cosine:t_max=3000,floor=0.0"),
    ("warmup:steps=1,start=1+step:size=2,gamma=0.5", "warmup:steps=1,start=1.0+step:size=2,gamma=0.5"),
    ("warmup:steps=3+multistep:milestones=4/9",
     "warmup:steps=3,start=0.3333333333333333+multistep:milestones=4/9,gamma=0.1"),
    ("warmup:steps=3,start=0.5+exponential:gamma=0.9", "warmup:steps=3,start=0.5+exponential:gamma=0.9"),
    ("warmup:steps=3,start=0.5+constant", "warmup:steps=3,start=0.5"),
    ("exponential:gamma=0.30000000000000004", "exponential:gamma=0.30000000000000004"),
    ("exponential:gamma=1e16", "exponential:gamma=1e+16"),
    ("warmup:steps=2,start=1e-5+exponential:gamma=1e+16", "warmup:steps=2,start=1e-05+exponential:gamma=1e+16"),
]


@pytest.mark.parametrize("text,canonical", ROUND_TRIPS, ids=[t for t, _ in ROUND_TRIPS])
def test_parse_describe_round_trip(text, canonical):
    s = S.parse(text)
    assert s.describe() == canonical
    again = S.parse(canonical)
    assert again == s and again.describe() == canonical
    assert np.array_equal(again.factors(15), s.factors(15))  # 1e16 ** 20 overflows


def test_objects_equal_their_text():
    assert S.parse("step:size=3,gamma=0.5") == S.Step(3, 0.5) != S.Step(3, 0.25)
    assert S.parse("multistep:milestones=2/5") == S.MultiStep([2, 5])
    assert S.parse("warmup:steps=4,start=0+cosine:t_max=9,floor=0.5") == S.Warmup(4, 0.0, S.Cosine(9, 0.5))
    assert S.Warmup(4, 0.5, S.Constant()) == S.Warmup(4, 0.5)


def test_make_schedule():
    assert S.make_schedule(None) is None
    assert S.make_schedule("constant") is None and S.make_schedule(S.Constant()) is None
    assert S.make_schedule("none") is None
    s = S.Exponential(0.5)
    assert S.make_schedule(s) is s
    assert S.make_schedule("exponential:gamma=0.5") == s

    def f(t):
        return 1.0 / (1 + t)

    wrapped = S.make_schedule(f)
    assert isinstance(wrapped, S.Lambda) and wrapped.describe() == "callable"
    assert wrapped.factors(4).tolist() == [1.0, 0.5, 1 / 3, 0.25]
    with pytest.raises(ValueError, match="lr_schedule"):
        S.parse(wrapped.describe())


def test_settings_and_digest():
    table = S.parse("cosine:t_max=50").factors(60)
    assert table.dtype == np.float64 and table.shape == (60,)
    assert S.table_digest(table) == __import__("hashlib").sha256(table.astype("<f8").tobytes()).hexdigest()
    got = S.schedule_settings("cosine:t_max=50", 60)
    assert got == {"lr_schedule": "cosine:t_max=50,floor=0.0", "lr_schedule_sha256": S.table_digest(table)}
    assert S.schedule_settings(None, 60) == {} and S.schedule_settings("constant", 60) == {}
    # the digest tells two callables (and two run lengths) apart
    assert S.schedule_settings(lambda t: 0.5, 10) != S.schedule_settings(lambda t: 0.25, 10)
    assert S.schedule_settings("cosine:t_max=50", 61) != got
    import json
    assert json.loads(json.dumps(got)) == got


BAD_TEXT = [
    ("", "empty"),
    ("   ", "empty"),
    ("linear:steps=3", "unknown schedule 'linear'"),
    ("step", r"step needs size="),
    ("step:", r"step needs size="),
    ("step:size=0", r"step size must be an integer in \[1"),
    ("step:size=-3", r"step size must be"),
    ("step:size=2.5", r"step size: '2.5' is not an integer"),
    ("step:size=2,gamma=0", r"step gamma must be finite and in \(0, inf\)"),
    ("step:size=2,gamma=x", r"step gamma: 'x' is not a number"),
    ("step:size=2,size=3", "size is given twice"),
    ("step:size=2,t_max=3", "step takes size, gamma; got 't_max'"),
    ("step:size", "is not key=value"),
    ("multistep:milestones=5/3", "milestones must be increasing"),
    ("multistep:milestones=3/3", "milestones must be increasing"),
    ("multistep:milestones=-1/3", r"milestones must be an integer in \[0"),
    ("multistep:milestones=1//3", "is not integers separated by '/'"),
    ("multistep:gamma=0.5", "multistep needs milestones="),
    ("exponential", "exponential needs gamma="),
    ("exponential:gamma=nan", "exponential gamma must be finite"),
    ("exponential:gamma=inf", "exponential gamma must be finite"),
    ("exponential:gamma=-0.5", r"exponential gamma must be finite and in \(0"),
    ("cosine:t_max=0", r"cosine t_max must be an integer in \[1"),
    ("cosine:t_max=5,floor=1.5", r"cosine floor must be finite and in \[0, 1\]"),
    ("cosine:t_max=5,floor=-0.1", r"cosine floor must be"),
    ("warmup:steps=0", r"warmup steps must be an integer in \[1"),
    ("warmup:steps=3,start=2", r"warmup start must be finite and in \[0, 1\]"),
    ("warmup:steps=3+warmup:steps=4", "a warm-up cannot follow a warm-up"),
    ("cosine:t_max=3+warmup:steps=4", "only a warm-up may come before"),
    ("warmup:steps=3+cosine:t_max=4+step:size=2", "joins more than two"),
    ("warmup:steps=3+", "empty|unknown schedule"),
    ("constant:x=1", "constant takes no parameters"),
]


@pytest.mark.parametrize("text,match", BAD_TEXT, ids=[t or "<empty>" for t, _ in BAD_TEXT])
def test_bad_text_names_lr_schedule(text, match):
    with pytest.raises(ValueError, match=match) as info:
        S.make_schedule(text)
    assert str(info.value).startswith("lr_schedule: ")


def test_syntax_shown_for_unreadable_text():
    with pytest.raises(ValueError, match=r"accepted: constant \| step:size=S"):
        S.parse("cosine:tmax=3")


@pytest.mark.parametrize("make,match", [
    (lambda: S.Step(True), "step size must be an integer"),
    (lambda: S.Step(2, gamma="0.5"), "step gamma must be a real number"),
    (lambda: S.MultiStep(5), "milestones must be a sequence"),
    (lambda: S.MultiStep([]), "at least one"),
    (lambda: S.MultiStep([1.0, 2.0]), "milestones must be an integer"),
    (lambda: S.Cosine(2.0), "t_max must be an integer"),
    (lambda: S.Warmup(3, then=S.Warmup(2)), "followed by one of"),
    (lambda: S.Warmup(3, then="cosine:t_max=3"), "followed by one of"),
    (lambda: S.make_schedule(0.5), "expected None, text"),
    (lambda: S.make_schedule(b"step:size=3"), "expected None, text"),
    (lambda: S.parse(S.Exponential(0.5)), "expected text"),
], ids=["bool-size", "str-gamma", "int-milestones", "no-milestones", "float-milestones", "float-t_max",
        "warmup-warmup", "warmup-text", "number", "bytes", "parse-object"])
def test_bad_objects_name_lr_schedule(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert str(info.value).startswith("lr_schedule: ")


@pytest.mark.parametrize("schedule,steps,match", [
    (S.Exponential(2.0), 2000, "exponential:gamma=2.0: the factor of step 1024 overflows float64"),
    (lambda t: -1.0 if t == 3 else 1.0, 10, "callable: the factor of step 3 is -1.0"),
    (lambda t: math.inf if t == 5 else 1.0, 10, "the factor of step 5 is inf"),
    (lambda t: math.nan, 10, "the factor of step 0 is nan"),
    (lambda t: "1.0", 10, "returned '1.0' at step 0"),
    (lambda t: True, 10, "returned True at step 0"),
    (lambda t: 1.0 / (2 - t), 10, "raised ZeroDivisionError.*at step 2"),
], ids=["overflow", "negative", "inf", "nan", "str", "bool", "raises"])
def test_bad_factors_name_lr_schedule_and_step(schedule, steps, match):
    with pytest.raises(ValueError, match=match) as info:
        S.make_schedule(schedule).factors(steps)
    assert str(info.value).startswith("lr_schedule: ")


def test_check_lr_range():
    table = S.Exponential(2.0).factors(100)
    S.check_lr_range(table, 1e8)  # 1e8 * 2**99 is about 6.3e37
    with pytest.raises(ValueError, match=r"lr_schedule: lr 1e\+20 times the factor .* of step 99 .* beyond float32"):
        S.check_lr_range(table, 1e20)
    S.check_lr_range(np.ones(3), float(np.finfo(np.float32).max))
    S.check_lr_range(np.empty(0), 1e30)
    # torch.optim's own refusal, which the check mirrors
    with pytest.raises(RuntimeError, match="overflow"):
        torch.zeros(1).add_(torch.ones(1), alpha=-1e20 * float(table[99]))


def test_underflow_is_zero_and_allowed():
    f = S.Exponential(0.5).factors(1200)
    assert f[1074] == 5e-324 and f[1075] == 0.0 and (f >= 0).all()


def test_table_is_kept_and_read_only():
    calls = []

    def f(t):
        calls.append(t)
        return 0.5

    s = S.make_schedule(f)
    table = s.factors(6)
    assert s.factors(6) is table and calls == list(range(6)), "a callable is called once per step"
    assert not table.flags.writeable
    assert s.factors(3).tolist() == [0.5] * 3 and s == S.Lambda(f) and repr(s) == repr(S.Lambda(f))
    c = S.parse("cosine:t_max=9")
    c.factors(5)
    assert c == S.parse("cosine:t_max=9") and hash(c) == hash(S.parse("cosine:t_max=9"))


def test_factors_of_zero_steps():
    for s in (S.Constant(), S.Step(3), S.Exponential(0.5), S.parse("warmup:steps=2+cosine:t_max=4")):
        assert s.factors(0).shape == (0,)


# --- closed forms against torch.optim.lr_scheduler ---------------------------------------------

T = 400


def _torch_scheduler(kind: str, opt):
    return {
        "step": lambda: L.StepLR(opt, step_size=7, gamma=0.3),
        "step-pow2": lambda: L.StepLR(opt, step_size=7, gamma=0.5),
        "multistep": lambda: L.MultiStepLR(opt, milestones=[0, 30, 31, 250], gamma=0.7),
        "multistep-pow2": lambda: L.MultiStepLR(opt, milestones=[0, 30, 31, 250], gamma=0.25),
        "exponential": lambda: L.ExponentialLR(opt, gamma=0.99),
        "exponential-pow2": lambda: L.ExponentialLR(opt, gamma=0.5),
        "cosine": lambda: L.CosineAnnealingLR(opt, T_max=150),
        "cosine-floor": lambda: L.CosineAnnealingLR(opt, T_max=97, eta_min=0.05),
        "warmup": lambda: L.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=37),
        "warmup-third": lambda: L.LinearLR(opt, total_iters=5),
    }[kind]()


OURS = {
    "step": "step:size=7,gamma=0.3",
    "step-pow2": "step:size=7,gamma=0.5",
    "multistep": "multistep:milestones=0/30/31/250,gamma=0.7",
    "multistep-pow2": "multistep:milestones=0/30/31/250,gamma=0.25",
    "exponential": "exponential:gamma=0.99",
    "exponential-pow2": "exponential:gamma=0.5",
    "cosine": "cosine:t_max=150",
    "cosine-floor": "cosine:t_max=97,floor=0.05",
    "warmup": "warmup:steps=37,start=0.1",
    "warmup-third": "warmup:steps=5",
}
#: Stepping torch's scheduler (its recursive get_lr) gives our factors exactly for these.
STEPPED_EXACT = {"step-pow2", "multistep-pow2", "exponential-pow2"}


def _sgd(base_lr: float = 1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)


def _closed_forms(kind: str, base_lr: float = 1.0) -> list:
    sched = _torch_scheduler(kind, _sgd(base_lr))
    out = []
    for t in range(T):
        sched.last_epoch = t
        out.append(sched._get_closed_form_lr()[0])
    return out


def _stepped(sched) -> list:
    out = [sched.get_last_lr()[0]]
    for _ in range(T - 1):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def _differ(name, expected, got) -> str:
    expected, got = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
    bad = expected != got
    if not bad.any():
        return ""
    i = int(np.flatnonzero(bad)[0])
    return (f"{name}: {int(bad.sum())} of {bad.size} steps differ (max abs difference "
            f"{np.abs(expected - got)[bad].max():.3g}; first at step {i}: torch {expected[i]!r}, ours {got[i]!r})")


@pytest.mark.parametrize("kind", list(OURS))
def test_factors_equal_torch_closed_form(kind):
    """Exact: our factor table is torch's ``_get_closed_form_lr`` at base_lr 1."""
    ours = S.parse(OURS[kind]).factors(T)
    msg = _differ(kind, _closed_forms(kind), ours)
    assert not msg, msg


@pytest.mark.parametrize("kind", ["step", "multistep", "exponential", "warmup"])
def test_lr_equals_torch_closed_form_at_any_base_lr(kind):
    """Exact for any base lr: torch computes ``base_lr * factor`` with the same factor,
    which is SPEC §3d's ``float64(lr) * f[t]`` (not so for CosineAnnealingLR, whose eta_min
    is an absolute lr: its closed form at base_lr 1 is our factor)."""
    lr = float(np.float32(0.037))
    ours = [lr * f for f in S.parse(OURS[kind]).factors(T).tolist()]
    msg = _differ(kind, _closed_forms(kind, lr), ours)
    assert not msg, msg


@pytest.mark.parametrize("kind", list(OURS))
def test_factors_against_stepped_torch_scheduler(kind):
    """Stepping torch's scheduler (what a training loop does): exact for gamma a power of two,
    within 1e-12 of the factor (plus 1e-15) otherwise; LambdaLR over our table: exact."""
    ours = S.parse(OURS[kind]).factors(T)
    stepped = np.array(_stepped(_torch_scheduler(kind, _sgd())))
    if kind in STEPPED_EXACT:
        msg = _differ(kind, stepped, ours)
        assert not msg, msg
    else:
        np.testing.assert_allclose(stepped, ours, rtol=1e-12, atol=1e-15)
    lr = float(np.float32(0.037))
    lam = _stepped(L.LambdaLR(_sgd(lr), lambda t: ours[t]))
    msg = _differ(f"LambdaLR {kind}", [lr * f for f in ours.tolist()], lam)
    assert not msg, msg


@pytest.mark.parametrize("warm,inner", [("warmup", "cosine"), ("warmup", "step"), ("warmup-third", "exponential"),
                                        ("warmup", "multistep"), ("warmup", "cosine-floor")])
def test_warmup_then_other_is_the_product(warm, inner):
    """Exact: the product of the two closed forms (LinearLR's, then the other's); and within
    1e-12 of torch's ChainedScheduler stepped (where the other is multiplicative: not for a
    cosine with eta_min > 0, whose eta_min torch adds as an absolute lr)."""
    text = OURS[warm] + "+" + OURS[inner]
    ours = S.parse(text).factors(T)
    product = [a * b for a, b in zip(_closed_forms(warm), _closed_forms(inner))]
    msg = _differ(text, product, ours)
    assert not msg, msg
    if inner == "cosine-floor":
        return
    opt = _sgd()
    chained = L.ChainedScheduler([_torch_scheduler(warm, opt), _torch_scheduler(inner, opt)])
    np.testing.assert_allclose(_stepped(chained), ours, rtol=1e-12, atol=1e-15)


def test_schedule_object_is_a_lambda_for_torch():
    """A schedule object is LambdaLR's ``lr_lambda``: the same lrs as its table."""
    s = S.parse("warmup:steps=9,start=0.25+cosine:t_max=40,floor=0.1")
    lam = _stepped(L.LambdaLR(_sgd(0.5), s))
    assert lam == [0.5 * f for f in s.factors(T).tolist()]


# --- the oracle: torch.optim.SGD + a scheduler, bit for bit -------------------------------------

SEEDS = [0, U64_MAX, PRIME, 2**32, 42, 7, 12345, 2**63, 99, 5]
#: SGD's stability edge on x in [1, 5) lies near lr = 0.09: the last four diverge (mostly).
LRS = [1e-4, 1e-3, 0.003, 0.01, 0.02, 0.04, 0.3, 1.0, 10.0, 1e3]
MOMENTA = [0.0, 0.9, 0.5, 0.0, 0.99, 0.1, 0.0, 0.9, 0.5, 0.3]
WDS = [0.0, 0.01, 0.1, 0.0, 1e-3, 0.5, 0.0, 0.01, 0.0, 0.2]
STEPS = 301  # not a multiple of 4: the last data block is cut


def wobble(t: int) -> float:
    """A callable schedule (module level: the oracle's subprocess imports it)."""
    return 1.0 + 0.75 * math.sin(t / 7.0)


#: id -> (schedule, batch, per-member options, run-wide options, torch scheduler or None for
#: LambdaLR over fastneuron's table). Torch's own schedulers only where stepping them is exact.
CASES = {
    "exponential-b1": ("exponential:gamma=0.99", 1, {}, {}, None),
    "warmup0-cosine-mom-wd-damp-b3": ("warmup:steps=20,start=0+cosine:t_max=250,floor=0.05", 3,
                                      {"momentum": MOMENTA, "weight_decay": WDS}, {"dampening": 0.1}, None),
    "multistep-nesterov-b1": ("multistep:milestones=30/90/91,gamma=0.3", 1, {"momentum": 0.9, "weight_decay": 0.01},
                              {"nesterov": True}, None),
    "step-wd-b3": ("step:size=7,gamma=0.7", 3, {"weight_decay": WDS}, {}, None),
    "warmup-mom-b1": ("warmup:steps=50,start=0.1", 1, {"momentum": MOMENTA}, {}, None),
    "cosine-past-t_max-b1": ("cosine:t_max=100", 1, {"momentum": 0.5}, {}, None),
    "callable-b3": (wobble, 3, {"momentum": MOMENTA}, {}, None),
    "torch-StepLR-b1": ("step:size=25,gamma=0.5", 1, {"momentum": MOMENTA}, {}, ("StepLR", 25, 0.5)),
    "torch-MultiStepLR-b3": ("multistep:milestones=0/40/41/200,gamma=0.5", 3, {"weight_decay": WDS}, {},
                             ("MultiStepLR", [0, 40, 41, 200], 0.5)),
    "torch-ExponentialLR-b1": ("exponential:gamma=0.5", 1, {}, {}, ("ExponentialLR", 0.5)),
}
#: What the compile backend is checked on: each set of flags compiles anew, about a minute on two
#: busy cores, so these are ``slow`` and few (momentum, weight decay, dampening, batch 3, a warm-up
#: from factor 0 into a cosine; and nesterov).
COMPILE_CASES = ["warmup0-cosine-mom-wd-damp-b3", "multistep-nesterov-b1"]
#: Triton under the interpreter: few members (seeds 0, 2**64-1, the prime, 2**63, 5; lrs from
#: 1e-4 to 1e3: the last two diverge), few steps.
TRITON_MEMBERS, TRITON_STEPS = (0, 1, 2, 7, 9), 43
TRITON_M = len(TRITON_MEMBERS)
TRITON_CASES = ["warmup0-cosine-mom-wd-damp-b3", "exponential-b1", "callable-b3"]
#: Members that do not diverge in the ExponentialLR case: lr halves every step.
NO_DIVERGENCE = {"torch-ExponentialLR-b1"}


def _members(case: str, m: int = len(SEEDS)):
    """Seeds, lrs and per-member options of a case's run of m members (all, or TRITON_MEMBERS)."""
    _, _, member, _, _ = CASES[case]
    idx = range(len(SEEDS)) if m == len(SEEDS) else TRITON_MEMBERS

    def pick(v):
        return [v[i] for i in idx] if isinstance(v, list) else v
    return pick(SEEDS), pick(LRS), {k: pick(v) for k, v in member.items()}


def torch_optim_run(case: str, m: int, steps: int):
    """The oracle (module docstring): final (w, b) and diverged_at of each member, from
    test_adam's torch.optim.SGD driver with the case's scheduler."""
    schedule, batch, _, run, torch_sched = CASES[case]
    seeds, lrs, member = _members(case, m)

    def scheduler(opt):
        if torch_sched is not None:
            return getattr(L, torch_sched[0])(opt, *torch_sched[1:])
        table = S.make_schedule(schedule).factors(steps).tolist()
        return L.LambdaLR(opt, lambda t: table[min(t, steps - 1)])  # t = steps: after the last step

    return adam_oracle("sgd", seeds, lrs, steps, batch, member, run, scheduler=scheduler)


RUNS = [(case, len(SEEDS), STEPS) for case in CASES] + [(case, TRITON_M, TRITON_STEPS) for case in TRITON_CASES]


def _oracle_main(out_path: str) -> None:
    """In a subprocess: every run of RUNS through torch.optim, saved to ``out_path``."""
    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT", torch.backends.cpu.get_cpu_capability()
    arrays = {}
    for case, m, steps in RUNS:
        w, b, d = torch_optim_run(case, m, steps)
        key = f"{case}/{m}/{steps}"
        arrays.update({f"{key}/w": w.numpy(), f"{key}/b": b.numpy(), f"{key}/d": d.numpy()})
    np.savez(out_path, **arrays)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    return run_oracle(HERE / "test_schedules.py", tmp_path_factory.mktemp("schedule_oracle"), timeout=600)


def _check_against_oracle(oracle, case: str, m: int, steps: int, backend: str) -> None:
    schedule, batch, _, run, _ = CASES[case]
    seeds, lrs, member = _members(case, m)
    res = fastneuron.train(seeds, lrs, steps, batch_size=batch, lr_schedule=schedule, backend=backend,
                           device="cpu", progress=False, **member, **run)
    key = f"{case}/{m}/{steps}"
    d = oracle[f"{key}/d"]
    assert_bits_equal(f"{case} [{backend}] diverged_at", d, res.diverged_at)
    ok = d < 0  # fastneuron reports NaN for diverged members (SPEC §4); torch holds inf or NaN
    assert res.weight[~ok].isnan().all() and res.bias[~ok].isnan().all(), \
        f"{case} [{backend}]: {int((~ok).sum())} diverged members, not all reported as NaN"
    assert_bits_equal(f"{case} [{backend}] weight", oracle[f"{key}/w"][ok], res.weight[ok])
    assert_bits_equal(f"{case} [{backend}] bias", oracle[f"{key}/b"][ok], res.bias[ok])


def test_oracle_cases_have_stable_and_diverged_members(oracle):
    for case in CASES:
        d = oracle[f"{case}/{len(SEEDS)}/{STEPS}/d"]
        assert (d < 0).sum() >= 4, f"{case}: too few stable members ({d.tolist()})"
        if case not in NO_DIVERGENCE:
            assert (d >= 0).any(), f"{case}: no member diverges ({d.tolist()})"
    for case in TRITON_CASES:
        d = oracle[f"{case}/{TRITON_M}/{TRITON_STEPS}/d"]
        assert (d < 0).sum() >= 2 and (d >= 0).any(), f"{case}, triton's members: {d.tolist()}"


@pytest.mark.parametrize("case", list(CASES))
def test_eager_matches_torch_optim(case, oracle):
    _check_against_oracle(oracle, case, len(SEEDS), STEPS, "eager")


@pytest.mark.slow
@pytest.mark.parametrize("case", COMPILE_CASES)
def test_compile_matches_torch_optim(case, oracle):
    _check_against_oracle(oracle, case, len(SEEDS), STEPS, "compile")


@pytest.mark.interpreter
@requires_triton
@requires_interpreter
@pytest.mark.parametrize("case", TRITON_CASES)
def test_triton_matches_torch_optim(case, oracle):
    _check_against_oracle(oracle, case, TRITON_M, TRITON_STEPS, "triton")


# --- train() and the rest of the run --------------------------------------------------------------

def test_constant_schedule_is_no_schedule():
    kw = dict(momentum=0.9, batch_size=3, backend="eager", progress=False)
    ref = fastneuron.train(SEEDS, LRS, 50, **kw)
    for value in ("constant", S.Constant(), None):
        got = fastneuron.train(SEEDS, LRS, 50, lr_schedule=value, **kw)
        assert_bits_equal("weight", ref.weight, got.weight)
        assert_bits_equal("bias", ref.bias, got.bias)
        assert_bits_equal("diverged_at", ref.diverged_at, got.diverged_at)


def test_schedule_recorded_in_settings():
    res = fastneuron.train([0, 1], 0.01, 30, lr_schedule="warmup:steps=5+cosine:t_max=30", backend="eager",
                           progress=False)
    expected = S.schedule_settings("warmup:steps=5+cosine:t_max=30", 30)
    assert {k: res.settings.get(k) for k in expected} == expected
    res = fastneuron.train([0, 1], 0.01, 30, lr_schedule=wobble, backend="eager", progress=False)
    assert res.settings.get("lr_schedule") == "callable"
    assert res.settings.get("lr_schedule_sha256") == S.table_digest(S.make_schedule(wobble).factors(30))


def test_bad_schedule_in_train_names_lr_schedule():
    with pytest.raises(ValueError, match="lr_schedule"):
        fastneuron.train([0], 0.01, 10, lr_schedule="cosine:t_max=0", backend="eager")
    with pytest.raises(ValueError, match="lr_schedule.*step 4"):
        fastneuron.train([0], 0.01, 10, lr_schedule=lambda t: -1.0 if t == 4 else 1.0, backend="eager")


def test_resume_refuses_another_schedule(tmp_path):
    kw = dict(backend="eager", progress=False)
    fastneuron.train([0, 1], 0.01, 8, lr_schedule="exponential:gamma=0.9", checkpoint=tmp_path / "c.ckpt",
                     checkpoint_every=0, **kw)
    with pytest.raises(ValueError, match="lr_schedule"):
        fastneuron.train([0, 1], 0.01, 8, lr_schedule="exponential:gamma=0.8", resume=tmp_path / "c.ckpt", **kw)
    with pytest.raises(ValueError, match="lr_schedule"):
        fastneuron.train([0, 1], 0.01, 8, resume=tmp_path / "c.ckpt", **kw)


if __name__ == "__main__":  # the oracle's subprocess (see the ``oracle`` fixture)
    _oracle_main(sys.argv[1])
