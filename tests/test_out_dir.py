"""Results streamed to a parts directory (``out=DIR/``, issue 14 items 2 and 3): bit for
bit the in-memory result for any blocks and any sharding (1 process, 2 and 3 torchrun
ranks, a rank with no member), the history streamed too; a killed run resumes from its
parts exactly; bad directories are refused before any work."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from compare import assert_same_results, lrs_for, seeds_for
from test_distributed import REPO, RUN, launch

import fastneuron as fn
from fastneuron import engine
from fastneuron.spec import RunSpec

#: Members as arrays and as a grid; awkward sizes; diverging rates; momentum.
CASES = {
    "arrays": (dict(seeds=seeds_for(7), lrs=lrs_for(7), momentum=[0.0, 0.9, 0.5, 0.0, 0.5, 0.9, 0.0]),
               dict(steps=23, log_every=4, member_block=3)),
    "grid": (dict(fn.grid(range(2**64 - 5, 2**64), [0.01, 0.5], weight_decay=[0.0, 0.01])),
             dict(steps=18, batch_size=3, log_every=5, member_block=7)),
    "one": (dict(seeds=[5], lrs=[0.02]), dict(steps=9)),
}


def run_to_dir(tmp_path, members: dict, options: dict, backend: str, name: str = "out"):
    out = tmp_path / name
    got = fn.train(**members, **options, backend=backend, out=f"{out}/", progress=False)
    return out, got


@pytest.mark.parametrize("backend", ["eager", "compile"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_parts_equal_the_in_memory_result(tmp_path, case, backend):
    members, options = CASES[case]
    want = fn.train(**members, **options, backend="eager")
    out, got = run_to_dir(tmp_path, members, options, backend)
    assert len(got) == len(want) and got.n_parts == 1
    assert_same_results(want, got.to_result(), members=True)
    assert_same_results(want, fn.load(out).to_result(), members=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(os.listdir(out)) == ["manifest.json", "part-00000"]
    left = sorted(os.listdir(out / "part-00000"))  # the results and the part's last checkpoint
    assert "checkpoint.npz" in left and not any(f.startswith("buf_") for f in left)
    assert checkpoint_meta(out / "part-00000")["step"] == options["steps"]
    if case == "grid":
        assert set(manifest["described"]) == {"seeds", "lrs", "momentum", "weight_decay"}
        assert "seeds.npy" not in left and "lrs.npy" not in left


def checkpoint_meta(part) -> dict:
    with np.load(part / "checkpoint.npz", allow_pickle=False) as z:
        return json.loads(z["meta"].tobytes().decode())


def killed_run(out, members: dict, options: dict, backend: str, after_chunks: int) -> None:
    """A run into ``out`` that dies after ``after_chunks`` chunks, checkpointing after every chunk."""
    spec = RunSpec.build(**members, **options, backend=backend, out=f"{out}/", checkpoint_every=0, progress=False)
    chunks = itertools.count()

    def die():
        if next(chunks) == after_chunks:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run(spec, between_chunks=die)
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("backend, after", [("eager", 3), ("eager", 11), ("compile", 2)])
def test_a_killed_run_resumes_from_its_parts(tmp_path, backend, after):
    members, options = CASES["arrays"]
    want = fn.train(**members, **options, backend="eager")
    out = tmp_path / "out"
    killed_run(out, members, options, backend, after)
    progress = checkpoint_meta(out / "part-00000.tmp")
    assert progress["step"] > 0 or progress["block_start"] > 0
    got = fn.train(**members, **options, backend=backend, out=f"{out}/", resume=f"{out}/", progress=False)
    assert_same_results(want, got.to_result(), members=True)


def test_resume_twice_and_a_finished_part(tmp_path):
    members, options = CASES["grid"]
    want = fn.train(**members, **options, backend="eager")
    out = tmp_path / "out"
    killed_run(out, members, options, "eager", 2)
    killed_run_resume = RunSpec.build(**members, **options, backend="eager", out=f"{out}/", resume=f"{out}/",
                                      checkpoint_every=0, progress=False)
    chunks = itertools.count()

    def die():
        if next(chunks) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run(killed_run_resume, between_chunks=die)
    got = fn.train(**members, **options, backend="eager", out=f"{out}/", resume=f"{out}/")
    assert_same_results(want, got.to_result(), members=True)
    # A part that finished before its run wrote the manifest is not trained again.
    (out / "manifest.json").unlink()
    again = fn.train(**members, **options, backend="eager", out=f"{out}/", resume=f"{out}/")
    assert_same_results(want, again.to_result(), members=True)


def test_resume_after_a_block_ended_between_checkpoints(tmp_path, monkeypatch):
    # One checkpoint in the middle of block 0, then block 0 ends (its results written), and
    # the run dies in block 1 before the next checkpoint: the resume starts block 0 again
    # from the checkpoint's own state, not from the results written since.
    members = dict(seeds=list(range(6)), lrs=[0.01, 0.02, 0.03, 0.04, 0.05, 0.06], momentum=0.9)
    options = dict(steps=40, member_block=3, log_every=3)
    want = fn.train(**members, **options, backend="eager")
    out = tmp_path / "out"
    spec = RunSpec.build(**members, **options, backend="eager", out=f"{out}/", checkpoint_every=10, progress=False)
    clock = [0.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: clock[0])
    chunks = itertools.count()

    def step_clock():
        i = next(chunks)
        if i == 0:
            clock[0] += 100  # due: one checkpoint after block 0's first chunk
        if i == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run(spec, between_chunks=step_clock)
    monkeypatch.undo()
    meta = checkpoint_meta(out / "part-00000.tmp")
    assert (meta["block_start"], meta["step"]) == (0, 4)
    got = fn.train(**members, **options, backend="eager", out=f"{out}/", resume=f"{out}/", progress=False)
    assert_same_results(want, got.to_result(), members=True)


def test_a_finished_part_is_checked_on_resume(tmp_path):
    out = f"{tmp_path}/out/"
    fn.train(**fn.grid(range(3), [0.01, 0.02]), steps=8, backend="eager", out=out)
    os.unlink(out + "manifest.json")  # killed after the part was renamed, before the manifest
    with pytest.raises(ValueError, match="other settings|other members"):
        fn.train(**fn.grid(range(3), [0.3, 0.4]), steps=8, backend="eager", out=out, resume=out)
    with pytest.raises(ValueError, match="other settings"):
        fn.train(**fn.grid(range(3), [0.01, 0.02]), steps=20, backend="eager", out=out, resume=out)


def test_distributed_without_torchrun_writes_the_manifest(tmp_path):
    members, options = CASES["arrays"]
    want = fn.train(**members, **options, backend="eager")
    with pytest.warns(RuntimeWarning, match="training in this process alone"):
        got = fn.train(**members, **options, backend="eager", out=f"{tmp_path}/o/", distributed=True)
    assert_same_results(want, got.to_result(), members=True)


def test_out_file_saves_the_in_memory_result(tmp_path):
    members, options = CASES["arrays"]
    got = fn.train(**members, **options, backend="eager", out=tmp_path / "r.npz")
    assert_same_results(got, fn.load(tmp_path / "r.npz"), members=True)
    with pytest.raises(ValueError, match="out: directory .* does not exist"):
        fn.train(**members, **options, backend="eager", out=tmp_path / "no" / "r.npz")


def test_refusals(tmp_path):
    members, options = CASES["one"]
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    with pytest.raises(ValueError, match="out: .* is not empty"):
        fn.train(**members, **options, out=f"{full}/")
    with pytest.raises(ValueError, match="out: directory .* does not exist"):
        fn.train(**members, **options, out=f"{tmp_path}/no/such/")
    with pytest.raises(ValueError, match="checkpoint: a run with out=DIR/ checkpoints into its parts"):
        fn.train(**members, **options, out=f"{tmp_path}/a/", checkpoint=tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match="resume: a run with out="):
        fn.train(**members, **options, out=f"{tmp_path}/a/", resume=f"{full}/")
    with pytest.raises(ValueError, match="resume: no parts directory"):
        fn.train(**members, **options, out=f"{tmp_path}/b/", resume=f"{tmp_path}/b/")
    with pytest.raises(ValueError, match="resume: .* is a parts directory"):
        fn.train(**members, **options, resume=full)
    # A run that stopped before its first checkpoint: said so, not a crash.
    (tmp_path / "c" / "part-00000.tmp").mkdir(parents=True)
    with pytest.raises(ValueError, match="checkpoint.npz is missing"):
        fn.train(**members, **options, out=f"{tmp_path}/c/", resume=f"{tmp_path}/c/")
    # Other members than the run that wrote the parts: refused by the checkpoint's digest.
    out = tmp_path / "d"
    killed_run(out, *CASES["arrays"], "eager", 2)
    other = dict(CASES["arrays"][0], lrs=lrs_for(8)[1:])
    with pytest.raises(ValueError, match="other members"):
        fn.train(**other, **CASES["arrays"][1], out=f"{out}/", resume=f"{out}/")


def test_cli_out_dir_equals_the_file(tmp_path):
    cli = [sys.executable, "-m", "fastneuron", "train", "--seeds", "3:9", "--lrs", "0.01,0.4", "--momentum", "0,0.9",
           "--steps", "21", "--log-every", "5", "--backend", "eager", "--quiet", "--member-block", "5"]
    for out in (f"{tmp_path}/dir/", f"{tmp_path}/r.npz"):
        p = subprocess.run([*cli, "--out", out], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
    assert_same_results(fn.load(tmp_path / "r.npz"), fn.load(tmp_path / "dir").to_result(), members=True)


WORKER = """
import json, sys
import fastneuron
kw = json.loads(sys.argv[1])
if "_grid" in kw:
    kw.update(fastneuron.grid(**kw.pop("_grid")))
r = fastneuron.train(**kw, distributed=True)
print("RESULT", r is not None, type(r).__name__, flush=True)
"""


@pytest.mark.parametrize("world, kw", [
    (2, dict(RUN)),
    (2, dict(RUN, noise=[0.0, 0.0, 0.0, 0.1, 0.2, 0.0, 0.3])),  # rank 0's members have no noise
    (3, {**{k: v for k, v in RUN.items() if k not in ("seeds", "lrs", "momentum", "weight_decay")},
         "_grid": dict(seeds=[0, 2**64 - 1], lrs=[0.5])}),  # 2 members on 3 ranks: one has none
])
def test_sharded_parts_load_equal_to_one_process(tmp_path, world, kw):
    names = ("seeds", "lrs", "momentum", "weight_decay", "noise")
    members = fn.grid(**kw["_grid"]) if "_grid" in kw else {k: kw[k] for k in names if k in kw}
    options = {k: v for k, v in kw.items() if k not in (*names, "_grid")}
    want = fn.train(**members, **options)
    out = tmp_path / "parts"
    results, _ = launch(world, dict(kw, out=f"{out}/"), tmp_path / "unused", worker=WORKER)
    for r, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"rank {r}: {stderr[-3000:]}"
        assert f"RESULT {r == 0}" in stdout
    assert "PartsResult" in results[0][1]
    got = fn.load(out)
    assert got.n_parts == world and got.settings["world_size"] == world
    assert_same_results(want, got.to_result(), members=True)
    bounds = [(p["start"], p["stop"]) for p in json.loads((out / "manifest.json").read_text())["parts"]]
    assert bounds == [(r * len(want) // world, (r + 1) * len(want) // world) for r in range(world)]
    assert np.array_equal(got.part(world - 1).seeds, want.seeds[bounds[-1][0]:])
