"""Members as a description (fastneuron.members, issue 14 item 1): a grid's columns give
the members of ``itertools.product`` in order, expand on the device block by block,
and train bit for bit as the same members given as arrays, on every backend."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from compare import assert_same_results
from conftest import DEVICES, requires_triton

import fastneuron as fn
from fastneuron.members import GridColumn, column_from_json, describe
from fastneuron.reference import dense_members
from fastneuron.rng import split_seeds
from fastneuron.spec import RunSpec

U64_MAX = 2**64 - 1


def product_columns(*axes):
    return [list(c) for c in zip(*itertools.product(*axes))]


@pytest.mark.parametrize("seeds", [range(5), range(U64_MAX - 2, 2**64), range(3, 40, 7), range(2**63 - 3, 2**63 + 3),
                                   [0, U64_MAX, 2**63, 9]])
def test_grid_is_itertools_product(seeds):
    lrs, mus = [0.1, 0.2, 0.3], [0.0, 0.9]
    g = fn.grid(seeds, lrs, momentum=mus)
    want = product_columns(list(seeds), lrs, mus)
    assert g.size == len(want[0])
    assert list(g["seeds"]) == want[0]
    assert list(g["lrs"]) == [float(np.float32(v)) for v in want[1]]
    assert list(g["momentum"]) == [float(np.float32(v)) for v in want[2]]
    assert g["seeds"].numpy().dtype == np.uint64 and np.asarray(g["lrs"]).dtype == np.float32


@pytest.mark.parametrize("device", DEVICES)
def test_take_slices_and_json(device):
    g = fn.grid(range(U64_MAX - 10, 2**64), [0.5, 0.25, 0.125], momentum=[0.0, 0.5])
    for name in ("seeds", "lrs", "momentum"):
        col = g[name]
        full = col.numpy()
        for a, b in ((0, 1), (5, 23), (0, col.length), (col.length - 1, col.length)):
            sub = col[a:b]
            assert np.array_equal(sub.numpy(), full[a:b])
            got = sub.take(0, b - a, device, pad=2).cpu()
            want = torch.from_numpy(full[a:b].view(np.int64) if name == "seeds" else full[a:b])
            assert torch.equal(got, torch.cat([want, want[:1].expand(2)]))
            back = column_from_json(json.loads(json.dumps(sub.to_json())))
            assert np.array_equal(back.numpy(), full[a:b])
        assert col[-1] == full[-1] and col[3] == full[3]


def test_distinct_of_a_slice_is_the_values_it_holds():
    g = fn.grid(range(4), [0.1, 0.2, 0.3], momentum=[0.0, 0.5, 0.9])
    mu = g["momentum"]
    assert mu[0:1].distinct().tolist() == [0.0]
    assert sorted(mu[1:3].distinct().tolist()) == [np.float32(0.5), np.float32(0.9)]
    assert len(mu.distinct()) == 3
    assert g["lrs"][0:3].distinct().tolist() == [np.float32(0.1)]  # lrs vary every 3 members


@pytest.mark.parametrize("bad", [
    {"dtype": "int8", "values": [1], "inner": 1, "offset": 0, "length": 1},
    {"dtype": "uint64", "values": [-1], "inner": 1, "offset": 0, "length": 1},
    {"dtype": "uint64", "range": [0, 0, 1], "inner": 1, "offset": 0, "length": 1},
    {"dtype": "float32", "values": [0.1], "inner": 1, "offset": 0, "length": 1},  # 0.1 is not a float32
    {"dtype": "float32", "values": [1.0], "inner": 0, "offset": 0, "length": 1},
    {"dtype": "float32", "values": [], "inner": 1, "offset": 0, "length": 1},
    {"dtype": "float32", "values": [1.0], "inner": 1, "offset": 0},
])
def test_column_from_json_refuses(bad):
    with pytest.raises(ValueError, match="not a grid column"):
        column_from_json(bad)


@pytest.mark.parametrize("kwargs, match", [
    (dict(seeds=[], lrs=[0.1]), "seeds is empty"),
    (dict(seeds=range(3), lrs=[]), "lrs is empty"),
    (dict(seeds=range(3), lrs=[0.1], momentum=[]), "momentum is empty"),
    (dict(seeds=range(-1, 3), lrs=[0.1]), "seeds must lie in"),
    (dict(seeds=range(3), lrs=[0.1, float("nan")]), "lrs"),
    (dict(seeds=range(3), lrs=["a"]), "lrs"),
])
def test_grid_refuses(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn.grid(**kwargs)


def test_the_run_checks_a_grid_axis():
    with pytest.raises(ValueError, match=r"lrs must be finite .*; value 1 has -0.1000\d* \(of its grid axis\)"):
        fn.train(**fn.grid(range(3), [0.1, -0.1]), steps=1)
    with pytest.raises(ValueError, match=r"momentum must be finite and in \[0.0, 1.0\) .*; value 1 has 1.5"):
        fn.train(**fn.grid(range(3), [0.1], momentum=[0.5, 1.5]), steps=1)
    g = fn.grid(range(3), [0.1])
    with pytest.raises(ValueError, match="lrs has 3 values but there are 2 seeds"):
        fn.train(seeds=[1, 2], lrs=g["lrs"], steps=1)


def test_a_trillion_members_are_a_few_numbers():
    # 10**12 members: the spec, its digest and a block at the far end cost O(axes).
    g = fn.grid(range(U64_MAX - 10**12 + 1, 2**64), [0.01], momentum=[0.0, 0.9])
    spec = RunSpec.build(**g, steps=10, backend="eager", device="cpu")
    assert len(spec) == 2 * 10**12
    assert len(spec.digest) == 64
    block = spec.block(len(spec) - 3, len(spec), torch.device("cpu"))
    assert block.s_lo.tolist() == [-2, -1, -1] and block.s_hi.tolist() == [-1, -1, -1]  # the seeds' 32-bit words
    seeds = spec.seeds.take(len(spec) - 3, len(spec), "cpu")
    assert seeds.tolist() == [-2, -1, -1]  # 2**64 - 2 and 2**64 - 1 (momentum varies fastest)
    assert block.options.momentum.tolist() == [np.float32(0.9), 0.0, np.float32(0.9)]
    shard = spec.shard(10**12, 10**12 + 5, torch.device("cpu"), suffix="", progress=None)
    assert len(shard) == 5 and shard.seeds.numpy()[0] == U64_MAX - 10**12 + 1 + 5 * 10**11


def test_seeds_up_to_2_63_and_long_strides():
    # A block whose last seed is 2**63 - 1: an arange ending at 2**63, which int64 cannot hold.
    r = fn.train(seeds=range(2**63 - 3, 2**63), lrs=0.01, steps=4, backend="eager")
    want = fn.train(seeds=[2**63 - 3, 2**63 - 2, 2**63 - 1], lrs=0.01, steps=4, backend="eager")
    assert_same_results(want, r, members=True)
    # An axis with a stride far beyond the block: no repeat of inner values per member.
    col = GridColumn("uint64", None, range(4), 10**12, 10**12 - 2, 5)
    assert col.numpy().tolist() == [0, 0, 1, 1, 1]
    assert col.take(1, 4, "cpu").tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="more than 2\\*\\*63 - 1"):
        fn.grid(range(2**64), [0.1])


#: Ranges of seeds whose blocks need no array of seeds (GridColumn.consecutive_seeds):
#: low words crossing 2**31 (two aranges when made dense), a high word of 2**32 - 1
#: (int32 -1), a high word that changes within the range (arrays), and 2**64 - 1.
SEED_RANGES = [range(13), range(2**31 - 5, 2**31 + 6), range(2**32 - 3, 2**32 + 4), range(2**64 - 7, 2**64),
               range(5 * 2**32 + 2**31 - 2, 5 * 2**32 + 2**31 + 9)]


@pytest.mark.parametrize("seeds", SEED_RANGES, ids=str)
def test_a_block_of_a_seed_range_is_the_split_seeds(seeds):
    spec = RunSpec.build(seeds=seeds, lrs=0.5, steps=1, backend="eager", device="cpu")
    n = len(seeds)
    for a, b in ((0, n), (0, 1), (3, n), (n - 1, n), (2, n - 1)):
        block = spec.block(a, b, torch.device("cpu"))
        dense = dense_members(block)
        want_lo, want_hi = split_seeds(spec.seeds.take(a, b, "cpu"))
        assert torch.equal(dense.s_lo, want_lo), f"low words of members {a}..{b} differ"
        assert torch.equal(dense.s_hi, want_hi), f"high words of members {a}..{b} differ"
        assert torch.equal(dense.neg_lr, torch.full((b - a,), -0.5)) and dense.neg_lr.is_contiguous()
        assert dense.s_lo_step == 0 and dense.s_lo.is_contiguous() and dense.s_hi.is_contiguous()
        consecutive = (seeds.start + a) >> 32 == (seeds.start + b - 1) >> 32
        assert block.s_lo_step == consecutive, "a block of consecutive seeds sharing a high word is described"
        if b - a > 1:
            assert block.neg_lr.stride(0) == 0, "one lr is one value"
            assert (block.s_lo.stride(0) == 0) == consecutive and (block.s_hi.stride(0) == 0) == consecutive
            # On another device too (.to() of an expanded tensor would copy M values).
            assert spec.block(a, b, torch.device("meta")).neg_lr.stride(0) == 0


def test_a_seed_range_block_must_be_made_dense_for_the_reference():
    # spec.block's Members of a seed range name the first word only: eager and compile
    # need dense_members (the engine does it), and refuse them otherwise.
    from fastneuron.engine import fresh_state
    from fastneuron.kernels import make_stepper

    spec = RunSpec.build(seeds=range(5), lrs=0.05, steps=4, backend="eager", device="cpu")
    block, cpu = spec.block(0, 5, torch.device("cpu")), torch.device("cpu")
    for backend in ("eager", "compile"):
        stepper = make_stepper(backend)
        with pytest.raises(ValueError, match="s_lo_step is 1"):
            stepper.init(block, spec.config)
        state = fresh_state(stepper, dense_members(block), spec.config, spec.state_names())
        with pytest.raises(ValueError, match="s_lo_step is 1"):
            stepper(state, 0, block, spec.constants(cpu), nsteps=4, config=spec.config, history=None)


@pytest.mark.parametrize("backend", ["eager", "compile"])
@pytest.mark.parametrize("seeds", SEED_RANGES, ids=str)
def test_range_seeds_and_a_shared_lr_train_as_arrays(seeds, backend):
    # Blocks of 5 (starts inside the range), a shared lr (-lr expanded, stride 0) and
    # per-member lrs: bit for bit the run of the same seeds given as an array.
    lrs = np.linspace(0.01, 0.6, len(seeds), dtype=np.float32)
    for lr in (0.02, lrs):
        want = fn.train(seeds=np.array(list(seeds), dtype=np.uint64), lrs=lr, steps=14, backend="eager")
        got = fn.train(seeds=seeds, lrs=lr, steps=14, backend=backend, member_block=5)
        assert_same_results(want, got, members=True)
    one = fn.train(seeds=seeds[-1:], lrs=0.02, steps=14, backend=backend)  # M = 1 (compile pads it)
    assert_same_results(fn.train(seeds=[seeds[-1]], lrs=0.02, steps=14, backend="eager"), one, members=True)


#: Triton runs of seed ranges (the kernels read the first word, s_lo_step 1): blocks with
#: their own first words, blocks straddling 2**32 (arrays and described mixed), per-member
#: lrs, history, one-member blocks, two programs a launch.
TRITON_RANGE_CASES = {
    "sgd": (range(2**31 - 5, 2**31 + 6), 0.02, dict(steps=9)),
    "adam": (range(2**31 - 5, 2**31 + 6), 0.02, dict(steps=9, optimizer="adam")),
    "blocks": (range(2**32 - 6, 2**32 + 7), "per member", dict(steps=10, member_block=4, log_every=3, momentum=0.9)),
    "one-member blocks": (range(2**64 - 3, 2**64), 0.3, dict(steps=6, member_block=1, optimizer="rmsprop")),
    "two programs": (range(7, 7 + 37), 0.01, dict(steps=5, block_size=32)),
}


@pytest.mark.interpreter
@requires_triton
@pytest.mark.parametrize("case", sorted(TRITON_RANGE_CASES))
def test_range_seeds_train_as_arrays_triton(case, monkeypatch):
    seeds, lr, options = TRITON_RANGE_CASES[case]
    options = dict(options)
    block_size = options.pop("block_size", None)
    if block_size:  # smaller programs than the interpreter's default, so that M spans two
        from fastneuron.kernels import triton_sgd
        monkeypatch.setattr(triton_sgd, "INTERPRET_BLOCK_SIZE", block_size)
    lrs = np.linspace(0.01, 0.2, len(seeds), dtype=np.float32) if lr == "per member" else lr
    want = fn.train(seeds=np.array(list(seeds), dtype=np.uint64), lrs=lrs, backend="eager", **options)
    got = fn.train(seeds=seeds, lrs=lrs, backend="triton", device=DEVICES[-1], **options)
    assert_same_results(want, got, members=True)


def test_describe():
    assert describe(torch.tensor([1.0, 2.0])) is None
    col = describe(torch.tensor([0.25]).expand(7))
    assert isinstance(col, GridColumn) and col.numpy().tolist() == [0.25] * 7
    g = fn.grid(range(2), [0.1])
    assert describe(g["lrs"]) is g["lrs"]


def explicit(g) -> dict:
    return {k: np.asarray(g[k]) for k in g.keys()}


#: (members as a grid, run options): awkward sizes (M = 1, a prime, blocks that do not
#: divide M), seeds at both ends, diverging rates, every per-member option on an axis.
CASES = {
    "one": (dict(seeds=[U64_MAX], lrs=[0.02]), dict(steps=13)),
    "prime": (dict(seeds=range(U64_MAX - 6, 2**64), lrs=[0.01, 0.5, 0.03]),
              dict(steps=22, log_every=5, member_block=5)),
    "momentum": (dict(seeds=[0, 2**63, 5], lrs=[0.01, 0.2], momentum=[0.0, 0.9], weight_decay=[0.0, 1e-2]),
                 dict(steps=18, batch_size=3, log_every=4, member_block=7)),
    "noise": (dict(seeds=range(5), lrs=[0.02], noise=[0.0, 0.3]), dict(steps=9, x_dist="normal")),
}


@pytest.mark.parametrize("backend", ["eager", "compile"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_grid_trains_as_arrays(case, backend):
    members, options = CASES[case]
    g = fn.grid(**members)
    want = fn.train(**explicit(g), backend="eager", **options)
    got = fn.train(**g, backend=backend, **options)
    assert got.described.keys() == set(g.keys())
    assert_same_results(want, got, members=True)


@pytest.mark.interpreter
@requires_triton
@pytest.mark.parametrize("case", ["prime", "momentum"])
def test_grid_trains_as_arrays_triton(case):
    members, options = CASES[case]
    g = fn.grid(**members)
    want = fn.train(**explicit(g), backend="eager", **options)
    got = fn.train(**g, backend="triton", device=DEVICES[-1], **options)
    assert_same_results(want, got, members=True)


def test_result_expands_lazily():
    g = fn.grid(range(3), [0.01, 0.02])
    r = fn.train(**g, steps=4, backend="eager")
    assert "seeds" not in r.__dict__ and "lrs" not in r.__dict__
    assert r.seeds.tolist() == [0, 0, 1, 1, 2, 2]
    assert "seeds" in r.__dict__
    assert r.lrs.dtype == torch.float32 and r.weight_decay.tolist() == [0.0] * 6
    assert r.described["seeds"]["range"] == [0, 3, 1]
