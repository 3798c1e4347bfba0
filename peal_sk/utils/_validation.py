"""Input validation shared by every selector.

All checks run before any expensive work and raise ``ValueError`` / ``TypeError`` whose
message names the offending parameter and its value.
"""

# SPDX-License-Identifier: BSD-3-Clause

import inspect
from numbers import Integral

import numpy as np
from sklearn.utils.validation import _num_samples

__all__ = [
    "check_features",
    "check_no_inf",
    "check_n_instances",
    "check_proba",
    "check_query_indices",
    "check_rng",
    "n_samples",
]

#: Tolerance on ``sum(proba, axis=1) == 1``; float32 softmax outputs are within 1e-6.
PROBA_ATOL = 1e-3


def n_samples(X, *, name="X_pool"):
    """Number of samples of an array-like, list, DataFrame or array of file paths."""
    if X is None:
        raise ValueError(f"{name} is None; pass the pool of unlabelled samples.")
    try:
        n = _num_samples(X)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be an array-like of samples (array, list, DataFrame); "
            f"got {type(X).__name__}."
        ) from exc
    return int(n)


def check_n_instances(n_instances, n_pool, *, name="n_instances"):
    """Validate the query size against the pool size (no silent shrink)."""
    if isinstance(n_instances, bool) or not isinstance(n_instances, Integral | np.integer):
        raise TypeError(f"{name} must be an int >= 1; got {n_instances!r}.")
    n_instances = int(n_instances)
    if n_pool < 1:
        raise ValueError("X_pool is empty (0 samples); there is nothing to select from.")
    if n_instances < 1:
        raise ValueError(f"{name} must be >= 1; got {name}={n_instances}.")
    if n_instances > n_pool:
        raise ValueError(
            f"{name}={n_instances} is larger than the pool size n_pool={n_pool}; "
            f"ask for at most {n_pool} instances."
        )
    return n_instances


#: the largest feature-vector norm whose square stays far from overflow (1e-6 of the max)
_SAFE_NORM = {
    np.float32: float(np.sqrt(np.finfo(np.float32).max * 1e-6)),
    np.float64: float(np.sqrt(np.finfo(np.float64).max * 1e-6)),
}


#: below this largest magnitude, squared distances would lose digits to subnormals
_TINY = {np.float32: 2.0**-50, np.float64: 2.0**-450}


def _is_sparse(X):
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return False
    return sp.issparse(X)


def check_features(X, *, name="X_pool", n_features=None):
    """Validate 2-D numeric, finite features; float32 stays float32, others become float64.

    Float32 features so large (or so small) that squared distances would overflow
    float32 (or underflow to subnormals) are computed in float64 instead, which changes
    no selection of a distance-based selector; features beyond float64's range are
    refused with a hint to rescale them. Sparse matrices are refused (densify or reduce them first).
    The input is never modified (a copy is made only when a conversion is needed).
    """
    if _is_sparse(X):
        raise TypeError(
            f"{name}: sparse matrices are not supported: densify or reduce them first "
            "(e.g. X.toarray(), or TruncatedSVD to a few hundred dimensions)."
        )
    arr = np.asarray(X)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise TypeError(
            f"{name} must hold numeric features to compute distances; got dtype "
            f"{arr.dtype}. For images or file paths, use an estimator with a `transform` "
            "method that returns embeddings (e.g. PEALClassifier) or pass embeddings."
        )
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real-valued; got complex dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of features (n_samples, n_features); got an "
            f"array of shape {arr.shape}. For images, use an estimator whose `transform` "
            "returns embeddings."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples).")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features; shape {arr.shape}.")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features but the pool embeddings have {n_features}."
        )
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64, copy=False)
    # the extremes answer both questions without a temporary of the pool's size (a NaN
    # or an infinity makes one of them non-finite): on a 50,000 x 1,280 float32 pool the
    # elementwise isfinite and abs took 0.75 s, most of it page faults of the temporaries
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} contains NaN or infinite values (first at row {bad[0]}, column "
            f"{bad[1]}: {arr[bad[0], bad[1]]!r})."
        )
    # squared distances sum n_features terms of up to (2 * max|x|)^2 each
    magnitude = max(abs(lo), abs(hi))
    scale = magnitude * 2.0 * np.sqrt(arr.shape[1])
    tiny = 0.0 < magnitude < _TINY[arr.dtype.type]  # squares would turn subnormal
    if arr.dtype == np.float32 and (scale > _SAFE_NORM[np.float32] or tiny):
        arr = arr.astype(np.float64)
        tiny = 0.0 < magnitude < _TINY[np.float64]
    if scale > _SAFE_NORM[np.float64] or tiny:
        raise ValueError(
            f"{name} has values of magnitude {magnitude:.3g}: squared distances "
            f"would {'underflow' if tiny else 'overflow'} even in float64. Rescale the "
            "features (e.g. StandardScaler) first."
        )
    return arr


def check_no_inf(X, *, name="X_pool"):
    """Refuse a numeric array (or DataFrame) holding +-inf; anything else passes as is.

    Every selector sees the pool, even those that never compute on it (random
    sampling), so an infinity is refused there before it reaches a model or a
    distance. NaN passes: scikit-learn estimators such as HistGradientBoosting take it
    as a missing value (selectors that compute distances refuse it, see
    :func:`check_features`). Lists (of images, of file paths) are not inspected.
    """
    if hasattr(X, "dtypes") and hasattr(X, "to_numpy"):  # a DataFrame: numeric columns
        try:
            X = X.select_dtypes(include="number").to_numpy()
        except (AttributeError, TypeError, ValueError):
            return
    if not isinstance(X, np.ndarray) or X.dtype.kind != "f" or X.size == 0:
        return
    lo, hi = X.min(), X.max()
    if np.isfinite(lo) and np.isfinite(hi):
        return
    inf = np.isinf(X)  # only reached with NaN or inf somewhere
    if inf.any():
        pos = tuple(int(i) for i in np.argwhere(inf)[0])
        where = f"row {pos[0]}, column {pos[1]}" if len(pos) == 2 else f"index {pos}"
        raise ValueError(
            f"{name} contains NaN or infinite values (first infinity at {where}: "
            f"{X[pos]!r}); remove those samples or replace the values before selecting."
        )


def check_query_indices(query_idx, n_pool, *, n_instances=None, name="query_strategy"):
    """Validate the indices a user's strategy returned; the clean ``np.intp`` array.

    1-D (a scalar counts as one index) integers in ``[0, n_pool)`` without duplicates,
    and exactly ``n_instances`` of them when given. ``name`` names the strategy in the
    message (e.g. ``"core_selector=<function f>"``).
    """
    idx = np.asarray(query_idx)
    if idx.dtype.kind not in "iu" and not (idx.size == 0 and idx.dtype.kind == "f"):
        raise TypeError(f"{name} returned indices of dtype {idx.dtype}; expected integers.")
    if idx.ndim > 1:
        raise ValueError(f"{name} returned indices of shape {idx.shape}; expected a 1-D array.")
    idx = idx.astype(np.intp, copy=False).reshape(-1)
    if n_instances is not None and idx.size != n_instances:
        raise ValueError(
            f"{name} returned {idx.size} indices for n_instances={n_instances}; a strategy "
            "must return exactly n_instances indices."
        )
    if idx.size and (idx.min() < 0 or idx.max() >= n_pool):
        raise ValueError(
            f"{name} returned indices outside [0, {n_pool}) (from {idx.min()} to "
            f"{idx.max()}) for a pool of {n_pool} samples."
        )
    if np.unique(idx).size != idx.size:
        raise ValueError(
            f"{name} returned duplicate indices {idx.tolist()[:20]}; each sample can be "
            "queried once."
        )
    return idx


def check_proba(proba, n_pool, *, name="predict_proba(X_pool)"):
    """Validate a probability matrix: 2-D, finite, non-negative, rows summing to one."""
    proba = np.asarray(proba)
    if proba.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be numeric; got dtype {proba.dtype}.")
    proba = proba.astype(np.float64, copy=False)
    if proba.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_classes); got shape {proba.shape}.")
    if proba.shape[0] != n_pool:
        raise ValueError(f"{name} has {proba.shape[0]} rows but X_pool has {n_pool} samples.")
    if proba.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns (no classes).")
    if not np.isfinite(proba).all():
        row = int(np.argwhere(~np.isfinite(proba))[0, 0])
        raise ValueError(f"{name} contains NaN or infinite values (first in row {row}).")
    if (proba < 0).any():
        row = int(np.argwhere(proba < 0)[0, 0])
        raise ValueError(f"{name} has negative probabilities (first in row {row}).")
    sums = proba.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROBA_ATOL)
    if bad.size:
        raise ValueError(
            f"{name} rows must sum to 1 (tolerance {PROBA_ATOL}); row {bad[0]} sums to "
            f"{sums[bad[0]]:.6g} ({bad.size} bad rows). Pass probabilities, not logits."
        )
    return proba


def check_rng(random_state):
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    ``None`` draws fresh OS entropy (never the global NumPy state); an int seeds a new
    generator, so the same int gives the same selection on every call; a ``Generator`` is
    used as is; a legacy ``RandomState`` seeds a new generator from one draw.
    """
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, Integral | np.integer) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0; got random_state={random_state}.")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int, a numpy Generator or RandomState; got "
        f"{random_state!r}."
    )


def accepts_keyword(func, name):
    """Whether ``func`` takes a keyword argument called ``name`` by that name.

    ``**kwargs`` does not count: modAL's strategies forward their ``**kwargs`` to
    ``predict_proba``, which would fail on an unexpected ``random_state``.
    """
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    param = params.get(name)
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
