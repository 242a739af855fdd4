"""fastneuron: train thousands to hundreds of millions of independent ``nn.Linear(1, 1)``
neurons at once, bit for bit as the eager PyTorch reference (see docs/SPEC.md).

The names below are loaded on first use, so that ``python -m fastneuron --help``
starts without importing torch.
"""

import importlib
import importlib.abc
import importlib.util
import os
import re
import sys

from ._version import __version__
SPEC_VERSION = 2

#: Public name -> the module that defines it.
_EXPORTS = {
    "grid": ".members", "train": ".api",
    "RunSpec": ".spec",
    "TrainResult": ".result", "load": ".parts", "ResultNotSaved": ".result",
    "population_risk": ".problems",
    "to_pandas": ".tables", "to_xarray": ".tables", "to_parquet": ".tables",
    "philox4x32": ".rng", "uint32_to_uniform": ".rng", "normal_block": ".normal",
    "make_schedule": ".schedules",
}

__all__ = ["SPEC_VERSION", "__version__", *_EXPORTS]


class _CheckoutKernels(importlib.abc.MetaPathFinder):
    """``fastneuron.kernels`` from the top-level ``kernels/`` folder of the checkout this
    package was imported from. An install maps that folder there through setuptools'
    ``package-dir``; a checkout on ``sys.path`` (not installed, or beside an editable install
    of another checkout) needs this finder, which goes first so that the kernels always come
    from the same tree as the package. It finds nothing outside a checkout of fastneuron:
    where the package holds its own ``kernels/`` (an install), or where the folder above it
    has no ``pyproject.toml`` naming fastneuron (site-packages, or another project's folder
    with a ``kernels`` package of its own)."""

    PACKAGE = os.path.dirname(os.path.abspath(__file__))
    ROOT = os.path.dirname(PACKAGE)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != __name__ + ".kernels":
            return None
        folder = os.path.join(self.ROOT, "kernels")
        installed = os.path.isdir(os.path.join(self.PACKAGE, "kernels"))
        if installed or not os.path.isfile(os.path.join(folder, "__init__.py")):
            return None
        try:
            with open(os.path.join(self.ROOT, "pyproject.toml"), encoding="utf-8") as f:
                if not re.search(r'^name\s*=\s*"fastneuron"\s*$', f.read(), re.MULTILINE):
                    return None
        except OSError:
            return None
        return importlib.util.spec_from_file_location(fullname, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])


if not any(isinstance(f, _CheckoutKernels) for f in sys.meta_path):
    sys.meta_path.insert(0, _CheckoutKernels())


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
