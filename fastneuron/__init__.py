"""fastneuron: train thousands to hundreds of millions of independent ``nn.Linear(1, 1)``
neurons at once, bit for bit as the eager PyTorch reference (see docs/SPEC.md).

The names below are loaded on first use, so that ``python -m fastneuron --help``
starts without importing torch.
"""

import importlib

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


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
