"""The one door to faiss: float32 input it can handle, its k-means, its thread count.

faiss computes squared distances in float32. Features of magnitude ~1e19 make them
overflow to infinity; faiss's k-means then raises a C++ exception from an OpenMP region,
which aborts the Python process (nothing can catch it), and its searches return wrong
neighbours. Every faiss call of peal_sk therefore goes through :func:`as_faiss_float32`,
which scales features of extreme magnitude by a power of two first. Such a scaling is
exact in binary floating point (barring underflow of values ~2^-126 of the largest),
so every comparison of distances, hence every argmin, argmax and k-means assignment,
is the one of the unscaled data; features of ordinary magnitude are passed as they are,
so no selection changes for them.

:func:`faiss_kmeans` is the only faiss k-means wrapper (TypiClust, ProbCover's purity
estimate and cells, DropQuery, and the faiss backend of :class:`KMeansSelector`).
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from ._blocks import FAISS_SEARCH_ROWS

__all__ = ["as_faiss_float32", "faiss_kmeans", "few_threads_when_small", "float32_scale"]

#: squared float32 distances may reach this (1e-6 of float32's largest value)
_F32_SAFE_SQ = float(np.finfo(np.float32).max) * 1e-6
#: below this largest magnitude squared distances would lose digits to subnormals
_F32_TINY = 2.0**-50


def float32_scale(lo, hi, n_features):
    """Power of two by which features spanning ``[lo, hi]`` are multiplied before float32
    distance arithmetic (1.0 for features of ordinary magnitude).

    A squared distance sums ``n_features`` terms of up to ``(2 max|x|)^2``; when that may
    exceed 1e-6 of float32's largest value (or the largest magnitude is below 2^-50,
    where squares turn subnormal), the features are scaled to a largest magnitude in
    [0.5, 1). Non-finite bounds are refused with a ``ValueError``.
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(
            f"the features contain NaN or infinite values (range [{lo}, {hi}]); faiss "
            "cannot compare them. Remove or impute those values first."
        )
    m = max(abs(lo), abs(hi))
    if m == 0.0 or (m >= _F32_TINY and 4.0 * m * m * max(1, int(n_features)) <= _F32_SAFE_SQ):
        return 1.0
    return math.ldexp(1.0, -math.frexp(m)[1])  # largest magnitude -> [0.5, 1)


def as_faiss_float32(X):
    """``(X32, scale)``: ``X * scale`` as a C-contiguous float32 array faiss can handle.

    ``scale`` is a power of two (:func:`float32_scale`), 1.0 (and no copy of a
    C-contiguous float32 ``X``) for features of ordinary magnitude. Distances between
    rows of ``X32`` are ``scale`` times those of ``X``.
    """
    X = np.asarray(X)
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    if X.size == 0:
        return np.ascontiguousarray(X, dtype=np.float32), 1.0
    scale = float32_scale(X.min(), X.max(), X.shape[-1])
    if scale == 1.0:
        return np.ascontiguousarray(X, dtype=np.float32), 1.0
    # scaled in the input's precision (float64 values beyond float32's range fit), once
    # rounded to float32
    X32 = np.empty(X.shape, dtype=np.float32)
    np.multiply(X, X.dtype.type(scale), out=X32, casting="same_kind")
    return X32, scale


@dataclass
class KMeansResult:
    """What :func:`faiss_kmeans` returns (in the units of its input)."""

    #: (n_clusters, n_features) float32 centres
    centres: np.ndarray
    #: (n_samples,) np.intp nearest centre of every row (None unless ``assign``)
    labels: np.ndarray | None
    #: k-means objective of the last assignment of the training (sum of squared
    #: distances; None for the one-cluster shortcut)
    objective: float | None


def faiss_kmeans(
    X,
    n_clusters,
    seed,
    *,
    n_iter,
    max_points_per_centroid=256,
    init_centroids=None,
    assign=True,
    prepared=False,
):
    """Seeded faiss k-means: the one wrapper every selector uses.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Finite features (any float dtype); guarded by :func:`as_faiss_float32`.
    n_clusters : int
        Must not exceed the number of distinct rows when faiss draws the start itself
        (see ``_lowbudget_common.n_distinct_at_least``); empty clusters may come out.
    seed : int
        faiss's seed (start and training subsample).
    n_iter : int
        Lloyd iterations.
    max_points_per_centroid : int, default=256
        Training subsample: at most this many rows per centre (seeded). Pass
        ``ceil(n_samples / n_clusters)`` or more to train on every row.
    init_centroids : ndarray of shape (n_clusters, n_features), default=None
        Start from these centres (in ``X``'s units) instead of faiss's random rows.
    assign : bool, default=True
        Also return the nearest centre of every row (searched in blocks of
        ``FAISS_SEARCH_ROWS`` rows).
    prepared : bool, default=False
        ``X`` is already the output of :func:`as_faiss_float32` (callers that run
        k-means repeatedly on the same array skip the magnitude check); centres and
        objective are then in its units.

    Returns
    -------
    KMeansResult
        With ``n_clusters == 1`` and no ``init_centroids`` the centre is the mean of
        every row (no faiss call, ``objective`` None).
    """
    if prepared:
        X32, scale = X, 1.0
    else:
        X32, scale = as_faiss_float32(X)
    n, d = X32.shape
    if n_clusters == 1 and init_centroids is None:
        centre = X32.mean(axis=0, dtype=np.float64) / scale
        labels = np.zeros(n, dtype=np.intp) if assign else None
        return KMeansResult(centre.astype(np.float32)[None, :], labels, None)
    import faiss

    km = faiss.Kmeans(
        d,
        int(n_clusters),
        niter=int(n_iter),
        seed=int(seed),
        verbose=False,
        min_points_per_centroid=1,  # no warning for few points per centre
        max_points_per_centroid=int(max_points_per_centroid),
    )
    start = None
    if init_centroids is not None:
        start = np.ascontiguousarray(np.asarray(init_centroids) * scale, dtype=np.float32)
    labels = None
    with few_threads_when_small(n * n_clusters * d):
        km.train(X32, init_centroids=start)
        if assign:
            labels = np.empty(n, dtype=np.intp)
            for s in range(0, n, FAISS_SEARCH_ROWS):
                _, idx = km.index.search(X32[s : s + FAISS_SEARCH_ROWS], 1)
                labels[s : s + FAISS_SEARCH_ROWS] = idx[:, 0]
    centres = km.centroids.copy()
    if scale != 1.0:
        centres /= np.float32(scale)
    objective = float(km.obj[-1]) / scale**2 if len(km.obj) else None
    return KMeansResult(centres, labels, objective)


@contextlib.contextmanager
def few_threads_when_small(work, threshold=5e7):
    """One faiss (OpenMP) thread for small problems: there, thread start-up and barriers
    cost more than the work (1 s instead of 1 ms for 200 points on a busy machine)."""
    import faiss

    if work >= threshold:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
