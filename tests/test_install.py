"""The design card's layout survives every way of installing it: a built wheel, ``pip install .``
and ``pip install -e .`` each put ``fastneuron.kernels`` where ``import fastneuron.kernels`` finds
the top-level ``kernels/`` folder's code (setuptools' ``package-dir``), checked in a fresh venv.

The fresh venv has only fastneuron of its own; torch, numpy and setuptools come from this
environment through a ``.pth`` line placed after its site-packages (a directory added so is not a
site directory, so this environment's own fastneuron, an editable install, stays invisible there).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile

import numpy as np
import pytest

import fastneuron as fn

REPO = pathlib.Path(__file__).resolve().parents[1]

_CHECK = r"""
import json, sys
import fastneuron, fastneuron.kernels, fastneuron.kernels.compiled, fastneuron.kernels.sass
r = fastneuron.train([0, 1, 2**64 - 1], 0.01, 9, backend="eager", device="cpu", progress=False)
print(json.dumps({"package": fastneuron.__file__, "kernels": fastneuron.kernels.__file__,
                  "compiled": fastneuron.kernels.compiled.__file__,
                  "w": r.weight.tolist(), "b": r.bias.tolist()}))
"""


def _source_copy(dest: pathlib.Path) -> pathlib.Path:
    """What a clone holds for the build, copied so that the build writes nothing into the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("fastneuron", "kernels"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _fresh_venv(path: pathlib.Path) -> pathlib.Path:
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    pathlib.Path(site, "zz_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _pip(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["wheel", "pip install .", "pip install -e ."])
def test_install_maps_the_top_level_kernels_folder(tmp_path, how):
    src = _source_copy(tmp_path / "src")
    python = _fresh_venv(tmp_path / "venv")
    site = pathlib.Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       capture_output=True, text=True, check=True).stdout.strip())
    common = ["--no-deps", "--no-build-isolation", "--no-index"]
    if how == "wheel":
        _pip("wheel", *common, "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
        (wheel,) = (tmp_path / "dist").glob("fastneuron-*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        kernel_files = sorted(p.name for p in (REPO / "kernels").glob("*.py"))
        assert sorted(n.split("/")[-1] for n in names if n.startswith("fastneuron/kernels/")) == kernel_files, names
        assert not [n for n in names if n.startswith("kernels/")], names
        _pip("--python", str(python), "install", *common, str(wheel), cwd=tmp_path)
    elif how == "pip install .":
        _pip("--python", str(python), "install", *common, str(src), cwd=tmp_path)
    else:
        _pip("--python", str(python), "install", *common, "-e", str(src), cwd=tmp_path)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(python), "-c", _CHECK], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if how == "pip install -e .":
        assert got["package"] == str(src / "fastneuron" / "__init__.py")
        assert got["kernels"] == str(src / "kernels" / "__init__.py")
        assert got["compiled"] == str(src / "kernels" / "compiled.py")
    else:
        assert got["package"] == str(site / "fastneuron" / "__init__.py")
        assert got["kernels"] == str(site / "fastneuron" / "kernels" / "__init__.py")
        assert got["compiled"] == str(site / "fastneuron" / "kernels" / "compiled.py")
    here = fn.train([0, 1, 2**64 - 1], 0.01, 9, backend="eager", device="cpu", progress=False)
    assert np.array_equal(np.asarray(got["w"], np.float32), np.asarray(here.weight))
    assert np.array_equal(np.asarray(got["b"], np.float32), np.asarray(here.bias))


def test_a_bare_checkout_on_sys_path_finds_the_kernels(tmp_path):
    """Not installed, on PYTHONPATH (bench/gpu_check.sh on a bare machine, bench/ab_trees.py):
    fastneuron/__init__.py's finder maps the checkout's own kernels/ folder."""
    src = _source_copy(tmp_path / "checkout")
    env = dict(os.environ, PYTHONPATH=str(src))
    code = "import fastneuron.kernels.compiled as c, fastneuron as f; print(f.__file__); print(c.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [str(src / "fastneuron" / "__init__.py"), str(src / "kernels" / "compiled.py")]


def test_an_installed_package_never_takes_another_projects_kernels(tmp_path):
    """fastneuron installed (``pip install --target``) into another project's folder, whose
    own top-level ``kernels`` package sits beside it: ``fastneuron.kernels`` is the package's
    own, not that one (the checkout finder looks only at checkouts of fastneuron)."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "another"\n')
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("raise SystemExit('the other project kernels')\n")
    shutil.copytree(REPO / "fastneuron", tmp_path / "fastneuron", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "kernels", tmp_path / "fastneuron" / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    code = "import fastneuron.kernels as k; print(k.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [str(tmp_path / "fastneuron" / "kernels" / "__init__.py")]
