"""backend="triton" equals the eager reference bit for bit (SPEC: every backend).

Without CUDA the kernel runs under the Triton interpreter (``TRITON_INTERPRET=1``, set
by conftest.py before import) on CPU tensors: those tests carry the ``interpreter``
mark and keep sizes small. :class:`TestCuda` runs the same comparisons on a GPU.
"""

import os
import random

import pytest
import torch
from compare import assert_bits_equal, assert_same_results, lrs_for, seeds_for
from conftest import DEVICES, SPEC_VECTORS, requires_cuda, requires_triton

import fastneuron as fn
from fastneuron.optim import SGD, SGDConstants, SGDFlags, SGDOptions
from fastneuron.problems import LinearTarget
from fastneuron.reference import Constants, History, Members, State, StepConfig, run_steps
from fastneuron.rng import init_params, split_seeds

U64_MAX = 2**64 - 1

requires_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="runs the kernel on CPU under TRITON_INTERPRET=1")
assert "cpu" in DEVICES


def interpreter_test(f):
    """Marks of a test that runs the kernel under the interpreter on CPU tensors."""
    return pytest.mark.interpreter(requires_triton(requires_interpreter(f)))


# ----------------------------------------------------------------------------- helpers

def check_triton(device: str, *args, **kwargs):
    """train() on backend triton (on ``device``) equals eager on the CPU, bit for bit."""
    kwargs.setdefault("progress", False)
    ref = fn.train(*args, backend="eager", device="cpu", **kwargs)
    got = fn.train(*args, backend="triton", device=device, **kwargs)
    assert_same_results(ref, got)
    return got


#: (members, steps, log_every): sizes and step counts, including chunk-edge counts.
SIZES = [(1, 201, None), (7, 0, 1), (7, 1, 1), (7, 3, 2), (7, 4, 3), (7, 201, 10),
         (1000, 12, 5), (4099, 9, 4)]

#: Run-wide settings and per-member options beyond seeds and lrs (7 members, 33 steps).
OPTIONS = {
    "batch3": dict(batch_size=3),
    "batch2": dict(batch_size=2),
    "batch4": dict(batch_size=4),
    "batch5_logged": dict(batch_size=5, log_every=4),
    "momentum": dict(momentum=0.9),
    "momentum_mixed_zero": dict(momentum=[0.0, 0.9, 0.5, 0.0, 0.99, 0.1, 0.0]),
    "weight_decay_mixed_zero": dict(weight_decay=[0.0, 0.01, 0.0, 0.5, 1e-4, 0.0, 2.0]),
    "dampening": dict(momentum=[0.9, 0.0, 0.5, 0.3, 0.0, 0.7, 0.2], dampening=0.3),
    "nesterov": dict(momentum=[0.9, 0.5, 0.1, 0.95, 0.3, 0.7, 0.2], nesterov=True, dampening=0.1),
    "everything_batch3": dict(momentum=[0.9, 0.0, 0.5, 0.3, 0.0, 0.7, 0.2],
                              weight_decay=[0.0, 0.01, 0.1, 0.0, 1.0, 0.0, 0.3],
                              dampening=0.25, batch_size=3, log_every=7),
    "nesterov_wd_batch6": dict(momentum=0.8, nesterov=True, weight_decay=0.05, batch_size=6, log_every=1),
    "problem": dict(a=-3.0, c=0.5, lo=-2.0, hi=2.0, log_every=3),
    "problem_odd_range": dict(a=0.1, c=-7.25, lo=0.3, hi=0.30001, log_every=11),
    "log_every_past_end": dict(log_every=1000),
}


# ------------------------------------------------------------------- interpreter tests

@pytest.mark.parametrize("m,steps,log_every", SIZES)
@interpreter_test
def test_sizes_equal_eager(m, steps, log_every):
    got = check_triton("cpu", seeds_for(m), lrs_for(m), steps, log_every=log_every)
    if m >= 5 and steps >= 60:
        assert (got.diverged_at >= 0).any(), "the test should include diverging members"


@pytest.mark.parametrize("name", list(OPTIONS))
@interpreter_test
def test_options_equal_eager(name):
    check_triton("cpu", seeds_for(7), [0.01, 0.003, 0.02, 0.001, 0.005, 0.03, 0.2], 33, **OPTIONS[name])


@pytest.mark.parametrize("batch_size", [1, 3])
@interpreter_test
def test_divergence(batch_size):
    """lr 0.5 diverges (at step 44 for seed 42, batch 1); diverged_at, NaN results and the
    history from that step on all match the reference."""
    got = check_triton("cpu", [42, 42, 42, 2**64 - 1], [0.001, 0.03, 0.5, 5.0], 120, log_every=4,
                       batch_size=batch_size)
    assert (got.diverged_at[2:] >= 0).all()
    if batch_size == 1:
        assert got.diverged_at.tolist()[:3] == [-1, -1, 44]


def _spec_cases():
    cases = SPEC_VECTORS["train"]
    return [pytest.param(c, id=f"train{i}-T{c['steps']}") for i, c in enumerate(cases)]


def _train_spec_case(case, device):
    kwargs = dict(batch_size=case.get("batch", 1), momentum=case.get("momentum", 0.0),
                  weight_decay=case.get("weight_decay", 0.0), dampening=case.get("dampening", 0.0),
                  nesterov=case.get("nesterov", False), a=case.get("a", 2.0), c=case.get("c", 1.0),
                  lo=case.get("lo", 1.0), hi=case.get("hi", 5.0))
    got = fn.train([int(s) for s in case["seeds"]], case["lrs"], case["steps"], backend="triton",
                   device=device, progress=False, **kwargs)
    as_bits = lambda hexes: torch.tensor([int(h, 16) for h in hexes], dtype=torch.int64).to(torch.int32)  # noqa: E731
    assert_bits_equal("weight bits", as_bits(case["weight_bits"]), got.weight.view(torch.int32))
    assert_bits_equal("bias bits", as_bits(case["bias_bits"]), got.bias.view(torch.int32))
    assert got.diverged_at.tolist() == case["diverged_at"]


@pytest.mark.parametrize("case", _spec_cases())
@interpreter_test
def test_spec_vectors(case):
    """The known answers of spec-vectors.json (float32 bits of whole runs)."""
    _train_spec_case(case, "cpu")


@interpreter_test
def test_members_are_independent():
    """A member's trajectory does not depend on M or on its position in the run."""
    seeds, lrs = seeds_for(40), lrs_for(40)
    perm = list(range(40))
    random.Random(3).shuffle(perm)
    kw = dict(backend="triton", device="cpu", progress=False, log_every=5, momentum=0.5, batch_size=3)
    big = fn.train([seeds[i] for i in perm], [lrs[i] for i in perm], 30, **kw)
    for i in (0, 1, 4, 39):
        alone = fn.train([seeds[i]], [lrs[i]], 30, **kw)
        j = perm.index(i)
        assert_bits_equal(f"member {i} weight", alone.weight, big.weight[j:j + 1])
        assert_bits_equal(f"member {i} bias", alone.bias, big.bias[j:j + 1])
        assert_bits_equal(f"member {i} diverged_at", alone.diverged_at, big.diverged_at[j:j + 1])
        assert_bits_equal(f"member {i} history", alone.history_weight, big.history_weight[:, j:j + 1])


@interpreter_test
def test_member_blocks_and_small_chunks(monkeypatch):
    """Through the driver: member blocks, and chunks of 8 steps whose state and history
    rows carry from launch to launch."""
    from fastneuron.kernels import triton_sgd

    monkeypatch.setattr(triton_sgd.TritonStepper, "chunk_steps", 8)
    check_triton("cpu", seeds_for(7), lrs_for(7), 45, log_every=3, member_block=3,
                 momentum=[0.0, 0.9, 0.5, 0.3, 0.0, 0.7, 0.2], batch_size=3)
    check_triton("cpu", seeds_for(7), lrs_for(7), 61, log_every=7, weight_decay=0.1)


@pytest.mark.parametrize("batch_size", [1, 3])
@interpreter_test
def test_sample_loop_path(monkeypatch, batch_size):
    """The kernel's loop over samples (used for long batches and leftover steps), forced for every step."""
    from fastneuron.kernels import triton_sgd

    monkeypatch.setattr(triton_sgd, "MAX_UNROLLED_SAMPLES", 0)
    check_triton("cpu", seeds_for(7), lrs_for(7), 23, log_every=2, batch_size=batch_size, momentum=0.5,
                 weight_decay=[0.0, 0.1, 0.0, 0.2, 0.0, 0.0, 0.3])


def _consts(device, *, a=2.0, c=1.0, lo=1.0, hi=5.0, batch=1, dampening=0.0):
    f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
    return Constants(problem=LinearTarget(a=a, c=c, lo=lo, hi=hi).constants(device),
                     optimizer=SGDConstants(one_minus_dampening=f32(1.0 - dampening)), batch=f32(batch))


def _config(batch_size=1, **flags):
    return StepConfig(batch_size=batch_size, optimizer=SGD, flags=SGDFlags(**flags), problem=LinearTarget)


def _members(seeds, lrs, device, momentum=None, weight_decay=None):
    s_lo, s_hi = split_seeds(torch.tensor([s - 2**64 if s >= 2**63 else s for s in seeds], dtype=torch.int64))
    f32 = lambda v: None if v is None else torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
    return Members(s_lo=s_lo.to(device), s_hi=s_hi.to(device), neg_lr=-f32(lrs),
                   options=SGDOptions(momentum=f32(momentum), weight_decay=f32(weight_decay)))


def _state(w, b, div, buffers=None):
    """A State; ``buffers``: None (no momentum) or (buf_weight, buf_bias)."""
    if buffers is None:
        return State(w, b, (), (), div)
    return State(w, b, (buffers[0],), (buffers[1],), div)


def _check_stepper_in_chunks(device):
    """The stepper under the engine's loop, in chunks of 8 steps, against the reference."""
    from fastneuron.engine import fresh_state, train_block
    from fastneuron.kernels.triton_sgd import TritonStepper

    seeds, lrs, steps, every = seeds_for(9), [5.0, 0.01, 0.003, 2.0, 0.02] + [0.01] * 4, 37, 3
    config = _config(batch_size=3, momentum=True, weight_decay=True)
    mus, wds = [0.9, 0.0, 0.5] * 3, [0.0, 0.1, 0.01] * 3
    consts = _consts(device, batch=3)
    members = _members(seeds, lrs, device, mus, wds)
    rows = len(range(0, steps, every))
    history = History(torch.full((rows, 9), -7.0, device=device), torch.full((rows, 9), -7.0, device=device), every)
    done = []
    stepper = TritonStepper()
    stepper.chunk_steps = 8
    state = train_block(stepper, fresh_state(stepper, members, config, ("buf",)), 0, steps, members, consts,
                        config, history, lambda t, state, n: done.append(n))
    w, b, div = state.weight, state.bias, state.diverged_at
    assert done == [8, 8, 8, 8, 5]

    members_cpu, consts_cpu = _members(seeds, lrs, "cpu", mus, wds), _consts("cpu", batch=3)
    w0, b0 = init_params(members_cpu.s_lo, members_cpu.s_hi)
    state = _state(w0, b0, torch.full((9,), -1, dtype=torch.int64), (torch.zeros(9), torch.zeros(9)))
    state, (rec_w, rec_b) = run_steps(state, torch.tensor(0), members_cpu, consts_cpu, nsteps=steps, config=config,
                                      record=True)
    assert_bits_equal("weight", state.weight, w)
    assert_bits_equal("bias", state.bias, b)
    assert_bits_equal("diverged_at", state.diverged_at, div)
    assert_bits_equal("history_weight", rec_w[::every], history.weight)
    assert_bits_equal("history_bias", rec_b[::every], history.bias)
    assert (div >= 0).any() and (div < 0).any()


def _check_late_steps(device):
    """Steps far into the stream, where the Philox block index q = n // 4 passes 2**32."""
    from fastneuron.kernels.triton_sgd import TritonStepper

    for batch, t0 in ((1, 2**34 - 8), (3, 2**33 + 4), (1, 2**40)):
        config = _config(batch_size=batch)
        seeds, lrs = seeds_for(5), [0.01, 0.003, 0.02, 0.001, 0.005]
        members_cpu, consts_cpu = _members(seeds, lrs, "cpu"), _consts("cpu", batch=batch)
        w0, b0 = init_params(members_cpu.s_lo, members_cpu.s_hi)
        start = _state(w0, b0, torch.full((5,), -1, dtype=torch.int64))
        ref, _ = run_steps(start, torch.tensor(t0), members_cpu, consts_cpu, nsteps=16, config=config)
        on_device = _state(w0.to(device), b0.to(device), start.diverged_at.to(device))
        got = TritonStepper()(on_device, t0, _members(seeds, lrs, device), _consts(device, batch=batch), nsteps=16,
                              config=config, history=None)
        assert_bits_equal(f"weight (t0={t0}, B={batch})", ref.weight, got.weight)
        assert_bits_equal(f"bias (t0={t0}, B={batch})", ref.bias, got.bias)


@interpreter_test
def test_stepper_in_chunks():
    _check_stepper_in_chunks("cpu")


@interpreter_test
def test_late_steps():
    _check_late_steps("cpu")


@interpreter_test
def test_launcher_rejects_bad_inputs():
    from fastneuron.kernels.triton_sgd import TritonStepper

    members, consts, config = _members([1, 2], [0.01, 0.01], "cpu"), _consts("cpu"), _config()
    state = _state(torch.zeros(2), torch.zeros(2), torch.full((2,), -1))

    def raises(match, members, consts, config, nsteps, history=None, t0=0, state=state):
        with pytest.raises(ValueError, match=match):
            TritonStepper()(state, t0, members, consts, nsteps=nsteps, config=config, history=history)

    raises("members.s_hi", members._replace(s_hi=members.s_hi.to(torch.int64)), consts, config, 4)
    raises("members.neg_lr", members._replace(neg_lr=members.neg_lr[:1]), consts, config, 4)
    raises("members.neg_lr", members._replace(neg_lr=members.neg_lr.double()), consts, config, 4)
    raises("options.momentum", members, consts, _config(momentum=True), 4)
    raises("consts.span", members, consts._replace(problem=consts.problem._replace(span=torch.ones(1))), config, 4)
    raises("nsteps", members, consts, config, -1)
    raises("history.log_every", members, consts, config, 4, History(torch.zeros(4, 2), torch.zeros(4, 2), 0))
    raises("history.bias", members, consts, config, 4, History(torch.zeros(4, 2), torch.zeros(3, 2), 1))
    raises("history.weight has 3 rows", members, consts, config, 4, History(torch.zeros(3, 2), torch.zeros(3, 2), 1))
    raises("history.bias", members, consts, config, 4, History(torch.zeros(4, 2), None, 1))
    raises("batch_size", members, consts, _config(batch_size=0), 4)
    raises("runs SGD on the linear problem", members, consts,
           StepConfig(batch_size=1, optimizer=object, flags=SGDFlags(), problem=LinearTarget), 4)
    raises("multiple of 4", members, consts, config, 4, t0=torch.tensor(2))
    raises("state.diverged_at", members, consts, config, 4, state=state._replace(diverged_at=torch.zeros(2)))
    # A seed range's low word is one value expanded with s_lo_step 1, nothing else.
    raises("members.s_lo_step must be 0, or 1", members._replace(s_lo_step=2), consts, config, 4)
    raises("members.s_lo_step must be 0, or 1", members._replace(s_lo_step=1), consts, config, 4)
    raises("members.s_lo must be contiguous$", members._replace(s_lo=members.s_lo[:1].expand(2)), consts, config, 4)
    raises("members.s_hi must be contiguous or one value", members._replace(s_hi=members.s_hi.repeat(2)[::2]),
           consts, config, 4)


# ---------------------------------------------------------------------------- on CUDA

@requires_cuda
@requires_triton
@pytest.mark.cuda
class TestCuda:
    """The same comparisons with the compiled kernel on a GPU (against eager on the CPU)."""

    @pytest.mark.parametrize("m,steps,log_every", SIZES + [(100_003, 301, 50)])
    def test_sizes_equal_eager(self, m, steps, log_every):
        check_triton("cuda", seeds_for(m), lrs_for(m), steps, log_every=log_every)

    @pytest.mark.parametrize("name", list(OPTIONS))
    def test_options_equal_eager(self, name):
        check_triton("cuda", seeds_for(7), [0.01, 0.003, 0.02, 0.001, 0.005, 0.03, 0.2], 33, **OPTIONS[name])

    @pytest.mark.parametrize("batch_size", [1, 3, 40])
    def test_divergence(self, batch_size):
        check_triton("cuda", [42, 42, 42, 2**64 - 1], [0.001, 0.03, 0.5, 5.0], 120, log_every=4,
                     batch_size=batch_size)

    @pytest.mark.parametrize("case", _spec_cases())
    def test_spec_vectors(self, case):
        _train_spec_case(case, "cuda")

    def test_sample_loop_path(self, monkeypatch):
        from fastneuron.kernels import triton_sgd

        monkeypatch.setattr(triton_sgd, "MAX_UNROLLED_SAMPLES", 0)
        check_triton("cuda", seeds_for(7), lrs_for(7), 23, log_every=2, batch_size=3, momentum=0.5)

    def test_stepper_in_chunks(self):
        _check_stepper_in_chunks("cuda")

    def test_late_steps(self):
        _check_late_steps("cuda")

    def test_tensors_on_different_devices(self):
        from fastneuron.kernels.triton_sgd import TritonStepper

        members = _members([1, 2], [0.01, 0.01], "cuda")
        zeros = torch.zeros(2, device="cuda")
        state = _state(zeros, zeros.clone(), torch.full((2,), -1, device="cuda"))
        with pytest.raises(ValueError, match="members.neg_lr"):
            TritonStepper()(state, 0, members._replace(neg_lr=members.neg_lr.cpu()), _consts("cuda"), nsteps=4,
                            config=_config(), history=None)
        with pytest.raises(ValueError, match="consts.a"):
            TritonStepper()(state, 0, members, _consts("cpu"), nsteps=4, config=_config(), history=None)


# ------------------------------------------- divergence as a count, the CUDA Philox path

@interpreter_test
def test_divergence_count_late_and_chunked():
    """The kernel counts a launch's non-finite steps in int32 and sets diverged_at = t_end -
    count: exact across chunked launches, far into the stream (t0 = 2**40), for a member
    that starts non-finite and one whose diverged_at is already set."""
    from fastneuron.kernels.triton_sgd import TritonStepper

    for batch, t0 in ((1, 0), (1, 2**40), (3, 2**33 + 4)):
        config = _config(batch_size=batch)
        seeds, lrs = seeds_for(6), [0.01, 5.0, 0.5, 2.0, 0.01, 0.01]
        members_cpu, consts_cpu = _members(seeds, lrs, "cpu"), _consts("cpu", batch=batch)
        w0, b0 = init_params(members_cpu.s_lo, members_cpu.s_hi)
        w0[4] = float("inf")  # non-finite from the start: diverges at t0
        div0 = torch.tensor([-1, -1, -1, -1, -1, 12345], dtype=torch.int64)  # member 5: already diverged
        ref, _ = run_steps(_state(w0, b0, div0), torch.tensor(t0), members_cpu, consts_cpu, nsteps=24,
                           config=config)
        got = _state(w0.clone(), b0.clone(), div0.clone())
        for k in range(3):  # three launches of 8 steps
            got = TritonStepper()(got, t0 + 8 * k, members_cpu, consts_cpu, nsteps=8, config=config, history=None)
        assert_bits_equal(f"diverged_at (t0={t0}, B={batch})", ref.diverged_at, got.diverged_at)
        assert ref.diverged_at[4] == t0 and ref.diverged_at[5] == 12345
        assert (ref.diverged_at[1:4] > t0).any(), "the test should include members diverging mid-run"


# The CUDA Philox path (inline-PTX mul.wide.u32, emulated) of both kernels, SGD included:
# tests/test_triton_adam.py::test_cuda_philox_path_emulated.
