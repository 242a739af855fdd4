"""torch.optim parity from the arguments a user types (SPEC §3c, §3d), on every backend.

torch.optim does some arithmetic on the host, in float64, on the Python floats it was
given, and rounds the result to float32: RMSprop's ``1 - alpha``, Adam's ``lr /
bias_correction1``, AdamW's ``1 - lr * weight_decay``, LambdaLR's ``base_lr * factor``. So
``torch.optim.RMSprop(params, lr=0.05)`` (alpha 0.99) and ``fastneuron.train(..., lrs=0.05,
optimizer="rmsprop")`` must agree from the very first step, which they did not while
fastneuron rounded every per-member value to float32 first (issue 22, item 1: step 1 gave
w = -0.3261472 in torch and -0.32614702 in fastneuron, seed 12345).

The oracle is tests/test_adam.py's torch.optim driver (one ``nn.Linear(1, 1)`` per member on
the SPEC's streams, the SPEC's gradient in ``.grad``) given the Python floats unrounded, in a
subprocess under ``ATEN_CPU_CAPABILITY=default`` with the IEEE square root (SPEC §3c says
why). Every case is checked to depend on the float64 arithmetic (its float32-rounded
arguments give other bits), so that it cannot pass by luck. Also: grids, results, parts
directories and checkpoints keep the values as given (``TrainResult.float64``), and a run
whose values are float32 values records and computes what it did before.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import pytest
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_adam import torch_optim_run  # noqa: E402  (the torch.optim driver, unrounded arguments)

from compare import assert_bits_equal, assert_same_results, seeds_for  # noqa: E402
from conftest import checkpoint_copies, requires_triton, run_oracle  # noqa: E402

import fastneuron  # noqa: E402
from fastneuron import engine  # noqa: E402
from fastneuron.optim import OPTIMIZERS  # noqa: E402
from fastneuron.spec import RunSpec  # noqa: E402

requires_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="runs the kernel on CPU under TRITON_INTERPRET=1")


def interpreter_test(f):
    return pytest.mark.interpreter(requires_triton(requires_interpreter(f)))


#: The issue's reproduction: seed 12345, lr 0.05, RMSprop's defaults (alpha 0.99, eps 1e-8).
REPRO_SEED, REPRO_LR, REPRO_STEPS = 12345, 0.05, 1500
#: What torch.optim.RMSprop gives after step 1 there (the issue's figure, -0.3261472).
REPRO_STEP1_WEIGHT = -0.3261472


def wobble(t: int) -> float:
    """A LambdaLR lambda (module level: the oracle's subprocess imports it)."""
    return 1.0 / (1.0 + 0.1 * t) + 0.3 * (t % 3)


#: 5 members (a prime), 45 steps (not a multiple of 4), arguments as typed:
#: id -> (optimizer, batch, lrs, per-member options, run-wide options, LambdaLR lambda or None).
M, STEPS = 5, 45
SEEDS = seeds_for(M)
CASES = {
    "rmsprop-defaults": ("rmsprop", 1, [0.05, 0.01, 1e-3, 0.3, 0.02], {}, {}, None),
    "rmsprop-alpha-centered-momentum-wd-b3": (
        "rmsprop", 3, [0.05, 0.01, 1e-3, 0.003, 0.02],
        {"alpha": [0.99, 0.9, 0.3, 0.7, 0.95], "weight_decay": [0.0, 1e-2, 0.1, 0.0, 1e-3],
         "eps": [1e-8, 1e-6, 1e-8, 1e-3, 1e-8]}, {"centered": True, "momentum": 0.9}, None),
    "adam-defaults": ("adam", 1, [0.05, 0.1, 1e-3, 0.3, 0.07], {}, {}, None),
    "adam-wd-amsgrad-b3": ("adam", 3, [0.05, 0.1, 1e-3, 0.3, 0.07], {"weight_decay": [0.0, 1e-2, 0.1, 0.0, 1e-3]},
                           {"amsgrad": True, "betas": (0.8, 0.99)}, None),
    "adamw-defaults": ("adamw", 1, [0.05, 0.1, 1e-3, 0.3, 0.07], {}, {}, None),
    "adamw-wd-amsgrad": ("adamw", 1, [0.05, 0.1, 1e-3, 0.3, 0.07], {"weight_decay": [1e-2, 0.1, 0.0, 0.05, 0.3]},
                         {"amsgrad": True}, None),
    "sgd-lambdalr-momentum-b3": ("sgd", 3, [0.05, 0.01, 0.03, 0.07, 0.02], {"momentum": 0.9, "weight_decay": 1e-2},
                                 {}, wobble),
    "sgd-lambdalr": ("sgd", 1, [0.05, 0.01, 0.03, 0.07, 0.02], {}, {}, wobble),
}
#: The compile backend, one cold Inductor compile each (tens of seconds on two cores): the
#: issue's reproduction (below), AdamW's decay and LambdaLR's product. (Every optimizer's
#: compiled update against eager, with such arguments: tests/test_adam_compile.py.)
COMPILE_CASES = ["adamw-wd-amsgrad", "sgd-lambdalr-momentum-b3"]


def _train(case: str, m: int = M, backend: str = "eager", rounded: bool = False, **kw):
    optimizer, batch, lrs, member, run, lam = CASES[case]
    if rounded:  # each value's float32 rounding, defaults included (what fastneuron computed before)
        lrs = np.array(lrs, dtype=np.float32)
        member = {k: np.array(member.get(k, b.default) if isinstance(member.get(k), list) else
                              [member.get(k, b.default)] * len(lrs), dtype=np.float32)
                  for k, b in OPTIMIZERS[optimizer].MEMBER_OPTIONS.items()}
    member = {k: (v[:m] if isinstance(v, (list, np.ndarray)) else v) for k, v in member.items()}
    return fastneuron.train(SEEDS[:m], lrs[:m], STEPS, optimizer=optimizer, batch_size=batch, backend=backend,
                            device="cpu", progress=False, lr_schedule=lam, **member, **run, **kw)


def _oracle_run(case: str, m: int):
    optimizer, batch, lrs, member, run, lam = CASES[case]
    member = {k: (v[:m] if isinstance(v, list) else v) for k, v in member.items()}
    scheduler = None if lam is None else (lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lam))
    return torch_optim_run(optimizer, SEEDS[:m], lrs[:m], STEPS, batch, member, run, scheduler=scheduler)


def _oracle_main(out_path: str) -> None:
    """In a subprocess: every case through torch.optim (M and 1 member), and the issue's
    reproduction (after step 1 and after 1500 steps), saved to ``out_path``."""
    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT", torch.backends.cpu.get_cpu_capability()
    plain_sqrt = torch.Tensor.sqrt
    torch.Tensor.sqrt = lambda self: plain_sqrt(self.double()).float()
    torch.Tensor.sqrt_ = lambda self: self.copy_(plain_sqrt(self.double()))
    arrays = {}
    for case in CASES:
        for m in (M, 1):
            w, b, d = _oracle_run(case, m)
            arrays.update({f"{case}/{m}/w": w.numpy(), f"{case}/{m}/b": b.numpy(), f"{case}/{m}/d": d.numpy()})
    for steps in (1, REPRO_STEPS):
        w, b, d = torch_optim_run("rmsprop", [REPRO_SEED], [REPRO_LR], steps, 1, {}, {})
        arrays.update({f"repro/{steps}/w": w.numpy(), f"repro/{steps}/b": b.numpy(), f"repro/{steps}/d": d.numpy()})
    np.savez(out_path, **arrays)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    return run_oracle(HERE / "test_torch_optim_args.py", tmp_path_factory.mktemp("args_oracle"), timeout=600)


def _assert_oracle(oracle, key: str, res, what: str) -> None:
    d = oracle[f"{key}/d"]
    assert_bits_equal(f"{what} diverged_at", d, res.diverged_at)
    ok = d < 0  # fastneuron reports NaN for diverged members (SPEC §4)
    assert ok.any(), f"{what}: every member diverged"
    assert res.weight[~ok].isnan().all() and res.bias[~ok].isnan().all()
    assert_bits_equal(f"{what} weight", oracle[f"{key}/w"][ok], res.weight[ok])
    assert_bits_equal(f"{what} bias", oracle[f"{key}/b"][ok], res.bias[ok])


def _differs(a, b) -> bool:
    return not (torch.equal(a.weight.view(torch.int32), b.weight.view(torch.int32))
                and torch.equal(a.bias.view(torch.int32), b.bias.view(torch.int32)))


# --- the issue's reproduction ------------------------------------------------------------------


def _repro(backend: str, steps: int):
    return fastneuron.train([REPRO_SEED], REPRO_LR, steps, optimizer="rmsprop", backend=backend, device="cpu",
                            progress=False)


def test_issue_reproduction_step1_eager(oracle):
    """torch.optim.RMSprop(lr=0.05) gives -0.3261472 after step 1; so does fastneuron."""
    assert oracle["repro/1/w"].item() == np.float32(REPRO_STEP1_WEIGHT)
    res = _repro("eager", 1)
    assert res.weight.item() == np.float32(REPRO_STEP1_WEIGHT)
    _assert_oracle(oracle, "repro/1", res, "RMSprop step 1")
    # The float32-rounded alpha (what fastneuron used before) gives the issue's other number.
    old = fastneuron.train([REPRO_SEED], REPRO_LR, 1, optimizer="rmsprop", alpha=np.float32(0.99), backend="eager",
                           progress=False)
    assert old.weight.item() == np.float32(-0.32614702)


def test_issue_reproduction_1500_steps_eager(oracle):
    _assert_oracle(oracle, f"repro/{REPRO_STEPS}", _repro("eager", REPRO_STEPS), "RMSprop 1500 steps [eager]")


@interpreter_test
def test_issue_reproduction_1500_steps_triton(oracle):
    _assert_oracle(oracle, f"repro/{REPRO_STEPS}", _repro("triton", REPRO_STEPS), "RMSprop 1500 steps [triton]")


@pytest.mark.slow
def test_issue_reproduction_1500_steps_compile(oracle):
    _assert_oracle(oracle, f"repro/{REPRO_STEPS}", _repro("compile", REPRO_STEPS), "RMSprop 1500 steps [compile]")


# --- every optimizer and LambdaLR, as typed ------------------------------------------------------


@pytest.mark.parametrize("m", [M, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_eager_matches_torch_optim(case, m, oracle):
    res = _train(case, m)
    _assert_oracle(oracle, f"{case}/{m}", res, f"{case} M={m} [eager]")


@pytest.mark.parametrize("case", list(CASES))
def test_cases_depend_on_the_float64_arithmetic(case):
    """Each case's float32-rounded arguments give other bits: the cases test something."""
    assert _differs(_train(case), _train(case, rounded=True)), case


@pytest.mark.parametrize("case", list(CASES))
@interpreter_test
def test_triton_matches_torch_optim(case, oracle):
    for m in (M, 1):
        _assert_oracle(oracle, f"{case}/{m}", _train(case, m, backend="triton"), f"{case} M={m} [triton]")


@pytest.mark.slow
@pytest.mark.parametrize("case", COMPILE_CASES)
def test_compile_matches_torch_optim(case, oracle):
    _assert_oracle(oracle, f"{case}/{M}", _train(case, backend="compile"), f"{case} [compile]")


@interpreter_test
def test_triton_shared_lr_and_shared_float64_alpha():
    """One lr for every member (stride 0 on the device, float32 and float64) and one alpha."""
    for optimizer, kw in (("adam", {}), ("adamw", {"weight_decay": 0.03}), ("rmsprop", {"alpha": 0.97}),
                          ("sgd", {"lr_schedule": wobble, "momentum": 0.9})):
        ref = fastneuron.train(SEEDS, 0.05, 13, optimizer=optimizer, backend="eager", progress=False, **kw)
        got = fastneuron.train(SEEDS, 0.05, 13, optimizer=optimizer, backend="triton", device="cpu",
                               progress=False, **kw)
        assert_same_results(ref, got)


# --- the values as given: grids, float32 input, results, checkpoints ----------------------------


def test_shards_keep_the_values_as_given():
    """A shard (a rank's members, fastneuron.distributed) carries its members' values as given."""
    case = "adamw-wd-amsgrad"
    whole = _train(case)
    spec = RunSpec.build(SEEDS, CASES[case][2], STEPS, optimizer="adamw", amsgrad=True, backend="eager",
                         device="cpu", weight_decay=CASES[case][3]["weight_decay"])
    shard = spec.shard(1, 4, torch.device("cpu"), suffix="", progress=False)
    assert shard.float64["lrs"].tolist() == CASES[case][2][1:4]
    assert "lrs_float64" in shard.member_columns() and shard.digest != spec.digest
    part = engine.run(shard)
    assert torch.equal(part.weight, whole.weight[1:4]) and torch.equal(part.bias, whole.bias[1:4])
    assert part.float64["weight_decay"].tolist() == CASES[case][3]["weight_decay"][1:4]


def test_grid_keeps_the_values_as_given(oracle):
    """A grid's axes keep their Python floats: the same run as the explicit lists."""
    optimizer, batch, lrs, member, run, _ = CASES["rmsprop-alpha-centered-momentum-wd-b3"]
    g = fastneuron.grid(seeds=SEEDS[:1], lrs=lrs[:2], alpha=[0.99, 0.9])
    assert np.asarray(g["lrs"]).dtype == np.float32 and g["alpha"].float64.tolist() == [0.99, 0.9]
    res = fastneuron.train(**g, steps=STEPS, optimizer=optimizer, backend="eager", progress=False)
    # the first axis varies slowest: (lr0, 0.99), (lr0, 0.9), (lr1, 0.99), (lr1, 0.9)
    same = fastneuron.train(SEEDS[:1] * 4, [lrs[0], lrs[0], lrs[1], lrs[1]], STEPS, alpha=[0.99, 0.9] * 2,
                            optimizer=optimizer, backend="eager", progress=False)
    assert_same_results(same, res)
    assert res.float64["alpha"].tolist() == [0.99, 0.9, 0.99, 0.9] and "lrs" not in res.float64
    rounded = fastneuron.train(**fastneuron.grid(seeds=SEEDS[:1], lrs=lrs[:2], alpha=np.float32([0.99, 0.9])),
                               steps=STEPS, optimizer=optimizer, backend="eager", progress=False)
    assert rounded.float64 == {} and _differs(res, rounded)
    assert res.described["alpha_float64"]["values"] == [0.99, 0.9]


def test_float32_values_record_and_compute_what_they_did():
    """Arguments that are float32 values (float32 arrays, or numbers such as 0.5) keep
    nothing more: no ``float64`` in the result or its file, the digest as before."""
    kw = dict(optimizer="rmsprop", backend="eager", progress=False)
    res = fastneuron.train(SEEDS, np.float32(0.05), 9, alpha=np.float32(0.99), **kw)
    assert res.float64 == {}
    spec = RunSpec.build(SEEDS, np.float32(0.05), 9, alpha=0.5, **{k: v for k, v in kw.items() if k != "progress"})
    assert spec.float64 == {}
    typed = RunSpec.build(SEEDS, 0.05, 9, eps=1e-7, weight_decay=0.1, optimizer="adam", backend="eager")
    assert set(typed.float64) == {"lrs"}  # Adam: lr / bias_correction1 (eps and coupled wd: float32 only)
    assert typed.digest != RunSpec.build(SEEDS, np.float32(0.05), 9, optimizer="adam", backend="eager").digest


@pytest.mark.parametrize("bad", [[["lrs"]], ["lrs", "lrs"], ["momentum"], "lrs"])
def test_parquet_with_a_broken_float64_list_is_refused(tmp_path, bad):
    """The metadata's ``float64`` list is checked as the .npz header's and the manifest's
    are: a ValueError naming the file, never a TypeError from an unhashable entry."""
    pytest.importorskip("pyarrow", reason="to_parquet needs the analysis extra (pyarrow)")
    import json

    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    _train("rmsprop-defaults").to_parquet(path)
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"fastneuron"])
    assert meta["float64"] == ["alpha"]
    meta["float64"] = bad
    pq.write_table(table.replace_schema_metadata({b"fastneuron": json.dumps(meta).encode()}), path)
    with pytest.raises(ValueError, match="float64"):
        fastneuron.load(path)


@pytest.mark.parametrize("name", ["r.npz", "r.parquet"])
def test_result_file_and_rerun_from_it(tmp_path, name):
    res = _train("adamw-wd-amsgrad")
    assert set(res.float64) == {"lrs", "weight_decay"}
    assert res.float64["lrs"].dtype == torch.float64 and res.float64["lrs"].tolist() == CASES["adamw-wd-amsgrad"][2]
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow", reason="to_parquet needs the analysis extra (pyarrow)")
        res.to_parquet(tmp_path / name)
    else:
        res.save(tmp_path / name)
    back = fastneuron.load(tmp_path / name)
    assert set(back.float64) == set(res.float64)
    for k in res.float64:
        assert torch.equal(back.float64[k], res.float64[k])
    again = fastneuron.train(SEEDS, back.float64["lrs"], STEPS, optimizer="adamw", amsgrad=True,
                             weight_decay=back.float64["weight_decay"].numpy(), backend="eager", progress=False)
    assert_same_results(res, again)
    plain = fastneuron.train(SEEDS, 0.5, 3, backend="eager", optimizer="adam", progress=False)
    plain.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as z:
        assert not [k for k in z.files if k.endswith("_float64")]


def test_parts_directory_keeps_the_values_as_given(tmp_path):
    res = _train("sgd-lambdalr-momentum-b3")
    out = tmp_path / "run"
    _train("sgd-lambdalr-momentum-b3", out=str(out) + "/", member_block=2)
    parts = fastneuron.load(out)
    assert torch.equal(parts.float64["lrs"], res.float64["lrs"])
    assert_same_results(res, parts.to_result())
    assert torch.equal(parts.part(0).float64["lrs"], res.float64["lrs"][:parts.parts[0][2]])


@pytest.mark.parametrize("case", ["rmsprop-defaults", "adam-wd-amsgrad-b3", "sgd-lambdalr-momentum-b3"])
def test_resume_with_values_as_given(case, tmp_path, monkeypatch):
    """A run with unrounded values resumed from any of its checkpoints ends where the
    uninterrupted run ends; the same run with the float32 values is refused (other members)."""
    ref = _train(case, log_every=4, member_block=2)
    with checkpoint_copies(monkeypatch, tmp_path) as snaps:
        _train(case, log_every=4, member_block=2, checkpoint=tmp_path / "c.ckpt", checkpoint_every=0)
    assert len(snaps) >= 4
    for snap in snaps[1::2]:
        assert_same_results(ref, _train(case, log_every=4, member_block=2, resume=snap))
    with pytest.raises(ValueError, match="other members"):
        _train(case, log_every=4, member_block=2, rounded=True, resume=snaps[1])


if __name__ == "__main__":  # the oracle's subprocess (see the ``oracle`` fixture)
    _oracle_main(sys.argv[1])
