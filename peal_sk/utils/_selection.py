"""Top-k picking with seeded tie-breaking."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np

__all__ = ["top_k"]


def top_k(scores, k, rng, *, largest=True, eligible=None):
    """Indices of the ``k`` best scores, best first; ties broken by a seeded permutation.

    Equivalent to a stable sort of the scores taken in the order of ``rng.permutation``,
    so two samples with the same score come out in an order decided by ``rng`` and never
    by their index alone.

    Parameters
    ----------
    scores : ndarray of shape (n,)
        Finite scores (``-inf``/``+inf`` allowed to push samples to an end).
    k : int
        Number of indices to return, ``1 <= k <= n``.
    rng : numpy.random.Generator
    largest : bool, default=True
        Whether larger scores are better.
    eligible : ndarray of bool of shape (n,), default=None
        Only these samples may be picked; ``k`` must not exceed their number.

    Returns
    -------
    idx : ndarray of shape (k,), dtype=np.intp
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    perm = rng.permutation(n)
    if eligible is not None:
        perm = perm[eligible[perm]]
    key = -scores[perm] if largest else scores[perm]
    m = key.shape[0]
    if k > m:
        raise ValueError(f"k={k} is larger than the {m} eligible samples.")
    if k < m:
        # keep only keys <= the k-th smallest (a superset of the answer, in perm order)
        kth = np.partition(key, k - 1)[k - 1]
        cand = np.flatnonzero(key <= kth)
        perm, key = perm[cand], key[cand]
    order = np.argsort(key, kind="stable")[:k]
    return perm[order].astype(np.intp, copy=False)
