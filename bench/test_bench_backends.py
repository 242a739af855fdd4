"""pytest-benchmark timings of ``fastneuron.train`` per backend, on one fixed small problem.

Not part of the default test run (pyproject's ``testpaths = ["tests"]``). Run with::

    pytest bench/ --benchmark-only

Each backend trains M = 2**14 members for T = 256 steps (the tutorial's problem, one
learning rate per member) on CUDA when present, else on CPU. The first call, which
compiles, is a warm-up round outside the timings; CUDA is synchronized inside the
timed function. ``triton`` needs CUDA and is skipped without it.

To track regressions, save a baseline and compare later runs against it::

    pytest bench/ --benchmark-only --benchmark-save=before
    pytest bench/ --benchmark-only --benchmark-compare            # against the latest saved
    pytest bench/ --benchmark-only --benchmark-compare=0001 --benchmark-compare-fail=median:10%

Saved runs go to ``.benchmarks/`` (git-ignored). ``python -m fastneuron.bench`` is the
headline benchmark against other ways of training; this file only times fastneuron.
"""

import numpy as np
import pytest
import torch

import fastneuron

MEMBERS = 2**14
STEPS = 256
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="requires CUDA")


@pytest.mark.parametrize("backend", ["eager", "compile", pytest.param("triton", marks=requires_cuda)])
def test_train(benchmark, backend):
    seeds = np.arange(MEMBERS, dtype=np.int64)
    lrs = np.geomspace(1e-3, 2e-2, MEMBERS)

    def train():
        result = fastneuron.train(seeds, lrs, STEPS, backend=backend, device=DEVICE, progress=False)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return result

    benchmark.extra_info.update(members=MEMBERS, steps=STEPS, device=DEVICE)
    result = benchmark.pedantic(train, rounds=5, iterations=1, warmup_rounds=1)
    assert result.weight.shape == (MEMBERS,)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["neuron_steps_per_s"] = MEMBERS * STEPS / benchmark.stats.stats.median
