"""SPEC v2 through the whole run: label noise, Gaussian inputs and lr schedules on every
backend, bit for bit; their settings in results and checkpoints; their inputs checked.

The oracle is tests/spec_numpy.py (SPEC written again in NumPy, independently). The
compiled backend is checked against eager on two configurations that between them cover
both ways a compiled segment is cut (whole steps at B = 1, samples at B = 3): each costs a
cold Inductor compile of about a minute on the 2-core CI machine.
"""

import json

import numpy as np
import pytest
import torch

import fastneuron
import spec_numpy as S
from compare import U64_MAX, assert_bits_equal, assert_same_results, seeds_for
from conftest import HAS_CUDA, SPEC_VECTORS, requires_triton
from fastneuron.optim_adam import sqrt_rn
from fastneuron.schedules import make_schedule
from test_spec_numpy import assert_run_matches

#: The Triton kernel's device: CUDA when present, else the CPU under TRITON_INTERPRET=1.
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"

#: Awkward sizes: 7 members (a prime), 37 steps (not a multiple of 4), logged every 5.
M, STEPS, LOG = 7, 37, 5
LRS = [0.01, 0.02, 0.005, 0.09, 0.3, 0.05, 0.001]  # 0.3 diverges on x in [1, 5)
NOISES = [0.0, 0.1, 0.5, 0.0, 1.0, 2.0, 0.25]  # zeros among others: those members skip the noise

CASES = {
    "noise": dict(noise=NOISES),
    "noise scalar": dict(noise=0.3),
    "normal x": dict(x_dist="normal"),
    "normal x + noise, momentum": dict(x_dist="normal", x_mean=3.0, x_std=0.5, noise=NOISES, momentum=0.5),
    "schedule": dict(lr_schedule="warmup:steps=10,start=0.1+cosine:t_max=30,floor=0.05"),
    "schedule + noise, batch 3, wd, nesterov": dict(lr_schedule="step:size=7,gamma=0.5", noise=0.2, batch_size=3,
                                                    weight_decay=0.01, momentum=0.9, nesterov=True),
}


def _numpy_kwargs(kw: dict, steps: int = STEPS) -> dict:
    out = {k: v for k, v in kw.items() if k != "lr_schedule"}
    if "lr_schedule" in kw:
        out["lr_factors"] = make_schedule(kw["lr_schedule"]).factors(steps)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_eager_equals_numpy_oracle(case):
    kw = CASES[case]
    seeds = seeds_for(M)
    res = fastneuron.train(seeds, LRS, STEPS, backend="eager", log_every=LOG, **kw)
    ref = S.train(seeds, LRS, STEPS, log_every=LOG, **_numpy_kwargs(kw))
    assert_run_matches(res, ref, case)


def test_defaults_unchanged():
    """A run without the v2 options: no new settings or arrays, and noise=0, constant
    schedules compute exactly that run."""
    seeds = seeds_for(M)
    plain = fastneuron.train(seeds, LRS, STEPS, backend="eager", log_every=LOG)
    assert list(plain.member_options) == ["momentum", "weight_decay"]
    assert not {"x_dist", "x_mean", "x_std", "lr_schedule", "lr_schedule_sha256"} & set(plain.settings)
    for kw in (dict(noise=0.0), dict(lr_schedule="constant"), dict(lr_schedule=None), dict(x_dist="uniform")):
        again = fastneuron.train(seeds, LRS, STEPS, backend="eager", log_every=LOG, **kw)
        assert_same_results(plain, again, members=True)
        assert again.settings == plain.settings


def test_spec_vectors_v2():
    """The v2 known answers in tests/spec-vectors.json (written by the NumPy oracle) hold."""
    cases = SPEC_VECTORS["v2_train"]
    assert len(cases) >= 4
    for case in cases:
        kw = dict(case["options"])
        res = fastneuron.train([int(s) for s in case["seeds"]], case["lrs"], case["steps"], backend="eager", **kw)
        got = {"weight_bits": [f"{v:08x}" for v in res.weight.view(torch.int32).numpy().view(np.uint32)],
               "bias_bits": [f"{v:08x}" for v in res.bias.view(torch.int32).numpy().view(np.uint32)],
               "diverged_at": res.diverged_at.tolist()}
        want = {k: case[k] for k in got}
        assert got == want, f"{case['options']}: {got} != {want}"
    for case in SPEC_VECTORS["v2_normals"]:
        words = [np.array([int(w, 16)], dtype=np.uint64) for w in case["words"]]
        z = S.normal_block(*words)
        assert [f"{int(v.view(np.uint32)[0]):08x}" for v in z] == case["z_bits"], case


@requires_triton
@pytest.mark.interpreter
@pytest.mark.parametrize("case", list(CASES))
def test_triton_equals_eager(case):
    kw = CASES[case]
    seeds = seeds_for(M)
    eager = fastneuron.train(seeds, LRS, STEPS, backend="eager", log_every=LOG, **kw)
    triton = fastneuron.train(seeds, LRS, STEPS, backend="triton", device=TRITON_DEVICE, log_every=LOG, **kw)
    assert_same_results(eager, triton, members=True)


@requires_triton
@pytest.mark.interpreter
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_triton_adam_with_noise_equals_eager(optimizer):
    kw = dict(optimizer=optimizer, noise=NOISES, x_dist="normal", x_mean=1.0, x_std=2.0)
    seeds = seeds_for(M)
    eager = fastneuron.train(seeds, LRS, STEPS, backend="eager", log_every=LOG, **kw)
    triton = fastneuron.train(seeds, LRS, STEPS, backend="triton", device=TRITON_DEVICE, log_every=LOG, **kw)
    assert_same_results(eager, triton, members=True)


#: The compiled backend's two ways to cut segments, with one stream of normals each (a cold
#: compile costs about a millisecond per op of the graph, and Box-Muller has about 45 ops a
#: pair): whole steps (B = 1) with noise and a schedule; samples (B = 3) with Gaussian x.
COMPILE_CASES = {
    "B=1 noise, schedule, momentum": dict(noise=NOISES, lr_schedule="warmup:steps=10,start=0.1+cosine:t_max=30",
                                          momentum=0.5),
    "B=3 normal x, wd, nesterov": dict(x_dist="normal", x_mean=3.0, x_std=0.5, batch_size=3, weight_decay=0.01,
                                       momentum=0.9, nesterov=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(COMPILE_CASES))
def test_compile_equals_eager(case):
    kw = COMPILE_CASES[case]
    seeds = seeds_for(M)
    eager = fastneuron.train(seeds, LRS, 41, backend="eager", log_every=LOG, **kw)
    compiled = fastneuron.train(seeds, LRS, 41, backend="compile", log_every=LOG, **kw)
    assert_same_results(eager, compiled, members=True)


def test_compiled_sqrt_is_ieee():
    """sqrt_rn traced for the CPU is the float32 sqrt (Inductor's IEEE instruction): the same
    bits as the float64 route on normal, subnormal and special inputs. (A negative input gives
    a NaN of other bits on each route; no caller takes the root of a negative number: Adam's
    and RMSprop's averages and Box-Muller's -2*log(u) are >= 0, or -0, or already NaN.)"""
    gen = torch.Generator().manual_seed(5)
    bits = torch.randint(0, 2**31, (2**16 + 3,), generator=gen, dtype=torch.int64).to(torch.int32)
    x = torch.cat([bits.view(torch.float32), torch.tensor([0.0, -0.0, float("inf"), float("nan"), 1e-45,
                                                            3.4028234663852886e38])])
    compiled = torch.compile(sqrt_rn, fullgraph=True, dynamic=False)
    assert_bits_equal("sqrt", x.double().sqrt().float(), compiled(x))


def test_population_risk_has_the_noise_floor():
    res = fastneuron.train([0, 1, 2], [0.01], 0, backend="eager", noise=[0.0, 0.5, 2.0])
    clean = fastneuron.train([0, 1, 2], [0.01], 0, backend="eager")
    assert torch.equal(res.risk, clean.risk + torch.tensor([0.0, 0.25, 4.0], dtype=torch.float64))
    normal = fastneuron.train([0], [0.01], 0, backend="eager", x_dist="normal", x_mean=2.0, x_std=0.5)
    dw, db = float(normal.weight[0]) - 2.0, float(normal.bias[0]) - 1.0
    expected = dw * dw * (4.0 + 0.25) + 2 * dw * db * 2.0 + db * db
    assert normal.risk[0].item() == pytest.approx(expected, rel=1e-15)


def test_noise_is_its_own_stream():
    """Members that share a seed see the same x and the same eps whatever their sigma (common
    random numbers), so a sweep over sigma at lr -> 0 ... and sigma = 0 is the noise-free run."""
    seeds = [3, 3, 3]
    res = fastneuron.train(seeds, [0.01], 50, backend="eager", noise=[0.0, 0.1, 0.2])
    clean = fastneuron.train([3], [0.01], 50, backend="eager")
    assert_bits_equal("sigma 0", clean.weight, res.weight[:1])
    assert not torch.equal(res.weight[1:2], res.weight[:1])


def test_results_and_checkpoints_record_v2(tmp_path):
    kw = dict(noise=[0.0, 0.3, 0.1], x_dist="normal", x_mean=1.5, x_std=2.0, lr_schedule="exponential:gamma=0.99")
    res = fastneuron.train([0, 1, U64_MAX], [0.01], 20, backend="eager", **kw)
    assert res.settings["x_dist"] == "normal" and res.settings["x_mean"] == 1.5 and res.settings["x_std"] == 2.0
    assert res.settings["lr_schedule"] == "exponential:gamma=0.99"
    assert len(res.settings["lr_schedule_sha256"]) == 64
    assert_bits_equal("noise", torch.tensor([0.0, 0.3, 0.1], dtype=torch.float32), res.noise)
    path = tmp_path / "r.npz"
    res.save(path)
    back = fastneuron.load(path)
    assert_same_results(res, back, members=True)
    assert back.settings == json.loads(json.dumps(res.settings))
    assert torch.equal(back.risk, res.risk)

    ckpt = tmp_path / "run.ckpt"
    fastneuron.train([0, 1, U64_MAX], [0.01], 20, backend="eager", checkpoint=ckpt, **kw)
    again = fastneuron.train([0, 1, U64_MAX], [0.01], 20, backend="eager", resume=ckpt, **kw)
    assert_same_results(res, again, members=True)
    for change, match in ((dict(noise=[0.0, 0.3, 0.2]), "differ"), (dict(x_std=1.0), "x_std"),
                          (dict(x_dist="uniform", x_mean=0.0, x_std=1.0), "x_dist"),
                          (dict(lr_schedule="exponential:gamma=0.98"), "lr_schedule"),
                          (dict(lr_schedule=None), "lr_schedule")):
        with pytest.raises(ValueError, match=match):
            fastneuron.train([0, 1, U64_MAX], [0.01], 20, backend="eager", resume=ckpt, **{**kw, **change})


@pytest.mark.parametrize("kw, match", [
    (dict(noise=-0.1), "noise"),
    (dict(noise=float("nan")), "noise"),
    (dict(noise=[0.1, 0.2]), "noise"),
    (dict(x_dist="cauchy"), "x_dist"),
    (dict(x_dist="normal", x_std=0.0), "x_std"),
    (dict(x_dist="normal", x_mean=float("inf")), "x_mean"),
    (dict(lr_schedule="cosine:t_max=0"), "lr_schedule"),
    (dict(lr_schedule="zigzag"), "lr_schedule"),
    (dict(lr_schedule=lambda t: -1.0), "lr_schedule"),
    (dict(lr_schedule="exponential:gamma=0.5", optimizer="adam"), "lr_schedule"),
    (dict(lr_schedule=lambda t: 1e38, lrs=[10.0, 0.1, 0.1]), "lr_schedule"),
])
def test_bad_inputs_name_the_argument(kw, match):
    lrs = kw.pop("lrs", 0.01)
    with pytest.raises(ValueError, match=match):
        fastneuron.train([0, 1, 2], lrs, 10, backend="eager", **kw)


def test_cli_flags(tmp_path, capsys):
    from fastneuron.__main__ import main

    out = tmp_path / "n.npz"
    assert main(["train", "--seeds", "0:3", "--lrs", "0.01,0.02", "--noise", "0,0.5", "--x-dist", "normal",
                 "--x-mean", "2", "--x-std", "0.5", "--lr-schedule", "warmup:steps=5,start=0.5+step:size=4,gamma=0.5",
                 "--steps", "13", "--backend", "eager", "--quiet", "--out", str(out)]) == 0
    assert "noise levels" in capsys.readouterr().out
    res = fastneuron.load(out)
    assert len(res) == 12 and res.noise.tolist() == [0.0, 0.5] * 6
    direct = fastneuron.train(np.repeat([0, 1, 2], 4), np.tile(np.repeat([0.01, 0.02], 2), 3), 13, backend="eager",
                              noise=[0.0, 0.5] * 6, x_dist="normal", x_mean=2.0, x_std=0.5,
                              lr_schedule="warmup:steps=5,start=0.5+step:size=4,gamma=0.5")
    assert_same_results(direct, res, members=True)
    for argv, message in ((["--noise", "-1"], "--noise"), (["--x-mean", "1"], "--x-dist normal"),
                          (["--lr-schedule", "bogus"], "--lr-schedule")):
        assert main(["train", "--seeds", "0:2", "--steps", "3", "--backend", "eager", "--quiet", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
