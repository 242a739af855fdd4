"""The command line, ``python -m fastneuron train``: value syntax, the member product,
results equal to ``fastneuron.train`` bit for bit, one-line errors with exit status 2,
help, and the progress bar kept off stdout."""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch

import fastneuron
from fastneuron import __main__ as cli

U64_MAX = 2**64 - 1
SUMMARY_KEYS = ("members", "steps", "backend", "start-up", "seconds", "neuron-steps/s", "diverged", "median weight",
                "median bias", "median risk")


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastneuron", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def assert_same(r1, r2) -> None:
    assert r1.seeds.dtype == r2.seeds.dtype == np.uint64 and np.array_equal(r1.seeds, r2.seeds)
    for name in ("lrs", "momentum", "weight_decay", "weight", "bias", "diverged_at", "history_steps"):
        a, b = getattr(r1, name), getattr(r2, name)
        assert a.dtype == b.dtype and torch.equal(bits(a), bits(b)), name
    for name in ("history_weight", "history_bias"):
        a, b = getattr(r1, name), getattr(r2, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(bits(a), bits(b)), name


# -- value syntax ----------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("0", [0]),
    ("0:5", [0, 1, 2, 3, 4]),
    ("0:10:3", [0, 3, 6, 9]),
    ("3,1,2", [3, 1, 2]),
    ("0:3,10,20:22", [0, 1, 2, 10, 20, 21]),
    (" 7 , 8 ", [7, 8]),
    ("1_000:1_002", [1000, 1001]),
    ("18446744073709551615", [U64_MAX]),
    ("18446744073709551613:18446744073709551616", [U64_MAX - 2, U64_MAX - 1, U64_MAX]),
    ("9223372036854775806:9223372036854775810", [2**63 - 2, 2**63 - 1, 2**63, 2**63 + 1]),
    ("0:18446744073709551616:9223372036854775808", [0, 2**63]),
    ("5,5", [5, 5]),
])
def test_parse_seeds(text, expected):
    seeds = cli.parse_seeds(text)
    assert len(seeds) == seeds.count == len(expected)
    got = seeds.materialize()
    assert got.dtype == np.uint64
    assert [int(v) for v in got] == expected


def test_parse_seeds_builds_no_array():
    """Issue 13 item 6: a huge --seeds is a description (ranges) with a count, not 8 GB."""
    seeds = cli.parse_seeds("0:1000000000,5,0:18446744073709551616")
    assert seeds.count == 10**9 + 1 + 2**64  # past sys.maxsize, still exact
    assert seeds.ranges == [range(0, 10**9), range(5, 6), range(0, 2**64)]
    assert cli.count_floats("1e-4:1e-1:1000000000000log,0.5", "--lrs") == 10**12 + 1


@pytest.mark.parametrize("text", [
    "", "-1", "0:0", "5:2", "0:10:0", "0:10:-1", "a", "1.5", "1:2:3:4", "1,,2", "2**64", "18446744073709551616",
    "0:18446744073709551617", "-5:3", "0x10", ":5", "0:",
])
def test_parse_seeds_refuses(text):
    with pytest.raises(ValueError, match="--seeds"):
        cli.parse_seeds(text)


def test_parse_floats_lists_and_ranges():
    assert cli.parse_floats("0.01", "--lrs").tolist() == [0.01]
    assert cli.parse_floats("0.01, 0.1,1e-3", "--lrs").tolist() == [0.01, 0.1, 1e-3]
    v = cli.parse_floats("1e-4:1e-1:60log", "--lrs")
    assert len(v) == 60 and v[0] == 1e-4 and v[-1] == 1e-1  # both ends exactly
    np.testing.assert_allclose(np.diff(np.log10(v)), 3 / 59, rtol=1e-9)
    assert np.all(np.diff(v) > 0)
    v = cli.parse_floats("1e-1:1e-4:4LOG", "--lrs")  # descending, any case
    np.testing.assert_allclose(v, [1e-1, 1e-2, 1e-3, 1e-4], rtol=1e-12)
    assert cli.parse_floats("0:0.9:10lin", "--momentum").tolist() == np.linspace(0, 0.9, 10).tolist()
    assert cli.parse_floats("0.5:0.5:1lin", "--momentum").tolist() == [0.5]
    assert cli.parse_floats("2:8:1log", "--lrs").tolist() == [2.0]
    mixed = cli.parse_floats("0.5,1:100:3log,0:1:3lin", "--lrs")
    np.testing.assert_allclose(mixed, [0.5, 1, 10, 100, 0, 0.5, 1], rtol=1e-12)


@pytest.mark.parametrize("text", [
    "", "abc", "1,,2", "1:2", "1:2:3", "1:2:3exp", "1e-4:1e-1:0log", "1e-4:1e-1:-3log", "1:2:xlog", "1:2:log",
    "0:1:5log", "-1:1:5log", "inf:1:3lin", "1:nan:3lin", "1:2:3:4lin",
])
def test_parse_floats_refuses(text):
    with pytest.raises(ValueError, match="--lrs"):
        cli.parse_floats(text, "--lrs")


def test_product_is_fastneuron_grid():
    seeds = np.array([0, 7, U64_MAX], dtype=np.uint64)
    lrs, mus, wds = np.array([0.1, 0.2]), np.array([0.0, 0.5, 0.9]), np.array([0.0, 1e-3])
    cols = cli.product(seeds, lrs, mus, wds)
    g = fastneuron.grid([int(s) for s in seeds], lrs.tolist(), momentum=mus.tolist(), weight_decay=wds.tolist())
    assert [len(c) for c in cols] == [36] * 4
    assert cols[0].dtype == np.uint64
    assert [int(s) for s in cols[0]] == list(g["seeds"])
    for col, name in zip(cols[1:], ("lrs", "momentum", "weight_decay")):
        assert np.array_equal(col.astype(np.float32), np.asarray(g[name]))


# -- runs --------------------------------------------------------------------------------


def summary_of(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    out = {}
    for line in lines:
        key = next((k for k in (*SUMMARY_KEYS, "saved") if line.startswith(k + " ")), None)
        assert key is not None, f"unexpected stdout line {line!r}"
        out[key] = line[len(key):].strip()
    return out


def test_out_equals_train_bit_for_bit(tmp_path):
    out = tmp_path / "sweep.npz"
    p = run_cli("train", "--seeds", "0:3,18446744073709551615", "--lrs", "1e-3:2:4log", "--momentum", "0,0.9",
                "--steps", "60", "--log-every", "7", "--backend", "eager", "--quiet", "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    got = fastneuron.load(out)
    seeds = [0, 1, 2, U64_MAX]
    lrs = np.geomspace(1e-3, 2, 4)
    want = fastneuron.train(**fastneuron.grid(seeds, lrs, momentum=[0.0, 0.9]), steps=60, log_every=7,
                            backend="eager", progress=False)
    assert len(got) == 4 * 4 * 2 == 32
    assert_same(want, got)
    assert got.settings == want.settings
    assert (got.diverged_at >= 0).any(), "lr 2 diverges"
    s = summary_of(p.stdout)
    assert s["members"] == "32 (4 seeds x 4 lrs x 2 momenta)"
    assert s["steps"].startswith("60 ") and s["backend"] == "eager on cpu"
    assert s["diverged"].startswith(f"{int((want.diverged_at >= 0).sum())} ")
    ok = (want.diverged_at < 0).numpy()
    assert float(s["median weight"].split()[0]) == pytest.approx(float(np.median(want.weight.numpy()[ok])))
    assert float(s["median risk"].split()[0]) == pytest.approx(float(np.median(want.risk.numpy()[ok])))
    assert s["saved"] == str(out)


def test_every_option_reaches_train(tmp_path):
    out = tmp_path / "o.npz"
    p = run_cli("train", "--seeds", "5,9", "--lrs", "0.01,0.03", "--momentum", "0.3", "--weight-decay", "0,0.01",
                "--dampening", "0.25", "--nesterov", "--a", "-1.5", "--c", "0.5", "--lo", "-2", "--hi", "3",
                "--batch-size", "3", "--steps", "21", "--backend", "eager", "--device", "cpu", "--member-block",
                "3", "--quiet", "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    want = fastneuron.train(**fastneuron.grid([5, 9], [0.01, 0.03], momentum=[0.3], weight_decay=[0.0, 0.01]),
                            steps=21, batch_size=3, dampening=0.25, nesterov=True, a=-1.5, c=0.5, lo=-2.0,
                            hi=3.0, backend="eager", progress=False)
    got = fastneuron.load(out)
    assert len(got) == 8
    assert_same(want, got)
    assert got.settings == want.settings
    assert summary_of(p.stdout)["members"] == "8 (2 seeds x 2 lrs x 2 weight decays)"


def test_progress_bar_on_a_terminal_or_with_progress(tmp_path, monkeypatch, capsys):
    """As the API's progress=None: a bar only when stderr is a terminal, or with --progress
    (issue 22 item 6: into a pipe or a log file it was one ever-growing line)."""
    # The wiring: None (a terminal decides) by default, False with --quiet, True with --progress.
    seen = []
    real = fastneuron.train
    monkeypatch.setattr(fastneuron, "train", lambda *a, **k: seen.append(k["progress"]) or real(*a, **k))
    base = ["train", "--seeds", "0:2", "--steps", "8", "--backend", "eager"]
    for extra in ([], ["--quiet"], ["--progress"]):
        assert cli.main([*base, *extra]) == 0
    assert seen == [None, False, True]
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main([*base, "--quiet", "--progress"]) == 2
    assert "--progress" in capsys.readouterr().err
    # For real, stderr a pipe: a run long enough for the bar (it shows after 2 s; 15000 eager
    # steps take about 6 s on the 2-core CI machine, and the check below needs more than 3).
    args = ["train", "--seeds", "0", "--steps", "15000", "--backend", "eager"]
    plain, loud = run_cli(*args, cwd=tmp_path), run_cli(*args, "--progress", cwd=tmp_path)
    for p in (plain, loud):
        assert p.returncode == 0, p.stderr
        summary_of(p.stdout)  # stdout holds the summary and nothing else
    assert "1 members" not in plain.stderr and "\r" not in plain.stderr, plain.stderr  # not a terminal: no bar
    if float(summary_of(loud.stdout)["seconds"].split()[0]) > 3.0:
        assert "1 members" in loud.stderr and "step" in loud.stderr, loud.stderr
    assert "members:" not in loud.stdout


# -- errors --------------------------------------------------------------------------------

BAD = [
    ["train"],  # --seeds is required
    ["train", "--seeds", "-1"],
    ["train", "--seeds", "0:0"],
    ["train", "--seeds", "18446744073709551616"],
    ["train", "--seeds", "0", "--lrs", "0"],
    ["train", "--seeds", "0", "--lrs", "-0.1"],
    ["train", "--seeds", "0", "--lrs", "nan"],
    ["train", "--seeds", "0", "--lrs", "1e-50"],  # 0 in float32
    ["train", "--seeds", "0", "--lrs", "1e39"],  # inf in float32
    ["train", "--seeds", "0", "--lrs", "1:2:0log"],
    ["train", "--seeds", "0", "--momentum", "1"],
    ["train", "--seeds", "0", "--weight-decay", "-1"],
    ["train", "--seeds", "0", "--dampening", "1"],
    ["train", "--seeds", "0", "--nesterov"],
    ["train", "--seeds", "0", "--momentum", "0,0.5", "--nesterov"],
    ["train", "--seeds", "0", "--steps", "-1"],
    ["train", "--seeds", "0", "--steps", "1.5"],
    ["train", "--seeds", "0", "--batch-size", "0"],
    ["train", "--seeds", "0", "--log-every", "0"],
    ["train", "--seeds", "0", "--lo", "5", "--hi", "1"],
    ["train", "--seeds", "0", "--a", "inf"],
    ["train", "--seeds", "0", "--c", "1e40"],
    ["train", "--seeds", "0", "--backend", "fast"],
    ["train", "--seeds", "0", "--device", "tpu"],
    ["train", "--seeds", "0", "--member-block", "0"],
    ["train", "--seeds", "0", "--checkpoint-every", "-1"],
    ["train", "--seeds", "0", "--resume", "/nonexistent/run.ckpt"],
    ["train", "--seeds", "0", "--out", "/nonexistent/dir/out.npz"],
    ["train", "--seeds", "0", "--checkpoint", "/nonexistent/dir/run.ckpt"],
    ["train", "--seeds", "0", "--bogus"],
    ["train", "--seeds"],
    [],
    ["frobnicate"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) or "(none)" for a in BAD])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastneuron: error: ") and len(lines[0]) > len("fastneuron: error: ") + 5


@pytest.mark.parametrize("argv", [
    ["train", "--seeds", "0", "--lrs", "0"],
    ["train", "--seeds", "0:5", "--steps", "x"],
    ["train", "--seeds", "0", "--out", "/nonexistent/dir/out.npz"],
    ["train", "--seeds", "0", "--backend", "eager", "--resume", "/nonexistent.ckpt"],
    ["train", "--seeds", "0", "--c", "1e40"],
    ["train", "--seeds", "0", "--lrs", "1e39"],
])
def test_bad_input_in_a_real_process(argv, tmp_path):
    p = run_cli(*argv, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("fastneuron: error: ")


def test_error_messages_name_the_problem(capsys):
    cases = {
        ("--lrs", "0"): "lrs must be",
        ("--steps", "-1"): "steps must be >= 0",
        ("--nesterov",): "nesterov",
        ("--backend", "fast"): "--backend",
        ("--seeds", "0:0"): "--seeds",
        ("--out", "/nonexistent/dir/o.npz"): "/nonexistent/dir",
    }
    for extra, needle in cases.items():
        argv = ["train", "--seeds", "0", *extra]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err, (argv, err)


def test_help(tmp_path):
    for argv in (["--help"], ["train", "--help"]):
        p = run_cli(*argv, cwd=tmp_path)
        assert p.returncode == 0 and p.stderr == ""
        assert "usage: fastneuron" in p.stdout
    train_help = run_cli("train", "--help", cwd=tmp_path).stdout
    for word in ("--seeds", "--lrs", "1e-4:1e-1:60log", "examples:", "--checkpoint-every", "--resume",
                 "--member-block", "--quiet", "--out"):
        assert word in train_help
    assert "train" in run_cli("--help", cwd=tmp_path).stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert fastneuron.__version__ in capsys.readouterr().out


def test_bench_is_handed_over(monkeypatch):
    """``fastneuron bench ...`` runs fastneuron.bench.main with the rest of the line."""
    calls = []
    fake = types.ModuleType("fastneuron.bench")
    fake.__spec__ = importlib.machinery.ModuleSpec("fastneuron.bench", None)
    fake.main = lambda argv=None: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "fastneuron.bench", fake)
    assert cli.main(["bench", "--members", "10", "--quick"]) == 3
    assert calls == [["--members", "10", "--quick"]]


# -- issue 13 --------------------------------------------------------------------------------


def test_too_many_members_refused_before_building_inputs(monkeypatch, capsys):
    """Item 6: the member count comes from the parsed axes and is checked against memory
    before any array of M is built (it was: 8 GB held for 109 s, then a MemoryError)."""
    from fastneuron import engine

    def no_arrays(*a, **k):
        raise AssertionError("an array of the members was built before the memory check")

    monkeypatch.setattr(cli, "product", no_arrays)
    monkeypatch.setattr(cli.Seeds, "materialize", no_arrays)
    monkeypatch.setattr(engine, "available_bytes", lambda dev: 8 << 30)
    for argv in (["--seeds", "0:1000000000"],  # 56 GB of inputs and results
                 ["--seeds", "0:1000", "--lrs", "1e-4:1e-1:1000000000log"],
                 ["--seeds", "0:1000000", "--steps", "3000", "--log-every", "1"]):
        assert cli.main(["train", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1, err
        assert err.startswith("fastneuron: error: --seeds: ") and "members" in err and "GiB" in err, err
        assert "log_every" not in err, err  # the flag's name, --log-every


def test_too_many_members_in_a_real_process(tmp_path):
    p = run_cli("train", "--seeds", "0:1000000000000000", cwd=tmp_path, timeout=60)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1 and "members" in p.stderr


class _Timing:
    def __init__(self, start_up_s, first, total, end=None):
        self.start_up_s, self.first_chunk_neuron_steps, self.neuron_steps = start_up_s, first, total
        self.first_chunk_end = end


def test_summary_reports_start_up_apart():
    """Item 9: a 1-member run said "neuron-steps/s 60": compilation counted as training."""
    res = fastneuron.train([0], 0.01, 100, backend="eager", progress=False)
    # 9 s to the end of the first chunk (4 of 100 steps), 1 s for the other 96 steps
    s = summary_of(cli.summary(res, [1, 1, 1, 1], 10.0, timing=_Timing(9.0, 4, 100)))
    assert s["start-up"].startswith("9.000 ")
    assert s["seconds"] == "1.000"
    assert float(s["neuron-steps/s"]) == pytest.approx(96.0)
    # a run of a single chunk has no rate to report
    s = summary_of(cli.summary(res, [1, 1, 1, 1], 2.0, timing=_Timing(2.0, 100, 100)))
    assert s["start-up"].startswith("2.000 ") and s["neuron-steps/s"].startswith("n/a")


def test_cli_summary_start_up_is_the_first_chunk(monkeypatch, capsys):
    from fastneuron import progress

    real_update = progress.Progress.update
    slow = []

    def update(self, steps, members, timed=True):
        if timed and not slow:  # the first chunk "compiles" for 3 s
            slow.append(1)
            time.sleep(3.0)
        return real_update(self, steps, members, timed)

    monkeypatch.setattr(progress.Progress, "update", update)
    assert cli.main(["train", "--seeds", "0", "--steps", "40", "--backend", "eager", "--quiet"]) == 0
    s = summary_of(capsys.readouterr().out)
    start_up, seconds = float(s["start-up"].split()[0]), float(s["seconds"])
    assert start_up >= 3.0 and seconds < start_up, s
    timing = progress.last_run_timing()
    assert timing.first_chunk_neuron_steps == 4 and timing.neuron_steps == 40 and timing.finished


def test_cli_errors_use_flag_names(capsys):
    """Item 11: the API's names (log_every, nesterov=True) as the CLI's flags."""
    cases = {
        ("--log-every", "0"): "--log-every must be >= 1",
        ("--nesterov",): "--nesterov needs momentum > 0",
        ("--batch-size", "0"): "--batch-size must be >= 1",
        ("--checkpoint-every", "-1"): "--checkpoint-every must be",
        ("--member-block", "0"): "--member-block must be >= 1",
        ("--momentum", "1"): "--momentum must be",
        ("--a", "1e39"): "--a must be finite",
        ("--steps", str(10**30), "--log-every", "7"): "--steps must be <=",
    }
    for extra, needle in cases.items():
        assert cli.main(["train", "--seeds", "0", "--backend", "eager", *extra]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.splitlines()) == 1, (extra, err)
        assert not any(name in err for name in ("log_every", "nesterov=True", "batch_size", "checkpoint_every",
                                                 "member_block")), err
    assert cli.flag_names("lo must be < hi (in float32), got lo=5.0, hi=1.0") == \
        "--lo must be < hi (in float32), got --lo 5.0, --hi 1.0"


def test_os_errors_name_the_path(tmp_path, monkeypatch, capsys):
    """Item 11: "[Errno 28] No space left on device" said nothing of which file."""
    from fastneuron.result import TrainResult

    def full_disk(self, path):
        raise OSError(28, "No space left on device")  # as a failed write() raises it: no file name

    monkeypatch.setattr(TrainResult, "save", full_disk)
    out = tmp_path / "o.npz"
    assert cli.main(["train", "--seeds", "0", "--steps", "4", "--backend", "eager", "--quiet", "--out",
                     str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"fastneuron: error: {out}: No space left on device\n"
    assert cli.error_message(FileNotFoundError(2, "No such file or directory", "/a/b")) == \
        "/a/b: No such file or directory"


def test_resume_path_errors_say_resume(tmp_path, capsys):
    """Item 11: --resume DIR was reported as --checkpoint."""
    assert cli.main(["train", "--seeds", "0", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastneuron: error: --resume: ") and "is a directory" in err, err
    assert cli.main(["train", "--seeds", "0", "--resume", str(tmp_path), "--checkpoint", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("fastneuron: error: --checkpoint: ")
