"""Active-learning simulations (``peal-sk simulate``): which strategy saves labels."""

from ._data import BUILTIN, Dataset, load_dataset
from ._simulate import ITERATIVE, MODELS, ONE_SHOT, SimulationConfig, simulate

__all__ = [
    "BUILTIN",
    "ITERATIVE",
    "MODELS",
    "ONE_SHOT",
    "Dataset",
    "SimulationConfig",
    "load_dataset",
    "simulate",
]
