"""Helpers shared by the low-budget cold-start strategies (TypiClust, ProbCover).

Not public: L2 normalisation, stacking the pool with the labelled samples, distinct
rows and duplicate-row groups (also used by k-means's initial centres) and a clip of the
cluster count to the number of distinct rows. Their k-means is
:func:`peal_sk.utils._faiss.faiss_kmeans`.
"""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np

from ..utils._blocks import block_rows

__all__ = []


def l2_normalize(X, dtype=None):
    """A normalised copy of ``X`` (rows of norm 1; all-zero rows stay zero)."""
    out = np.array(X, dtype=dtype or X.dtype, copy=True)
    step = block_rows(8 * out.shape[1], len(out))
    for s in range(0, len(out), step):
        block = out[s : s + step]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        norms[norms == 0] = 1.0
        block /= norms[:, None].astype(out.dtype)
    return out


def stack_features(F_pool, F_labeled, *, normalize):
    """``[pool; labelled]`` as one array (normalised when asked), in the pool's dtype."""
    parts = [F_pool] if F_labeled is None else [F_pool, F_labeled.astype(F_pool.dtype)]
    if normalize:
        if len(parts) == 1:
            return l2_normalize(F_pool)
        return l2_normalize(np.concatenate(parts))
    return F_pool if len(parts) == 1 else np.concatenate(parts)


def _row_view(X):
    Xz = np.ascontiguousarray(X + 0.0)  # + 0.0 turns -0.0 into 0.0
    return Xz.view(np.dtype((np.void, Xz.dtype.itemsize * Xz.shape[1]))).ravel()


def distinct_rows(X):
    """Index of the first occurrence of every distinct row of ``X``, ascending.

    Rows are hashed by an exact integer product of their bits (``-0.0`` counted as
    ``0.0``), so equal rows always share a hash whatever their position; rows sharing a
    hash are then compared bit for bit. Sorting the raw rows instead costs seconds on a
    pool of 50,000 x 1,280.
    """
    n = X.shape[0]
    bits = np.dtype(f"u{X.dtype.itemsize}")
    weights = np.random.default_rng(0x5EED).integers(
        1, np.iinfo(np.uint64).max, size=X.shape[1], dtype=np.uint64, endpoint=True
    )
    h = np.empty(n, dtype=np.uint64)
    step = block_rows(16 * X.shape[1], n)
    with np.errstate(over="ignore"):
        for s in range(0, n, step):
            block = np.ascontiguousarray(X[s : s + step] + 0.0).view(bits)
            h[s : s + step] = block.astype(np.uint64) @ weights  # exact, modulo 2**64
    _, first, inverse, counts = np.unique(
        h, return_index=True, return_inverse=True, return_counts=True
    )
    keep = np.zeros(n, dtype=bool)
    keep[first] = True
    shared = np.flatnonzero(counts[inverse] > 1)
    if shared.size:  # equal hashes: decide on the values themselves
        _, first_shared = np.unique(_row_view(X[shared]), return_index=True)
        keep[shared] = False
        keep[shared[first_shared]] = True
    return np.flatnonzero(keep)


def duplicate_groups(X):
    """Group id of every row: equal ids for exactly equal rows (by value)."""
    if len(X) <= 1:
        return np.zeros(len(X), dtype=np.intp)
    _, inv = np.unique(_row_view(X), return_inverse=True)
    return inv.reshape(-1).astype(np.intp)


def n_distinct_at_least(X, k):
    """``min(k, number of distinct rows of X)``, without sorting the rows when possible.

    Rows whose random projections differ by more than a rounding bound are distinct,
    so the number of such well separated projection values is a lower bound on the
    number of distinct rows; only when it is below ``k`` are the rows compared exactly.
    """
    n, d = X.shape
    if n <= 1:
        return min(k, n)
    v = np.random.default_rng(0).uniform(0.5, 1.5, size=d)
    h = np.empty(n)
    step = block_rows(8 * d, n)
    for s in range(0, n, step):
        h[s : s + step] = X[s : s + step].astype(np.float64) @ v
    h.sort()
    # equal rows give equal projections; distinct ones differ by more than the float64
    # rounding of the product (the float32 inputs are exact in float64)
    bound = 4 * (d + 2) * np.finfo(np.float64).eps * (np.abs(h).max() * 1.5 + 1.0)
    n_groups = 1 + int(np.count_nonzero(np.diff(h) > bound))
    if n_groups >= k:
        return k
    return min(k, int(np.unique(_row_view(X)).size))
