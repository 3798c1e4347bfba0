"""Active-learning simulations (``peal-sk simulate``): which strategy saves labels."""

from ._data import BUILTIN, Dataset, load_dataset
from ._simulate import MODELS, SimulationConfig, simulate, strategies_for_mode

__all__ = [
    "BUILTIN",
    "MODELS",
    "Dataset",
    "SimulationConfig",
    "load_dataset",
    "simulate",
    "strategies_for_mode",
]
