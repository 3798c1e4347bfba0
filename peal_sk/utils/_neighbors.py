"""Exact Euclidean distance kernels (faiss or numpy) and greedy k-centre.

Distances are Euclidean, not squared: faiss ``IndexFlatL2`` returns squared distances, so
every path takes the square root before the result leaves this module. All kernels work in
blocks sized by :func:`peal_sk.utils._blocks.block_rows` (scikit-learn's
``working_memory``, at most 64 MiB), so no ``n_queries x n_refs`` matrix larger than one
block is held at once.
"""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._blocks import FAISS_BLAS_MIN, FAISS_QUERY_BLOCK, block_rows, sq_distances, sq_norms
from ._faiss import float32_scale
from ._parallel import N_JOBS_CONSTRAINT, effective_n_jobs, piece_bounds, run_pieces
from ._validation import check_features, check_n_instances, check_rng

__all__ = ["kcenter_greedy", "nearest_distances", "nearest_untaken", "pairwise_sq_distances"]

_BACKENDS = ("auto", "faiss", "numpy")
#: k-centre: when more than this fraction of the pool must be re-checked after a pick,
#: one matrix-vector product over the whole pool is cheaper than gathering the rows.
_DENSE_FRACTION = 0.125

_sq_norms = sq_norms


def pairwise_sq_distances(A, B, a_sq=None, b_sq=None):
    """Squared Euclidean distances ``(len(A), len(B))`` through the norm expansion, >= 0."""
    return sq_distances(A, B, a_sq, b_sq)


def _resolve_backend(backend, dtype):
    if backend == "auto":
        # faiss works in float32; float64 input keeps numpy's float64 precision.
        return "faiss" if dtype == np.float32 else "numpy"
    return backend


#: blocks of distance rows per parallel piece of the numpy kernel
_BLOCKS_PER_PIECE = 8


#: module attribute (tests shrink it to get several parallel pieces)
_FAISS_QUERY_BLOCK = FAISS_QUERY_BLOCK


def _faiss_scale(Q, R):
    """The power of two applied to queries and references alike before a faiss search,
    so that float32 distances cannot overflow (:func:`~peal_sk.utils._faiss.float32_scale`)."""
    both = np.array([Q.min(), Q.max(), R.min(), R.max()], dtype=np.float64)
    return float32_scale(both.min(), both.max(), R.shape[1])


def _nearest_faiss(Q, R, scale):
    """faiss exact search of ``Q * scale`` among ``R * scale`` (float32)."""
    import faiss

    Rf, Qf = (np.ascontiguousarray(A * A.dtype.type(scale), dtype=np.float32) for A in (R, Q))
    index = faiss.IndexFlatL2(Rf.shape[1])
    index.add(Rf)
    D, I = index.search(Qf, 1)
    dist = np.sqrt(np.maximum(D[:, 0].astype(np.float64), 0.0)) / scale
    return dist, I[:, 0].astype(np.intp)


def _nearest_numpy(Q, R, r_sq, step):
    """Nearest row of ``R`` for every row of ``Q``, ``step`` query rows at a time."""
    n = Q.shape[0]
    dist = np.empty(n, dtype=np.float64)
    index = np.empty(n, dtype=np.intp)
    for start in range(0, n, step):
        block = Q[start : start + step]
        D = pairwise_sq_distances(block, R, b_sq=r_sq)
        j = np.argmin(D, axis=1)
        index[start : start + step] = j
        dist[start : start + step] = np.sqrt(D[np.arange(len(j)), j])
    return dist, index


@validate_params(
    {
        "Q": [np.ndarray],
        "R": [np.ndarray],
        "backend": [StrOptions(set(_BACKENDS))],
        "n_jobs": N_JOBS_CONSTRAINT,
    },
    prefer_skip_nested_validation=True,
)
def nearest_distances(Q, R, *, backend="auto", n_jobs=None):
    """Distance from each row of ``Q`` to its nearest row of ``R``, and that row's index.

    Parameters
    ----------
    Q : ndarray of shape (n_queries, n_features)
    R : ndarray of shape (n_refs, n_features)
    backend : {"auto", "faiss", "numpy"}, default="auto"
        ``"auto"`` uses faiss (``IndexFlatL2``, exact, float32) for float32 input and
        blocked numpy for float64 input.
    n_jobs : int, default=None
        Blocks of query rows searched in parallel through joblib (``R`` is sent once per
        call); None means 1 unless in a :func:`joblib.parallel_config` context, -1 means
        every worker. The result does not depend on it.

    Returns
    -------
    dist : ndarray of shape (n_queries,), float64
        Euclidean (not squared) distances.
    index : ndarray of shape (n_queries,), np.intp
        Index into ``R`` of the nearest row (lowest index on exact ties with numpy).
    """
    backend = _resolve_backend(backend, Q.dtype)
    n = Q.shape[0]
    if backend == "faiss":
        # pieces are whole multiples of faiss's query block: every query meets the same
        # arithmetic as in one search
        scale = _faiss_scale(Q, R)
        size = _FAISS_QUERY_BLOCK * 16
        bounds = piece_bounds(n, size)
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < FAISS_BLAS_MIN:
            bounds[-2:] = [(bounds[-2][0], n)]  # no piece below faiss' BLAS threshold
        if len(bounds) <= 1 or effective_n_jobs(n_jobs) == 1:
            return _nearest_faiss(Q, R, scale)
        parts = run_pieces(
            _nearest_faiss_piece,
            [(Q[a:b],) for a, b in bounds],
            n_jobs=n_jobs,
            shared=(R, scale),
        )
    else:
        r_sq = _sq_norms(R)
        step = block_rows(8 * max(1, R.shape[0]), n)
        bounds = piece_bounds(n, step, multiple=_BLOCKS_PER_PIECE)
        if len(bounds) <= 1 or effective_n_jobs(n_jobs) == 1:
            return _nearest_numpy(Q, R, r_sq, step)
        # pieces are whole multiples of ``step``: the blocks are the serial ones
        parts = run_pieces(
            _nearest_numpy_piece,
            [(Q[a:b],) for a, b in bounds],
            n_jobs=n_jobs,
            shared=(R, r_sq, step),
        )
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _nearest_numpy_piece(R, r_sq, step, Q):
    return _nearest_numpy(Q, R, r_sq, step)


def _nearest_faiss_piece(R, scale, Q):
    return _nearest_faiss(Q, R, scale)


def nearest_untaken(F, centres):
    """For each centre in order, the nearest row of ``F`` not taken by an earlier centre.

    The one nearest-untaken pick of peal_sk (k-means's and the "centroid" cold start's
    sample per centre, DropQuery's candidate per centre). **Tie rule**: the winner is
    decided on exact float64 distances computed by direct differences (as scipy's cdist
    computes them), over every sample that could be nearest, and exact ties
    (duplicates) go to the lowest index. Distances that differ only in their last bits
    are not ties: a two-member cluster's float32 centre is nearer to one of them, and
    that one is taken.

    Candidates come from a float32 screen (one float32 matrix product per block of
    centres; a float64 pool is centred on its mean as it is rounded to float32, a float32
    pool is used as it is, both scaled by a power of two when their magnitude would
    overflow float32, :func:`~peal_sk.utils._faiss.float32_scale`) with a bound on its
    rounding: ``|d2_32 - d2| <= err_i = (2 d + 8) eps (||x_i|| + ||c||)^2`` covers the
    rounding of the centring, of the product and of the norms, so a sample with
    ``d2_32 - err`` above the best untaken ``d2_32 + err`` cannot be nearest. Same picks
    as a float64 screen, at the float32 rate and with no float64 copy of the features.

    Parameters
    ----------
    F : ndarray of shape (n_samples, n_features)
        Finite features, ``n_samples >= len(centres)``.
    centres : ndarray of shape (n_centres, n_features)

    Returns
    -------
    picks : ndarray of shape (n_centres,), np.intp
    dist : ndarray of shape (n_centres,), float64
        Euclidean distance of each pick to its centre.
    """
    F = np.asarray(F)
    centres = np.asarray(centres, dtype=np.float64)
    scale = float32_scale(F.min(), F.max(), F.shape[1])
    if F.dtype == np.float32:
        # the screen runs on the pool as it is: a centred copy would tighten the bound
        # (the norms of centred rows are smaller) but costs a fresh array of the pool's
        # size, about 1 s of page faults on 50,000 x 1,280, for a few more exact checks
        mu = np.zeros(F.shape[1])
        Fc = F if scale == 1.0 else F * np.float32(scale)
    else:
        mu = F.mean(axis=0, dtype=np.float64)
        # centred in float64 and rounded once to float32 (numpy buffers the float64
        # difference chunk by chunk): rounding the raw values first would add an error
        # proportional to the features' offset, not to their spread
        Fc = np.empty(F.shape, dtype=np.float32)
        if scale == 1.0:
            np.subtract(F, mu, out=Fc)
        else:
            np.multiply(F - mu, scale, out=Fc, casting="same_kind")
    Cc = ((centres - mu) * scale).astype(np.float32)
    n, d = Fc.shape
    f_sq = np.einsum("ij,ij->i", Fc, Fc, dtype=np.float64)
    c_sq = np.einsum("ij,ij->i", Cc, Cc, dtype=np.float64)
    f_norm, c_norm = np.sqrt(f_sq), np.sqrt(c_sq)
    unit = (2 * d + 8) * float(np.finfo(np.float32).eps)
    taken = np.zeros(n, dtype=bool)
    picks = np.empty(len(Cc), dtype=np.intp)
    dists = np.empty(len(Cc))
    step = block_rows(4 * n, len(Cc))
    for s in range(0, len(Cc), step):
        G = Cc[s : s + step] @ Fc.T  # float32
        for row, j in enumerate(range(s, s + G.shape[0])):
            d2 = f_sq - 2.0 * G[row] + c_sq[j]
            err = unit * (f_norm + c_norm[j]) ** 2
            d2[taken] = np.inf
            b = int(np.argmin(d2))
            near = np.flatnonzero(d2 - err <= d2[b] + err[b])
            diff = F[near].astype(np.float64) - centres[j]
            exact = np.einsum("ij,ij->i", diff, diff)
            k = near[np.lexsort((near, exact))[0]]
            picks[j], dists[j] = k, np.sqrt(exact.min())
            taken[k] = True
    return picks, dists


@validate_params(
    {
        "X": ["array-like"],
        "n_instances": [Interval(Integral, 1, None, closed="left")],
        "rng": ["random_state", np.random.Generator],
        "X_labeled": ["array-like", None],
        "backend": [StrOptions(set(_BACKENDS))],
        "n_jobs": N_JOBS_CONSTRAINT,
    },
    prefer_skip_nested_validation=True,
)
def kcenter_greedy(X, n_instances, rng, *, X_labeled=None, backend="auto", n_jobs=None):
    """Greedy k-centre (Sener & Savarese core-set; the FDS baseline of BiLAF).

    Repeatedly picks the sample farthest from the labelled samples and everything picked so
    far. With no labelled samples the first pick is a seeded-random sample. Ties in the
    farthest distance are broken by a seeded permutation.

    The min-distance update after each pick only visits samples whose nearest centre ``a``
    satisfies ``d(a, new) < 2 * r_a`` (``r_a``: the largest distance of a sample to ``a``);
    by the triangle inequality no other sample can get closer to the new centre. The result
    is the same as the plain greedy algorithm; the work per pick shrinks as the radii do.
    When most of the pool must be visited anyway (high-dimensional features, where the
    bound prunes little), one matrix-vector product over the whole pool replaces the
    gather of the visited rows; the update is applied to the same rows, so the picks do
    not change.

    The greedy loop runs in this process: each pick depends on the previous one, and
    the per-pick update (one matrix-vector product over the pool) is too short to pay
    for a round trip to joblib workers (``benchmarks/bench_scale.py`` measures it).
    ``n_jobs`` parallelises only the initial distances to ``X_labeled``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Pool features (finite).
    n_instances : int
        Number of picks, ``<= n_samples``.
    rng : int, numpy.random.Generator, RandomState or None
        Seeds the random first pick and the tie-breaking permutation.
    X_labeled : array-like of shape (n_labeled, n_features), default=None
    backend : {"auto", "faiss", "numpy"}, default="auto"
        Backend for the initial distances to ``X_labeled``.
    n_jobs : int, default=None
        Parallel blocks of the initial distances to ``X_labeled`` (see
        :func:`nearest_distances`); the picks do not depend on it.

    Returns
    -------
    idx : ndarray of shape (n_instances,), np.intp
        Picks in the order they were made.
    dist : ndarray of shape (n_instances,), float64
        Distance of each pick to its nearest centre when it was picked (``inf`` for the
        random first pick when there are no labelled samples).

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.utils import kcenter_greedy
    >>> X = np.array([[0.0], [1.0], [10.0]])
    >>> idx, dist = kcenter_greedy(X, 2, 0, X_labeled=[[0.0]])
    >>> idx.tolist(), dist.tolist()
    ([2, 1], [10.0, 1.0])
    """
    X = check_features(X, name="X")
    n_instances = check_n_instances(n_instances, X.shape[0])
    if X_labeled is not None:
        X_labeled = check_features(X_labeled, name="X_labeled", n_features=X.shape[1])
    return _kcenter_greedy(
        X, n_instances, check_rng(rng), X_labeled=X_labeled, backend=backend, n_jobs=n_jobs
    )


def _kcenter_greedy(X, n_instances, rng, *, X_labeled=None, backend="auto", n_jobs=None):
    """Kernel of :func:`kcenter_greedy` on validated arrays and a Generator."""
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
        dist, assign = nearest_distances(Xp, X_labeled, backend=backend, n_jobs=n_jobs)
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
        if check.size == n:  # every row: no index arrays at all
            d2 = sq - 2 * (Xp @ c) + c_sq
            np.maximum(d2, 0, out=d2)
            better = d2 < mind2
            mind2[better] = d2[better]
            assign[better] = n_centers
        else:
            if check.size > _DENSE_FRACTION * n:  # one GEMV beats gathering the rows
                d2 = sq[check] - 2 * (Xp @ c)[check] + c_sq
            else:
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
        r_check = np.sqrt(np.maximum(mind2 if check.size == n else mind2[check], 0))
        a_check = assign if check.size == n else assign[check]
        np.maximum.at(radius, a_check, r_check)
        n_centers += 1
    return perm[picks].astype(np.intp), pick_dist
