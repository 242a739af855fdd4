"""The tutorial replica (fastneuron.notebook) against fastneuron's eager reference.

(a) Fed the SPEC's init and x stream, the tutorial's autograd + torch.optim.SGD loop stays
    within 1e-5 of the reference at every logged step, for several optimizer settings.
(b) With its own sampling (numpy x, nn.Linear's init), the replica and the reference agree
    in distribution (two-sample Kolmogorov-Smirnov at the 1% level).
(c) ``python -m fastneuron.notebook`` prints the tutorial's lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastneuron
from fastneuron import rng
from fastneuron.notebook import train_tutorial

TOL = 1e-5
U64_MAX = 2**64 - 1
REPO = Path(__file__).resolve().parent.parent


def spec_init_and_xs(seed: int, steps: int, lo: float = 1.0, hi: float = 5.0):
    """(w0, b0) of the SPEC's init stream and x of steps 0 .. steps-1 of its data stream (B = 1),
    as Python floats (each exactly a float32)."""
    s = torch.tensor([seed - 2**64 if seed >= 2**63 else seed], dtype=torch.int64)
    s_lo, s_hi = rng.split_seeds(s)
    w0, b0 = rng.init_params(s_lo, s_hi)
    q = torch.arange((steps + 3) // 4, dtype=torch.int64)
    lo32 = torch.tensor(lo, dtype=torch.float32)
    span32 = torch.tensor(float(np.float32(hi - lo)), dtype=torch.float32)
    block = rng.data_block(s_lo, s_hi, q, lo32, span32)  # 4 tensors of shape (steps/4,)
    xs = torch.stack(block, dim=1).reshape(-1)[:steps]  # sample n = word n % 4 of block n // 4
    return (float(w0[0]), float(b0[0])), xs.tolist()


def test_spec_xs_are_the_reference_stream():
    # the helper's x of step n is the reference's sample n (SPEC §2), checked on a few steps
    (w0, b0), xs = spec_init_and_xs(7, 9)
    s_lo, s_hi = torch.tensor(7), torch.tensor(0)
    for n in range(9):
        x = rng.data_block(s_lo, s_hi, n // 4, torch.tensor(1.0), torch.tensor(4.0))[n % 4]
        assert xs[n] == float(x)
        assert 1.0 <= xs[n] < 5.0
    res = fastneuron.train([7], 0.01, 0, backend="eager")
    assert (w0, b0) == (float(res.weight[0]), float(res.bias[0]))


# --- (a) the replica fed the SPEC's numbers ------------------------------------------------

OPTION_SETS = [
    {},
    dict(momentum=0.9),
    dict(momentum=0.5, dampening=0.1),
    dict(momentum=0.5, nesterov=True),  # torch.optim.SGD's nesterov needs dampening 0
    dict(weight_decay=0.01),
    dict(momentum=0.9, weight_decay=0.01, nesterov=True),
]


@pytest.mark.parametrize("seed", [0, U64_MAX])
@pytest.mark.parametrize("sgd_options", OPTION_SETS, ids=lambda o: "-".join(o) or "plain")
def test_replica_tracks_reference(seed, sgd_options):
    steps, log_every = 3000, 200
    init, xs = spec_init_and_xs(seed, steps)
    _, log = train_tutorial(steps, 0.01, init=init, sample_x=lambda i: xs[i], print_every=None,
                            sgd_options=sgd_options, log_every=log_every)
    res = fastneuron.train([seed], 0.01, steps, backend="eager", log_every=log_every, **sgd_options)

    assert [step for step, _, _ in log] == res.history_steps.tolist() == list(range(0, steps, log_every))
    rep_w = torch.tensor([w for _, w, _ in log], dtype=torch.float64)
    rep_b = torch.tensor([b for _, _, b in log], dtype=torch.float64)
    ref_w = res.history_weight[:, 0].to(torch.float64)
    ref_b = res.history_bias[:, 0].to(torch.float64)
    dw, db = (rep_w - ref_w).abs(), (rep_b - ref_b).abs()
    worst = int(torch.argmax(torch.maximum(dw, db)))
    assert float(dw.max()) <= TOL and float(db.max()) <= TOL, (
        f"{int(((dw > TOL) | (db > TOL)).sum())} of {len(log)} logged steps differ by more than {TOL}: "
        f"max |dw| {float(dw.max()):.3e}, max |db| {float(db.max()):.3e}, worst at step {log[worst][0]} "
        f"(replica {log[worst][1]}, {log[worst][2]}; reference {float(ref_w[worst])}, {float(ref_b[worst])})")
    # and both end at the tutorial's answer
    assert abs(float(res.weight[0]) - 2.0) < 0.05 and abs(float(res.bias[0]) - 1.0) < 0.1


# --- (b) the replica's own randomness: same distribution -----------------------------------

N_RUNS, KS_STEP = 200, 200


@pytest.fixture(scope="module")
def replica_population():
    """(w, b) after step 200 of the tutorial loop, its own sampling, np/torch seeded with i."""
    np_state, torch_state = np.random.get_state(), torch.random.get_rng_state()
    try:
        ws, bs = [], []
        for i in range(N_RUNS):
            np.random.seed(i)
            torch.manual_seed(i)
            _, log = train_tutorial(KS_STEP + 1, 0.01, print_every=None, log_every=KS_STEP)
            assert log[-1][0] == KS_STEP
            ws.append(log[-1][1])
            bs.append(log[-1][2])
    finally:
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
    return np.array(ws), np.array(bs)


def _reference_population(**kw):
    res = fastneuron.train(range(N_RUNS), 0.01, KS_STEP + 1, backend="eager", log_every=KS_STEP, **kw)
    assert res.history_steps.tolist() == [0, KS_STEP]
    return res.history_weight[-1].numpy().astype(np.float64), res.history_bias[-1].numpy().astype(np.float64)


def test_replica_and_reference_agree_in_distribution(replica_population):
    stats = pytest.importorskip("scipy.stats")
    rep_w, _ = replica_population
    ref_w, _ = _reference_population()
    assert np.isfinite(rep_w).all() and np.isfinite(ref_w).all()
    ks = stats.ks_2samp(rep_w, ref_w)
    assert ks.pvalue >= 0.01, (
        f"KS rejects at 1%: D = {ks.statistic:.3f}, p = {ks.pvalue:.2e}; "
        f"replica w mean {rep_w.mean():.4f} sd {rep_w.std():.4f}, reference mean {ref_w.mean():.4f} "
        f"sd {ref_w.std():.4f}")


def test_distribution_test_has_power(replica_population):
    """The same KS test does reject a reference with x ~ U[0, 5) (the tutorial text's range,
    not its code's), so the agreement above is not for want of power."""
    stats = pytest.importorskip("scipy.stats")
    rep_w, _ = replica_population
    wrong_w, _ = _reference_population(lo=0.0, hi=5.0)
    ks = stats.ks_2samp(rep_w, wrong_w)
    assert ks.pvalue < 0.01, f"KS does not tell x in [0, 5) from x in (1, 5]: p = {ks.pvalue:.3f}"


# --- (c) the command line ------------------------------------------------------------------

# The tutorial's format: "Iteration 0|| weight:tensor([0.2515]), bias:tensor([0.0839])"
LINE = re.compile(r"^Iteration (\d+)\|\| weight:tensor\(\[(\S+)\]\), bias:tensor\(\[(\S+)\]\)$")


def test_notebook_command_line():
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "fastneuron.notebook", "--steps", "401", "--seed", "0"],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out.stdout
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), out.stdout
    assert [int(m.group(1)) for m in parsed] == [0, 200, 400]
    values = [(float(m.group(2)), float(m.group(3))) for m in parsed]
    assert all(np.isfinite(v).all() for v in values)
    assert all(len(m.group(2).split(".")[-1]) == 4 for m in parsed), out.stdout  # torch's 4 decimals
    # the printed numbers are those of train_tutorial with the same seeding, in-process
    np_state, torch_state = np.random.get_state(), torch.random.get_rng_state()
    try:
        np.random.seed(0)
        torch.manual_seed(0)
        _, log = train_tutorial(401, 0.01, print_every=None, log_every=200)
    finally:
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
    # the printed tensors are those of train_tutorial's parameters, as torch prints them
    assert lines == [f"Iteration {i}|| weight:{torch.tensor([w])}, bias:{torch.tensor([b])}" for i, w, b in log]
    assert values == [pytest.approx((w, b), abs=5e-5) for _, w, b in log]


def test_notebook_help_describes_its_flags():
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "fastneuron.notebook", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for words in ("--steps T training steps", "--lr LR the learning rate", "--seed S seed numpy",
                  "weight:tensor([w]), bias:tensor([b])"):
        assert words in text, out.stdout
