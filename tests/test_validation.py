"""fastneuron.train's input checks: every bad input is a ValueError naming its argument; the
accepted spellings of seeds and lrs all give the same run; fastneuron.grid's order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import HAS_CUDA

import fastneuron
from fastneuron import rng

U64_MAX = 2**64 - 1


def run(seeds=(1, 2), lrs=0.01, steps=3, **kw):
    kw.setdefault("backend", "eager")
    return fastneuron.train(seeds, lrs, steps, **kw)


def assert_same_result(r1, r2):
    """Bit for bit (NaN of diverged members included)."""
    assert torch.equal(r1.weight.view(torch.int32), r2.weight.view(torch.int32))
    assert torch.equal(r1.bias.view(torch.int32), r2.bias.view(torch.int32))
    assert torch.equal(r1.diverged_at, r2.diverged_at)
    assert np.array_equal(r1.seeds, r2.seeds)


# (keyword arguments of run(), a regex the message must match: the argument's name)
BAD = {
    # seeds
    "lengths differ": (dict(seeds=[1, 2], lrs=[0.1, 0.2, 0.3]), r"\blrs\b.*\bseeds\b|\bseeds\b.*\blrs\b"),
    "lengths differ 2": (dict(seeds=[1, 2, 3], lrs=[0.1, 0.2]), r"\blrs\b"),
    "momentum length": (dict(seeds=[1, 2], momentum=[0.1, 0.2, 0.3]), r"\bmomentum\b"),
    "weight_decay length": (dict(seeds=[1, 2], weight_decay=[0.1, 0.2, 0.3]), r"\bweight_decay\b"),
    "M = 0 list": (dict(seeds=[], lrs=[]), r"\bseeds\b"),
    "M = 0 scalar lr": (dict(seeds=[]), r"\bseeds\b"),
    "M = 0 range": (dict(seeds=range(0)), r"\bseeds\b"),
    "M = 0 numpy": (dict(seeds=np.zeros(0, dtype=np.uint64)), r"\bseeds\b"),
    "M = 0 tensor": (dict(seeds=torch.zeros(0, dtype=torch.int64)), r"\bseeds\b"),
    "seed negative": (dict(seeds=[1, -1]), r"\bseeds\b"),
    "seed 2**64": (dict(seeds=[2**64]), r"\bseeds\b"),
    "seed 2**70": (dict(seeds=[3, 2**70]), r"\bseeds\b"),
    "seed float": (dict(seeds=[1.0, 2.0]), r"\bseeds\b"),
    "seed float 1.5": (dict(seeds=[1.5]), r"\bseeds\b"),
    "seed bool": (dict(seeds=[True, False]), r"\bseeds\b"),
    "seed string": (dict(seeds=["1", "2"]), r"\bseeds\b"),
    "seeds a string": (dict(seeds="12"), r"\bseeds\b"),
    "seeds an int": (dict(seeds=5), r"\bseeds\b"),
    "seeds None": (dict(seeds=None), r"\bseeds\b"),
    "seeds numpy float64": (dict(seeds=np.array([1.0, 2.0])), r"\bseeds\b"),
    "seeds numpy float32": (dict(seeds=np.array([1.0, 2.0], dtype=np.float32)), r"\bseeds\b"),
    "seed numpy float scalar": (dict(seeds=[np.float64(1.0)]), r"\bseeds\b"),
    "seeds numpy bool": (dict(seeds=np.array([True])), r"\bseeds\b"),
    "seeds numpy negative": (dict(seeds=np.array([3, -1])), r"\bseeds\b"),
    "seeds tensor float": (dict(seeds=torch.tensor([1.0, 2.0])), r"\bseeds\b"),
    "seeds tensor bool": (dict(seeds=torch.tensor([True])), r"\bseeds\b"),
    "seeds tensor negative": (dict(seeds=torch.tensor([1, -5])), r"\bseeds\b"),
    "seeds range negative": (dict(seeds=range(-1, 3)), r"\bseeds\b"),
    "seeds range past 2**64": (dict(seeds=range(2**64 - 1, 2**64 + 1)), r"\bseeds\b"),
    # lrs
    "lr nan": (dict(lrs=float("nan")), r"\blrs\b"),
    "lr nan member": (dict(lrs=[0.1, float("nan")]), r"\blrs\b"),
    "lr inf": (dict(lrs=float("inf")), r"\blrs\b"),
    "lr -inf": (dict(lrs=[0.1, -float("inf")]), r"\blrs\b"),
    "lr 0": (dict(lrs=0.0), r"\blrs\b"),
    "lr int 0": (dict(lrs=0), r"\blrs\b"),
    "lr negative": (dict(lrs=[0.1, -0.01]), r"\blrs\b"),
    "lr 1e-50 (0 in float32)": (dict(lrs=1e-50), r"\blrs\b"),
    "lr 1e39 (inf in float32)": (dict(lrs=1e39), r"\blrs\b"),
    "lr numpy 1e39": (dict(lrs=np.array([1e39, 0.1])), r"\blrs\b"),
    "lr tensor nan": (dict(lrs=torch.tensor([0.1, float("nan")])), r"\blrs\b"),
    "lr bool": (dict(lrs=True), r"\blrs\b"),
    "lr string": (dict(lrs="0.1"), r"\blrs\b"),
    "lr None": (dict(lrs=None), r"\blrs\b"),
    "lr complex": (dict(lrs=1j), r"\blrs\b"),
    # SGD options
    "momentum negative": (dict(momentum=-0.1), r"\bmomentum\b"),
    "momentum 1": (dict(momentum=1.0), r"\bmomentum\b"),
    "momentum 1.5 member": (dict(momentum=[0.5, 1.5]), r"\bmomentum\b"),
    "momentum nan": (dict(momentum=float("nan")), r"\bmomentum\b"),
    "momentum rounds to 1 in float32": (dict(momentum=1 - 1e-9), r"\bmomentum\b"),
    "weight_decay negative": (dict(weight_decay=-1e-3), r"\bweight_decay\b"),
    "weight_decay inf": (dict(weight_decay=[0.0, float("inf")]), r"\bweight_decay\b"),
    "weight_decay nan": (dict(weight_decay=float("nan")), r"\bweight_decay\b"),
    "dampening negative": (dict(dampening=-0.1), r"\bdampening\b"),
    "dampening 1": (dict(dampening=1.0), r"\bdampening\b"),
    "dampening 2": (dict(dampening=2.0), r"\bdampening\b"),
    "dampening nan": (dict(dampening=float("nan")), r"\bdampening\b"),
    "dampening string": (dict(dampening="0.1"), r"\bdampening\b"),
    "nesterov without momentum": (dict(nesterov=True), r"\bnesterov\b"),
    "nesterov with a zero-momentum member": (dict(nesterov=True, momentum=[0.9, 0.0]), r"\bnesterov\b"),
    "nesterov not a bool": (dict(nesterov=1, momentum=0.9), r"\bnesterov\b"),
    "nesterov a string": (dict(nesterov="yes", momentum=0.9), r"\bnesterov\b"),
    # run settings
    "steps negative": (dict(steps=-1), r"\bsteps\b"),
    "steps float": (dict(steps=3.0), r"\bsteps\b"),
    "steps float 2.5": (dict(steps=2.5), r"\bsteps\b"),
    "steps bool": (dict(steps=True), r"\bsteps\b"),
    "steps string": (dict(steps="3"), r"\bsteps\b"),
    "batch_size 0": (dict(batch_size=0), r"\bbatch_size\b"),
    "batch_size negative": (dict(batch_size=-2), r"\bbatch_size\b"),
    "batch_size float": (dict(batch_size=2.0), r"\bbatch_size\b"),
    "log_every 0": (dict(log_every=0), r"\blog_every\b"),
    "log_every negative": (dict(log_every=-5), r"\blog_every\b"),
    "log_every float": (dict(log_every=1.0), r"\blog_every\b"),
    "lo == hi": (dict(lo=2.0, hi=2.0), r"\blo\b.*\bhi\b"),
    "lo > hi": (dict(lo=5.0, hi=1.0), r"\blo\b.*\bhi\b"),
    "lo == hi in float32": (dict(lo=1.0, hi=1.0 + 1e-10), r"\blo\b.*\bhi\b"),
    "lo nan": (dict(lo=float("nan")), r"\blo\b"),
    "hi inf": (dict(hi=float("inf")), r"\bhi\b"),
    "hi - lo overflows float32": (dict(lo=-3e38, hi=3e38), r"\bhi\b"),
    "a nan": (dict(a=float("nan")), r"\ba\b"),
    "a inf": (dict(a=float("inf")), r"\ba\b"),
    "a inf in float32": (dict(a=1e39), r"\ba\b"),
    "c -inf": (dict(c=-float("inf")), r"\bc\b"),
    "c nan": (dict(c=float("nan")), r"\bc\b"),
    "a string": (dict(a="2"), r"\ba\b"),
    "backend unknown": (dict(backend="jax"), r"\bbackend\b"),
    "backend None": (dict(backend=None), r"\bbackend\b"),
    "backend case": (dict(backend="Eager"), r"\bbackend\b"),
    "device banana": (dict(device="banana"), r"\bdevice\b"),
    "device meta": (dict(device="meta"), r"\bdevice\b"),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow warnings on float32 casts
@pytest.mark.parametrize("kw,pattern", list(BAD.values()), ids=list(BAD))
def test_bad_input_raises_value_error_naming_it(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        run(**kw)


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_device_when_absent(device):
    with pytest.raises(ValueError, match=r"\bdevice\b"):
        run(device=device)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), None] + (["cuda"] if HAS_CUDA else []))
def test_good_devices(device):
    res = run(device=device)
    assert res.weight.device.type == "cpu"  # results live on the CPU
    assert res.weight.shape == (2,)


def test_steps_zero_returns_the_init():
    seeds = [0, 9, 10, U64_MAX]
    res = fastneuron.train(seeds, 0.01, 0, backend="eager", log_every=3)
    s = torch.tensor([x - 2**64 if x >= 2**63 else x for x in seeds], dtype=torch.int64)
    w0, b0 = rng.init_params(*rng.split_seeds(s))
    assert torch.equal(res.weight, w0) and torch.equal(res.bias, b0)
    assert res.diverged_at.tolist() == [-1] * 4
    assert res.history_steps.numel() == 0
    assert res.history_weight is not None and res.history_weight.shape == (0, 4)


def test_scalar_lr_broadcasts():
    seeds = [3, 1, 4, 1, 5]
    ref = run(seeds, [0.02] * 5, steps=50)
    for lrs in (0.02, np.float32(0.02), np.float64(0.02), [0.02], np.array([0.02] * 5), torch.tensor(0.02),
                torch.full((5,), 0.02, dtype=torch.float64)):
        assert_same_result(run(seeds, lrs, steps=50), ref)
    assert torch.equal(ref.lrs, torch.full((5,), np.float32(0.02)))
    # momentum and weight_decay too
    ref_m = run(seeds, 0.02, steps=50, momentum=[0.5] * 5, weight_decay=[0.01] * 5)
    assert_same_result(run(seeds, 0.02, steps=50, momentum=0.5, weight_decay=0.01), ref_m)


def test_integer_lr_is_a_number():
    # lr = 1 (an int) is a valid (diverging) rate, the same as 1.0
    res = run(lrs=1, steps=60)
    assert_same_result(res, run(lrs=1.0, steps=60))
    assert (res.diverged_at >= 0).all() and torch.isnan(res.weight).all()


@pytest.mark.parametrize("seeds_py", [[0, 1, 2, 3, 4], [2**63 - 1, 2**63, 2**64 - 2, U64_MAX],
                                      [7, U64_MAX, 0, 2**32, 2**32 - 1, 12345678901234567890]],
                         ids=["small", "top", "mixed"])
def test_seed_spellings_agree(seeds_py):
    ref = run(seeds_py, 0.01, steps=40)
    spellings = [
        tuple(seeds_py),
        np.array(seeds_py, dtype=np.uint64),
        [np.uint64(s) for s in seeds_py],
        (s for s in seeds_py),
    ]
    if all(b - a == 1 for a, b in zip(seeds_py, seeds_py[1:])):
        spellings.append(range(seeds_py[0], seeds_py[-1] + 1))
    if max(seeds_py) < 2**63:
        spellings += [torch.tensor(seeds_py, dtype=torch.int64), np.array(seeds_py, dtype=np.int64),
                      torch.tensor(seeds_py, dtype=torch.int32) if max(seeds_py) < 2**31 else None]
    if hasattr(torch, "uint64"):
        spellings.append(torch.from_numpy(np.array(seeds_py, dtype=np.uint64).view(np.int64)).view(torch.uint64))
    for seeds in spellings:
        if seeds is None:
            continue
        res = run(seeds, 0.01, steps=40)
        assert_same_result(res, ref)
        assert res.seeds.dtype == np.uint64 and res.seeds.tolist() == seeds_py, type(seeds)


def test_ranges_agree_with_lists():
    for r in (range(0, 10, 3), range(2**63 - 2, 2**63 + 2), range(U64_MAX - 3, 2**64), range(10, 0, -2)):
        assert_same_result(run(r, 0.01, steps=20), run(list(r), 0.01, steps=20))


def test_seed_results_do_not_depend_on_other_members():
    one = run([U64_MAX], 0.01, steps=100)
    many = run([5, U64_MAX, 0], [0.5, 0.01, 0.2], steps=100)
    assert torch.equal(many.weight[1:2], one.weight) and torch.equal(many.bias[1:2], one.bias)


# --- grid ----------------------------------------------------------------------------------


def f32(values) -> list:
    """What a grid holds for these values: float32 (the run's arithmetic), as Python floats."""
    return [float(np.float32(v)) for v in values]


def test_grid_product_order():
    g = fastneuron.grid(seeds=[10, 11, 12], lrs=[1e-3, 1e-2])
    assert {k: list(g[k]) for k in g} == {"seeds": [10, 10, 11, 11, 12, 12], "lrs": f32([1e-3, 1e-2] * 3)}
    for i, (s, lr) in enumerate(itertools.product([10, 11, 12], f32([1e-3, 1e-2]))):
        assert g["seeds"][i] == s and g["lrs"][i] == lr
        assert g["seeds"][i] == [10, 11, 12][i // 2] and g["lrs"][i] == f32([1e-3, 1e-2])[i % 2]


def test_grid_more_axes_and_scalars():
    g = fastneuron.grid(range(2), 0.01, momentum=[0.0, 0.9], weight_decay=0.1)
    assert list(g) == ["seeds", "lrs", "momentum", "weight_decay"] and g.size == 4
    assert list(g["seeds"]) == [0, 0, 1, 1]
    assert list(g["lrs"]) == f32([0.01] * 4)
    assert list(g["momentum"]) == f32([0.0, 0.9, 0.0, 0.9])
    assert list(g["weight_decay"]) == f32([0.1] * 4)
    g3 = fastneuron.grid([1, 2], [0.1, 0.2, 0.3], momentum=[0.5, 0.6])
    assert list(zip(g3["seeds"], g3["lrs"], g3["momentum"])) == list(
        itertools.product([1, 2], f32([0.1, 0.2, 0.3]), f32([0.5, 0.6])))


def test_grid_feeds_train():
    g = fastneuron.grid(seeds=[3, U64_MAX], lrs=[0.01, 0.03], momentum=[0.0, 0.5])
    res = fastneuron.train(**g, steps=30, backend="eager")
    assert len(res) == 8
    for i in range(8):
        one = fastneuron.train([g["seeds"][i]], [g["lrs"][i]], 30, momentum=g["momentum"][i], backend="eager")
        assert torch.equal(res.weight[i:i + 1], one.weight) and torch.equal(res.bias[i:i + 1], one.bias), i


@pytest.mark.parametrize("kw,name", [(dict(seeds=[], lrs=[0.1]), "seeds"), (dict(seeds=[1], lrs=[]), "lrs"),
                                     (dict(seeds=[1], lrs=0.1, momentum=[]), "momentum")])
def test_grid_empty_axis(kw, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        fastneuron.grid(**kw)


# -- issue 13 item 11: messages and the inputs they were missing ----------------------------


@pytest.mark.parametrize("kw, message", [
    # a string is not the sequence of its characters: it said "got '0'"
    (dict(lrs="0.01"), "lrs must be a number or a sequence of numbers, got '0.01'"),
    (dict(momentum="0.5"), "momentum must be a number or a sequence of numbers, got '0.5'"),
    # NumPy scalars shown as plain numbers, not np.float64(-0.01)
    (dict(lrs=np.float64(-0.01)), "member 0 has -0.01"),
    (dict(lrs=[0.01, np.float32(-2.0)]), "member 1 has -2.0"),
    (dict(momentum=np.array([0.5, -0.25])), "member 1 has -0.25"),
    (dict(lrs=[np.str_("x"), 1]), "lrs must be real numbers, got 'x'"),
    (dict(steps=np.float64(2.5)), "steps must be an integer, got 2.5"),
    # sets have no order: members would come out reordered
    (dict(lrs={0.01, 0.1}), "lrs must be an ordered sequence"),
    (dict(seeds={3, 1, 2}, lrs=0.01), "seeds must be an ordered sequence"),
    (dict(momentum=frozenset({0.1, 0.2})), "momentum must be an ordered sequence"),
    # huge steps with log_every: an OverflowError traceback
    (dict(steps=10**30, log_every=7), "steps must be <= 2**62"),
    (dict(steps=2**62 + 1), "steps must be <= 2**62"),
    (dict(log_every=10**30), "log_every must be <= 2**62"),
    # meta tensors: a NotImplementedError
    (dict(lrs=torch.full((2,), 0.01, device="meta")), "lrs is a tensor on the meta device"),
    (dict(seeds=torch.arange(2, device="meta")), "seeds is a tensor on the meta device"),
    (dict(weight_decay=torch.zeros(2, device="meta")), "weight_decay is a tensor on the meta device"),
])
def test_issue13_messages(kw, message):
    with pytest.raises(ValueError) as info:
        run(**kw)
    assert message in str(info.value), str(info.value)
    assert "np.float" not in str(info.value) and "np.str" not in str(info.value)


@pytest.mark.parametrize("kw", [dict(a=1e39), dict(c=-1e39), dict(lo=-1e39), dict(checkpoint_every=1e39)])
def test_float32_overflow_refused_without_a_warning(kw):
    """It warned "RuntimeWarning: overflow encountered in cast" before the ValueError."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=next(iter(kw))):
            run(**kw)


def test_ordered_sequences_still_accepted():
    assert_same_result(run(lrs=(0.01, 0.1)), run(lrs=[0.01, 0.1]))
    assert_same_result(run(lrs=np.float64(0.01)), run(lrs=0.01))
    from fastneuron import _validate

    assert _validate.check_int("steps", 2**62, 0) == 2**62  # the largest accepted
