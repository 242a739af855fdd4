"""backend="compile" equals the eager reference bit for bit (SPEC: every backend)."""

import pytest
import torch
from compare import assert_same_results, lrs_for, seeds_for
from conftest import DEVICES, SPEC_VECTORS

import fastneuron as fn



@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,steps", [(1, 201), (7, 0), (7, 1), (7, 3), (7, 4), (1000, 201), (4099, 37)])
def test_compile_equals_eager(m, steps, device):
    seeds, lrs = seeds_for(m), lrs_for(m)
    ref = fn.train(seeds, lrs, steps, backend="eager", device=device)
    got = fn.train(seeds, lrs, steps, backend="compile", device=device)
    assert_same_results(ref, got)
    if m >= 5 and steps >= 60:
        assert (got.diverged_at >= 0).any(), "the test should include diverging members"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,steps", [(1, 3), (13, 201)])
def test_compile_equals_eager_batch3_history(m, steps, device):
    seeds, lrs = seeds_for(m), lrs_for(m)
    kw = dict(batch_size=3, log_every=7)
    ref = fn.train(seeds, lrs, steps, backend="eager", device=device, **kw)
    got = fn.train(seeds, lrs, steps, backend="compile", device=device, **kw)
    assert_same_results(ref, got)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,steps,batch", [(41, 37, 5), (1, 3, 1024)])
def test_compile_equals_eager_any_batch(m, steps, batch, device):
    """A batch size that does not divide 12 runs in segments of 12 samples, steps ending
    anywhere inside them, gradient sums carried across (compile time independent of B):
    the same bits as eager. B = 5: 185 samples, so the run ends with 5 samples uncompiled;
    momentum and weight decay on some members, history, divergence. B = 1024, M = 1."""
    seeds, lrs = seeds_for(m), lrs_for(m)
    kw = dict(batch_size=batch)
    if m > 1:
        kw.update(momentum=[0.0, 0.9, 0.5] * (m // 3) + [0.9] * (m % 3), weight_decay=[0.0, 0.01] * (m // 2) + [0.1],
                  log_every=4)
    ref = fn.train(seeds, lrs, steps, backend="eager", device=device, **kw)
    got = fn.train(seeds, lrs, steps, backend="compile", device=device, **kw)
    assert_same_results(ref, got)
    if m > 1:
        assert (got.diverged_at >= 0).any() and (got.diverged_at < 0).any(), "some members should diverge, not all"


@pytest.mark.parametrize("device", DEVICES)
def test_compile_equals_eager_sgd_options(device):
    m = 11
    kw = dict(momentum=[0.9, 0.0, 0.5] * 3 + [0.9, 0.1], weight_decay=[0.0, 0.01, 0.1] * 3 + [0.0, 0.5],
              dampening=0.1, a=-3.0, c=0.5, lo=-2.0, hi=2.0, log_every=50)
    ref = fn.train(seeds_for(m), lrs_for(m), 203, backend="eager", device=device, **kw)
    got = fn.train(seeds_for(m), lrs_for(m), 203, backend="compile", device=device, **kw)
    assert_same_results(ref, got)


def _spec_cases():
    return SPEC_VECTORS["train"]


@pytest.mark.parametrize("case", _spec_cases(), ids=lambda c: f"{len(c['seeds'])}x{c['steps']}")
def test_compile_matches_spec_vectors(case):
    kw = {k: case[k] for k in ("momentum", "weight_decay", "dampening", "nesterov", "a", "c", "lo", "hi")
          if k in case}
    r = fn.train([int(s) for s in case["seeds"]], case["lrs"], case["steps"], batch_size=case.get("batch", 1),
                 backend="compile", **kw)
    bits = lambda t: [f"{v & 0xFFFFFFFF:08x}" for v in t.view(torch.int32).tolist()]  # noqa: E731
    assert bits(r.weight) == case["weight_bits"]
    assert bits(r.bias) == case["bias_bits"]
    assert r.diverged_at.tolist() == case["diverged_at"]


def test_compiled_init_equals_eager(monkeypatch):
    """Above EAGER_INIT_MEMBERS the init is compiled: the same w0, b0 (a run of 0 steps)."""
    from fastneuron.kernels import compiled

    seeds = seeds_for(1001) + [0, 2**64 - 1]
    ref = fn.train(seeds, 0.01, 0, backend="eager")
    monkeypatch.setattr(compiled, "EAGER_INIT_MEMBERS", 100)
    calls = []
    real = compiled.compiled_init
    monkeypatch.setattr(compiled, "compiled_init", lambda *a: calls.append(1) or real(*a))
    assert_same_results(ref, fn.train(seeds, 0.01, 0, backend="compile"))
    assert calls, "the compiled init did not run"


def test_members_are_independent():
    """Members trained alone equal the same members inside a larger, shuffled run."""
    m = 300
    seeds, lrs = seeds_for(m), lrs_for(m)
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(0)).tolist()
    whole = fn.train([seeds[i] for i in perm], [lrs[i] for i in perm], 61, backend="compile", log_every=20)
    for pos in (0, 17, 299):
        i = perm[pos]
        alone = fn.train([seeds[i]], [lrs[i]], 61, backend="compile", log_every=20)
        assert torch.equal(alone.weight.view(torch.int32), whole.weight[pos:pos + 1].view(torch.int32))
        assert torch.equal(alone.bias.view(torch.int32), whole.bias[pos:pos + 1].view(torch.int32))
        assert torch.equal(alone.diverged_at, whole.diverged_at[pos:pos + 1])
        assert torch.equal(alone.history_weight.view(torch.int32),
                           whole.history_weight[:, pos:pos + 1].view(torch.int32))


def test_member_blocks_do_not_change_results():
    m = 50
    ref = fn.train(seeds_for(m), lrs_for(m), 45, backend="compile", log_every=4)
    for block in (1, 7, 49):
        assert_same_results(ref, fn.train(seeds_for(m), lrs_for(m), 45, backend="compile", log_every=4,
                                          member_block=block))


def test_one_compilation_serves_every_m_and_t():
    """After the first run of an option set, other M, T, seeds and settings recompile nothing."""
    from torch._dynamo.utils import counters

    kw = dict(weight_decay=0.01)  # an option set no other test compiles
    fn.train(range(37), 0.01, 50, backend="compile", **kw)
    graphs = counters["stats"]["unique_graphs"]
    fn.train(range(1001), 0.02, 203, backend="compile", **kw)
    fn.train([5], 0.003, 16, backend="compile", **kw)
    fn.train(range(4099), [0.5, 0.01] * 2049 + [0.1], 24, backend="compile", a=-1.0, c=3.0, lo=-2.0, hi=0.5, **kw)
    assert counters["stats"]["unique_graphs"] == graphs, "a later run recompiled"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("every", [1, 3, 10, 100])
@pytest.mark.parametrize("m", [1, 13])
def test_compile_log_every_equals_eager(m, every, device):
    """A log every k steps keeps only the logged rows (picked by selects in the compiled
    segment, no (steps, M) record; segments without a logged step run the unlogged
    graph): the same history and final state as eager, bit for bit. 257 steps: not a
    multiple of k, of the 24-step chunk or of the 12-step segment, so the run ends with
    uncompiled steps; M = 1 (padded to 2 for the compiler) and M = 13, whose members
    include diverging ones."""
    seeds, lrs = seeds_for(m), (lrs_for(m) if m > 1 else [0.01])
    ref = fn.train(seeds, lrs, 257, backend="eager", device=device, log_every=every)
    got = fn.train(seeds, lrs, 257, backend="compile", device=device, log_every=every)
    assert_same_results(ref, got)
    assert got.history_weight.shape == (-(-257 // every), m)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("every", [1, 4, 11])
def test_compile_log_every_equals_eager_cut_segments(every, device):
    """B = 5 (segments of 8 samples, steps ending anywhere in them): the logged rows are
    picked by sample, the same bits as eager."""
    m, steps = 7, 61
    kw = dict(batch_size=5, log_every=every)
    ref = fn.train(seeds_for(m), lrs_for(m), steps, backend="eager", device=device, **kw)
    got = fn.train(seeds_for(m), lrs_for(m), steps, backend="compile", device=device, **kw)
    assert_same_results(ref, got)


def test_log_intervals_of_a_segment_or_more_share_a_graph():
    """Every log_every >= the segment's 12 steps runs the same two compiled graphs (the
    unlogged segment's, and one that keeps the state after any one of its steps): a
    second interval compiles nothing new."""
    from torch._dynamo.utils import counters

    kw = dict(weight_decay=0.02)  # an option set no other test compiles
    fn.train(range(5), 0.01, 150, backend="compile", log_every=100, **kw)
    graphs = counters["stats"]["unique_graphs"]
    for every in (12, 13, 1000):
        fn.train(range(7), 0.01, 150, backend="compile", log_every=every, **kw)
    assert counters["stats"]["unique_graphs"] == graphs, "another log interval recompiled"
