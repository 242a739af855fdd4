"""backend="triton" runs SPEC §6's whole neuron bit for bit as the eager reference:
d inputs, the eight activations, loss="bce", bias=False, init_scale, the teacher problem
(scalar or vector a, uniform or Gaussian x, label noise), every optimizer, batch sizes,
lr schedules, history logging and divergence (kernels/triton_neuron.py).

Without CUDA the kernels run under the Triton interpreter on CPU tensors (conftest.py sets
TRITON_INTERPRET=1): small sizes. M in {1, 13, 130} (none a multiple of a program's
members), d in {1, 2, 7, 64, 300} (d = 1, 2, 7 run neuron_kernel, the weight in registers; 64
and 300 neuron_chunked_kernel), seeds from 0 and 2**64 - 1 on.

Why a pairwise-covering subset: the full product of (d, activation/loss, optimizer, bias,
batch size) is 5 * 9 * 5 * 2 * 2 = 900 runs, hours under the interpreter, while a wrong line
of the kernels shows up in the pair of settings that reaches it (an activation's backward at
one d, an optimizer's state slot with bias=False, the batch sum with the chunked kernel, ...).
:data:`ROWS` (45 runs, one per (d, activation/loss) pair) holds every pair of values of any two
of the five factors at least once (``test_rows_cover_every_pair`` checks it); the other
settings (Gaussian x, noise, vector a, init_scale, target activation, log_every, momentum
variants, amsgrad, ...) ride along on the rows, and the tests after the rows check what no
row reaches: divergence, schedules, state carried across launches and member blocks, the
chunk tree with tiny chunks, the sample loop, and two of the v3 oracle's known answers.
"""

import itertools
import json
import os

import numpy as np
import pytest
import torch
from compare import seeds_for
from conftest import SPEC_VECTORS_PATH, requires_cuda, requires_triton

import fastneuron as fn

U64_MAX = 2**64 - 1

requires_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="runs the kernels on CPU under TRITON_INTERPRET=1")


def interpreter_test(f):
    return pytest.mark.interpreter(requires_triton(requires_interpreter(f)))


# ----------------------------------------------------------------------------- helpers

def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def assert_same(name: str, expected: torch.Tensor, actual: torch.Tensor, member_dim: int) -> None:
    """Bit-for-bit equality; the failure says how many members differ (members along
    ``member_dim``), in how many values, and by how much."""
    assert expected.shape == actual.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    differ = _bits(expected) != _bits(actual)
    if not differ.any():
        return
    members = differ.movedim(member_dim, 0).reshape(differ.shape[member_dim], -1).any(dim=1)
    both = differ & torch.isfinite(expected.double()) & torch.isfinite(actual.double())
    diff = (expected.double() - actual.double()).abs()[both]
    ulps = (_bits(expected).long() - _bits(actual).long()).abs()[both] if expected.dtype == torch.float32 else diff
    first = differ.nonzero()[0].tolist()
    raise AssertionError(
        f"{name}: {int(members.sum())} of {members.numel()} members differ ({int(differ.sum())} values; among "
        f"finite pairs max |diff| {diff.max().item() if diff.numel() else float('nan'):.3g}, max "
        f"{int(ulps.max()) if ulps.numel() else -1} ulp; {int((differ & ~both).sum())} differ in finiteness); first "
        f"at {first}: expected {expected[tuple(first)].item()!r}, got {actual[tuple(first)].item()!r}")


def assert_same_results(ref, got) -> None:
    assert_same("weight", ref.weight, got.weight, 0)  # (M,) or (M, d)
    assert_same("bias", ref.bias, got.bias, 0)
    assert_same("diverged_at", ref.diverged_at, got.diverged_at, 0)
    assert (ref.history_weight is None) == (got.history_weight is None), "one run has a history"
    if ref.history_weight is not None:
        assert_same("history_steps", ref.history_steps, got.history_steps, 0)
        assert_same("history_weight", ref.history_weight, got.history_weight, 1)  # (L, M) or (L, M, d)
        assert_same("history_bias", ref.history_bias, got.history_bias, 1)


def check(m: int, steps: int, lrs=None, seeds=None, device: str = "cpu", **kw):
    """train() on triton (on ``device``) equals eager on the CPU; returns the triton result."""
    kw.setdefault("progress", False)
    kw.setdefault("problem", "teacher")
    seeds = seeds if seeds is not None else (seeds_for(m) if m > 1 else [U64_MAX])
    lrs = lrs if lrs is not None else [(0.05, 0.01, 0.002, 0.5, 0.02)[i % 5] for i in range(m)]
    ref = fn.train(seeds, lrs, steps, backend="eager", device="cpu", **kw)
    got = fn.train(seeds, lrs, steps, backend="triton", device=device, **kw)
    assert_same_results(ref, got)
    return got


# ------------------------------------------------------------------ the covering rows

DS = (1, 2, 7, 64, 300)
ACTS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "erf", "abs", "square", "bce")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop")
BIASES = (True, False)
BATCHES = (1, 3)


def _rows() -> list:
    """One row per (d, activation/loss): i, j their indices; the optimizer (i + j) % 5 (a
    Latin square: every (d, optimizer) and (activation, optimizer) pair), bias (i + j) % 2
    and batch ((i + j + i // 2) // 2) % 2 (every pair, see test_rows_cover_every_pair)."""
    return [(d, act, OPTIMIZERS[(i + j) % 5], BIASES[(i + j) % 2], BATCHES[((i + j + i // 2) // 2) % 2])
            for i, d in enumerate(DS) for j, act in enumerate(ACTS)]


ROWS = _rows()


def _row_kwargs(k: int, d: int, act: str, optimizer: str, bias: bool, batch: int) -> tuple[int, int, dict]:
    """(M, steps, train kwargs) of row k: the factors, plus settings that ride along."""
    m = (13, 130, 1)[k % 3]
    steps = {1: 9, 2: 9, 7: 9, 64: 6, 300: 4}[d]
    kw = dict(inputs=d, bias=bias, batch_size=batch, log_every=(None, 2, 3)[k % 3])
    if act == "bce":
        kw.update(loss="bce")
    else:
        kw.update(activation=act)
        if act == "leaky_relu":
            kw.update(leaky_slope=0.2)
        if k % 4 == 1:
            kw.update(target_activation=("tanh", "identity", "relu", "sigmoid")[k % 7 % 4])
    if k % 3 == 0:
        kw.update(x_dist="normal", x_mean=0.25, x_std=1.5)
    else:
        kw.update(lo=-2.0, hi=2.0) if k % 2 else kw.update(lo=0.5, hi=1.5)
    if k % 4 == 2:
        kw.update(noise=[(0.0, 0.3, 1.0)[i % 3] for i in range(m)] if m > 1 else 0.5)
    if d > 1 and k % 2 == 0:
        kw.update(a=[(-1.0) ** i * (0.5 + i / d) for i in range(d)])
    else:
        kw.update(a=(1.5, -0.75)[k % 2])
    kw.update(c=(0.25, -0.5, 0.0)[k % 3])
    if k % 5 == 3:
        kw.update(init_scale=[(0.5, 2.0, 1.0)[i % 3] for i in range(m)] if m > 1 else 3.0)
    if optimizer == "momentum":
        kw.update(momentum=[(0.9, 0.0, 0.5)[i % 3] for i in range(m)] if m > 1 else 0.9,
                  weight_decay=0.01 if k % 2 else 0.0, dampening=0.1 if k % 3 == 1 else 0.0)
        if k % 3 == 2:
            kw.update(momentum=0.8, nesterov=True, dampening=0.0)
    elif optimizer in ("adam", "adamw"):
        kw.update(optimizer=optimizer, amsgrad=k % 2 == 0, betas=(0.8, 0.99) if k % 3 == 1 else (0.9, 0.999))
        if optimizer == "adamw" or k % 4 == 3:
            kw.update(weight_decay=[(0.01, 0.0, 0.1)[i % 3] for i in range(m)] if m > 1 else 0.01)
    elif optimizer == "rmsprop":
        kw.update(optimizer="rmsprop", centered=k % 2 == 1, momentum=0.5 if k % 3 else 0.0,
                  alpha=0.9 if k % 2 else 0.99)
    return m, steps, kw


def test_rows_cover_every_pair():
    """Every pair of values of any two of (d, activation/loss, optimizer, bias, batch)."""
    levels = (DS, ACTS, OPTIMIZERS, BIASES, BATCHES)
    for a, b in itertools.combinations(range(5), 2):
        have = {(r[a], r[b]) for r in ROWS}
        missing = set(itertools.product(levels[a], levels[b])) - have
        assert not missing, f"factors {a}, {b}: {sorted(missing)[:5]} not covered"
    assert len(ROWS) == 45


ROW_IDS = [f"d{r[0]}-{r[1]}-{r[2]}-{'bias' if r[3] else 'nobias'}-B{r[4]}" for r in ROWS]


def _check_row(k, row, device="cpu", steps=None):
    m, row_steps, kw = _row_kwargs(k, *row)
    lrs = None
    if row[2] in ("adam", "adamw", "rmsprop"):
        lrs = [(0.01, 0.003, 0.05, 1.0)[i % 4] for i in range(m)]
    check(m, steps or row_steps, lrs, device=device, **kw)


@pytest.mark.parametrize("k,row", list(enumerate(ROWS)), ids=ROW_IDS)
@interpreter_test
def test_rows_equal_eager(k, row):
    _check_row(k, row)


# ------------------------------------------------------------------- targeted tests

@pytest.mark.parametrize("d,batch", [(7, 1), (300, 3)])
@interpreter_test
def test_divergence(d, batch):
    """Members that blow up: diverged_at, NaN results and the history equal eager's."""
    rates = (0.01, 3.0, 30.0, 0.001) if d < 100 else (1e-7, 1e-4, 1e-3, 1e-8)
    got = check(13, 16, lrs=[rates[i % 4] for i in range(13)], inputs=d, batch_size=batch,
                activation="square", log_every=3, lo=-2.0, hi=2.0)
    assert (got.diverged_at >= 0).any() and (got.diverged_at < 0).any()


@interpreter_test
def test_lr_schedule():
    check(13, 11, inputs=7, activation="tanh", momentum=0.9, nesterov=True, log_every=2,
          lr_schedule="warmup:steps=3+cosine:t_max=8")


@pytest.mark.parametrize("d,opts", [(7, dict(optimizer="adam", amsgrad=True, batch_size=3)),
                                    (300, dict(momentum=0.9, batch_size=2)),
                                    (2, dict(optimizer="rmsprop", centered=True, momentum=0.3))])
@interpreter_test
def test_state_carried_across_launches(monkeypatch, d, opts):
    """Launches of 4 steps and member blocks of 5: the optimizer's state, the weights and
    the history rows go from launch to launch through their (d, M) tensors."""
    from fastneuron.kernels import triton_sgd

    monkeypatch.setattr(triton_sgd.TritonStepper, "chunk_steps", 4)
    check(13, 8 if d > 100 else 14, inputs=d, activation="sigmoid", log_every=3, member_block=5, x_dist="normal",
          noise=0.2, **opts)


@pytest.mark.parametrize("d,chunk", [(7, 1), (5, 2), (13, 4), (16, 4)])
@interpreter_test
def test_chunk_tree(monkeypatch, d, chunk):
    """The chunked kernel at small d with tiny chunks: the tree over chunk sums (the stack of
    ``_push``/``_fold``, padding chunks included) is SPEC §6c's tree."""
    from fastneuron.kernels import triton_neuron

    monkeypatch.setattr(triton_neuron, "REGISTER_BUDGET", 0)
    monkeypatch.setattr(triton_neuron, "UNCACHED_BUDGET", 0)
    monkeypatch.setattr(triton_neuron, "INTERPRET_CHUNK", chunk)
    assert triton_neuron.layout(d, 0, chunk)["chunked"]
    check(13, 6, inputs=d, x_dist="normal", a=[(-1.0) ** i * (1 + i) / d for i in range(d)], log_every=2,
          batch_size=(1, 3)[d % 2])


@pytest.mark.parametrize("batch,steps", [(3, 6), (36, 2)])
@interpreter_test
def test_sample_loop(monkeypatch, batch, steps):
    """Steps not unrolled: the loop over samples (B = 36 has GROUP*B > 32; B = 3 with
    unrolling off)."""
    from fastneuron.kernels import triton_neuron

    if batch == 3:
        monkeypatch.setattr(triton_neuron, "NEURON_MAX_UNROLLED_SAMPLES", 0)
    check(13, steps, inputs=7, batch_size=batch, activation="erf", noise=0.5, log_every=1)


@interpreter_test
def test_teacher_d1_runs_the_v2_kernel():
    """The teacher problem at d = 1 with v2's neuron is v2's linear problem (SPEC §6d): it
    runs the v2 kernels (same bits as eager, and as problem='linear')."""
    from fastneuron.kernels import triton_neuron
    from fastneuron.spec import RunSpec

    got = check(13, 9, x_dist="normal", noise=0.5, momentum=0.9)
    linear = fn.train(seeds_for(13), [(0.05, 0.01, 0.002, 0.5, 0.02)[i % 5] for i in range(13)], 9,
                      backend="triton", progress=False, x_dist="normal", noise=0.5, momentum=0.9)
    assert_same("weight", linear.weight, got.weight, 0)
    spec = RunSpec.build([0], [0.1], 3, problem="teacher", backend="eager")
    assert triton_neuron.as_linear(spec.config, spec.constants(torch.device("cpu"))) is not None
    spec = RunSpec.build([0], [0.1], 3, problem="teacher", backend="eager", target_activation="tanh")
    assert triton_neuron.as_linear(spec.config, spec.constants(torch.device("cpu"))) is None


@interpreter_test
def test_registry_runs_spec6():
    from fastneuron import kernels

    cpu = torch.device("cpu")
    for model in ({"inputs": 300}, {"activation": "erf"}, {"bias": False}, {"loss": "bce", "inputs": 4}):
        assert kernels.unavailable("triton", cpu, "adam", "teacher", model) is None
    assert kernels.resolve("triton", cpu, "rmsprop", "teacher", {"inputs": 7}) == "triton"


def _v3_cases():
    cases = json.loads(SPEC_VECTORS_PATH.read_text())["v3_train"]
    # d = 2, SGD, one member diverging at step 31; d = 7, bce: fast enough for the interpreter.
    return [pytest.param(cases[i], id=f"v3_train{i}") for i in (5, 10)]


@pytest.mark.parametrize("case", _v3_cases())
@interpreter_test
def test_v3_oracle_vectors(case):
    """Known answers of the independent NumPy oracle (tests/spec_numpy_v3.py)."""
    kw = dict(case["options"])
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    res = fn.train([int(s) for s in case["seeds"]], case["lrs"], case["steps"], backend="triton", device="cpu",
                   problem="teacher", progress=False, **kw)
    m, d = len(case["seeds"]), kw["inputs"]
    w = np.array([int(h, 16) for h in np.ravel(case["weight_bits"])], np.uint32).view(np.float32)
    b = np.array([int(h, 16) for h in case["bias_bits"]], np.uint32).view(np.float32)
    assert_same("weight", torch.from_numpy(w.reshape((m, d) if d > 1 else (m,)).copy()), res.weight, 0)
    assert_same("bias", torch.from_numpy(b.copy()), res.bias, 0)
    assert res.diverged_at.tolist() == case["diverged_at"]


def test_rows_reach_every_kernel_layout():
    """The rows run neuron_kernel with the x cache (d = 1, 2, 7), without it (d = 64, SGD)
    and neuron_chunked_kernel (d = 300; d = 64 with Adam), under the interpreter's chunks."""
    from fastneuron.kernels import triton_neuron

    slots = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2, "rmsprop": 1}
    seen = set()
    for k, (d, act, opt, bias, batch) in enumerate(ROWS):
        kw = _row_kwargs(k, d, act, opt, bias, batch)[2]
        n = slots[opt] + (opt in ("adam", "adamw") and kw.get("amsgrad", False)) + \
            (opt == "rmsprop" and kw.get("centered", False)) + (opt == "rmsprop" and kw.get("momentum", 0) != 0)
        lay = triton_neuron.layout(d, n, triton_neuron.INTERPRET_CHUNK)
        seen.add("chunked" if lay["chunked"] else f"registers, XCACHE={lay['XCACHE']}")
    assert seen == {"chunked", "registers, XCACHE=True", "registers, XCACHE=False"}


@pytest.mark.skipif(not __import__("fastneuron.kernels.sass", fromlist=["sass"]).tools_available(),
                    reason="needs triton's ptxas, cuobjdump and nvdisasm")
def test_sass_no_fma_and_no_spills():
    """Compiled for sm_90 (no GPU needed): no FFMA but IEEE division's and square root's
    (SPEC §6: every product rounded), and at d = 8 no register spills."""
    from fastneuron.kernels import sass

    names = ["neuron d8", "neuron d8 normal", "neuron d1024"]
    rows = {r["name"]: r for r in sass.report(names)}
    for name in names:
        assert rows[name]["ffma_outside_division"] == 0, name
        assert rows[name]["instructions_per_parameter_step"] > 0
    assert rows["neuron d8"]["n_spills"] == 0 and rows["neuron d8"]["local_memory_in_loop"] == 0


@requires_cuda
@requires_triton
@pytest.mark.cuda
class TestCuda:
    """The rows and the divergence test with the compiled kernels on a GPU (against eager on
    the CPU): the CUDA-only code (Philox's mul.wide.u32 with the per-coordinate key, the
    one-member-a-thread layout, BLOCK = 128) runs here only. Longer runs than the
    interpreter's: 61 steps, past a chunk of groups and its remainder."""

    @pytest.mark.parametrize("k,row", list(enumerate(ROWS)), ids=ROW_IDS)
    def test_rows_equal_eager(self, k, row):
        _check_row(k, row, "cuda", steps=61)

    @pytest.mark.parametrize("d,batch", [(7, 1), (64, 3), (300, 3), (4096, 1)])
    def test_divergence(self, d, batch):
        rates = (0.01, 3.0, 30.0, 0.001) if d < 100 else (1e-7, 1e-4, 1e-3, 1e-8)
        check(13, 40, lrs=[rates[i % 4] for i in range(13)], inputs=d, batch_size=batch, activation="square",
              log_every=3, lo=-2.0, hi=2.0, device="cuda")
