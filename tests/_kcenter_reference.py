"""Frozen copy of ``kcenter_greedy`` before the dense-update fallback (issue 13).

The slow reference the tests compare the fast implementation with (same picks for the
same seed, duplicates and ties included). Verbatim except for the name. Do not optimise.
"""

import numpy as np

BLOCK_BYTES = 64 * 2**20

_BACKENDS = ("auto", "faiss", "numpy")


def _sq_norms(X):
    return np.einsum("ij,ij->i", X, X)


def pairwise_sq_distances(A, B, a_sq=None, b_sq=None):
    """Squared Euclidean distances ``(len(A), len(B))`` through the norm expansion, >= 0."""
    a_sq = _sq_norms(A) if a_sq is None else a_sq
    b_sq = _sq_norms(B) if b_sq is None else b_sq
    D = A @ B.T
    D *= -2
    D += a_sq[:, None]
    D += b_sq[None, :]
    np.maximum(D, 0, out=D)
    return D


def _resolve_backend(backend, dtype):
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}; got backend={backend!r}.")
    if backend == "auto":
        # faiss works in float32; float64 input keeps numpy's float64 precision.
        return "faiss" if dtype == np.float32 else "numpy"
    return backend


def nearest_distances(Q, R, *, backend="auto"):
    """Distance from each row of ``Q`` to its nearest row of ``R``, and that row's index.

    Parameters
    ----------
    Q : ndarray of shape (n_queries, n_features)
    R : ndarray of shape (n_refs, n_features)
    backend : {"auto", "faiss", "numpy"}, default="auto"
        ``"auto"`` uses faiss (``IndexFlatL2``, exact, float32) for float32 input and
        blocked numpy for float64 input.

    Returns
    -------
    dist : ndarray of shape (n_queries,), float64
        Euclidean (not squared) distances.
    index : ndarray of shape (n_queries,), np.intp
        Index into ``R`` of the nearest row (lowest index on exact ties with numpy).
    """
    backend = _resolve_backend(backend, Q.dtype)
    if backend == "faiss":
        import faiss

        Rf = np.ascontiguousarray(R, dtype=np.float32)
        Qf = np.ascontiguousarray(Q, dtype=np.float32)
        index = faiss.IndexFlatL2(Rf.shape[1])
        index.add(Rf)
        D, I = index.search(Qf, 1)
        dist = np.sqrt(np.maximum(D[:, 0].astype(np.float64), 0.0))
        return dist, I[:, 0].astype(np.intp)
    r_sq = _sq_norms(R)
    n = Q.shape[0]
    dist = np.empty(n, dtype=np.float64)
    index = np.empty(n, dtype=np.intp)
    step = max(1, BLOCK_BYTES // (8 * max(1, R.shape[0])))
    for start in range(0, n, step):
        block = Q[start : start + step]
        D = pairwise_sq_distances(block, R, b_sq=r_sq)
        j = np.argmin(D, axis=1)
        index[start : start + step] = j
        dist[start : start + step] = np.sqrt(D[np.arange(len(j)), j])
    return dist, index


def kcenter_greedy_reference(X, n_instances, rng, *, X_labeled=None, backend="auto"):
    """Greedy k-centre (Sener & Savarese core-set; the FDS baseline of BiLAF).

    Repeatedly picks the sample farthest from the labelled samples and everything picked so
    far. With no labelled samples the first pick is a seeded-random sample. Ties in the
    farthest distance are broken by a seeded permutation.

    The min-distance update after each pick only visits samples whose nearest centre ``a``
    satisfies ``d(a, new) < 2 * r_a`` (``r_a``: the largest distance of a sample to ``a``);
    by the triangle inequality no other sample can get closer to the new centre. The result
    is the same as the plain greedy algorithm; the work per pick shrinks as the radii do.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Pool features (validated, finite).
    n_instances : int
        Number of picks, ``<= n_samples``.
    rng : numpy.random.Generator
    X_labeled : ndarray of shape (n_labeled, n_features), default=None
    backend : {"auto", "faiss", "numpy"}, default="auto"
        Backend for the initial distances to ``X_labeled``.

    Returns
    -------
    idx : ndarray of shape (n_instances,), np.intp
        Picks in the order they were made.
    dist : ndarray of shape (n_instances,), float64
        Distance of each pick to its nearest centre when it was picked (``inf`` for the
        random first pick when there are no labelled samples).
    """
    n = X.shape[0]
    perm = rng.permutation(n)
    # centre the data: the norm expansion loses precision far from the origin; the mean
    # is rounded to integers so that integer-valued data (exact ties) stay exact
    origin = np.round(X.mean(axis=0, dtype=np.float64)).astype(X.dtype)
    Xp = np.ascontiguousarray(X[perm] - origin)
    if X_labeled is not None:
        X_labeled = np.ascontiguousarray(X_labeled - origin.astype(X_labeled.dtype))
    sq = _sq_norms(Xp)
    n_lab = 0 if X_labeled is None else X_labeled.shape[0]
    # centres in float64: the pruning test compares centre-centre distances with radii
    centers = np.empty((n_lab + n_instances, X.shape[1]), dtype=np.float64)
    centers_sq = np.zeros(n_lab + n_instances)
    radius = np.zeros(n_lab + n_instances)
    picks = np.empty(n_instances, dtype=np.intp)
    pick_dist = np.empty(n_instances)

    if n_lab:
        centers[:n_lab] = X_labeled
        centers_sq[:n_lab] = _sq_norms(centers[:n_lab])
        dist, assign = nearest_distances(Xp, X_labeled, backend=backend)
        mind2 = dist**2
        n_centers = n_lab
        np.maximum.at(radius, assign, dist)
        first = None
    else:
        mind2 = np.full(n, np.inf)
        assign = np.zeros(n, dtype=np.intp)
        n_centers = 0
        first = 0  # perm[0] is a seeded-random sample

    for t in range(n_instances):
        p = first if (t == 0 and first is not None) else int(np.argmax(mind2))
        picks[t] = p
        pick_dist[t] = np.sqrt(mind2[p]) if np.isfinite(mind2[p]) else np.inf
        if t == n_instances - 1:
            break
        c = Xp[p]
        c_sq = float(sq[p])
        centers[n_centers] = c
        centers_sq[n_centers] = float(centers[n_centers] @ centers[n_centers])
        if n_centers == 0:
            check = np.arange(n)
        else:
            c64 = centers[n_centers]
            dc = np.sqrt(
                np.maximum(
                    centers_sq[:n_centers]
                    - 2 * (centers[:n_centers] @ c64)
                    + centers_sq[n_centers],
                    0,
                )
            )
            # conservative slack for floating-point error in the expansion
            active = dc < 2 * radius[:n_centers] * (1 + 1e-6) + 1e-9
            check = np.flatnonzero(active[assign])
        d2 = sq[check] - 2 * (Xp[check] @ c) + c_sq
        np.maximum(d2, 0, out=d2)
        better = d2 < mind2[check]
        upd = check[better]
        mind2[upd] = d2[better]
        assign[upd] = n_centers
        mind2[p] = -1.0  # taken: never picked again
        assign[p] = n_centers
        # every sample of a visited centre is in `check`, so their radii (and the new
        # centre's) are recomputed exactly from it
        if n_centers:
            radius[:n_centers][active] = 0.0
        radius[n_centers] = 0.0
        np.maximum.at(radius, assign[check], np.sqrt(np.maximum(mind2[check], 0)))
        n_centers += 1
    return perm[picks].astype(np.intp), pick_dist
