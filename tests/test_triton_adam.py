"""backend="triton" runs Adam, AdamW and RMSprop (SPEC §3c) equal to the eager reference,
bit for bit (``kernels/triton_adam.py``).

Without CUDA the kernel runs under the Triton interpreter (``TRITON_INTERPRET=1``, set by
conftest.py before import) on CPU tensors: those tests carry the ``interpreter`` mark and
keep sizes small (the whole file runs in well under a minute). :class:`TestCuda` runs the
same comparisons on a GPU.
"""

import os

import numpy as np
import pytest
import torch
from compare import assert_bits_equal, assert_same_results, seeds_for
from conftest import requires_cuda, requires_triton

import fastneuron as fn

U64_MAX = 2**64 - 1

requires_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="runs the kernel on CPU under TRITON_INTERPRET=1")


def interpreter_test(f):
    """Marks of a test that runs the kernel under the interpreter on CPU tensors."""
    return pytest.mark.interpreter(requires_triton(requires_interpreter(f)))


def check_triton(device: str, *args, **kwargs):
    """train() on backend triton (on ``device``) equals eager on the CPU, bit for bit
    (weights, biases, diverged_at, history); a failure says how many members differ and
    by how much."""
    kwargs.setdefault("progress", False)
    ref = fn.train(*args, backend="eager", device="cpu", **kwargs)
    got = fn.train(*args, backend="triton", device=device, **kwargs)
    assert_same_results(ref, got)
    return got


#: Learning rates from tiny to far past the stability edge: 3e38 takes w past FLT_MAX at
#: its first step (Adam's first step moves each parameter by about lr), 1e30 soon after.
LRS = [1e-3, 0.01, 0.1, 1.0, 1e30, 0.5, 3e38]
WD_MIXED = [0.0, 0.1, 0.01, 0.0, 1.0, 0.5, 0.0]

#: (optimizer, options) on 7 members (seeds 0 and 2**64 - 1 among them) for 37 steps (not
#: a multiple of 4: the unrolled groups of four steps and the loop over the rest).
CASES = {
    "adam": dict(optimizer="adam"),
    "adam_wd_amsgrad": dict(optimizer="adam", amsgrad=True, weight_decay=WD_MIXED, log_every=5),
    "adam_batch3_wd": dict(optimizer="adam", weight_decay=WD_MIXED, batch_size=3, log_every=4),
    "adam_betas_lerp_big_eps": dict(optimizer="adam", betas=(0.5, 0.9), eps=[1e-8, 0.1, 0.0, 1e-3, 1.0, 1e-8, 1e-6]),
    "adam_beta1_zero_amsgrad_batch3": dict(optimizer="adam", betas=(0.0, 0.99), amsgrad=True, batch_size=3),
    "adamw": dict(optimizer="adamw", log_every=1),
    "adamw_wd_mixed_amsgrad_batch3": dict(optimizer="adamw", weight_decay=WD_MIXED, amsgrad=True, batch_size=3,
                                          log_every=7),
    "adamw_wd_off": dict(optimizer="adamw", weight_decay=0.0),
    "rmsprop": dict(optimizer="rmsprop"),
    "rmsprop_wd_eps": dict(optimizer="rmsprop", weight_decay=WD_MIXED, eps=[1e-8, 0.1, 0.0, 1e-3, 1.0, 1e-8, 1e-6],
                           log_every=3),
    "rmsprop_momentum": dict(optimizer="rmsprop", momentum=0.5, log_every=9),
    "rmsprop_centered": dict(optimizer="rmsprop", centered=True, alpha=[0.99, 0.3, 0.6, 0.5, 0.9, 0.0, 0.7]),
    "rmsprop_centered_momentum": dict(optimizer="rmsprop", centered=True, momentum=0.9,
                                      alpha=[0.99, 0.3, 0.6, 0.5, 0.9, 0.0, 0.7]),
    "rmsprop_all_batch3": dict(optimizer="rmsprop", centered=True, momentum=0.5, weight_decay=WD_MIXED, batch_size=3,
                               alpha=[0.9, 0.2, 0.99, 0.45, 0.0, 0.5, 0.8], log_every=6),
}


# ------------------------------------------------------------------- interpreter tests

@pytest.mark.parametrize("name", list(CASES))
@interpreter_test
def test_options_equal_eager(name):
    got = check_triton("cpu", seeds_for(7), LRS, 37, **CASES[name])
    assert got.diverged_at[-1] == 0, "lr 3e38 should diverge at step 0"
    assert (got.diverged_at[:4] < 0).all(), "the small lrs should stay finite"


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("m,steps,log_every", [(1, 9, None), (1031, 6, 2), (5, 0, 1), (5, 3, 1)])
@interpreter_test
def test_sizes_equal_eager(optimizer, m, steps, log_every):
    """M = 1, a prime past one program (1031 > 1024 members), 0 and 3 steps."""
    lrs = [(0.01, 0.3, 1e-3, 3e38, 0.05)[i % 5] for i in range(m)]
    check_triton("cpu", seeds_for(m), lrs, steps, log_every=log_every, optimizer=optimizer)


@interpreter_test
def test_a_member_that_diverges_mid_run():
    """lr 1e30 overflows w*x some steps in (not at the first), for batch 1 and 3; diverged_at,
    the NaN results and the history from that step on match the reference."""
    for batch in (1, 3):
        got = check_triton("cpu", [42, 42, U64_MAX, 0], [0.01, 1e30, 1e30, 1e36], 30, log_every=2, optimizer="adam",
                           batch_size=batch)
        assert (got.diverged_at[1:] > 0).all() and got.diverged_at[0] == -1, got.diverged_at


@interpreter_test
def test_chunks_blocks_and_the_sample_loop(monkeypatch):
    """Through the driver in chunks of 8 steps (state, moments and history rows carry from
    launch to launch), in member blocks, and with the loop over samples forced for every step."""
    from fastneuron.kernels import triton_adam, triton_sgd

    monkeypatch.setattr(triton_sgd.TritonStepper, "chunk_steps", 8)
    check_triton("cpu", seeds_for(7), LRS, 29, log_every=3, member_block=3, optimizer="adam", amsgrad=True,
                 weight_decay=WD_MIXED, batch_size=3)
    monkeypatch.setattr(triton_adam, "MAX_UNROLLED_SAMPLES", 0)
    check_triton("cpu", seeds_for(7), LRS, 21, log_every=2, optimizer="rmsprop", centered=True, momentum=0.3)
    check_triton("cpu", seeds_for(7), LRS, 13, log_every=4, optimizer="adamw", batch_size=2)


@interpreter_test
def test_checkpoint_and_resume(monkeypatch, tmp_path):
    """The moments travel in the checkpoint: a run resumed on triton from a mid-run
    checkpoint (written by triton, chunks of 8 steps) ends where eager ends, bit for bit."""
    import shutil

    from fastneuron import engine
    from fastneuron.kernels import triton_sgd

    run = dict(seeds=seeds_for(7), lrs=LRS, steps=21, log_every=4, member_block=4, optimizer="adam", amsgrad=True,
               weight_decay=WD_MIXED, progress=False)
    ref = fn.train(**run, backend="eager")
    real, snaps = engine.save_checkpoint, []

    def spy(path, spec, **k):
        real(path, spec, **k)
        snaps.append((tmp_path / f"snap{len(snaps)}.ckpt", k["step"]))
        shutil.copyfile(path, snaps[-1][0])

    monkeypatch.setattr(triton_sgd.TritonStepper, "chunk_steps", 8)
    with monkeypatch.context() as mp:
        mp.setattr(engine, "save_checkpoint", spy)
        fn.train(**run, backend="triton", checkpoint=tmp_path / "live.ckpt", checkpoint_every=0)
    mid = [path for path, step in snaps if 0 < step < 21]
    assert mid, snaps
    assert_same_results(ref, fn.train(**run, backend="triton", resume=mid[0]))


@interpreter_test
def test_stepper_far_into_the_run():
    """A launch at t0 = 2**20 + 4 reads its rows of the bias-correction tables (the kernel
    gets the chunk's rows) and the data stream there."""
    from fastneuron.engine import fresh_state
    from fastneuron.kernels import make_stepper
    from fastneuron.reference import run_steps
    from fastneuron.spec import RunSpec

    t0, n = 2**20 + 4, 9
    spec = RunSpec.build(seeds=seeds_for(5), lrs=[0.01, 0.1, 1e-3, 0.5, 1e30], steps=t0 + n, optimizer="adam",
                         backend="eager", device="cpu", amsgrad=True, weight_decay=[0.0, 0.1, 0.0, 0.3, 0.0])
    members, consts, config = spec.block(0, 5, torch.device("cpu")), spec.constants(torch.device("cpu")), spec.config
    stepper = make_stepper("triton")
    start = fresh_state(stepper, members, config, spec.optimizer.state_names(config.flags))
    clone = lambda s: type(s)(*(tuple(x.clone() for x in f) if isinstance(f, tuple) else f.clone() for f in s))  # noqa: E731
    ref, _ = run_steps(clone(start), torch.tensor(t0), members, consts, nsteps=n, config=config)
    got = stepper(clone(start), t0, members, consts, nsteps=n, config=config, history=None)
    assert_bits_equal("diverged_at", ref.diverged_at, got.diverged_at)
    ok = ref.diverged_at < 0  # (a diverged member's w, b and state may hold anything: the engine reports NaN)
    assert ok.sum() == 4
    for name in ("weight", "bias"):
        assert_bits_equal(name, getattr(ref, name)[ok], getattr(got, name)[ok])
    for i in range(len(ref.weight_state)):
        assert_bits_equal(f"weight_state[{i}]", ref.weight_state[i][ok], got.weight_state[i][ok])
        assert_bits_equal(f"bias_state[{i}]", ref.bias_state[i][ok], got.bias_state[i][ok])


try:  # (the interpreter looks tl up in this module's globals)
    import triton
    import triton.language as tl
except ImportError:  # the tests that need it are skipped
    triton = tl = None

if triton is not None:
    @triton.jit
    def _mul_wide_emulated(a, M: tl.constexpr, ASM: tl.constexpr):
        # mul.wide.u32 is exact: the 64-bit product, split into its high and low words.
        p = a.to(tl.uint64) * M
        return (p >> 32).to(tl.uint32), (p & 0xFFFFFFFF).to(tl.uint32)

    from fastneuron.kernels.triton_adam import _div_by_table, _step_size

    @triton.jit
    def _exactness_kernel(x_ptr, inv_c_ptr, q_ptr, neg_lr_ptr, bc1_ptr, inv_bc1_ptr, s_ptr, N: tl.constexpr):
        offs = tl.arange(0, N)
        x = tl.load(x_ptr + offs)
        tl.store(q_ptr + offs, _div_by_table(x, tl.load(inv_c_ptr + offs)))
        neg_lr64 = tl.load(neg_lr_ptr + offs).to(tl.float64)
        tl.store(s_ptr + offs, _step_size(neg_lr64, tl.load(bc1_ptr + offs), tl.load(inv_bc1_ptr + offs)))


@pytest.mark.parametrize("kwargs", [dict(optimizer="adam", amsgrad=True, log_every=5),
                                    dict(optimizer="sgd", batch_size=3, momentum=0.9, log_every=7)])
@interpreter_test
def test_cuda_philox_path_emulated(monkeypatch, kwargs):
    """The CUDA path of ``triton_common._philox`` (PTX_PHILOX: each round's products from
    one inline-PTX mul.wide.u32), with that instruction emulated exactly, equals eager bit
    for bit in both kernels (the helpers live in triton_common, where the patch must go)."""
    from fastneuron.kernels import triton_common as K
    monkeypatch.setattr(K, "PTX_PHILOX", tl.constexpr(True))
    monkeypatch.setattr(K, "_mul_wide", _mul_wide_emulated)
    check_triton("cpu", seeds_for(7) + [0, U64_MAX], [0.01, 0.3, 1e-3, 3e38, 0.05, 0.02, 0.1, 0.01, 0.2], 21,
                 **kwargs)


@interpreter_test
def test_float64_shortcuts_are_exact():
    """The kernel's two float64 shortcuts equal the SPEC's operations on hard inputs:
    f32(float64(x) * float64(1/c)) is the float32 division x / c (x >= 0 with zeros,
    subnormals, huge values, inf and NaN; c in (0, 1]), and two Markstein corrections from
    float64(1/bc1) gives f32(-(lr / bc1)) (lr over the whole float32 range, then float64 lrs
    as given near them, bc1 from 2**-53 to 1)."""
    n = 1 << 14
    rng = np.random.default_rng(12)
    bits = rng.integers(0, 0x7F800000, size=n, dtype=np.int64).astype(np.int32)  # every finite x >= 0
    x = bits.view(np.float32).copy()
    x[:8] = [0.0, np.inf, np.nan, 1e-45, 3.4028235e38, 1.0, 2.0**-126, 0.5]
    betas = rng.choice([0.9, 0.999, 0.5, 0.0, 1 - 2**-53, 0.3], size=n)
    s = rng.integers(1, 3000, size=n).astype(np.float64)
    c = np.array([(1 - b2 ** k) ** 0.5 for b2, k in zip(betas, s)]).astype(np.float32)
    c[:4] = [1.0, np.float32(2**-26), np.float32(0.75), np.float32(1 - 2**-24)]
    bc1 = np.array([1 - b1 ** k for b1, k in zip(betas, s)])
    bc1[:3] = [2.0**-53, 1.0, 0.1]
    lr = (rng.integers(1, 0x7F800000, size=n, dtype=np.int64).astype(np.int32)).view(np.float32).copy()
    lr[:3] = [1e-45, 3.4028235e38, 0.001]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    q, st = torch.empty(n, dtype=torch.float32), torch.empty(n, dtype=torch.float32)
    with np.errstate(all="ignore"):
        _exactness_kernel[(1,)](t(x), 1.0 / t(c).double(), q, t(-lr), t(bc1), 1.0 / t(bc1), st, N=n)
        want_q = x / c  # numpy float32 division: IEEE, correctly rounded
        want_s = (-lr.astype(np.float64) / bc1).astype(np.float32)
    assert_bits_equal("x / c", t(want_q), q)
    assert_bits_equal("f32(-(lr / bc1))", t(want_s), st)
    # lr as given, float64 (SPEC §3c): any double whose float32 value is finite and > 0
    lr64 = lr.astype(np.float64) * (1.0 + (rng.random(n) - 0.5) * 2.0**-23)
    lr64[:4] = [0.05, 1e-3, 0.3, 2.0**-149 * 0.75]
    with np.errstate(all="ignore"):
        _exactness_kernel[(1,)](t(x), 1.0 / t(c).double(), q, t(-lr64), t(bc1), 1.0 / t(bc1), st, N=n)
        want_s = (-lr64 / bc1).astype(np.float32)
    assert_bits_equal("f32(-(lr64 / bc1))", t(want_s), st)


@interpreter_test
def test_launcher_rejects_bad_inputs():
    from fastneuron.kernels.triton_adam import step
    from fastneuron.reference import State
    from fastneuron.spec import RunSpec

    spec = RunSpec.build(seeds=[1, 2], lrs=[0.01, 0.01], steps=8, optimizer="adam", backend="eager", device="cpu")
    members, consts, config = spec.block(0, 2, torch.device("cpu")), spec.constants(torch.device("cpu")), spec.config
    zeros = lambda: torch.zeros(2)  # noqa: E731
    state = State(zeros(), zeros(), (zeros(), zeros()), (zeros(), zeros()), torch.full((2,), -1))

    def raises(match, **kw):
        args = dict(state=state, t0=0, members=members, consts=consts, nsteps=4, config=config) | kw
        with pytest.raises(ValueError, match=match):
            step(args.pop("state"), args.pop("t0"), args.pop("members"), args.pop("consts"), **args)

    raises("state.weight_state must hold exp_avg, exp_avg_sq", state=state._replace(weight_state=(zeros(),)))
    raises("members.options.eps", members=members._replace(options=members.options._replace(eps=torch.ones(3))))
    raises("rows", t0=len(consts.optimizer.bc1))  # past the end of the bias-correction tables
    raises("multiple of 4", t0=2, config=config.__class__(3, config.optimizer, config.flags, config.problem))
    raises("state.bias_state", state=state._replace(bias_state=(zeros(), zeros().double())))
    raises("consts.optimizer.bc1", consts=consts._replace(optimizer=consts.optimizer._replace(
        bc1=consts.optimizer.bc1.float())))


# ---------------------------------------------------------------------------- on CUDA

@requires_cuda
@requires_triton
@pytest.mark.cuda
class TestCuda:
    """The same comparisons with the compiled kernel on a GPU (against eager on the CPU)."""

    @pytest.mark.parametrize("name", list(CASES))
    def test_options_equal_eager(self, name):
        check_triton("cuda", seeds_for(7), LRS, 37, **CASES[name])

    @pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
    def test_many_members_long_run(self, optimizer):
        m = 10_007
        lrs = [(0.01, 0.3, 1e-3, 3e38, 0.05, 1e30)[i % 6] for i in range(m)]
        check_triton("cuda", seeds_for(m), lrs, 2003, log_every=100, optimizer=optimizer, batch_size=1)
