"""The compiled backend's Inductor cache is keyed by the CPU kind and the vector ISA in
effect (kernels/inductor_cache.py): a cache written under one capability never hands
its code to a run under another (issue 22, item 4)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastneuron as fn

_RUN = r"""
import sys, torch, fastneuron as fn
r = fn.train(range(64), 0.02, 24, backend="compile", device="cpu", progress=False)
print(torch.backends.cpu.get_cpu_capability(), r.weight.numpy().tobytes().hex(), r.bias.numpy().tobytes().hex())
"""


def _run(cache, capability):
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run([sys.executable, "-c", _RUN], env=env, capture_output=True, text=True, timeout=600,
                         cwd=str(cache.parent))
    assert out.returncode == 0, f"ATEN_CPU_CAPABILITY={capability}: {out.stderr[-3000:]}"
    return out.stdout.split()


@pytest.mark.slow  # two cold compiles in fresh processes: 45-75 s on the busy 2-core machine
def test_a_changed_capability_on_one_cache_compiles_its_own_code(tmp_path):
    """The machine's capability, then ATEN_CPU_CAPABILITY=default, against one cache
    directory: before the fix the second run got the first's AVX code from Inductor's FX
    graph cache and failed to compile it (CppCompileError, 'at::vec' has not been
    declared). Both run, and their bits are equal (and the eager backend's)."""
    cache = tmp_path / "inductor"
    native = _run(cache, None)
    if native[0] == "DEFAULT":
        pytest.skip("this CPU has no vector ISA: there is no other capability to change to")
    default = _run(cache, "default")
    assert default[0] == "DEFAULT"
    assert native[1:] == default[1:]
    eager = fn.train(range(64), 0.02, 24, backend="eager", progress=False)
    assert native[1:] == [eager.weight.numpy().tobytes().hex(), eager.bias.numpy().tobytes().hex()]
    assert len([p for p in cache.iterdir() if p.name.startswith("fastneuron-")]) == 2


def test_cache_dir_is_keyed_by_the_capability_under_the_users_directory(tmp_path):
    from fastneuron.kernels import inductor_cache

    base = str(tmp_path)
    native, default = inductor_cache.cache_dir(base, None), inductor_cache.cache_dir(base, "default")
    assert native != default
    for d in (native, default):
        assert os.path.dirname(d) == base and os.path.basename(d).startswith("fastneuron-")
    assert os.path.basename(native).startswith(f"fastneuron-{torch.backends.cpu.get_cpu_capability().lower()}-")
    assert inductor_cache.cache_dir(native, None) == native  # already keyed: not nested
    assert os.path.dirname(inductor_cache.cache_dir(None, None)) == os.path.abspath(inductor_cache._default_base())


@pytest.mark.parametrize("before", [None, "user-set"])
def test_keyed_cache_sets_the_variable_only_inside(tmp_path, monkeypatch, before):
    from fastneuron.kernels import inductor_cache

    env = inductor_cache.ENV
    if before is None:
        monkeypatch.delenv(env, raising=False)
    else:
        monkeypatch.setenv(env, str(tmp_path / before))
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    with inductor_cache.keyed_cache("cpu"):
        inside = os.environ[env]
        with inductor_cache.keyed_cache("cpu"):  # nested: the same directory
            assert os.environ[env] == inside
    assert inside == inductor_cache.cache_dir(None if before is None else str(tmp_path / before), None)
    assert os.environ.get(env) == (None if before is None else str(tmp_path / before))
    with inductor_cache.keyed_cache("cuda"):  # CUDA's kernels do not depend on the CPU
        assert os.environ.get(env) == (None if before is None else str(tmp_path / before))


def test_compiled_training_restores_the_variable(monkeypatch):
    from fastneuron.kernels import inductor_cache

    base = inductor_cache._default_base()  # the suite's warm cache, not a cold one
    monkeypatch.setenv(inductor_cache.ENV, base)
    r = fn.train(range(8), 0.02, 24, backend="compile", progress=False)
    assert os.environ[inductor_cache.ENV] == base
    assert np.isfinite(r.weight.numpy()).all()
