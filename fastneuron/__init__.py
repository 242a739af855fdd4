"""fastneuron: train thousands to hundreds of millions of independent ``nn.Linear(1, 1)``
neurons at once, bit for bit as the eager PyTorch reference (see SPEC.md)."""

__version__ = "0.1.0"
SPEC_VERSION = 1

from .api import grid, train  # noqa: E402
from .result import TrainResult, load, population_risk  # noqa: E402
from .rng import philox4x32, uint32_to_uniform  # noqa: E402

__all__ = [
    "SPEC_VERSION", "TrainResult", "__version__", "grid", "load", "philox4x32",
    "population_risk", "train", "uint32_to_uniform",
]
