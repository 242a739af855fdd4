"""Adam, AdamW and RMSprop (SPEC §3c) against torch.optim, bit for bit.

The oracle is ``torch.optim.Adam/AdamW/RMSprop(..., foreach=False, fused=False)``
stepping one ``nn.Linear(1, 1)`` per member, from the SPEC's init, on the SPEC's x
stream, given the hyperparameters exactly as fastneuron is (the Python floats 0.99, 1e-3,
0.05, ..., never their float32 roundings: torch computes some things from them in float64,
SPEC §3c), with the SPEC §3 gradient written into ``.grad`` (autograd's gradient of the
loss is not the SPEC's to the last bit; the optimizers are what is compared here). It
runs in a subprocess with ``ATEN_CPU_CAPABILITY=default`` (torch's AVX2/AVX-512 kernels
fuse ``lerp``, ``addcmul`` and ``add(alpha=)`` into FMAs; its default kernels round each
operation, which is what SPEC §3c asks) and with ``Tensor.sqrt`` correctly rounded
(torch's CPU float32 sqrt is MKL's, one ulp off on about 17% of inputs); every other
operation is torch's own. Both facts are checked below too, so that a torch that
changes either shows up here.

Also: known answers (final float32 bits of small runs), resume from a checkpoint bit for
bit, and the refusal of bad or unsupported options. Backends: tests/test_adam_compile.py.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from compare import assert_bits_equal, assert_same_results
from conftest import checkpoint_copies, run_oracle

import fastneuron
from fastneuron import rng
from fastneuron.optim import OPTIMIZERS
from fastneuron.optim_adam import bias_correction_tables, sqrt_rn

HERE = pathlib.Path(__file__).resolve().parent
U64_MAX = 2**64 - 1
STEPS = 2000

SEEDS = [0, U64_MAX, 2**32, 42, 7, 12345, 2**63, 99, 5, 31337]
#: Across each optimizer's stability edge: Adam's and RMSprop's steps are about lr long, so
#: small rates converge, rates near 1 wander, and from about 1e19 the gradient's square
#: overflows float32 (inf, then NaN): those members diverge.
LRS = [1e-4, 1e-3, 0.01, 0.05, 0.3, 1.0, 3.0, 2e17, 1e19, 1e36]
WDS = [0.0, 0.01, 0.1, 0.0, 1e-3, 0.5, 0.0, 0.01, 0.0, 0.2]

#: (id, optimizer, batch size, per-member options, run-wide options)
CASES = [
    ("adam-plain-b1", "adam", 1, {}, {}),
    ("adam-wd-amsgrad-b3", "adam", 3, {"weight_decay": WDS, "eps": [1e-8, 1e-6] * 5}, {"amsgrad": True}),
    ("adam-betas-b1", "adam", 1, {"eps": 1e-3}, {"betas": (0.3, 0.99)}),  # 1 - beta1 >= 0.5: lerp's other form
    ("adam-wd-b1", "adam", 1, {"weight_decay": WDS}, {"betas": (0.8, 0.95)}),
    ("adamw-default-b1", "adamw", 1, {}, {}),
    ("adamw-wd-amsgrad-b3", "adamw", 3, {"weight_decay": WDS}, {"amsgrad": True, "betas": (0.5, 0.9)}),
    ("rmsprop-plain-b1", "rmsprop", 1, {}, {}),
    ("rmsprop-centered-momentum-wd-b3", "rmsprop", 3,
     {"weight_decay": WDS, "alpha": [0.99, 0.9, 0.3, 0.5, 0.0] * 2, "eps": [1e-8, 1e-4] * 5},
     {"centered": True, "momentum": 0.9}),
    ("rmsprop-momentum-b1", "rmsprop", 1, {"alpha": 0.9}, {"momentum": 0.5}),
    ("rmsprop-centered-b1", "rmsprop", 1, {"weight_decay": WDS}, {"centered": True}),
    # SPEC §3b through the same oracle: torch.optim.SGD, bit for bit under the default dispatch.
    ("sgd-momentum-wd-dampening-b1", "sgd", 1, {"momentum": [0.0, 0.9, 0.5] * 3 + [0.9], "weight_decay": WDS},
     {"dampening": 0.1}),
    ("sgd-nesterov-b3", "sgd", 3, {"momentum": 0.9}, {"nesterov": True}),
]

#: SGD's stability edge lies near lr = 0.09 on this problem (x in [1, 5)).
SGD_LRS = [1e-4, 1e-3, 0.003, 0.01, 0.02, 0.04, 0.3, 1.0, 10.0, 1e3]


def lrs_of(optimizer: str) -> list:
    return SGD_LRS if optimizer == "sgd" else LRS


def spec_streams(seeds, steps: int, batch: int):
    """(w0, b0) (M,) and x (M, steps*batch) of the SPEC's init and data streams, float32."""
    s = torch.tensor([v - 2**64 if v >= 2**63 else v for v in seeds], dtype=torch.int64)
    s_lo, s_hi = rng.split_seeds(s)
    w0, b0 = rng.init_params(s_lo, s_hi)
    n = steps * batch
    q = torch.arange((n + 3) // 4, dtype=torch.int64)
    block = rng.data_block(s_lo[:, None], s_hi[:, None], q[None, :], torch.tensor(1.0), torch.tensor(4.0))
    xs = torch.stack(block, dim=2).reshape(len(seeds), -1)[:, :n]  # sample n: word n % 4 of block n // 4
    return w0, b0, xs


def spec_gradient(w, b, xs, t: int, batch: int):
    """SPEC §3's gradient (gw, gb) of step t at (w, b): the step's samples of ``xs`` summed
    left to right, then the batch mean (what the oracles write into ``.grad``)."""
    a32, c32 = torch.tensor(2.0), torch.tensor(1.0)
    gw = gb = None
    for j in range(batch):
        x = xs[:, t * batch + j]
        g = 2.0 * ((w * x + b) - (a32 * x + c32))
        gw = g * x if gw is None else gw + g * x
        gb = g if gb is None else gb + g
    if batch > 1:
        gw, gb = gw / float(batch), gb / float(batch)
    return gw, gb


def _per_member(value, m: int) -> list:
    """Each member's value as the user typed it (a Python float, not rounded to float32):
    torch.optim computes ``1 - alpha``, ``lr / bias_correction1``, ``1 - lr*wd`` and a
    scheduler's ``base_lr * factor`` from it in float64, and so must fastneuron (SPEC §3c, §3d)."""
    values = value if isinstance(value, (list, tuple)) else [value] * m
    return [float(v) for v in values]


def torch_optim_run(optimizer: str, seeds, lrs, steps: int, batch: int, member: dict, run: dict,
                    scheduler=None):
    """The oracle (see the module docstring): final (w, b) and diverged_at of each member.
    ``scheduler(opt)``, when given, makes an lr scheduler stepped after every step."""
    m = len(seeds)
    w0, b0, xs = spec_streams(seeds, steps, batch)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
           "sgd": torch.optim.SGD}[optimizer]
    defaults = {name: b.default for name, b in OPTIMIZERS[optimizer].MEMBER_OPTIONS.items()}
    per = {name: _per_member(member.get(name, default), m) for name, default in defaults.items()}
    weight, bias = w0.clone().reshape(m, 1, 1), b0.clone().reshape(m, 1)
    gw_all, gb_all = torch.zeros(m, 1, 1), torch.zeros(m, 1)
    groups = []
    for i in range(m):
        lin = torch.nn.Linear(1, 1)
        lin.weight = torch.nn.Parameter(weight[i])  # shares weight's memory: the optimizer writes there
        lin.bias = torch.nn.Parameter(bias[i])
        lin.weight.grad, lin.bias.grad = gw_all[i], gb_all[i]
        groups.append({"params": [lin.weight, lin.bias], "lr": _per_member(lrs, m)[i],
                       **{k: v[i] for k, v in per.items()}})
    extra = {"foreach": False} if optimizer in ("rmsprop", "sgd") else {"foreach": False, "fused": False}
    if optimizer == "sgd" and run.get("nesterov"):
        extra["momentum"] = 0.9  # SGD checks nesterov against its default; every group sets its own
    opt = cls(groups, **run, **extra)
    sched = None if scheduler is None else scheduler(opt)
    w, b = weight.view(m), bias.view(m)
    diverged = torch.full((m,), -1, dtype=torch.int64)
    with torch.no_grad():
        for t in range(steps):
            gw, gb = spec_gradient(w, b, xs, t, batch)
            gw_all.view(m).copy_(gw)
            gb_all.view(m).copy_(gb)
            opt.step()
            if sched is not None:
                sched.step()
            newly = (diverged < 0) & ~(torch.isfinite(w) & torch.isfinite(b))
            diverged[newly] = t
    return w.clone(), b.clone(), diverged


def _oracle_main(out_path: str, part: int, parts: int) -> None:
    """In a subprocess: cases ``part``, ``part + parts``, ... of CASES through torch.optim,
    saved to ``out_path``."""
    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT", torch.backends.cpu.get_cpu_capability()
    plain_sqrt = torch.Tensor.sqrt
    torch.Tensor.sqrt = lambda self: plain_sqrt(self.double()).float()
    torch.Tensor.sqrt_ = lambda self: self.copy_(plain_sqrt(self.double()))
    arrays = {}
    for name, optimizer, batch, member, run in CASES[part::parts]:
        w, b, d = torch_optim_run(optimizer, SEEDS, lrs_of(optimizer), STEPS, batch, member, run)
        arrays.update({f"{name}/w": w.numpy(), f"{name}/b": b.numpy(), f"{name}/d": d.numpy()})
    np.savez(out_path, **arrays)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """torch.optim's results for every case, computed by two processes at once (CI has two cores)."""
    return run_oracle(HERE / "test_adam.py", tmp_path_factory.mktemp("oracle"), parts=2)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_eager_matches_torch_optim(case, oracle):
    name, optimizer, batch, member, run = case
    res = fastneuron.train(SEEDS, lrs_of(optimizer), STEPS, optimizer=optimizer, batch_size=batch, backend="eager",
                           **member, **run)
    d = oracle[f"{name}/d"]
    assert_bits_equal("diverged_at", d, res.diverged_at)
    assert (d >= 0).any() and (d < 0).sum() >= 5, f"{name}: the case should have stable and diverged members ({d})"
    ok = d < 0  # fastneuron reports NaN for diverged members (SPEC §4); torch holds inf or NaN
    assert res.weight[~ok].isnan().all() and res.bias[~ok].isnan().all()
    assert_bits_equal("weight", oracle[f"{name}/w"][ok], res.weight[ok])
    assert_bits_equal("bias", oracle[f"{name}/b"][ok], res.bias[ok])


# --- the two facts of torch's CPU kernels that SPEC §3c pins down -----------------------------


def _probe(code: str, capability: str) -> str:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          timeout=300).stdout.strip()


_FMA_PROBE = """
import numpy as np, torch
rs = np.random.RandomState(1)
a, e = (rs.standard_normal(4000) * 10.0 ** rs.randint(-4, 4, 4000)).astype(np.float32).reshape(2, -1)
w = np.float32(0.1)
sep = a + w * (e - a)  # numpy float32: one rounding per operation
got = np.array([torch.tensor([float(x)]).lerp_(torch.tensor([float(y)]), 0.1).item() for x, y in zip(a, e)],
               dtype=np.float32)
print(int((got != sep).sum()))
"""


def test_torch_default_kernels_round_each_operation():
    """torch's default CPU kernels (the oracle's) round lerp's ``a + w*(e - a)`` once per
    operation; the AVX2 dispatch, where the CPU has it, fuses it (an FMA)."""
    assert _probe(_FMA_PROBE, "default") == "0"


def test_sqrt_rn_is_correctly_rounded():
    rs = np.random.RandomState(0)
    x = np.abs(rs.standard_normal(200_000)).astype(np.float32) * np.float32(10.0) ** rs.randint(-40, 38, 200_000)
    x = np.concatenate([x.astype(np.float32), np.array([0, 1e-45, 1.17549435e-38, 3.4028235e38, 2.0, 4.0],
                                                       dtype=np.float32)])
    expected = np.sqrt(x)  # numpy: the IEEE float32 square root
    assert_bits_equal("sqrt", torch.from_numpy(expected), sqrt_rn(torch.from_numpy(x)))


def test_bias_correction_tables_are_torch_floats():
    """The host tables are torch.optim.Adam's Python-float arithmetic, with the float32
    step counter stopping at 2**24."""
    bc1, bc2s = bias_correction_tables(0.9, 0.999, 5)
    assert bc1.tolist() == [1 - 0.9 ** s for s in (1.0, 2.0, 3.0, 4.0, 5.0)]
    assert bc2s.tolist() == [float(np.float32((1 - 0.999 ** s) ** 0.5)) for s in (1.0, 2.0, 3.0, 4.0, 5.0)]
    counter = torch.tensor(float(2**24 - 2), dtype=torch.float32)
    for _ in range(4):
        counter += 1
    assert counter.item() == 2**24


# --- known answers -----------------------------------------------------------------------

#: Final float32 bits of small runs (the format of tests/spec-vectors.json's "train" cases,
#: plus the optimizer and its options), as torch.optim computes them under the oracle's
#: conditions (module docstring) from these very arguments (0.01, not float32(0.01): torch
#: computes ``lr / bias_correction1``, ``1 - lr*wd`` and ``1 - alpha`` from the Python
#: floats, SPEC §3c); NaN for diverged members, as fastneuron reports them.
#: They belong in tests/spec-vectors.json, which must stay a copy of the shared contract's
#: file (test_spec_vectors_copy_is_current): they move there when the shared file takes them.
ADAM_VECTORS = [
    {"optimizer": "adam", "seeds": ["0", "1", "18446744073709551615"], "lrs": [0.01, 0.1, 1e+30], "steps": 300,
     "weight_bits": ["3fa4472e", "3fe5637a", "7fc00000"], "bias_bits": ["3fb78ebc", "3fe37a4b", "7fc00000"],
     "diverged_at": [-1, -1, 1]},
    {"optimizer": "adam", "seeds": ["42", "42", "42"], "lrs": [0.003, 0.03, 0.3], "steps": 200, "batch": 3,
     "amsgrad": True, "weight_decay": [0.0, 0.01, 0.1], "eps": [1e-08, 1e-08, 1e-06], "betas": [0.8, 0.99],
     "weight_bits": ["be5d925d", "3fb3d6f4", "4000e4aa"], "bias_bits": ["3fb316d8", "4038a031", "3f6a8c1d"],
     "diverged_at": [-1, -1, -1]},
    {"optimizer": "adamw", "seeds": ["7", "1099511627779"], "lrs": [0.02, 0.5], "steps": 150,
     "weight_decay": [0.01, 0.0], "weight_bits": ["3f803a97", "3ffff528"], "bias_bits": ["40142fef", "3f7eeac0"],
     "diverged_at": [-1, -1]},
    {"optimizer": "rmsprop", "seeds": ["3", "4", "5"], "lrs": [0.001, 0.01, 0.1], "steps": 250,
     "alpha": [0.99, 0.9, 0.5], "centered": True, "momentum": 0.9, "weight_decay": [0.0, 0.001, 0.0],
     "weight_bits": ["400354a5", "3ffe73f5", "40158cd9"], "bias_bits": ["3f51eb83", "3f85f753", "3f441b58"],
     "diverged_at": [-1, -1, -1]},
    {"optimizer": "rmsprop", "seeds": ["11"], "lrs": [0.01], "steps": 100, "batch": 5, "weight_bits": ["3fe5de0e"],
     "bias_bits": ["3fc95de6"], "diverged_at": [-1]},
]


def _case_kwargs(case: dict) -> dict:
    kw = {k: v for k, v in case.items() if k not in ("seeds", "lrs", "steps", "batch", "weight_bits", "bias_bits",
                                                        "diverged_at")}
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    kw["batch_size"] = case.get("batch", 1)
    return kw


def _hex(x: torch.Tensor) -> list:
    return [format(int(v) & 0xFFFFFFFF, "08x") for v in x.view(torch.int32).tolist()]


@pytest.mark.parametrize("case", ADAM_VECTORS, ids=lambda c: f"{c['optimizer']}-{len(c['seeds'])}-{c['steps']}")
def test_known_answers(case):
    res = fastneuron.train([int(s) for s in case["seeds"]], case["lrs"], case["steps"], backend="eager",
                           **_case_kwargs(case))
    assert _hex(res.weight) == case["weight_bits"]
    assert _hex(res.bias) == case["bias_bits"]
    assert res.diverged_at.tolist() == case["diverged_at"]


def test_known_answers_present():
    assert {c["optimizer"] for c in ADAM_VECTORS} == {"adam", "adamw", "rmsprop"}


# --- checkpoints, results, options ---------------------------------------------------------


@pytest.mark.parametrize("optimizer,kw", [
    ("adam", dict(amsgrad=True, weight_decay=[0.0, 0.1, 0.01, 0.0, 0.2])),
    ("rmsprop", dict(centered=True, momentum=0.9, alpha=[0.99, 0.9, 0.5, 0.3, 0.99])),
], ids=["adam-amsgrad", "rmsprop-centered-momentum"])
def test_resume_from_every_checkpoint_is_exact(tmp_path, monkeypatch, optimizer, kw):
    """The optimizer's state (Adam's moments, RMSprop's averages and buffer) is in the
    checkpoint: a run resumed from any checkpoint it wrote ends bit for bit where the
    uninterrupted run ends (and the step tables pick up at the right step)."""
    seeds, lrs = [0, 1, 7, U64_MAX, 12345], [0.01, 0.003, 0.3, 1e25, 1.0]
    kw = dict(optimizer=optimizer, backend="eager", member_block=2, log_every=7, batch_size=2, **kw)
    ref = fastneuron.train(seeds, lrs, 40, **kw)
    assert (ref.diverged_at >= 0).any() and (ref.diverged_at < 0).sum() >= 3
    with checkpoint_copies(monkeypatch, tmp_path) as snaps:
        partial = fastneuron.train(seeds, lrs, 40, checkpoint=tmp_path / "c.ckpt", checkpoint_every=0, **kw)
    assert_same_results(ref, partial)
    assert len(snaps) >= 10
    names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if optimizer == "adam" else \
        ("square_avg", "grad_avg", "momentum_buffer")
    with np.load(snaps[3]) as z:
        assert {f"{n}_{p}" for n in names for p in ("weight", "bias")} <= set(z.files)
    for snap in snaps:
        assert_same_results(ref, fastneuron.train(seeds, lrs, 40, resume=snap, **kw))
    ref.save(tmp_path / "r.npz")
    loaded = fastneuron.load(tmp_path / "r.npz")
    assert_same_results(ref, loaded, members=True)
    assert loaded.settings["optimizer"] == optimizer


def test_resume_refuses_other_betas(tmp_path):
    kw = dict(optimizer="adam", backend="eager")
    fastneuron.train([0, 1], 0.01, 8, checkpoint=tmp_path / "c.ckpt", checkpoint_every=0, **kw)
    with pytest.raises(ValueError, match="other settings.*beta2"):
        fastneuron.train([0, 1], 0.01, 8, resume=tmp_path / "c.ckpt", betas=(0.9, 0.99), **kw)


def test_settings_and_member_options_recorded():
    r = fastneuron.train([0, 1], 0.01, 3, optimizer="adam", betas=(0.8, 0.99), eps=[1e-8, 1e-6], backend="eager")
    assert r.settings["optimizer"] == "adam" and (r.settings["beta1"], r.settings["beta2"]) == (0.8, 0.99)
    assert r.settings["amsgrad"] is False and list(r.member_options) == ["weight_decay", "eps"]
    assert r.eps.tolist() == [float(np.float32(1e-8)), float(np.float32(1e-6))]
    assert fastneuron.train([0], 0.01, 1, optimizer="adamw", backend="eager").weight_decay.tolist() == \
        [float(np.float32(0.01))]


@pytest.mark.parametrize("optimizer,kw,match", [
    ("adam", dict(maximize=True), r"maximize=True is not supported"),
    ("adam", dict(foreach=True), r"foreach=True is not supported"),
    ("adamw", dict(fused=True), r"fused=True is not supported"),
    ("adam", dict(capturable=True), r"capturable=True is not supported"),
    ("rmsprop", dict(differentiable=True), r"differentiable=True is not supported"),
    ("rmsprop", dict(fused=True), r"unknown option 'fused'"),
    ("adamw", dict(decoupled_weight_decay=False), r"decoupled_weight_decay=False is not an option of adamw"),
    ("adam", dict(betas=(0.9,)), r"betas must be two numbers"),
    ("adam", dict(betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\)"),
    ("adam", dict(betas=(-0.1, 0.9)), r"betas\[0\] must be in \[0, 1\)"),
    ("adam", dict(betas="ab"), r"betas must be two numbers"),
    ("adam", dict(amsgrad="yes"), r"amsgrad must be True or False"),
    ("adam", dict(eps=-1e-8), r"eps must be finite and in \[0"),
    ("adamw", dict(weight_decay=[0.1, -0.1]), r"weight_decay must be finite.*member 1"),
    ("rmsprop", dict(alpha=1.0), r"alpha must be finite and in \[0.0, 1.0\)"),
    ("rmsprop", dict(momentum=-0.5), r"momentum must be >= 0"),
    ("rmsprop", dict(centered=1), r"centered must be True or False"),
    ("adam", dict(momentum=0.9), r"unknown option 'momentum' for optimizer 'adam'"),
    ("adam", dict(lr=0.1), r"unknown option 'lr'"),
    ("rmsprop", dict(betas=(0.9, 0.99)), r"unknown option 'betas'"),
])
def test_bad_options_name_the_option(optimizer, kw, match):
    with pytest.raises(ValueError, match=match):
        fastneuron.train([0, 1], 0.01, 2, optimizer=optimizer, backend="eager", **kw)


def test_off_values_of_torch_only_options_are_accepted():
    ref = fastneuron.train([0, 1], 0.01, 5, optimizer="adam", backend="eager")
    same = fastneuron.train([0, 1], 0.01, 5, optimizer="adam", backend="eager", foreach=False, fused=False,
                            maximize=False, capturable=False, differentiable=False)
    assert_same_results(ref, same)
    adamw = fastneuron.train([0, 1], 0.01, 5, optimizer="adamw", backend="eager", weight_decay=0.05)
    assert_same_results(adamw, fastneuron.train([0, 1], 0.01, 5, optimizer="adam", backend="eager",
                                                weight_decay=0.05, decoupled_weight_decay=True))


if __name__ == "__main__":  # the oracle's subprocess (see the ``oracle`` fixture)
    _oracle_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
