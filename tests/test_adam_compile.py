"""backend="compile" runs Adam, AdamW and RMSprop (SPEC §3c) bit for bit as the eager
reference: the float64 step tables, the per-member float64 divisions and the IEEE
square root survive Inductor unchanged, and so does divergence.

Each distinct compiled config costs tens of seconds of cold compilation on a small CPU,
so the three cases here cover every optional line of §3c between them (weight decay on
for some members and off for others, amsgrad, decoupled decay, centered, momentum,
batch 1 and 3, lerp's both formulas) on 37 members and 50 steps (four compiled chunks
and an uncompiled remainder).
"""

from __future__ import annotations

import pytest
from compare import assert_same_results, seeds_for

import fastneuron

M, STEPS = 37, 50
SEEDS = seeds_for(M)
#: Stable rates, wandering ones and, from 1e19 on, members whose squared gradient
#: overflows (they diverge at step 1); 3e17 ones run away more slowly.
LRS = [(1e-3, 0.01, 0.1, 1.0, 3e17, 1e19, 0.03)[i % 7] for i in range(M)]
WDS = [(0.0, 0.01, 0.1, 0.0, 0.5)[i % 5] for i in range(M)]

CASES = [
    ("adam-amsgrad-wd-b1", dict(optimizer="adam", amsgrad=True, weight_decay=WDS, eps=[1e-8, 1e-5] * 18 + [1e-8])),
    ("adamw-b3", dict(optimizer="adamw", batch_size=3, weight_decay=WDS, betas=(0.3, 0.9))),
    ("rmsprop-centered-momentum-wd-b1", dict(optimizer="rmsprop", centered=True, momentum=0.9, weight_decay=WDS,
                                             alpha=[(0.99, 0.9, 0.3)[i % 3] for i in range(M)])),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_compile_equals_eager(case):
    _, kw = case
    ref = fastneuron.train(SEEDS, LRS, STEPS, backend="eager", log_every=3, **kw)
    got = fastneuron.train(SEEDS, LRS, STEPS, backend="compile", log_every=3, **kw)
    assert (ref.diverged_at >= 0).any() and (ref.diverged_at < 0).any()
    assert_same_results(ref, got, members=True)
