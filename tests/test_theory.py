"""fastneuron.theory: moments, E[A (x) A], the three edges, the stationary law under label
noise, against Monte Carlo, float64 simulations of the recursion and seed ensembles of
fastneuron.train. Every statistical tolerance is a multiple of a standard error
computed from the sample itself."""

import math

import numpy as np
import pytest
import fastneuron as fn
from fastneuron import theory as th

UNIFORM = th.SGDProblem.make()
UNIFORM4 = th.SGDProblem.make(batch_size=4)
NORMAL = th.SGDProblem.make(x_dist="normal", x_mean=0.0, x_std=1.0)
NORMAL4 = th.SGDProblem.make(x_dist="normal", x_mean=0.0, x_std=1.0, batch_size=4)
#: Standard errors allowed: 10 or so comparisons a test, so 4.5 se are a ~1e-4 false alarm.
Z = 4.5


def _draw_A(p: th.SGDProblem, lr: float, n: int, rng) -> np.ndarray:
    x = p.sample_x(rng, (n, p.batch_size))
    z = np.stack([x, np.ones_like(x)], axis=-1)  # (n, B, 2)
    M = np.einsum("nbi,nbj->nij", z, z)
    return np.eye(2) - (2.0 * lr / p.batch_size) * M


# -- moments and the expected maps ----------------------------------------------------------

def test_x_moments():
    grid = np.linspace(1.0, 5.0, 2_000_001)
    mid = 0.5 * (grid[1:] + grid[:-1])
    assert UNIFORM.moments == pytest.approx([np.mean(mid**k) for k in range(5)], rel=1e-10)
    nodes, weights = np.polynomial.hermite_e.hermegauss(10)  # weight exp(-x^2/2)
    for mu, s in [(0.0, 1.0), (1.5, 0.5), (-2.0, 3.0)]:
        p = th.SGDProblem.make(x_dist="normal", x_mean=mu, x_std=s)
        quad = [np.sum(weights * (mu + s * nodes) ** k) / math.sqrt(2 * math.pi) for k in range(5)]
        assert p.moments == pytest.approx(quad, rel=1e-12, abs=1e-12)
    # From a result's settings (float32 values, missing x_dist = uniform), and overrides.
    assert th.problem_of({"a": 2.0, "c": 1.0, "lo": 1.0, "hi": 5.0, "batch_size": 3}) == \
        th.SGDProblem.make(batch_size=3)
    assert th.problem_of(UNIFORM, batch_size=4) == UNIFORM4
    assert th.problem_of(x_dist="normal", x_mean=0.1).x_mean == float(np.float32(0.1))
    with pytest.raises(ValueError, match="x_dist"):
        th.SGDProblem.make(x_dist="cauchy")


@pytest.mark.parametrize("p, lr", [(UNIFORM, 0.05), (UNIFORM4, 0.08), (NORMAL, 0.3)], ids=["u1", "u4", "n1"])
def test_expected_AA_matches_monte_carlo(p, lr):
    rng = np.random.default_rng(1)
    A = _draw_A(p, lr, 200_000, rng)
    AA = np.einsum("nij,nkl->nikjl", A, A).reshape(-1, 4, 4)  # kron per sample
    for sample, exact in [(A, th.expected_A(lr, p)), (AA, th.expected_AA(lr, p))]:
        mean, se = sample.mean(0), sample.std(0, ddof=1) / math.sqrt(len(sample))
        # (1e-10: the rounding of the constant entries, whose se is 0)
        assert np.all(np.abs(mean - exact) <= Z * se + 1e-10), (mean, exact, se)
    kron = np.kron(A[0], A[0])  # the layout: vec(A S A^T) = (A (x) A) vec(S)
    S = np.array([[1.0, 0.3], [0.3, 2.0]])
    assert (kron @ S.reshape(4)).reshape(2, 2) == pytest.approx(A[0] @ S @ A[0].T, rel=1e-12)


# -- edges -------------------------------------------------------------------------------

def test_mean_and_mean_square_edges():
    for p in (UNIFORM, UNIFORM4, NORMAL, NORMAL4):
        mean, ms = th.mean_edge(p), th.mean_square_edge(p)
        assert 0 < ms <= mean
        assert th._rho(th.expected_A(mean, p)) == pytest.approx(1.0, abs=1e-12)
        assert th._rho(th.expected_AA(ms, p)) == pytest.approx(1.0, abs=1e-9)
        assert th._rho(th.expected_AA(ms * (1 - 1e-6), p)) < 1 < th._rho(th.expected_AA(ms * (1 + 1e-6), p))
    # Closed forms: N(0, 1), B = 1: K = I, so the mean edge is 1 and E[A S A^T] on diag(S)
    # is [[1-4l+12l^2, 4l^2], [4l^2, 1-4l+4l^2]]: rho = 1 at l = 1 - 1/sqrt(2).
    assert th.mean_edge(NORMAL) == pytest.approx(1.0, rel=1e-14)
    assert th.mean_square_edge(NORMAL) == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-12)
    # A larger batch averages the steps: the mean-square edge rises towards the mean edge.
    edges = [th.mean_square_edge(UNIFORM, batch_size=b) for b in (1, 2, 4, 16, 256)]
    assert np.all(np.diff(edges) > 0) and edges[-1] == pytest.approx(th.mean_edge(UNIFORM), rel=2e-3)


def test_almost_sure_edge_and_lyapunov():
    """gamma <= (1/2) log rho(E[A (x) A]) (Jensen), so mean_square <= almost_sure. Where the
    a.s. edge falls against the mean edge depends on the problem; measured here."""
    found = {}
    for name, p in [("u1", UNIFORM), ("u4", UNIFORM4), ("n1", NORMAL)]:
        e = th.almost_sure_edge(p)
        found[name] = e
        assert e.chains == th.LYAP_CHAINS and 0 < e.se < 1e-3 * e.lr
        ms = th.mean_square_edge(p)
        assert e.lr > ms + 10 * e.se
        lrs = np.array([0.5 * ms, 0.9 * ms, e.lr - 20 * e.se, e.lr + 20 * e.se, 1.3 * e.lr])
        g = th.lyapunov(lrs, p)
        assert np.all(g.gamma[:3] + Z * g.se[:3] < 0) and np.all(g.gamma[3:] - Z * g.se[3:] > 0)
        jensen = np.array([0.5 * math.log(th._rho(th.expected_AA(lr, p))) for lr in lrs])
        assert np.all(g.gamma <= jensen + Z * g.se)
        # Small lr: gamma ~ -2 lr lambda_min(K) (a long burn-in: the direction mixes slowly).
        small = 0.02 * ms
        g = th.lyapunov(small, p, burn=3000, steps=1000, chains=500).gamma
        assert g == pytest.approx(-2 * small * np.linalg.eigvalsh(p.K)[0], rel=0.02)
    # Uniform [1, 5), B = 1: ms < a.s. < mean; B = 4: ms < mean < a.s.; N(0, 1): ms < a.s. < mean.
    assert found["u1"].lr + 10 * found["u1"].se < th.mean_edge(UNIFORM)
    assert found["u4"].lr - 10 * found["u4"].se > th.mean_edge(UNIFORM4)
    assert found["n1"].lr + 10 * found["n1"].se < th.mean_edge(NORMAL)
    # A second, independent and larger sample agrees within the standard errors.
    other = th.almost_sure_edge(UNIFORM, chains=3000, steps=3000, seed=7)
    assert abs(other.lr - found["u1"].lr) <= Z * math.hypot(other.se, found["u1"].se)


# -- label noise: the stationary law -------------------------------------------------------------

def _simulate(p: th.SGDProblem, lr: float, sigma: float, steps: int, chains: int, rng, delta0=None):
    """The float64 recursion delta' = A delta + lr (2/B) sum_j sigma eps_j z_j, many chains."""
    d = np.zeros((2, chains)) if delta0 is None else delta0.copy()
    B, coef = p.batch_size, 2.0 * lr / p.batch_size
    for _ in range(steps):
        x = p.sample_x(rng, (B, chains))
        e = sigma * rng.standard_normal((B, chains))
        r = (x * d[0] + d[1]) - e  # y - t, per sample
        d = d - coef * np.stack([(r * x).sum(0), r.sum(0)])
    return d


def _check_second_moment(d: np.ndarray, mean: np.ndarray, S: np.ndarray):
    n = d.shape[1]
    m, m_se = d.mean(1), d.std(1, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(m - mean) <= Z * m_se), (m, mean, m_se)
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        prod = d[i] * d[j]
        est, se = prod.mean(), prod.std(ddof=1) / math.sqrt(n)
        assert abs(est - S[i, j]) <= Z * se, ((i, j), est, S[i, j], se)


@pytest.mark.parametrize("p, lr, sigma", [(UNIFORM, 0.02, 0.1), (UNIFORM, 0.055, 0.3), (UNIFORM4, 0.07, 0.2),
                                          (NORMAL, 0.2, 0.1)], ids=["u1", "u1-near-ms", "u4", "n1"])
def test_stationary_matches_simulated_recursion(p, lr, sigma):
    st = th.stationary(lr, sigma, p)
    assert st.mean == pytest.approx([2.0, 1.0])
    assert np.all(np.linalg.eigvalsh(st.cov) > 0)
    # Run from delta = 0 until the transient of the second moment is below 1e-6 of it.
    steps = int(math.ceil(math.log(1e-6) / math.log(th._rho(th.expected_AA(lr, p)))))
    d = _simulate(p, lr, sigma, steps, 20_000, np.random.default_rng(3))
    _check_second_moment(d, np.zeros(2), st.cov)
    # The covariance scales with sigma^2; predicted_spread is its diagonal's root.
    assert th.stationary(lr, 2 * sigma, p).cov == pytest.approx(4 * st.cov, rel=1e-12)
    assert th.predicted_spread(lr, sigma, p) == pytest.approx(tuple(np.sqrt(np.diag(st.cov))), rel=1e-12)


def test_moments_at_matches_simulated_recursion():
    p, lr, sigma, steps = UNIFORM, 0.01, 0.1, 150
    rng = np.random.default_rng(4)
    n = 40_000
    delta0 = np.stack([rng.uniform(-1, 1, n) - p.a, rng.uniform(-1, 1, n) - p.c])
    d = _simulate(p, lr, sigma, steps, n, rng, delta0=delta0)
    at = th.moments_at(lr, sigma, steps, p)
    m = at.mean - np.array([p.a, p.c])
    _check_second_moment(d, m, at.cov + np.outer(m, m))
    # Long runs forget the init: the stationary law.
    late = th.moments_at(lr, sigma, 200_000, p)
    assert late.cov == pytest.approx(th.stationary(lr, sigma, p).cov, rel=1e-9)
    assert late.mean == pytest.approx([p.a, p.c], abs=1e-12)


def test_past_the_mean_square_edge():
    ms = th.mean_square_edge(UNIFORM)
    with pytest.raises(ValueError, match="mean-square edge"):
        th.stationary(ms * 1.01, 0.1, UNIFORM)
    assert all(math.isnan(v) for v in th.predicted_spread(ms * 1.01, 0.1, UNIFORM, steps=100))
    assert np.isfinite(th.moments_at(ms * 1.01, 0.1, 100, UNIFORM).cov).all()


def test_std_with_se():
    rng = np.random.default_rng(5)
    # The se of the std over many samples of size n: the spread of the stds themselves.
    for draw in (lambda s: rng.standard_normal(s), lambda s: rng.laplace(size=s)):
        samples = draw((4000, 200))
        stds = samples.std(axis=1, ddof=1)
        ses = np.array([th.std_with_se(row)[1] for row in samples])
        assert np.median(ses) == pytest.approx(stds.std(ddof=1), rel=0.1)
    assert all(math.isnan(v) for v in th.std_with_se([1.0]))
    assert th.std_with_se([1.0, np.nan, 3.0])[0] == pytest.approx(math.sqrt(2))


# -- the ensemble ------------------------------------------------------------------------------

SEEDS = 400
STEPS = 2000


@pytest.fixture(scope="module")
def noisy_sweep():
    return fn.train(**fn.grid(seeds=range(SEEDS), lrs=[0.005, 0.02, 0.05]), steps=STEPS, noise=0.1,
                    backend="eager")


def _check_rows(result, n_expected):
    rows = result.summary(by="lr").rows
    assert len(rows) == n_expected
    for r in rows:
        assert r["diverged"] == 0 and r["count"] == SEEDS
        cols = result.lrs.numpy() == np.float32(r["lr"])
        for name, values in [("w", result.weight.numpy()[cols]), ("b", result.bias.numpy()[cols])]:
            s, se = th.std_with_se(values)
            assert (r[f"{name}_std"], r[f"{name}_std_se"]) == pytest.approx((s, se), rel=1e-12)
            pred = r[f"{name}_std_pred"]
            assert abs(s - pred) <= Z * se, (r["lr"], name, s, pred, se)


def test_ensemble_spread_uniform(noisy_sweep):
    assert noisy_sweep.member_options["noise"].numpy() == pytest.approx(np.float32(0.1))
    _check_rows(noisy_sweep, 3)
    # At lr 0.005, 2000 steps have not forgotten the init: the prediction after the run's
    # steps (not the stationary one) is what matches.
    r = noisy_sweep.summary(by="lr").rows[0]
    stat_b = th.predicted_spread(r["lr"], float(np.float32(0.1)), noisy_sweep)[1]
    assert abs(r["b_std"] - stat_b) > Z * r["b_std_se"]


def test_ensemble_spread_batch_and_normal_x():
    b4 = fn.train(**fn.grid(seeds=range(SEEDS), lrs=[0.06]), steps=STEPS // 2, noise=0.2, batch_size=4,
                  backend="eager")
    assert th.problem_of(b4).batch_size == 4
    _check_rows(b4, 1)
    normal = fn.train(**fn.grid(seeds=range(SEEDS), lrs=[0.05, 0.2]), steps=STEPS, noise=0.1, x_dist="normal",
                      x_mean=0.0, x_std=1.0, backend="eager")
    assert th.problem_of(normal) == NORMAL
    _check_rows(normal, 2)


@pytest.mark.parametrize("p, kwargs", [(UNIFORM, {}), (UNIFORM4, {"batch_size": 4}),
                                       (NORMAL, {"x_dist": "normal", "x_mean": 0.0, "x_std": 1.0})],
                         ids=["u1", "u4", "n1"])
def test_divergence_follows_the_almost_sure_edge(p, kwargs):
    """Coarse: no seed diverges below the a.s. edge (even past the mean-square edge, and for
    B = 4 past the mean edge), every seed does at 1.2x it (for N(0, 1), below the mean edge)."""
    a_s, ms = th.almost_sure_edge(p).lr, th.mean_square_edge(p)
    stable = [0.5 * (ms + a_s), 0.97 * a_s]
    lrs = [*stable, 1.2 * a_s]
    # Past the edge |delta| grows like exp(gamma T) and overflows float32 (~e^88) when gamma T
    # is well past 88: T = 3000 for B = 1, 1500 for B = 4 (gamma at 1.2x the edge ~0.08, ~0.2).
    steps = 3000 if p.batch_size == 1 else 1500
    r = fn.train(**fn.grid(seeds=range(64), lrs=lrs), steps=steps, noise=0.1, backend="eager", **kwargs)
    frac = [row["diverged"] for row in r.summary(by="lr").rows]
    assert frac == [0.0, 0.0, 1.0], (lrs, frac)
    if p is UNIFORM4:
        assert stable[1] > th.mean_edge(p)
    if p is NORMAL:
        assert lrs[2] < th.mean_edge(p)


# -- summary and plots -------------------------------------------------------------------------

def test_summary_spread_columns(noisy_sweep):
    from fastneuron.summary import SPREAD_COLUMNS

    text = str(noisy_sweep.summary())
    assert "w std pred" in text and len(text.splitlines()) == 4 + len(noisy_sweep.summary().notes)
    frame = noisy_sweep.summary().to_dataframe()
    assert set(SPREAD_COLUMNS) <= set(frame.columns)
    # By (lr, seed): one member a group, no spread.
    row = noisy_sweep.summary(by=("lr", "seed")).rows[0]
    assert math.isnan(row["w_std"])
    # Without noise: exactly the old columns.
    quiet = fn.train(**fn.grid(seeds=range(4), lrs=[0.01, 0.02]), steps=20, backend="eager")
    assert not set(SPREAD_COLUMNS) & set(quiet.summary().rows[0])
    assert "w std" not in str(quiet.summary())
    # Momentum: measured spread, no prediction.
    heavy = fn.train(**fn.grid(seeds=range(8), lrs=[0.01]), steps=50, noise=0.1, momentum=0.5, backend="eager")
    row = heavy.summary().rows[0]
    assert np.isfinite(row["w_std"]) and math.isnan(row["w_std_pred"]) and math.isnan(row["b_std_pred"])
    assert not th.plain_sgd(heavy) and th.plain_sgd(noisy_sweep)


def test_plots_with_edges(noisy_sweep, tmp_path):
    pytest.importorskip("matplotlib", reason="requires matplotlib (the plot extra)")
    from fastneuron import plot

    fig = plot.spread_vs_lr(noisy_sweep, path=tmp_path / "spread.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("almost-sure edge") for t in labels) and any("mean-square" in t for t in labels)
    fig = plot.risk_vs_lr(noisy_sweep, path=tmp_path / "risk.png")
    assert any("mean edge" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("spread.png", "risk.png"))
    quiet = fn.train([0, 1], 0.01, 10, backend="eager")
    fig = plot.risk_vs_lr(quiet)  # no noise: no edges unless asked
    assert not any("edge" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    fig = plot.risk_vs_lr(quiet, edges=True)
    assert any("edge" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    with pytest.raises(ValueError, match="noise"):
        plot.spread_vs_lr(quiet)
