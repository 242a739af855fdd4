r"""Theory of plain SGD on the linear problem, beside the ensemble (float64 NumPy).

With ``delta = (w - a, b - c)``, ``z = (x, 1)``, learning rate ``eta`` and batch size B,
one step of plain SGD (no momentum, no weight decay, constant lr) on the squared error
against the noisy target ``a*x + c + sigma*eps`` (SPEC §3, label noise) is exactly

    delta' = A delta + eta (2/B) sum_j sigma eps_j z_j,
    A      = I - eta (2/B) sum_j z_j z_j^T,

the B samples ``(x_j, eps_j)`` of a step i.i.d. and independent of ``delta``. Everything
below follows from the moments ``m_k = E[x^k]``, ``k <= 4`` (:class:`SGDProblem`):

- ``K = E[z z^T] = [[m2, m1], [m1, 1]]``;
- ``E[A] = I - 2 eta K``;
- ``E[A (x) A] = I - 2 eta (K (x) I + I (x) K) + (4 eta^2 / B) (E[zz^T (x) zz^T] + (B-1) K (x) K)``,
  with ``E[zz^T (x) zz^T] = E[u u^T]``, ``u = z (x) z = (x^2, x, x, 1)`` (from
  ``E[(sum_j z_j z_j^T) (x) (sum_k z_k z_k^T)] = B E[zz^T (x) zz^T] + B(B-1) K (x) K``);
  ``vec(E[A S A^T]) = E[A (x) A] vec(S)``.

Three stability edges in ``eta`` (each the largest eta below which the property holds,
for every eta in (0, edge)):

- :func:`mean_edge`: the mean ``E[delta]`` contracts, ``rho(E[A]) < 1``:
  ``eta < 1 / lambda_max(K)`` (independent of B);
- :func:`mean_square_edge`: the second moment ``E[delta delta^T]`` stays bounded,
  ``rho(E[A (x) A]) < 1``; found by bisection (the stable set is an interval: the
  map ``S -> E[A S A^T]`` is completely positive, stable iff some ``S > 0`` has
  ``E[A S A^T] < S``, and that inequality is affine in eta after dividing by eta);
- :func:`almost_sure_edge`: the top Lyapunov exponent of the random product
  ``A_T ... A_1`` crosses 0 (:func:`lyapunov`, Monte Carlo). A single member, and
  so a finite ensemble, diverges (or not) with probability one by this edge:
  ``gamma <= (1/2) log rho(E[A (x) A])`` (Jensen), so ``mean_square_edge <=
  almost_sure_edge``; between them the second moment blows up through rare members
  only.

With label noise, below the mean-square edge, ``delta`` has a stationary law with
mean 0 (``E[(w, b)] = (a, c)``) and covariance ``S`` solving
``S = E[A S A^T] + (4 eta^2 sigma^2 / B) K`` (:func:`stationary`); :func:`moments_at`
gives the exact mean and covariance after T steps from ``nn.Linear``'s U(-1, 1) init.

For the tutorial's problem (x ~ U[1, 5), a = 2, c = 1) the edges are, B = 1: mean
0.089171, mean-square 0.063192, almost-sure 0.085953 +- 0.00005 (so ms < a.s. < mean);
B = 4: mean 0.089171, mean-square 0.081005, almost-sure 0.094700 +- 0.00002 (a.s. past
the mean edge); for x ~ N(0, 1), B = 1: mean 1, mean-square 1 - 1/sqrt(2) = 0.292893,
almost-sure 0.54293 +- 0.00023 (Monte Carlo: the default 2000 chains x 2000 steps;
4000 x 8000 give 0.085948 +- 0.00002 and 0.54287 +- 0.00008).

A problem is given as an :class:`SGDProblem`, a :class:`~fastneuron.result.TrainResult`
(its settings), a settings dict, or as keyword arguments to :meth:`SGDProblem.make`
(``a, c, lo, hi, x_dist, x_mean, x_std, batch_size``); e.g.
``mean_square_edge(batch_size=4)``, ``mean_square_edge(result)``,
``almost_sure_edge(x_dist="normal", x_mean=0.0, x_std=1.0)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["SGDProblem", "x_moments", "problem_of", "expected_A", "expected_AA", "mean_edge",
           "mean_square_edge", "lyapunov", "almost_sure_edge", "Edge", "stationary", "Stationary",
           "moments_at", "predicted_spread", "edges", "plain_sgd", "std_with_se"]

#: Monte Carlo sizes of :func:`lyapunov` and :func:`almost_sure_edge` (defaults).
LYAP_CHAINS = 2000
LYAP_STEPS = 2000
LYAP_BURN = 200
LYAP_SEED = 20260
#: :func:`lyapunov` renormalizes its vectors every RENORM steps.
RENORM = 4


def _f32(v) -> float:
    return float(np.float32(v))


def x_moments(x_dist: str = "uniform", lo: float = 1.0, hi: float = 5.0, x_mean: float = 0.0,
              x_std: float = 1.0) -> np.ndarray:
    """``[E x^0, ..., E x^4]`` in float64.

    Uniform on ``[lo, hi)``: ``E x^k = (hi^(k+1) - lo^(k+1)) / ((k+1)(hi - lo))``.
    Normal(mean mu, std s): ``E x = mu``, ``E x^2 = mu^2 + s^2``, ``E x^3 = mu^3 + 3 mu s^2``,
    ``E x^4 = mu^4 + 6 mu^2 s^2 + 3 s^4``. The arguments are used as given (see
    :meth:`SGDProblem.make` for the float32 values a run samples from)."""
    if x_dist == "uniform":
        lo, hi = float(lo), float(hi)
        if not hi > lo:
            raise ValueError(f"need lo < hi, got {lo}, {hi}")
        return np.array([(hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo)) for k in range(5)])
    if x_dist == "normal":
        mu, s = float(x_mean), float(x_std)
        return np.array([1.0, mu, mu**2 + s**2, mu**3 + 3 * mu * s**2, mu**4 + 6 * mu**2 * s**2 + 3 * s**4])
    raise ValueError(f"x_dist must be 'uniform' or 'normal', got {x_dist!r}")


@dataclass(frozen=True)
class SGDProblem:
    """The problem as the theory sees it: target ``a*x + c``, the law of x, batch size B.

    ``lo, hi`` (uniform) or ``x_mean, x_std`` (normal) are the values x is actually drawn
    from: :meth:`make` and :meth:`from_settings` round them as a run does (``lo`` and
    ``hi - lo`` to float32, like :meth:`LinearTarget.population_risk`; ``x_mean``,
    ``x_std``, ``a`` and ``c`` to float32). Hashable, so edges are cached per problem."""

    a: float = 2.0
    c: float = 1.0
    x_dist: str = "uniform"
    lo: float = 1.0
    hi: float = 5.0
    x_mean: float = 0.0
    x_std: float = 1.0
    batch_size: int = 1

    @classmethod
    def make(cls, a=2.0, c=1.0, lo=1.0, hi=5.0, x_dist="uniform", x_mean=0.0, x_std=1.0,
             batch_size=1) -> "SGDProblem":
        """From the arguments of ``fastneuron.train`` (float32-rounded as a run uses them)."""
        if x_dist not in ("uniform", "normal"):
            raise ValueError(f"x_dist must be 'uniform' or 'normal', got {x_dist!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        lo32 = _f32(lo)
        hi32 = lo32 + _f32(np.float64(hi) - np.float64(lo))
        return cls(a=_f32(a), c=_f32(c), x_dist=x_dist, lo=lo32, hi=hi32, x_mean=_f32(x_mean),
                   x_std=_f32(x_std), batch_size=int(batch_size))

    @classmethod
    def from_settings(cls, settings: dict, batch_size=None) -> "SGDProblem":
        """From a result's ``settings`` (missing ``x_dist`` means uniform)."""
        if settings.get("problem", "linear") != "linear":
            raise ValueError(f"the theory covers problem 'linear' only, not {settings.get('problem')!r}")
        keys = ("a", "c", "lo", "hi", "x_dist", "x_mean", "x_std")
        args = {k: settings[k] for k in keys if k in settings}
        return cls.make(**args, batch_size=settings.get("batch_size", 1) if batch_size is None else batch_size)

    @property
    def moments(self) -> np.ndarray:
        """``[E x^0, ..., E x^4]`` (:func:`x_moments`)."""
        return x_moments(self.x_dist, self.lo, self.hi, self.x_mean, self.x_std)

    @property
    def K(self) -> np.ndarray:
        """``E[z z^T] = [[E x^2, E x], [E x, 1]]``."""
        m = self.moments
        return np.array([[m[2], m[1]], [m[1], 1.0]])

    @property
    def K4(self) -> np.ndarray:
        """``E[zz^T (x) zz^T] = E[u u^T]`` with ``u = z (x) z = (x^2, x, x, 1)``: entry
        ``(i, j)`` is ``E[x^(p_i + p_j)]``, ``p = (2, 1, 1, 0)``."""
        p = np.array([2, 1, 1, 0])
        return self.moments[p[:, None] + p[None, :]]

    def sample_x(self, rng: np.random.Generator, shape) -> np.ndarray:
        """float64 draws of x (for Monte Carlo)."""
        if self.x_dist == "uniform":
            return rng.uniform(self.lo, self.hi, size=shape)
        return rng.normal(self.x_mean, self.x_std, size=shape)


def problem_of(problem=None, **kwargs) -> SGDProblem:
    """An :class:`SGDProblem` from an SGDProblem (``batch_size=`` may override), a
    TrainResult or a settings dict (its ``batch_size`` unless one is given), or keyword
    arguments (:meth:`SGDProblem.make`); None means the default problem."""
    if problem is None:
        return SGDProblem.make(**kwargs)
    unknown = set(kwargs) - {"batch_size"}
    if unknown:
        raise TypeError(f"with a problem given, only batch_size may be passed too, not {sorted(unknown)}")
    bs = kwargs.get("batch_size")
    if isinstance(problem, SGDProblem):
        return problem if bs is None or bs == problem.batch_size else SGDProblem.make(
            problem.a, problem.c, problem.lo, problem.hi, problem.x_dist, problem.x_mean, problem.x_std, bs)
    settings = problem if isinstance(problem, dict) else getattr(problem, "settings", None)
    if not isinstance(settings, dict):
        raise TypeError(f"problem: an SGDProblem, a TrainResult or a settings dict, not {type(problem).__name__}")
    return SGDProblem.from_settings(settings, batch_size=bs)


def plain_sgd(result) -> bool:
    """True when ``result`` was trained by plain SGD as the theory assumes: optimizer
    "sgd", every member's momentum and weight decay 0, no lr schedule, problem "linear"."""
    s = result.settings
    if s.get("optimizer", "sgd") != "sgd" or s.get("problem", "linear") != "linear":
        return False
    if any("schedule" in k and s[k] not in (None, "constant") for k in s):
        return False
    for name in ("momentum", "weight_decay"):
        v = result.member_options.get(name)
        if v is not None and bool((np.asarray(v) != 0).any()):
            return False
    return True


# -- the expected one-step maps --------------------------------------------------------

def expected_A(lr: float, problem=None, **kwargs) -> np.ndarray:
    """``E[A] = I - 2 lr K`` (2x2)."""
    p = problem_of(problem, **kwargs)
    return np.eye(2) - 2.0 * lr * p.K


def expected_AA(lr: float, problem=None, **kwargs) -> np.ndarray:
    """``E[A (x) A] = I - 2 lr (K (x) I + I (x) K) + (4 lr^2 / B) (E[zz^T (x) zz^T] + (B-1) K (x) K)``
    (4x4; ``vec(E[A S A^T]) = E[A (x) A] vec(S)`` for the row-major or column-major vec)."""
    p = problem_of(problem, **kwargs)
    K, B, eye = p.K, p.batch_size, np.eye(2)
    return (np.eye(4) - 2.0 * lr * (np.kron(K, eye) + np.kron(eye, K))
            + (4.0 * lr * lr / B) * (p.K4 + (B - 1) * np.kron(K, K)))


def _rho(m: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(m))))


# -- edges -----------------------------------------------------------------------------

def mean_edge(problem=None, **kwargs) -> float:
    """Largest lr with ``rho(E[A]) < 1``: ``1 / lambda_max(E[z z^T])`` (E[A]'s eigenvalues
    are ``1 - 2 lr lambda``; independent of the batch size)."""
    p = problem_of(problem, **kwargs)
    return float(1.0 / np.linalg.eigvalsh(p.K)[-1])


@functools.lru_cache(maxsize=256)
def _ms_edge(p: SGDProblem) -> float:
    rho = lambda lr: _rho(expected_AA(lr, p))  # noqa: E731
    lo, hi = 0.0, mean_edge(p)  # rho(E[A(x)A]) >= rho(E[A])^2, so the mean edge bounds it
    while rho(hi) < 1.0:  # (numerically the bound may be met exactly; step past it)
        hi *= 1.0 + 1e-9
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if rho(mid) < 1.0:
            lo = mid
        else:
            hi = mid
    return lo


def mean_square_edge(problem=None, **kwargs) -> float:
    """Largest lr with ``rho(E[A (x) A]) < 1`` (bisection to float64 resolution). Below it
    the second moment of (w, b) stays bounded (converges, with label noise, to
    :func:`stationary`). Always ``<= mean_edge`` (``E[A (x) A] >= E[A] (x) E[A]``)."""
    return _ms_edge(problem_of(problem, **kwargs))


class Lyapunov(NamedTuple):
    """Top Lyapunov exponent per step, its Monte Carlo standard error, and the sample."""

    gamma: np.ndarray
    se: np.ndarray
    chains: int
    steps: int


def _lyapunov(lrs: np.ndarray, p: SGDProblem, chains: int, steps: int, burn: int, seed: int) -> Lyapunov:
    """gamma(lr) for every lr at once, on common random numbers (the same x's and start
    vectors for every lr): per chain, v <- A_t v renormalized every RENORM steps, gamma_chain =
    (1/steps) log|A_T ... A_1 v| over the steps after ``burn``; gamma the mean over the
    independent chains, se = std over chains / sqrt(chains)."""
    rng = np.random.default_rng(seed)
    lrs = np.asarray(lrs, dtype=np.float64).reshape(-1, 1)
    B = p.batch_size
    v = rng.normal(size=(2, chains))
    v /= np.hypot(v[0], v[1])
    v1 = np.broadcast_to(v[0], (lrs.shape[0], chains)).copy()
    v2 = np.broadcast_to(v[1], (lrs.shape[0], chains)).copy()
    acc = np.zeros((lrs.shape[0], chains))
    coef = 2.0 * lrs / B
    a22 = 1.0 - coef * B
    for t in range(burn + steps):
        x = p.sample_x(rng, (B, chains))
        sxx, sx = (x * x).sum(0), x.sum(0)  # sum_j z_j z_j^T = [[sxx, sx], [sx, B]]
        a11, a12 = 1.0 - coef * sxx, -coef * sx
        v1, v2 = a11 * v1 + a12 * v2, a12 * v1 + a22 * v2
        if t % RENORM == RENORM - 1 or t == burn - 1 or t == burn + steps - 1:
            n2 = v1 * v1 + v2 * v2  # the product of RENORM factors stays far inside float64
            if t >= burn:
                acc += 0.5 * np.log(n2)
            n = np.sqrt(n2)
            v1, v2 = v1 / n, v2 / n
    per_chain = acc / steps
    return Lyapunov(gamma=per_chain.mean(1), se=per_chain.std(1, ddof=1) / math.sqrt(chains),
                    chains=chains, steps=steps)


def lyapunov(lr, problem=None, *, chains: int = LYAP_CHAINS, steps: int = LYAP_STEPS, burn: int = LYAP_BURN,
             seed: int = LYAP_SEED, **kwargs) -> Lyapunov:
    """Top Lyapunov exponent ``gamma = lim (1/T) log |A_T ... A_1 v|`` (per step, natural
    log) at each lr (a scalar or an array), Monte Carlo in float64 with a fixed NumPy seed:
    ``chains`` independent products of ``steps`` factors after ``burn`` discarded ones,
    renormalized every RENORM = 4 steps. Returns :class:`Lyapunov` (``gamma``, ``se`` arrays, shaped
    like ``lr``): ``se`` is the standard error over chains. ``gamma < 0``: a member
    converges (to the noise floor); ``> 0``: it diverges exponentially."""
    p = problem_of(problem, **kwargs)
    arr = np.asarray(lr, dtype=np.float64)
    out = _lyapunov(arr.reshape(-1), p, chains, steps, burn, seed)
    return out._replace(gamma=out.gamma.reshape(arr.shape), se=out.se.reshape(arr.shape))


class Edge(NamedTuple):
    """An edge in lr with its Monte Carlo standard error (``se``, in lr), ``chains`` and
    ``steps`` the sample it comes from."""

    lr: float
    se: float
    chains: int
    steps: int

    def __float__(self) -> float:
        return float(self.lr)


@functools.lru_cache(maxsize=64)
def _as_edge(p: SGDProblem, chains: int, steps: int, burn: int, seed: int) -> Edge:
    run = lambda lrs: _lyapunov(np.asarray(lrs), p, chains, steps, burn, seed)  # noqa: E731
    lo = mean_square_edge(p)  # gamma <= (1/2) log rho(E[A (x) A]) < 0 below it
    hi = 2.0 * max(lo, mean_edge(p))
    for _ in range(60):  # an upper bracket with gamma > 0
        if run([hi]).gamma[0] > 0:
            break
        lo, hi = hi, 2.0 * hi
    else:
        raise RuntimeError("almost_sure_edge: no lr with a positive Lyapunov exponent found")
    # The first sign change on a grid, refined twice, then linear interpolation.
    for _ in range(3):
        grid = np.linspace(lo, hi, 9)
        res = run(grid)
        g, run_g, run_se = res.gamma, res.gamma, res.se
        # The first positive (g[-1] > 0 by the bracket; g[0] <= 0: gamma(lo) <= 0).
        k = int(np.argmax(g > 0)) if (g > 0).any() else len(grid) - 1
        k = max(k, 1)
        lo, hi = grid[k - 1], grid[k]
    (g0, g1), (s0, s1) = run_g[k - 1:k + 1], run_se[k - 1:k + 1]
    slope = (g1 - g0) / (hi - lo)
    edge = lo - g0 / slope if slope > 0 else 0.5 * (lo + hi)
    se = max(s0, s1) / slope if slope > 0 else float("inf")
    return Edge(lr=float(edge), se=float(se), chains=chains, steps=steps)


def almost_sure_edge(problem=None, *, chains: int = LYAP_CHAINS, steps: int = LYAP_STEPS, burn: int = LYAP_BURN,
                     seed: int = LYAP_SEED, **kwargs) -> Edge:
    """The lr where the top Lyapunov exponent (:func:`lyapunov`) crosses 0, from below:
    the first sign change above :func:`mean_square_edge` on common random numbers
    (``chains`` x ``steps`` products, fixed seed), a grid refined three times and a linear
    interpolation. Returns :class:`Edge`: ``lr`` and ``se``, the standard error of the
    edge, ``se(gamma) / (d gamma / d lr)`` at the crossing. This is the edge a finite
    ensemble's divergence follows. (A few seconds; cached per problem.)"""
    return _as_edge(problem_of(problem, **kwargs), chains, steps, burn, seed)


def edges(problem=None, **kwargs) -> dict:
    """``{"mean": mean_edge, "mean_square": mean_square_edge, "almost_sure": Edge}``."""
    p = problem_of(problem, **kwargs)
    return {"mean": mean_edge(p), "mean_square": mean_square_edge(p), "almost_sure": almost_sure_edge(p)}


# -- label noise: stationary law and finite-T moments ------------------------------------

class Stationary(NamedTuple):
    """Mean ``(E w, E b)`` and 2x2 covariance of ``(w, b)``."""

    mean: np.ndarray
    cov: np.ndarray


def _noise_Q(lr: float, sigma: float, p: SGDProblem) -> np.ndarray:
    return (4.0 * lr * lr * sigma * sigma / p.batch_size) * p.K


def stationary(lr: float, sigma: float, problem=None, **kwargs) -> Stationary:
    """The stationary law of (w, b) under label noise ``sigma``: mean ``(a, c)`` and
    covariance ``S`` solving ``S = E[A S A^T] + (4 lr^2 sigma^2 / B) E[z z^T]``, i.e.
    ``vec S = (I - E[A (x) A])^-1 vec Q``. (The noise term is
    ``E[(lr (2/B) sum_j sigma eps_j z_j)(...)^T] = (4 lr^2 sigma^2 / B) K``; cross terms
    vanish since eps is independent of x and delta.) ValueError when
    ``lr >= mean_square_edge`` (no stationary second moment)."""
    p = problem_of(problem, **kwargs)
    if not lr > 0 or not sigma >= 0:
        raise ValueError(f"need lr > 0 and sigma >= 0, got {lr}, {sigma}")
    if lr >= mean_square_edge(p):
        raise ValueError(f"lr {lr:g} is at or past the mean-square edge {mean_square_edge(p):g}: "
                         "the second moment has no fixed point")
    S = np.linalg.solve(np.eye(4) - expected_AA(lr, p), _noise_Q(lr, sigma, p).reshape(4)).reshape(2, 2)
    return Stationary(mean=np.array([p.a, p.c]), cov=0.5 * (S + S.T))


def moments_at(lr: float, sigma: float, steps: int, problem=None, init=((-1.0, 1.0), (-1.0, 1.0)),
               **kwargs) -> Stationary:
    """Exact mean and covariance of (w, b) after ``steps`` updates, from w0 ~ U(init[0]),
    b0 ~ U(init[1]) independent (``nn.Linear(1, 1)``'s U(-1, 1), SPEC §2):
    ``E delta_T = E[A]^T E delta_0`` and, with ``P = E[A (x) A]``,
    ``vec S_T = P^T vec S_0 + sum_{k<T} P^k vec Q`` (``S`` the second moment of delta),
    ``cov = S_T - E delta_T E delta_T^T``. Defined for any lr (finite T)."""
    p = problem_of(problem, **kwargs)
    (w_lo, w_hi), (b_lo, b_hi) = init
    m0 = np.array([(w_lo + w_hi) / 2 - p.a, (b_lo + b_hi) / 2 - p.c])
    S0 = np.outer(m0, m0) + np.diag([(w_hi - w_lo) ** 2 / 12, (b_hi - b_lo) ** 2 / 12])
    P = expected_AA(lr, p)
    q = _noise_Q(lr, sigma, p).reshape(4)
    # [P q; 0 1]^T applied to (vec S0, 1) gives (P^T vec S0 + sum_{k<T} P^k q, 1).
    big = np.zeros((5, 5))
    big[:4, :4], big[:4, 4], big[4, 4] = P, q, 1.0
    s = (np.linalg.matrix_power(big, int(steps)) @ np.append(S0.reshape(4), 1.0))[:4].reshape(2, 2)
    m = np.linalg.matrix_power(expected_A(lr, p), int(steps)) @ m0
    cov = 0.5 * (s + s.T) - np.outer(m, m)
    return Stationary(mean=m + np.array([p.a, p.c]), cov=cov)


def predicted_spread(lr: float, sigma: float, problem=None, steps=None, **kwargs) -> tuple:
    """``(std_w, std_b)`` predicted over seeds: of the stationary law (:func:`stationary`)
    when ``steps`` is None, else after ``steps`` updates from the U(-1, 1) init
    (:func:`moments_at`). ``(nan, nan)`` at or past the mean-square edge."""
    p = problem_of(problem, **kwargs)
    if not lr < mean_square_edge(p):
        return (math.nan, math.nan)
    cov = stationary(lr, sigma, p).cov if steps is None else moments_at(lr, sigma, steps, p).cov
    return (math.sqrt(max(cov[0, 0], 0.0)), math.sqrt(max(cov[1, 1], 0.0)))


# -- sampling error of a measured spread ---------------------------------------------------

def std_with_se(values) -> tuple:
    """``(s, se)``: the sample standard deviation (ddof=1) of the finite ``values`` and its
    standard error from the sample kurtosis ``kappa = m4 / m2^2``:
    ``Var(s^2) ~= s^4 (kappa - (n-3)/(n-1)) / n`` and ``se(s) ~= sqrt(Var(s^2)) / (2 s)``
    (delta method). ``(nan, nan)`` with fewer than 2 values (se nan with fewer than 4)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = v.size
    if n < 2:
        return (math.nan, math.nan)
    s = float(v.std(ddof=1))
    if n < 4 or s == 0:
        return (s, math.nan if n < 4 else 0.0)
    d = v - v.mean()
    m2 = float(np.mean(d * d))
    kappa = float(np.mean(d**4)) / (m2 * m2)
    var_s2 = s**4 * max(kappa - (n - 3) / (n - 1), 0.0) / n
    return (s, math.sqrt(var_s2) / (2.0 * s))
