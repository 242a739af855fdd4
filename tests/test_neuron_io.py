"""The full neuron (SPEC §6: ``nn.Linear(d, 1)``, an activation, a loss) through the rest of
the library: results in memory and in ``.npz`` files (weight (M, d), history (L, M, d)),
``member(i)`` as a torch module, the risk (closed form, evaluation set, BCE), parts
directories (written, resumed, read back), tables, the CLI, plots, and every bad input as
one ValueError naming its argument, before any work. d in {1, 2, 7}, M in {1, 13}; a run
with v2's settings gives exactly what it gave before."""

from __future__ import annotations

import itertools
import json
import math
import os

import numpy as np
import pytest
import torch

import spec_numpy as S
from compare import assert_same_results

import fastneuron as fn
from fastneuron import __main__ as cli
from fastneuron import engine
from fastneuron.problems import (DEFAULT_EVAL_SAMPLES, Teacher, evaluation_risk, evaluation_x)
from fastneuron.model import Neuron
from fastneuron.spec import RunSpec

SEEDS13 = [0, 2**64 - 1, 2**32, 7, 42, 2**63, 3, 5, 11, 13, 17, 19, 23]
LRS13 = [0.01, 0.02, 0.005, 0.01, 0.5, 0.01, 0.03, 0.01, 0.002, 0.01, 0.02, 0.01, 0.01]  # 0.5 diverges (d = 7)

#: (name, inputs, members, options): v2's run, d = 2 and 7, M = 1 and 13, several models.
RUNS = {
    "v2": (1, 13, dict()),
    "d1-relu": (1, 13, dict(problem="teacher", activation="relu", a=1.5, c=-0.5, lo=-1, hi=1)),
    "d2-tanh": (2, 13, dict(problem="teacher", activation="tanh", a=[0.5, -1.0], c=0.2, lo=-1, hi=1,
                            noise=[0.0, 0.1] * 6 + [0.1])),
    "d7-identity": (7, 13, dict(problem="teacher", init_scale=[1.0, 0.5] * 6 + [2.0], noise=0.1)),
    "d7-relu-nobias": (7, 1, dict(problem="teacher", activation="relu", bias=False, a=0.5, c=0.1, lo=-1, hi=1)),
    "d7-bce": (7, 13, dict(problem="teacher", loss="bce", a=[1, -1, 0.5, 0, 0, 2, -0.5], c=0.0, x_dist="normal")),
}
STEPS, LOG = 24, 5


def train(name: str, **extra):
    d, m, options = RUNS[name]
    inputs = {} if d == 1 else {"inputs": d}
    return fn.train(SEEDS13[:m], LRS13[:m], STEPS, backend="eager", log_every=LOG, progress=False,
                    **inputs, **options, **extra)


@pytest.fixture(scope="module")
def runs() -> dict:
    return {name: train(name) for name in RUNS}


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def same_rows(a: list, b: list) -> bool:
    """Summary rows equal, NaN equal to NaN."""
    def norm(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v
    return [{k: norm(v) for k, v in r.items()} for r in a] == [{k: norm(v) for k, v in r.items()} for r in b]


# -- 1. results in memory and in .npz files ---------------------------------------------

@pytest.mark.parametrize("name", sorted(RUNS))
def test_shapes_len_and_repr(runs, name):
    d, m, _ = RUNS[name]
    r = runs[name]
    L = len(range(0, STEPS, LOG))
    assert len(r) == m and r.inputs == d
    assert r.weight.shape == ((m,) if d == 1 else (m, d)) and r.bias.shape == (m,)
    assert r.history_weight.shape == ((L, m) if d == 1 else (L, m, d)) and r.history_bias.shape == (L, m)
    assert r.risk.shape == (m,) and r.history_risk.shape == (L, m) and r.risk.dtype == torch.float64
    assert repr(r).startswith(f"TrainResult(members={m}, " + (f"inputs={d}, " if d > 1 else "steps="))
    if name == "v2":  # v2 records exactly what it did: no v3 setting
        assert not {"inputs", "bias", "activation", "loss", "target_activation", "eval_samples"} & set(r.settings)
        assert repr(r) == f"TrainResult(members=13, steps={STEPS}, backend='eager', diverged=0, logged={L})"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_npz_round_trip(runs, name, tmp_path):
    r = runs[name]
    r.save(tmp_path / "r.npz")
    back = fn.load(tmp_path / "r.npz")
    assert_same_results(r, back, members=True)
    assert back.settings == r.settings and back.weight.shape == r.weight.shape
    assert torch.equal(back.risk, r.risk) or torch.equal(torch.isnan(back.risk), torch.isnan(r.risk))
    assert torch.allclose(back.history_risk, r.history_risk, equal_nan=True, rtol=0, atol=0)
    assert str(back.summary()) == str(r.summary())


def rewrite(path, out, settings=None, **arrays):
    """``path``'s .npz with its header's settings and some arrays replaced."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(bytes(data["settings"]).decode())
    if settings is not None:
        meta["settings"] = settings
    data.update(arrays)
    data["settings"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(out, **data)


def test_npz_shape_checks_follow_the_settings(runs, tmp_path):
    """(M, d) is accepted only where the settings say inputs=d."""
    r7, r1 = runs["d7-identity"], runs["v2"]
    r7.save(tmp_path / "7.npz")
    r1.save(tmp_path / "1.npz")
    no_inputs = {k: v for k, v in r7.settings.items() if k != "inputs"}
    rewrite(tmp_path / "7.npz", tmp_path / "a.npz", settings=no_inputs)
    with pytest.raises(ValueError, match=r"a\.npz: not a fastneuron result file \(array 'history_weight' is "
                                         r"float32 \(5, 13, 7\), expected float32 \(5, 13\)\)"):
        fn.load(tmp_path / "a.npz")
    rewrite(tmp_path / "7.npz", tmp_path / "b.npz", settings={**r7.settings, "inputs": 3})
    with pytest.raises(ValueError, match=r"expected float32 \(5, 13, 3\)"):
        fn.load(tmp_path / "b.npz")
    rewrite(tmp_path / "7.npz", tmp_path / "f.npz", settings=no_inputs,
            history_weight=r7.history_weight[..., 0].numpy())
    with pytest.raises(ValueError, match=r"array 'weight' is float32 \(13, 7\), expected float32 \(13,\)"):
        fn.load(tmp_path / "f.npz")
    rewrite(tmp_path / "1.npz", tmp_path / "c.npz", weight=r1.weight.numpy().reshape(13, 1))
    with pytest.raises(ValueError, match=r"array 'weight' is float32 \(13, 1\), expected float32 \(13,\)"):
        fn.load(tmp_path / "c.npz")
    rewrite(tmp_path / "7.npz", tmp_path / "d.npz", history_weight=r7.history_weight.numpy()[:, :, :2].copy())
    with pytest.raises(ValueError, match=r"array 'history_weight' is float32 \(5, 13, 2\), expected float32 "
                                         r"\(5, 13, 7\)"):
        fn.load(tmp_path / "d.npz")
    rewrite(tmp_path / "7.npz", tmp_path / "e.npz", settings={**r7.settings, "inputs": 0})
    with pytest.raises(ValueError, match=r"e\.npz: broken 'fastneuron-result' header \(settings do not describe "
                                         r"the problem: ValueError inputs must be"):
        fn.load(tmp_path / "e.npz")


def test_summary_and_plots_for_d_above_one(runs, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from fastneuron import plot

    r = runs["d2-tanh"]  # label noise: the spread columns, w's reduced over its coordinates
    s = r.summary(by=("noise",))
    assert [row["count"] for row in s.rows] == [6, 7]
    for row in s.rows:
        ok = (r.diverged_at < 0).numpy() & (np.asarray(r.noise) == np.float32(row["noise"]))
        w = r.weight.numpy()[ok].astype(np.float64)
        assert row["w_std"] == pytest.approx(math.sqrt(np.mean(w.std(axis=0, ddof=1) ** 2)), rel=1e-12)
        assert row["b_std"] == pytest.approx(r.bias.numpy()[ok].std(ddof=1), rel=1e-6)
        assert math.isnan(row["w_std_pred"])  # the theory is v2's neuron's
    for name in ("d2-tanh", "d7-identity", "d7-bce"):
        res = runs[name]
        plot.risk_vs_lr(res, path=tmp_path / f"{name}-lr.png")
        plot.risk_vs_step(res, path=tmp_path / f"{name}-step.png")
        plot.trajectories(res, path=tmp_path / f"{name}-traj.png")
    plot.spread_vs_lr(r, path=tmp_path / "spread.png")
    with pytest.raises(ValueError, match="edges: the theory's edges hold for plain SGD"):
        plot.risk_vs_lr(r, edges=True)
    assert len(os.listdir(tmp_path)) == 10


# -- 2. member(i) --------------------------------------------------------------------------

def test_member_of_a_v2_run_is_the_tutorials_net(runs):
    from fastneuron.notebook import Net

    r = runs["v2"]
    net = r.member(3)
    assert type(net) is Net and net.fc.weight.item() == r.weight[3].item() and net.fc.bias.item() == r.bias[3].item()
    with pytest.raises(IndexError):
        r.member(13)


@pytest.mark.parametrize("activation", ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "erf", "abs", "square"])
def test_member_is_linear_then_activation(activation):
    d = 7 if activation != "square" else 2
    r = fn.train([3, 4], 0.01, 8, backend="eager", problem="teacher", inputs=d, activation=activation,
                 leaky_slope=0.2, bias=activation != "relu", lo=-1, hi=1)
    module = r.member(-1)
    assert isinstance(module, torch.nn.Sequential) and len(module) == 2
    linear, act = module
    assert isinstance(linear, torch.nn.Linear) and (linear.in_features, linear.out_features) == (d, 1)
    assert (linear.bias is not None) == (activation != "relu")
    assert torch.equal(bits(linear.weight.detach()[0]), bits(r.weight[1]))
    if linear.bias is not None:
        assert torch.equal(bits(linear.bias.detach()), bits(r.bias[1:]))
    expected_type = {"identity": torch.nn.Identity, "relu": torch.nn.ReLU, "leaky_relu": torch.nn.LeakyReLU,
                     "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}.get(activation)
    if expected_type is not None:
        assert type(act) is expected_type
    if activation == "leaky_relu":
        assert act.negative_slope == pytest.approx(0.2)
    # The module computes what the risk's evaluation set does (float32 against float64).
    x = torch.linspace(-1.5, 1.5, 5 * d).reshape(5, d)
    z = x.double() @ r.weight[1].double() + r.bias[1].double()
    want = {"identity": z, "relu": z.clamp(min=0), "leaky_relu": torch.where(z > 0, z, 0.2 * z),
            "sigmoid": torch.sigmoid(z), "tanh": torch.tanh(z), "erf": torch.erf(z / math.sqrt(2)),
            "abs": z.abs(), "square": z * z}[activation]
    with torch.no_grad():
        got = module(x)[:, 0]
    assert got.dtype == torch.float32 and torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6)


def test_member_of_one_input_with_an_activation(runs):
    module = runs["d1-relu"].member(0)
    assert isinstance(module, torch.nn.Sequential) and module[0].in_features == 1 and type(module[1]) is torch.nn.ReLU


# -- 3. the risk ---------------------------------------------------------------------------

@pytest.mark.parametrize("x_dist", ["uniform", "normal"])
@pytest.mark.parametrize("bias", [True, False])
def test_closed_form_risk_against_monte_carlo(x_dist, bias):
    d = 7
    teacher = Teacher(a=[0.5, -1, 2, 0, 0.25, 1, -0.5], c=0.3, lo=-1, hi=2, x_dist=x_dist, x_mean=0.5,
                      x_std=1.5).bind(Neuron(inputs=d, bias=bias))
    rng = np.random.default_rng(5)
    w = rng.normal(size=(3, d)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32) if bias else np.zeros(3, np.float32)
    noise = np.array([0.0, 0.1, 1.0], np.float32)
    risk = teacher.population_risk(torch.from_numpy(w), torch.from_numpy(b), {"noise": torch.from_numpy(noise)})
    n = 400_000
    x = rng.uniform(-1, 2, size=(n, d)) if x_dist == "uniform" else rng.normal(0.5, 1.5, size=(n, d))
    a = teacher.a_values().astype(np.float64)
    err = x @ (w.astype(np.float64) - a).T + (b.astype(np.float64) - np.float32(0.3))  # (n, 3)
    mc = (err**2).mean(axis=0) + noise.astype(np.float64) ** 2
    se = (err**2).std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(risk.numpy() - mc) < 5 * se + 1e-12), (risk, mc, se)
    # A history's (L, M, d) gives (L, M), row by row.
    hist = teacher.population_risk(torch.from_numpy(np.stack([w, w])), torch.from_numpy(np.stack([b, b])),
                                   {"noise": torch.from_numpy(noise)})
    assert hist.shape == (2, 3) and torch.equal(hist[1], risk)


def eval_x_oracle(n: int, d: int, x_dist: str, a32, b32) -> np.ndarray:
    """SPEC §6f's evaluation set from the NumPy oracle's Philox: coordinate i of sample k is
    word k % 4 of block k // 4 of key (3, i), counter (q lo, q hi, 0, 0)."""
    q = np.arange((n + 3) // 4, dtype=np.uint64)
    lo, hi = (q & np.uint64(0xFFFFFFFF)).astype(np.uint64), q >> np.uint64(32)
    cols = []
    for i in range(d):
        words = S.philox((3, i), lo, hi, np.zeros_like(lo), np.zeros_like(lo))
        if x_dist == "uniform":
            z = [S.uniform(w) for w in words]
        else:
            z = S.normal_block(*words)
        vals = [np.float32(a32) + np.float32(b32) * zj for zj in z]
        cols.append(np.stack(vals, axis=1).reshape(-1)[:n].astype(np.float32))
    return np.stack(cols, axis=1).astype(np.float64)


@pytest.mark.parametrize("x_dist, d, n", [("uniform", 1, 4096), ("uniform", 7, 1001), ("normal", 2, 18)])
def test_evaluation_set_is_the_spec_stream(x_dist, d, n):
    kw = dict(lo=-1.0, hi=2.5) if x_dist == "uniform" else dict(x_dist="normal", x_mean=0.5, x_std=2.0)
    teacher = Teacher(eval_samples=n, **kw).bind(Neuron(inputs=d, activation="tanh"))
    x = evaluation_x(teacher)
    a32, b32 = (np.float32(-1.0), np.float32(3.5)) if x_dist == "uniform" else (np.float32(0.5), np.float32(2.0))
    assert x.shape == (n, d) and x.dtype == np.float64 and not x.flags.writeable
    np.testing.assert_array_equal(x, eval_x_oracle(n, d, x_dist, a32, b32))
    # Coordinate i is the same for every d > i.
    wider = evaluation_x(Teacher(eval_samples=n, **kw).bind(Neuron(inputs=d + 3, activation="tanh")))
    np.testing.assert_array_equal(wider[:, :d], x)


def test_evaluation_risk_is_the_mean_loss_of_the_members(runs):
    """Not the closed form (an activation, BCE): the mean loss in float64 on the set, the
    same set for every member (a function of (w, b) alone), noise-free targets."""
    for name, kind in (("d2-tanh", "tanh"), ("d1-relu", "relu"), ("d7-relu-nobias", "relu"), ("d7-bce", "bce")):
        r = runs[name]
        problem = r.problem
        x = evaluation_x(problem)
        assert x.shape == (DEFAULT_EVAL_SAMPLES, r.inputs)
        a = np.broadcast_to(problem.a_values().astype(np.float64), (r.inputs,))
        u = x @ a + np.float64(np.float32(problem.c))
        w = r.weight.numpy().astype(np.float64).reshape(len(r), r.inputs)
        z = x @ w.T + r.bias.numpy().astype(np.float64)  # (N, M)
        if kind == "bce":
            label = (u > 0).astype(np.float64)[:, None]
            want = (np.logaddexp(0, z) - label * z).mean(axis=0)
        else:
            act = np.tanh if kind == "tanh" else (lambda v: np.maximum(v, 0))
            want = ((act(z) - act(u)[:, None]) ** 2).mean(axis=0)
        np.testing.assert_allclose(r.risk.numpy(), want, rtol=1e-12)
        # Each logged row is the risk of that row's parameters.
        last = evaluation_risk(problem, r.history_weight[-1], r.history_bias[-1])
        assert torch.equal(r.history_risk[-1], last)
    # The same (w, b) in another run (other members) has the same risk.
    r = runs["d2-tanh"]
    other = fn.train([SEEDS13[4], 99], [LRS13[4], 0.01], STEPS, backend="eager", problem="teacher", inputs=2,
                     activation="tanh", a=[0.5, -1.0], c=0.2, lo=-1, hi=1, progress=False)
    assert torch.equal(other.risk[0], r.risk[4]) and torch.equal(bits(other.weight[0]), bits(r.weight[4]))


def test_eval_samples_is_recorded_only_when_not_the_default():
    kw = dict(problem="teacher", inputs=2, activation="sigmoid", lo=-1, hi=1)
    r = fn.train([0, 1], 0.01, 8, backend="eager", eval_samples=100, **kw)
    assert r.settings["eval_samples"] == 100 and evaluation_x(r.problem).shape == (100, 2)
    full = fn.train([0, 1], 0.01, 8, backend="eager", **kw)
    assert "eval_samples" not in full.settings and not torch.equal(r.risk, full.risk)
    assert torch.equal(bits(r.weight), bits(full.weight))  # the set changes the risk, never the training


# -- 4. parts directories ------------------------------------------------------------------

@pytest.mark.parametrize("name, block", [("d7-identity", 4), ("d2-tanh", 13), ("d7-relu-nobias", 1), ("v2", 5)])
def test_parts_directory_equals_the_in_memory_result(runs, name, block, tmp_path):
    want = runs[name]
    d, m, _ = RUNS[name]
    got = train(name, out=f"{tmp_path}/out/", member_block=block)
    part = tmp_path / "out" / "part-00000"
    L = len(range(0, STEPS, LOG))
    assert np.load(part / "weight.npy").shape == ((m,) if d == 1 else (m, d))
    assert np.load(part / "history_weight.npy").shape == ((L, m) if d == 1 else (L, m, d))
    assert got.inputs == d and len(got) == m
    for result in (got, fn.load(tmp_path / "out")):
        assert_same_results(want, result, members=True)
        assert_same_results(want, result.to_result(), members=True)
        assert torch.equal(result.risk, want.risk) or torch.allclose(result.risk, want.risk, equal_nan=True,
                                                                      rtol=0, atol=0)
    assert same_rows(got.summary().rows, want.summary().rows)
    assert got.part(0).weight.shape == want.weight.shape
    streamed = got.summary(exact_bytes=0)  # the streaming summary: counts exact, quantiles within 2**-11
    for a, b in zip(streamed.rows, want.summary().rows):
        assert a["count"] == b["count"] and a["diverged"] == b["diverged"]
        assert a["risk_median"] == (None if b["risk_median"] is None else pytest.approx(b["risk_median"], rel=2**-10))


def test_parts_shape_checks_follow_the_settings(tmp_path):
    train("d7-relu-nobias", out=f"{tmp_path}/out/")
    manifest = tmp_path / "out" / "manifest.json"
    meta = json.loads(manifest.read_text())
    meta["settings"].pop("inputs")
    manifest.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"weight\.npy: is float32 \(1, 7\), expected float32 \(1,\)"):
        fn.load(tmp_path / "out")
    meta["settings"]["inputs"] = 2
    manifest.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"weight\.npy: is float32 \(1, 7\), expected float32 \(1, 2\)"):
        fn.load(tmp_path / "out")


def test_parts_summary_spread_over_coordinates(runs, tmp_path):
    want = runs["d2-tanh"]
    got = train("d2-tanh", out=f"{tmp_path}/out/", member_block=5)
    exact, streamed = got.summary(by="noise"), got.summary(by="noise", exact_bytes=0)
    assert same_rows(exact.rows, want.summary(by="noise").rows)
    for a, b in zip(streamed.rows, exact.rows):
        assert a["w_std"] == pytest.approx(b["w_std"], rel=1e-9) and a["w_std_se"] == pytest.approx(b["w_std_se"],
                                                                                                     rel=1e-9)


@pytest.mark.parametrize("after", [1, 4, 9])
def test_a_killed_parts_run_resumes_exactly(runs, after, tmp_path):
    d, m, options = RUNS["d7-identity"]
    want = runs["d7-identity"]
    kw = dict(seeds=SEEDS13, lrs=LRS13, steps=STEPS, backend="eager", log_every=LOG, inputs=d, member_block=5,
              **options)
    spec = RunSpec.build(**kw, out=f"{tmp_path}/out/", checkpoint_every=0, progress=False)
    chunks = itertools.count()

    def die():
        if next(chunks) == after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run(spec, between_chunks=die)
    assert not (tmp_path / "out" / "manifest.json").exists()
    got = fn.train(**kw, out=f"{tmp_path}/out/", resume=f"{tmp_path}/out/", progress=False)
    assert_same_results(want, got, members=True)
    assert int((want.diverged_at >= 0).sum()) >= 1  # a diverged member's NaN rows are written too


def test_in_memory_checkpoint_resume_d7(runs, tmp_path):
    d, m, options = RUNS["d7-identity"]
    kw = dict(seeds=SEEDS13, lrs=LRS13, steps=STEPS, backend="eager", log_every=LOG, inputs=d, member_block=6,
              **options)
    spec = RunSpec.build(**kw, checkpoint=tmp_path / "c.ckpt", checkpoint_every=0, progress=False)
    chunks = itertools.count()

    def die():
        if next(chunks) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run(spec, between_chunks=die)
    got = fn.train(**kw, resume=tmp_path / "c.ckpt", progress=False)
    assert_same_results(runs["d7-identity"], got, members=True)


# -- 5. tables -----------------------------------------------------------------------------

def test_tables_gain_an_input_dimension(runs, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("xarray")
    pytest.importorskip("pyarrow")
    r = runs["d7-identity"]
    m, d, L = 13, 7, len(r.history_steps)
    df = r.to_pandas()
    assert df.index.names == ["member", "input"] and len(df) == m * d
    assert list(df.columns) == ["seed", "lr", "momentum", "weight_decay", "noise", "init_scale", "weight", "bias",
                                "risk", "diverged_at", "step_below_tol"]
    assert np.array_equal(df["weight"].to_numpy().reshape(m, d), r.weight.numpy(), equal_nan=True)
    assert np.array_equal(df.xs(3, level="input")["bias"].to_numpy(), r.bias.numpy(), equal_nan=True)
    long = r.to_pandas(history=True)
    assert list(long.columns) == ["member", "step", "input", "weight", "bias", "risk"] and len(long) == m * L * d
    row = long[(long.member == 2) & (long.step == r.history_steps[1].item()) & (long.input == 5)]
    assert row["weight"].item() == r.history_weight[1, 2, 5].item()
    assert row["risk"].item() == r.history_risk[1, 2].item()
    ds = r.to_xarray()
    assert ds["weight"].dims == ("member", "input") and ds["history_weight"].dims == ("member", "step", "input")
    assert ds["bias"].dims == ("member",) and list(ds["input"].values) == list(range(d))
    assert np.array_equal(ds["history_weight"].values, r.history_weight.numpy().transpose(1, 0, 2), equal_nan=True)
    path = tmp_path / "r.parquet"
    r.to_parquet(path)
    back = fn.load(path)
    assert_same_results(r, back, members=True)
    assert back.settings == r.settings
    plain = pd.read_parquet(path)  # one row per member, the weight a list of d values
    assert len(plain) == m and len(plain["weight"][0]) == d and len(plain["history_weight"][0]) == L * d
    # One input: exactly the forms of before (no input dimension).
    one = runs["d1-relu"]
    assert one.to_pandas().index.names == ["member"] and "input" not in one.to_xarray().dims
    assert "input" not in one.to_pandas(history=True).columns


def test_parquet_refuses_a_weight_of_other_inputs(runs, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    r = runs["d2-tanh"]
    path = tmp_path / "r.parquet"
    r.to_parquet(path)
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"fastneuron"])
    meta["settings"]["inputs"] = 3
    pq.write_table(table.replace_schema_metadata({b"fastneuron": json.dumps(meta).encode()}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="column 'weight' does not hold 3 values"):
        fn.load(tmp_path / "b.parquet")
    del meta["settings"]["inputs"]
    pq.write_table(table.replace_schema_metadata({b"fastneuron": json.dumps(meta).encode()}), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match="column 'weight' is list<.*>, expected float"):
        fn.load(tmp_path / "c.parquet")


# -- 6. the command line -------------------------------------------------------------------

def test_cli_trains_the_full_neuron(tmp_path, capsys):
    argv = ["train", "--seeds", "0:3", "--lrs", "0.01,0.02", "--steps", "16", "--backend", "eager", "--quiet",
            "--problem", "teacher", "--inputs", "7", "--activation", "leaky_relu", "--leaky-slope", "0.1",
            "--no-bias", "--a", "1,0,0,0.5,0,0,-1", "--c", "0.25", "--lo", "-1", "--hi", "1", "--init-scale", "0.5,2",
            "--target-activation", "tanh", "--eval-samples", "512", "--log-every", "4", "--out",
            str(tmp_path / "r.npz")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "members        12 (3 seeds x 2 lrs x 2 init scales)" in out and "median |w|" in out
    assert "bias           none (--no-bias)" in out
    got = fn.load(tmp_path / "r.npz")
    want = fn.train(**fn.grid(range(3), [0.01, 0.02], init_scale=[0.5, 2]), steps=16, backend="eager",
                    problem="teacher", inputs=7, activation="leaky_relu", leaky_slope=0.1, bias=False,
                    a=[1, 0, 0, 0.5, 0, 0, -1], c=0.25, lo=-1, hi=1, target_activation="tanh", eval_samples=512,
                    log_every=4, momentum=0.0, weight_decay=0.0, noise=0.0)
    assert_same_results(want, got, members=True)
    assert got.settings == {**want.settings}
    assert cli.main(["train", "--seeds", "0", "--steps", "8", "--backend", "eager", "--quiet", "--problem", "teacher",
                     "--inputs", "8", "--loss", "bce", "--x-dist", "normal", "--a", "1", "--c", "0"]) == 0
    assert "(8 inputs; teacher |a| = 2.82843)" in capsys.readouterr().out


def test_cli_help_names_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--inputs", "--activation", "--loss", "--no-bias", "--problem", "--a", "--init-scale",
                 "--leaky-slope", "--target-activation", "--c", "--eval-samples", "nn.Linear(D, 1)"):
        assert flag in text, flag


CLI_BAD = {
    ("--inputs", "0"): "--inputs must be an integer in [1, 4096]",
    ("--inputs", "4097", "--problem", "teacher"): "--inputs must be an integer in [1, 4096]",
    ("--problem", "teacher", "--inputs", "3", "--a", "1,2"): "--a has 2 values but --inputs 3",
    ("--activation", "swish"): "--activation must be one of",
    ("--loss", "hinge"): "--loss must be one of",
    ("--problem", "teacher", "--loss", "bce", "--activation", "tanh"): "--loss bce is BCEWithLogitsLoss",
    ("--loss", "bce"): "--loss: 'bce' needs --problem teacher",
    ("--inputs", "3"): "--inputs: --problem linear has one input",
    ("--problem", "student"): "--problem must be one of 'linear', 'teacher'",
    ("--problem", "teacher", "--target-activation", "x"): "--target-activation must be one of",
    ("--init-scale", "0"): "--init-scale must be finite and in (0.0, inf)",
    ("--problem", "teacher", "--eval-samples", "0"): "--eval-samples must be an integer",
    ("--leaky-slope", "inf"): "--leaky-slope must be finite",
    ("--a", "x"): "--a: 'x' is not a number",
}


@pytest.mark.parametrize("extra", list(CLI_BAD), ids=[" ".join(k) for k in CLI_BAD])
def test_cli_bad_input_is_one_line_and_exit_2(extra, capsys, monkeypatch):
    monkeypatch.setattr(fn.api, "run", lambda *a, **k: pytest.fail("the run started"))
    assert cli.main(["train", "--seeds", "0", "--steps", "4", "--backend", "eager", *extra]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("fastneuron: error: "), err
    assert CLI_BAD[extra] in err, err


# -- 7. bad input in the API ---------------------------------------------------------------

API_BAD = [
    (dict(inputs=0), r"^inputs must be an integer in \[1, 4096\], got 0$"),
    (dict(problem="teacher", inputs=4097), r"^inputs must be an integer in \[1, 4096\], got 4097$"),
    (dict(problem="teacher", inputs=2.0), r"^inputs must be an integer"),
    (dict(problem="teacher", inputs=True), r"^inputs must be an integer"),
    (dict(problem="teacher", inputs=3, a=[1, 2]), r"^a has 2 values but inputs=3"),
    (dict(problem="teacher", inputs=2, a=[1, 2, 3]), r"^a has 3 values but inputs=2"),
    (dict(problem="teacher", a=[[1.0]]), r"^a must be a number or a 1-D sequence"),
    (dict(activation="gelu"), r"^activation must be one of 'identity', 'relu'"),
    (dict(problem="teacher", target_activation="gelu"), r"^target_activation must be one of"),
    (dict(loss="l1"), r"^loss must be one of 'mse', 'bce'"),
    (dict(problem="teacher", loss="bce", activation="sigmoid"), r"^loss='bce' is BCEWithLogitsLoss .* needs "
                                                                 r"activation='identity'"),
    (dict(loss="bce"), r"^loss: 'bce' needs problem='teacher'"),
    (dict(problem="linear", inputs=3), r"^inputs: problem='linear' has one input"),
    (dict(problem="teacher", eval_samples=0), r"^eval_samples must be an integer"),
    (dict(init_scale=-1.0), r"^init_scale must be finite and in \(0.0, inf\)"),
    (dict(leaky_slope=float("nan"), activation="leaky_relu"), r"^leaky_slope must be finite"),
    (dict(bias=None), r"^bias must be True or False"),
]


@pytest.mark.parametrize("options, message", API_BAD, ids=[str(o) for o, _ in API_BAD])
def test_bad_input_is_one_value_error_before_any_work(options, message, monkeypatch, tmp_path):
    monkeypatch.setattr(fn.api, "run", lambda *a, **k: pytest.fail("the run started"))
    for extra in ({}, {"out": f"{tmp_path}/dir/"}):
        with pytest.raises(ValueError, match=message):
            fn.train([0, 1], 0.01, 8, backend="eager", **options, **extra)
    assert not os.path.exists(tmp_path / "dir")


# -- review fixes (SPEC §6d, §6f): what a run records and refuses -------------------------

def test_leaky_slope_is_recorded_when_only_the_teacher_uses_it():
    kw = dict(problem="teacher", target_activation="leaky_relu", lo=-3.0, hi=1.0, backend="eager")
    r1 = fn.train([0], 0.01, 5, leaky_slope=0.5, **kw)
    r2 = fn.train([0], 0.01, 5, leaky_slope=0.01, **kw)
    assert r1.settings["leaky_slope"] == 0.5 and r2.settings["leaky_slope"] == 0.01
    assert r1.settings != r2.settings


def test_target_activation_with_bce_is_refused():
    with pytest.raises(ValueError, match="target_activation"):
        RunSpec.build([0], 0.01, 3, problem="teacher", loss="bce", target_activation="tanh", backend="eager")


def test_evaluation_set_too_large_is_refused_before_the_run():
    with pytest.raises(ValueError, match="eval_samples"):
        RunSpec.build([0], 0.01, 1, problem="teacher", inputs=4096, activation="relu", eval_samples=1 << 22,
                      backend="eager")


def test_a_of_one_value_in_a_list_counts_as_one_input():
    with pytest.raises(ValueError, match="a has 1 values but inputs=3"):
        RunSpec.build([0], 0.01, 1, problem="teacher", inputs=3, a=[2.0], backend="eager")
    one = fn.train([0, 1], 0.01, 8, problem="teacher", a=[2.0], backend="eager")
    ref = fn.train([0, 1], 0.01, 8, problem="teacher", a=2.0, backend="eager")
    assert_same_results(one, ref)


def test_spread_prediction_needs_the_unscaled_init():
    r = fn.train(**fn.grid(seeds=range(6), lrs=[0.01], noise=[0.5]), steps=20, backend="eager", init_scale=0.5)
    assert math.isnan(r.summary(by=("lr", "noise")).rows[0]["w_std_pred"])
