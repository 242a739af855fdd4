"""Issue 22 item 6: papercuts a new user met on first use, one test each (the CLI's
progress bar: tests/test_cli.py::test_progress_bar_on_a_terminal_or_with_progress)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import fastneuron as fn
from fastneuron import __main__ as cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def _pairs_grid(**kw):
    return fn.grid(seeds=range(6), lrs=[0.01, 0.02], **kw)


# -- summaries ------------------------------------------------------------------------------


def test_summary_without_a_log_says_the_step_column_needs_log_every(tmp_path):
    """Without a log the column "step risk<tol" is all "-": the table now says why."""
    bare = fn.train(**_pairs_grid(), steps=10, backend="eager")
    text = str(bare.summary())
    assert all(row["step_below_tol"] is None for row in bare.summary().rows)
    assert "step risk<0.0001: needs a log" in text and "log_every" in text, text
    parts = fn.train(**_pairs_grid(), steps=10, backend="eager", out=str(tmp_path / "run") + os.sep)
    assert str(parts.summary()) == text  # a parts directory's summary says the same
    logged = fn.train(**_pairs_grid(), steps=10, backend="eager", log_every=5)
    assert "log_every" not in str(logged.summary())  # a log: the table as before
    assert len(str(logged.summary()).splitlines()) == 3


def test_summary_by_seed_says_the_spread_is_over_lrs(tmp_path):
    """With label noise the spread columns are over each group's members: over the lrs
    when grouped by seed, not "over seeds"."""
    noisy = fn.train(**_pairs_grid(), steps=10, backend="eager", noise=0.1, log_every=5)
    by_seed, by_lr = str(noisy.summary(by="seed")), str(noisy.summary(by="lr"))
    assert "over each group's members, which differ in lr" in by_seed, by_seed
    assert "over each group's members, which differ in seed" in by_lr, by_lr
    assert "which differ in nothing" in str(noisy.summary(by=("seed", "lr")))
    parts = fn.train(**_pairs_grid(), steps=10, backend="eager", noise=0.1, log_every=5,
                     out=str(tmp_path / "run") + os.sep)
    assert str(parts.summary(by="seed")) == by_seed
    assert str(parts.summary(by="seed", exact_bytes=0)).splitlines()[-2:] == by_seed.splitlines()[-2:]


# -- refusals that named internals or gave the wrong advice -------------------------------------


def test_grid_axis_of_a_run_wide_option_says_run_wide():
    """fn.grid(..., a=[1, 2]) gave "a must be a real number, got GridColumn(...)"."""
    for option, optimizer in (("a", "sgd"), ("nesterov", "sgd"), ("momentum", "rmsprop")):
        with pytest.raises(ValueError) as info:
            fn.train(**_pairs_grid(**{option: [0.0, 1.0]}), steps=1, optimizer=optimizer, backend="eager")
        message = str(info.value)
        assert message.startswith(f"{option} is run-wide") and "fastneuron.grid" in message, message
        assert "GridColumn" not in message, message
    # A per-member option is an axis as before.
    assert len(fn.train(**_pairs_grid(momentum=[0.0, 0.9]), steps=1, backend="eager")) == 24


def test_out_of_memory_advice_fits_the_run(monkeypatch, capsys):
    """No "larger log_every" when nothing is logged; out="DIR/" (--out DIR/) named."""
    from fastneuron import engine

    monkeypatch.setattr(engine, "available_bytes", lambda dev: 1 << 30)
    with pytest.raises(ValueError) as info:
        fn.train(range(10**9), 0.01, 3, backend="eager")
    assert "log_every" not in str(info.value) and 'out="DIR/"' in str(info.value), info.value
    with pytest.raises(ValueError) as info:
        fn.train(range(10**8), 0.01, 100, log_every=1, backend="eager")
    assert "a larger log_every" in str(info.value) and 'out="DIR/"' in str(info.value), info.value
    for argv, log in ((["--seeds", "0:1000000000"], False),
                      (["--seeds", "0:100000000", "--log-every", "1", "--steps", "100"], True)):
        assert cli.main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "--out DIR/" in err, err
        assert ("--log-every" in err) == log and "log_every" not in err, err


# -- help -----------------------------------------------------------------------------------------


def test_help_examples_keep_their_line_breaks(capsys):
    """Two examples of 'train --help' ran their continuation lines into one."""
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--help"])
    assert info.value.code == 0
    examples = capsys.readouterr().out.split("\nexamples:\n", 1)[1]
    for line in examples.splitlines():
        assert not re.search(r"\S {2,}\S", line), line  # no continuation run into the line
        assert len(line) <= 100, line
    lines = examples.splitlines()
    continued = [i for i, line in enumerate(lines) if line.endswith(" \\")]
    assert len(continued) >= 6 and all(lines[i + 1].startswith("      --") for i in continued), examples


# -- the test suite itself ------------------------------------------------------------------


def test_no_skip_about_the_project_shared_folder(tmp_path):
    """A clone with no ../shared (a user's) ran one test as a skip about "the project's
    shared SPEC folder, beside this checkout": now that test exists only beside it."""
    clone = tmp_path / "clone"
    (clone / "tests").mkdir(parents=True)
    for name in ("conftest.py", "spec-vectors.json", "spec_numpy.py", "test_spec_numpy.py"):
        shutil.copy(REPO / "tests" / name, clone / "tests" / name)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
                        "-p", "no:randomly", "tests/test_spec_numpy.py", "-k", "copy_is_current"],
                       capture_output=True, text=True, timeout=300, cwd=clone)
    assert p.returncode in (0, 5), p.stdout + p.stderr  # 5: nothing selected
    assert "skipped" not in p.stdout and "shared" not in p.stdout, p.stdout


# -- a clone named fastneuron, run from its parent ------------------------------------------------


def test_cli_from_the_parent_of_a_clone_named_fastneuron(tmp_path):
    """'python -m fastneuron' beside a clone named fastneuron imports the clone as an empty
    namespace package; an editable install still finds fastneuron.__main__, which then
    failed on a bare "no attribute 'grid'". Now: one line that says what happened."""
    (tmp_path / "fastneuron").symlink_to(REPO, target_is_directory=True)
    # setuptools' editable finder, as 'pip install -e' installs it (after the path finder),
    # mapping to this checkout whatever the environment's own install is; and, first, what
    # the path finder then gives for "fastneuron" (a package installed in site-packages
    # would win over the namespace: not the case of an editable install).
    finder = textwrap.dedent(f"""
        import os, runpy, sys
        from importlib.machinery import PathFinder
        class Editable:
            @classmethod
            def find_spec(cls, fullname, path=None, target=None):
                if fullname.startswith("fastneuron.") and fullname.count(".") == 1:
                    return PathFinder.find_spec(fullname, path=[{str(REPO / "fastneuron")!r}])
                return None
        class Namespace:
            @classmethod
            def find_spec(cls, fullname, path=None, target=None):
                return PathFinder.find_spec(fullname, [os.getcwd()]) if fullname == "fastneuron" else None
        sys.meta_path.insert(sys.meta_path.index(PathFinder) + 1, Editable)
        sys.meta_path.insert(0, Namespace)
        sys.argv = ["fastneuron", "train", "--seeds", "0", "--steps", "1", "--backend", "eager"]
        runpy.run_module("fastneuron", run_name="__main__", alter_sys=True)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", finder], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=env)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    assert f"found the directory {tmp_path / 'fastneuron'}" in p.stderr and "namespace package" in p.stderr
    assert "another directory" in p.stderr, p.stderr
    assert cli.namespace_clone() is None  # this process imported the package itself


# -- the bench report --------------------------------------------------------------------------


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC Processor
stepping\t: 2
flags\t\t: fpu vme sse sse2 avx avx2 fma

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
"""


def test_bench_report_records_the_cpu_family_and_model(tmp_path, capsys):
    """The README says the CPU's family matters (family 23 runs at a fraction of Zen 5);
    the model name, "AMD EPYC", says nothing of it. The report records both."""
    from fastneuron.bench import cli as bench_cli
    from fastneuron.bench.report import cpu_info

    assert cpu_info(CPUINFO) == {"model_name": "AMD EPYC Processor", "vendor": "AuthenticAMD", "family": 23,
                                 "model": 1, "stepping": 2, "isa": "avx2"}
    out = tmp_path / "report.json"
    assert bench_cli.main(["--contestants", "eager", "--members", "64", "--steps", "4", "--repeats", "3",
                           "--json", str(out)]) == 0
    machine = json.loads(out.read_text())["machine"]
    here = cpu_info()
    assert {k: machine[f"cpu_{k}"] for k in ("vendor", "family", "model", "stepping", "isa")} == \
        {k: here[k] for k in ("vendor", "family", "model", "stepping", "isa")}
    assert "torch_cpu_capability" in machine
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("machine: "))
    if here["family"] is not None:
        assert f"cpu family {here['family']}, model {here['model']}" in line, line
