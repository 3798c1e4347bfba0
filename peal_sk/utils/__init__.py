"""Utilities: validation, top-k with seeded ties, distance kernels, estimator checks."""

from ._neighbors import kcenter_greedy, nearest_distances
from ._selection import top_k
from ._validation import check_features, check_n_instances, check_proba, check_rng

__all__ = [
    "check_features",
    "check_n_instances",
    "check_proba",
    "check_rng",
    "kcenter_greedy",
    "nearest_distances",
    "top_k",
]
