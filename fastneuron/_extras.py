"""Optional dependencies: import one, or say which extra brings it."""

from __future__ import annotations

import importlib

#: What installs pandas, xarray and pyarrow.
ANALYSIS_EXTRA = "pip install 'fastneuron[analysis]'"


def need(module: str, what: str):
    """Import ``module`` or raise an ImportError naming ``what`` needs it and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs {module.partition('.')[0]}, which could not be imported ({exc}): "
                          f"{ANALYSIS_EXTRA}") from exc
