"""SPEC v3 (§6): the NumPy oracle tests/spec_numpy_v3.py checked on its own (against the v2
oracle at d = 1, the tree's two descriptions, the activations' derivatives, the teacher, the
init), against its known answers (spec-vectors.json's ``v3_train``, written by
tests/spec_vectors_v3.py), and then fastneuron.train(backend="eager") against those answers
bit for bit.

fastneuron is imported by the eager tests only, so that the oracle's own checks run without it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import spec_numpy as S
import spec_numpy_v3 as V
import spec_vectors_v3 as SV
from conftest import SPEC_VECTORS

U64_MAX = 2**64 - 1
V3_CASES = SPEC_VECTORS.get("v3_train", [])


def _u32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def _same_bits(a, b) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _case_id(case: dict) -> str:
    o = case["options"]
    parts = [f"d{o['inputs']}", o.get("activation", "identity"), o.get("loss", "mse"), o.get("optimizer", "sgd")]
    if o.get("bias", True) is False:
        parts.append("nobias")
    if o.get("batch_size", 1) != 1:
        parts.append(f"B{o['batch_size']}")
    if o.get("x_dist") == "normal":
        parts.append("normal")
    return "-".join(parts) + f"-T{case['steps']}"


# ======================================================================================
# (a) d = 1, identity, mse, teacher: the v2 oracle, bit for bit
# ======================================================================================

SEEDS = [0, 1, U64_MAX, 12345, 2**32, 2**32 - 1]
LRS = [0.01, 0.02, 0.05, 0.09, 0.03, 0.6]  # the last one diverges on U[1, 5)

V2_OPTIONS = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=[0.0, 0.5, 0.9, 0.3, 0.0, 0.5], weight_decay=[0.0, 0.01, 0.0, 0.001, 0.1, 0.0]),
    dict(momentum=0.5, nesterov=True),
    dict(momentum=0.5, dampening=0.25),
    dict(noise=[0.0, 0.5, 1.0, 0.25, 0.1, 0.0]),
    dict(noise=[0.0, 0.5, 1.0, 0.25, 0.1, 0.0], batch_size=3),
    dict(batch_size=3, momentum=0.9),
    dict(x_dist="normal"),
    dict(x_dist="normal", x_mean=3.0, x_std=0.5, noise=0.3, momentum=0.9, batch_size=3),
    dict(a=-1.5, c=0.25, lo=-2.0, hi=3.0),
]


@pytest.mark.parametrize("opts", V2_OPTIONS, ids=lambda o: ",".join(f"{k}" for k in o) or "plain")
@pytest.mark.parametrize("problem", ["teacher", "linear"])
def test_d1_identity_mse_is_v2(opts, problem):
    ref = S.train(SEEDS, LRS, 700, **opts)
    got = V.train_v3(SEEDS, LRS, 700, problem=problem, **opts)
    assert got.weight.shape == (len(SEEDS),) and got.bias.shape == (len(SEEDS),)
    assert _same_bits(got.weight, ref.weight), (got.weight, ref.weight)
    assert _same_bits(got.bias, ref.bias), (got.bias, ref.bias)
    assert got.diverged_at.tolist() == ref.diverged_at.tolist()
    if not opts.get("x_dist") and not opts.get("lo"):
        assert ref.diverged_at[-1] >= 0  # the case does reach §4


def _v2_adam(seeds, lrs, steps, *, batch_size=1, noise=0.0, x_dist="uniform", x_mean=0.0, x_std=1.0,
             weight_decay=0.0, eps=1e-8, betas=(0.9, 0.999), amsgrad=False, decoupled=False):
    """v2's problem (§1-§2b) under Adam / AdamW (§3c), written once more in spec_numpy's style,
    on (w, b) as two (M,) arrays: spec_numpy.train itself has no Adam."""
    seeds = S._u64(seeds).reshape(-1)
    m = seeds.size
    s_lo, s_hi = S.split_seeds(seeds)
    f = np.float32
    lr64 = np.broadcast_to(np.asarray(lrs, np.float64).reshape(-1), (m,))
    wd64 = np.broadcast_to(np.asarray(weight_decay, np.float64).reshape(-1), (m,))
    wd = wd64.astype(np.float32)
    eps32 = np.broadcast_to(np.asarray(eps, np.float64).reshape(-1), (m,)).astype(np.float32)
    sigma = np.broadcast_to(np.asarray(noise, np.float64).reshape(-1), (m,)).astype(np.float32)
    b1, b2_ = float(betas[0]), float(betas[1])
    w1, b2, w2 = f(1 - b1), f(b2_), f(1 - b2_)
    decay = (1 - lr64 * wd64).astype(np.float32)
    w, b = S.init(seeds)
    state = [[np.zeros(m, np.float32) for _ in range(3)] for _ in range(2)]
    div = np.full(m, -1, np.int64)
    with np.errstate(all="ignore"):
        for t in range(steps):
            gw = gb = None
            for j in range(batch_size):
                n = t * batch_size + j
                q = n // 4
                words = S.philox((0, 0), q & 0xFFFFFFFF, q >> 32, s_lo, s_hi)
                if x_dist == "normal":
                    x = f(x_mean) + f(x_std) * S.normal_block(*words)[n % 4]
                else:
                    x = f(1.0) + f(4.0) * S.uniform(words[n % 4])
                y = w * x + b
                tgt = f(2) * x + f(1)
                if (sigma != 0).any():
                    eps_n = S.normal_block(*S.philox((2, 0), q & 0xFFFFFFFF, q >> 32, s_lo, s_hi))[n % 4]
                    tgt = np.where(sigma != 0, tgt + sigma * eps_n, tgt)
                g = f(2) * (y - tgt)
                gw = g * x if gw is None else gw + g * x
                gb = g if gb is None else gb + g
            if batch_size > 1:
                gw, gb = gw / f(batch_size), gb / f(batch_size)
            s = min(t + 1, 2**24)
            bc2s = f((1 - b2_**s) ** 0.5)
            c = (-(lr64 / (1 - b1**s))).astype(np.float32)
            new = []
            for p, g, (mm, vv, vmax) in ((w, gw, state[0]), (b, gb, state[1])):
                if decoupled:
                    p = np.where(wd != 0, p * decay, p)
                else:
                    g = np.where(wd != 0, g + wd * p, g)
                if w1 < 0.5:  # torch's CPU lerp picks its formula by |weight| < 0.5
                    mm[:] = mm + w1 * (g - mm)
                else:
                    mm[:] = g - (g - mm) * (f(1) - w1)
                vv[:] = vv * b2
                vv[:] = vv + (w2 * g) * g
                vmax[:] = np.maximum(vmax, vv)
                den = np.sqrt(vmax if amsgrad else vv) / bc2s + eps32
                new.append(p + (c * mm) / den)
            w, b = new
            div[(div < 0) & ~(np.isfinite(w) & np.isfinite(b))] = t
    gone = div >= 0
    return np.where(gone, np.float32("nan"), w), np.where(gone, np.float32("nan"), b), div


@pytest.mark.parametrize("opts", [
    dict(),
    dict(noise=[0.0, 0.5, 1.0, 0.25, 0.1, 0.0], batch_size=3),
    dict(x_dist="normal", x_mean=1.0, x_std=2.0, weight_decay=0.01, amsgrad=True),
    dict(betas=(0.5, 0.9), eps=1e-4, weight_decay=[0.0, 0.1, 0.0, 0.01, 0.0, 0.0]),
    dict(decoupled=True, weight_decay=[0.01, 0.1, 0.0, 0.01, 0.5, 0.01], batch_size=3),
], ids=["plain", "noise-B3", "normal-wd-amsgrad", "betas-eps-wd", "adamw-B3"])
def test_d1_identity_mse_adam_is_v2(opts):
    lrs = [0.01, 0.05, 0.2, 0.001, 0.1, 1.0]
    opts = dict(opts)
    decoupled = opts.pop("decoupled", False)
    w, b, div = _v2_adam(SEEDS, lrs, 500, decoupled=decoupled, **opts)
    got = V.train_v3(SEEDS, lrs, 500, optimizer="adamw" if decoupled else "adam", **opts)
    assert _same_bits(got.weight, w) and _same_bits(got.bias, b), (got.weight, w, got.bias, b)
    assert got.diverged_at.tolist() == div.tolist()


# ======================================================================================
# (b) §6c: the tree
# ======================================================================================

def _odd_passes_up(values) -> np.float32:
    """§6c without padding: adjacent pairs, an odd last element passes up unchanged."""
    level = [np.float32(v) for v in values]
    while len(level) > 1:
        nxt = [level[2 * k] + level[2 * k + 1] for k in range(len(level) // 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _special_values(rng, n) -> np.ndarray:
    pool = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e38, -1e38, 1e-45, -1e-45, 1.0, -1.0], np.float32)
    v = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n)).astype(np.float32)
    pick = rng.random(n) < 0.3
    v[pick] = rng.choice(pool, int(pick.sum()))
    return v


def test_tree_equals_odd_passes_up():
    rng = np.random.default_rng(6)
    seen = set()
    with np.errstate(all="ignore"):
        for d in range(1, 41):
            rows = np.stack([_special_values(rng, d) for _ in range(60)]
                            + [rng.choice(np.array([0.0, -0.0], np.float32), d) for _ in range(8)]
                            + [rng.standard_normal(d).astype(np.float32) for _ in range(20)])
            got = V.tree_sum(rows)
            want = np.array([_odd_passes_up(r) for r in rows], np.float32)
            assert got.dtype == np.float32 and got.shape == (rows.shape[0],)
            # NaN bits are not pinned (which NaN an addition of two NaNs returns is the machine's)
            assert np.array_equal(np.isnan(got), np.isnan(want)), d
            num = ~np.isnan(want)
            assert np.array_equal(_u32(got[num]), _u32(want[num])), d
            seen |= {"nan"} if np.isnan(want).any() else set()
            seen |= {"inf"} if np.isinf(want).any() else set()
            seen |= {"-0"} if (_u32(want) == 0x80000000).any() else set()
            seen |= {"+0"} if (_u32(want) == 0).any() else set()
    assert seen == {"nan", "inf", "-0", "+0"}, seen


def test_tree_keeps_negative_zero():
    for d in range(1, 41):
        assert _u32(V.tree_sum(np.full((1, d), -0.0, np.float32)))[0] == 0x80000000, d
        # products that are -0.0 (w = -0 or x = -0) sum to -0.0, and with -0.0 bias z stays -0.0
        w = np.full(d, -0.0, np.float32)
        x = np.linspace(1, 2, d, dtype=np.float32)
        assert _u32(V.dot(w, x)) == 0x80000000
        z = V.dot(w, x) + np.float32(-0.0)
        assert _u32(z) == 0x80000000
        # one +0.0 makes the sum +0.0
        p = np.full((1, d), -0.0, np.float32)
        p[0, d // 2] = 0.0
        assert _u32(V.tree_sum(p))[0] == 0


def test_tree_is_not_left_to_right():
    p = np.array([1e8, 1.0, -1e8, 1.0], np.float32)
    assert float(V.tree_sum(p)) == 0.0  # (1e8 + 1) + (-1e8 + 1): both round, the 1s are lost
    seq = np.float32(0)
    for v in p:
        seq = seq + v
    assert float(seq) == 1.0
    # d = 5: ((p0 + p1) + (p2 + p3)) + p4; left to right loses both 2**-24, the tree keeps them
    p5 = np.array([1.0, 2.0 ** -24, 2.0 ** -24, 2.0 ** -24, 0.0], np.float32)
    assert float(V.tree_sum(p5)) == 1.0 + 2.0 ** -23  # 1 + (2**-24 + 2**-24): tie to even, then exact


# ======================================================================================
# (c) §6e: activations' backward against float64 derivatives (sanity), relu'(0) = 0
# ======================================================================================

_SQRT2 = math.sqrt(2.0)
_ERF = np.vectorize(math.erf)

F64 = {
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64)),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.05 * z), lambda z: np.where(z > 0, 1.0, 0.05)),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "erf": (lambda z: _ERF(z / _SQRT2), lambda z: math.sqrt(2 / math.pi) * np.exp(-z * z / 2)),
    "abs": (np.abs, np.sign),
    "square": (lambda z: z * z, lambda z: 2 * z),
}
SLOPE = 0.05


@pytest.mark.parametrize("name", V.ACTIVATIONS)
def test_activation_backward_is_the_derivative(name):
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.uniform(-6, 6, 400), rng.uniform(-0.5, 0.5, 100)]).astype(np.float32)
    z = z[np.abs(z) > 1e-3]  # away from the kinks
    slope = np.float32(SLOPE)
    fwd, der = F64[name]
    z64 = z.astype(np.float64)
    y = V.act_forward(name, z, slope)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, fwd(z64), rtol=1e-5, atol=1e-6)
    gy = rng.uniform(-3, 3, z.size).astype(np.float32)
    gz = V.act_backward(name, z, y, gy, slope)
    assert gz.dtype == np.float32
    np.testing.assert_allclose(gz, gy * der(z64), rtol=1e-5, atol=1e-6)
    # and a central finite difference of the float64 function
    h = 1e-6
    fd = (fwd(z64 + h) - fwd(z64 - h)) / (2 * h)
    np.testing.assert_allclose(gz, gy * fd, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", V.ACTIVATIONS)
def test_mse_gradient_through_activation(name):
    # gz of the mse line, against d/dz (act(z) - t)**2 in float64
    rng = np.random.default_rng(2)
    z = rng.uniform(-3, 3, 300).astype(np.float32)
    z = z[np.abs(z) > 1e-3]
    t = rng.uniform(-2, 2, z.size).astype(np.float32)
    slope = np.float32(SLOPE)
    y = V.act_forward(name, z, slope)
    gz = V.act_backward(name, z, y, np.float32(2) * (y - t), slope)
    fwd, der = F64[name]
    z64 = z.astype(np.float64)
    np.testing.assert_allclose(gz, 2 * (fwd(z64) - t) * der(z64), rtol=1e-4, atol=1e-5)


def test_kinks_and_special_values():
    s = np.float32(SLOPE)
    zeros = np.array([0.0, -0.0], np.float32)
    gy = np.array([1.5, -2.5], np.float32)
    # relu: y = z at z = ±0 (torch.relu keeps -0.0) and gz = 0 there (z <= 0), NaN passes forward,
    # gradient flows at NaN
    assert _u32(V.act_forward("relu", zeros, s)).tolist() == [0, 0x80000000]
    import torch
    assert _u32(torch.relu(torch.from_numpy(zeros)).numpy()).tolist() == [0, 0x80000000]
    assert (V.act_backward("relu", zeros, zeros, gy, s) == 0).all()
    assert _u32(V.act_backward("relu", zeros, zeros, gy, s)).tolist() == [0, 0]
    nan = np.array([np.nan], np.float32)
    assert np.isnan(V.act_forward("relu", nan, s)).all()
    assert V.act_backward("relu", nan, nan, np.array([3.0], np.float32), s)[0] == 3.0
    assert _u32(V.act_forward("relu", np.array([-7.0], np.float32), s))[0] == 0  # +0.0, not -0.0
    # leaky_relu at ±0: y = z*s, gz = gy*s
    assert _u32(V.act_forward("leaky_relu", zeros, s)).tolist() == [0, 0x80000000]
    assert V.act_backward("leaky_relu", zeros, zeros, gy, s).tolist() == (gy * s).tolist()
    # abs: sgn(±0) = sgn(NaN) = 0
    assert (V.act_backward("abs", zeros, zeros, gy, s) == 0).all()
    assert V.act_backward("abs", nan, nan, np.array([2.0], np.float32), s)[0] == 0
    assert V.act_backward("abs", np.array([-3.0, 3.0], np.float32), None, gy, s).tolist() == [-1.5, -2.5]
    # square at 0, identity passes everything
    assert (V.act_backward("square", zeros, zeros, gy, s) == 0).all()
    assert V.act_backward("identity", zeros, zeros, gy, s) is gy


def test_bce_gradient():
    rng = np.random.default_rng(3)
    z = rng.uniform(-8, 8, 500).astype(np.float32)
    t = (rng.random(500) < 0.5).astype(np.float32)
    gz = V.bce_grad(z, t)
    assert gz.dtype == np.float32
    z64 = z.astype(np.float64)
    np.testing.assert_allclose(gz, 1 / (1 + np.exp(-z64)) - t, rtol=1e-5, atol=1e-6)
    # d/dz of BCEWithLogits(z, t) = softplus(z) - t*z
    h = 1e-6
    loss = lambda zz: np.logaddexp(0, zz) - t * zz  # noqa: E731
    np.testing.assert_allclose(gz, (loss(z64 + h) - loss(z64 - h)) / (2 * h), rtol=1e-4, atol=1e-5)


def test_erf_constants():
    assert _u32(V.RSQRT2) == 0x3F3504F3 and float(V.RSQRT2) == float(np.float32(1 / math.sqrt(2)))
    assert _u32(V.TWO_RSQRTPI) == 0x3F906EBB and float(V.TWO_RSQRTPI) == float(np.float32(2 / math.sqrt(math.pi)))


# ======================================================================================
# (d) §6d: the teacher
# ======================================================================================

def test_bce_teacher_without_noise_is_separable_by_a():
    seeds = np.array([0, 1, U64_MAX, 77], np.uint64)
    d = 7
    a32 = np.array(SV._alt(d), np.float64).astype(np.float32)
    c32 = np.float32(0.1)
    x = V.data_x(seeds, 0, 400, d, x_dist="normal")
    sig = np.zeros(4, np.float32)
    t = V.teacher_targets(x, None, a32=a32, c32=c32, loss="bce", target_activation="identity",
                          slope=np.float32(0.01), sigma=sig, use_noise=sig != 0)
    assert t.dtype == np.float32 and set(np.unique(t).tolist()) == {0.0, 1.0}
    # the neuron w = a, b = c computes the very z the label was taken from: it separates the set
    z = V.dot(a32, x) + c32
    assert np.array_equal(t == 1, z > 0)
    # and the exact (float64) margin agrees wherever it is not within rounding of 0
    z64 = x.astype(np.float64) @ a32.astype(np.float64) + float(c32)
    clear = np.abs(z64) > 1e-4
    assert clear.mean() > 0.99
    assert np.array_equal((t == 1)[clear], (z64 > 0)[clear])
    # label noise flips some labels: then a no longer separates
    sig = np.array([0.0, 1.0, 0.5, 2.0], np.float32)
    eps = V.noise_eps(seeds, 0, 400)
    tn = V.teacher_targets(x, eps, a32=a32, c32=c32, loss="bce", target_activation="identity",
                           slope=np.float32(0.01), sigma=sig, use_noise=sig != 0)
    assert np.array_equal(tn[:, 0], t[:, 0])
    assert ((tn != t)[:, 1:].sum(axis=0) > 0).all()


def test_mse_teacher_target_lines():
    # t = act_T(tree(a_i x_i) + c) + sigma*eps; d = 1 and identity: v2's a*x + c
    seeds = np.array([0, 5], np.uint64)
    x = V.data_x(seeds, 0, 12, 1)
    for n in range(12):
        assert _same_bits(x[n, :, 0], S.sample(seeds, n, np.float32(1), np.float32(4)))
    sig = np.zeros(2, np.float32)
    t = V.teacher_targets(x, None, a32=np.array([2.0], np.float32), c32=np.float32(1), loss="mse",
                          target_activation="identity", slope=np.float32(0.01), sigma=sig, use_noise=sig != 0)
    assert _same_bits(t, np.float32(2) * x[..., 0] + np.float32(1))
    t = V.teacher_targets(x, None, a32=np.array([2.0], np.float32), c32=np.float32(-9), loss="mse",
                          target_activation="relu", slope=np.float32(0.01), sigma=sig, use_noise=sig != 0)
    assert _same_bits(t, np.maximum(np.float32(2) * x[..., 0] + np.float32(-9), np.float32(0)))


def test_data_stream_coordinates():
    seeds = np.array([0, 9, U64_MAX], np.uint64)
    for dist in ("uniform", "normal"):
        x7 = V.data_x(seeds, 0, 23, 7, x_dist=dist)
        x3 = V.data_x(seeds, 0, 23, 3, x_dist=dist)
        assert _same_bits(x7[..., :3], x3)  # coordinate i of sample n: (seed, n, i) only
        # any window of samples is the same draw (chunks of a run)
        assert _same_bits(V.data_x(seeds, 5, 18, 7, x_dist=dist), x7[5:18])
        # coordinates differ from each other (their own keys)
        assert not np.array_equal(x7[..., 0], x7[..., 1])
    # Gaussian x: coordinate 0 is §2b's normal data stream
    xs = V.data_x(seeds, 0, 8, 2, x_dist="normal", mean32=np.float32(3), std32=np.float32(0.5))
    s_lo, s_hi = S.split_seeds(seeds)
    for q in range(2):
        z = S.normal_block(*S.philox((0, 0), q, 0, s_lo, s_hi))
        for k in range(4):
            assert _same_bits(xs[4 * q + k, :, 0], np.float32(3) + np.float32(0.5) * z[k])
        z1 = S.normal_block(*S.philox((0, 1), q, 0, s_lo, s_hi))
        for k in range(4):
            assert _same_bits(xs[4 * q + k, :, 1], np.float32(3) + np.float32(0.5) * z1[k])


# ======================================================================================
# (e) §6b: the init
# ======================================================================================

INIT_SEEDS = [0, 1, 2, U64_MAX, 2**32, 123456789012345]


def test_init_d1_is_v1():
    w0, b0 = S.init(INIT_SEEDS)
    w, b = V.init_v3(INIT_SEEDS, 1)
    assert w.shape == (len(INIT_SEEDS), 1)
    assert _same_bits(w[:, 0], w0) and _same_bits(b, b0)
    run = V.train_v3(INIT_SEEDS, 0.01, 0)  # zero steps: the init itself
    assert _same_bits(run.weight, w0) and _same_bits(run.bias, b0)


def test_init_coordinate_words_do_not_depend_on_d():
    w0, b0 = S.init(INIT_SEEDS)
    w3, b3 = V.init_unscaled(INIT_SEEDS, 3)
    w7, b7 = V.init_unscaled(INIT_SEEDS, 7)
    assert _same_bits(w7[:, :3], w3) and _same_bits(b7, b3)
    assert _same_bits(w7[:, 0], w0) and _same_bits(b7, b0)  # coordinate 0's word and b's: v1's init
    # coordinate i: word 0 of key (1, i)
    s_lo, s_hi = S.split_seeds(INIT_SEEDS)
    for i in range(7):
        r0 = S.philox((1, i), 0, 0, s_lo, s_hi)[0]
        assert _same_bits(w7[:, i], np.float32(-1) + np.float32(2) * S.uniform(r0))
    # then scaled by r = f32(1/sqrt(d)), per d
    for d, uw, ub in ((3, w3, b3), (7, w7, b7)):
        w, b = V.init_v3(INIT_SEEDS, d)
        r = np.float32(1.0 / math.sqrt(d))
        assert _same_bits(w, uw * r) and _same_bits(b, ub * r)
        assert (np.abs(w) <= r).all() and (np.abs(b) <= r).all()


def test_init_r_bits_in_spec():
    for d, bits in ((2, 0x3F3504F3), (7, 0x3EC1848F), (16, 0x3E800000), (300, 0x3D6C7B90), (1024, 0x3D000000)):
        assert _u32(V.init_r(d)) == bits, d
    assert float(V.init_r(1)) == 1.0


def test_init_scale_and_no_bias():
    scale = [0.5, 2.0, 1.0, 3.0, 1.0, 0.1]
    w, b = V.init_v3(INIT_SEEDS, 5)
    ws, bs = V.init_v3(INIT_SEEDS, 5, init_scale=scale)
    sc = np.array(scale, np.float32)
    assert _same_bits(ws, w * sc[:, None]) and _same_bits(bs, b * sc)
    wn, bn = V.init_v3(INIT_SEEDS, 5, bias=False, init_scale=scale)
    assert _same_bits(wn, ws) and _u32(bn).tolist() == [0] * len(INIT_SEEDS)
    run = V.train_v3(INIT_SEEDS, 0.01, 3, inputs=5, bias=False)
    assert _u32(run.bias).tolist() == [0] * len(INIT_SEEDS)  # never updated, +0.0


# ======================================================================================
# (f) the known answers: v3_train
# ======================================================================================

def test_v3_vectors_are_present_and_cover_the_spec():
    assert len(V3_CASES) >= 10
    opts = [c["options"] for c in V3_CASES]
    assert {o["inputs"] for o in opts} >= {1, 2, 7, 64, 300}
    assert {o.get("activation", "identity") for o in opts} == set(V.ACTIVATIONS)
    assert {o.get("loss", "mse") for o in opts} == {"mse", "bce"}
    assert {o.get("optimizer", "sgd") for o in opts} >= {"sgd", "adam"}
    assert {o.get("bias", True) for o in opts} == {True, False}
    assert {o.get("batch_size", 1) for o in opts} >= {1, 3}
    assert {o.get("x_dist", "uniform") for o in opts} == {"uniform", "normal"}
    assert any(np.any(np.asarray(o.get("init_scale", 1.0)) != 1) for o in opts)
    assert any(np.any(np.asarray(o.get("noise", 0.0)) != 0) for o in opts)
    assert any(isinstance(o.get("a"), list) for o in opts)
    seeds = {s for c in V3_CASES for s in c["seeds"]}
    assert {"0", str(U64_MAX)} <= seeds and len(seeds) > 4
    assert any(d >= 0 for c in V3_CASES for d in c["diverged_at"])


@pytest.mark.parametrize("case", V3_CASES, ids=_case_id)
def test_numpy_v3_vectors(case):
    run = SV.run_case(case)
    assert run.weight.dtype == np.float32 and run.bias.dtype == np.float32
    assert SV._bits(run.weight) == case["weight_bits"]
    assert SV._bits(run.bias) == case["bias_bits"]
    assert run.diverged_at.tolist() == case["diverged_at"]


def test_v3_script_cases_are_the_files():
    """The file holds what spec_vectors_v3.py's CASES describe (rerun it after editing them)."""
    keys = ("seeds", "lrs", "steps", "options")
    assert [{k: c[k] for k in keys} for c in V3_CASES] == \
        [{k: c[k] for k in keys} for c in json.loads(json.dumps(SV.CASES))]


# ======================================================================================
# (g) fastneuron's eager backend against the known answers
# ======================================================================================

def _expected_arrays(case: dict):
    m = len(case["seeds"])
    d = case["options"]["inputs"]
    w = np.array([int(h, 16) for h in np.ravel(case["weight_bits"])], np.uint32).view(np.float32)
    w = w.reshape((m, d) if d > 1 else (m,))
    b = np.array([int(h, 16) for h in case["bias_bits"]], np.uint32).view(np.float32)
    return w, b, np.array(case["diverged_at"], np.int64)


def _compare(what: str, got, want: np.ndarray) -> None:
    """Bit-for-bit equality of float32 arrays, and a message that says how many members differ
    and by how much."""
    import torch

    if isinstance(got, torch.Tensor):
        assert got.dtype == torch.float32, f"{what}: dtype {got.dtype}"
        got = got.detach().cpu().numpy()
    got = np.asarray(got)
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    gb, wb = got.view(np.uint32), want.view(np.uint32)
    if np.array_equal(gb, wb):
        return
    diff = gb != wb
    members = diff.reshape(diff.shape[0], -1).any(axis=1)
    finite = diff & np.isfinite(got) & np.isfinite(want)
    ulp = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))[finite]
    absd = np.abs(got.astype(np.float64) - want.astype(np.float64))[finite]
    first = tuple(int(i) for i in np.argwhere(diff)[0])
    max_ulp = int(ulp.max()) if ulp.size else -1
    max_abs = float(absd.max()) if absd.size else float("nan")
    raise AssertionError(
        f"{what}: {int(members.sum())} of {members.size} members differ ({int(diff.sum())} of {diff.size} values; "
        f"max {max_ulp} ulp, max |diff| {max_abs:.3e} "
        f"among finite pairs; {int((diff & ~(np.isfinite(got) & np.isfinite(want))).sum())} differ in finiteness); "
        f"first at {first}: got {float(got[first])!r} ({int(gb[first]):08x}), "
        f"expected {float(want[first])!r} ({int(wb[first]):08x})")


def _eager_kwargs(case: dict) -> dict:
    kw = dict(case["options"])
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return kw


@pytest.mark.parametrize("case", V3_CASES, ids=_case_id)
def test_eager_v3_vectors(case):
    import fastneuron

    res = fastneuron.train([int(s) for s in case["seeds"]], case["lrs"], case["steps"], backend="eager",
                           problem="teacher", **_eager_kwargs(case))
    w, b, div = _expected_arrays(case)
    got_div = res.diverged_at.detach().cpu().numpy() if hasattr(res.diverged_at, "detach") else res.diverged_at
    got_div = np.asarray(got_div)
    assert got_div.dtype == np.int64, got_div.dtype
    bad = np.flatnonzero(got_div != div)
    assert bad.size == 0, (f"diverged_at: {bad.size} of {div.size} members differ: members {bad.tolist()} "
                           f"got {got_div[bad].tolist()}, expected {div[bad].tolist()}")
    _compare("weight", res.weight, w)
    _compare("bias", res.bias, b)


@pytest.mark.parametrize("opts", [
    dict(),
    dict(noise=[0.0, 0.5, 1.0, 0.25, 0.1, 0.0], batch_size=3, amsgrad=True, weight_decay=0.01),
    dict(x_dist="normal", x_mean=1.0, x_std=2.0, betas=(0.5, 0.9), eps=1e-4),
], ids=["plain", "noise-B3-amsgrad-wd", "normal-betas-eps"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_eager_v2_adam_is_the_v3_oracle_at_d1(optimizer, opts):
    """The v3 oracle's Adam at d = 1 against fastneuron's v2 Adam (problem='linear', tested against
    torch.optim by test_adam.py): needs only v2's API."""
    import fastneuron

    lrs = [0.01, 0.05, 0.2, 0.001, 0.1, 1.0]
    kw = dict(opts)
    if optimizer == "adamw":
        kw.setdefault("weight_decay", 0.01)
    ref = V.train_v3(SEEDS, lrs, 400, optimizer=optimizer, **kw)
    res = fastneuron.train(SEEDS, lrs, 400, backend="eager", optimizer=optimizer, **kw)
    assert res.diverged_at.tolist() == ref.diverged_at.tolist()
    _compare("weight", res.weight, ref.weight)
    _compare("bias", res.bias, ref.bias)
