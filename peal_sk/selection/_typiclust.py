"""TypiClust (Hacohen, Dekel and Weinshall, ICML 2022): the most typical sample of each
of the largest uncovered clusters.

Specified on the algorithm page (docs/user_guide/algorithms.rst, "TypiClust");
``tests/_lowbudget_reference.py`` transcribes the specification loop by loop and the
tests require this implementation to return the same samples in the same order.
Decisions the specification leaves open are documented on :class:`TypiClustSelector`.
"""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._blocks import FAISS_SEARCH_ROWS, block_rows, sq_distances
from ..utils._faiss import as_faiss_float32, faiss_kmeans
from ..utils._parallel import N_JOBS_CONSTRAINT, effective_n_jobs, piece_bounds, run_pieces
from ..utils._validation import check_features
from ._lowbudget_common import duplicate_groups, n_distinct_at_least, stack_features
from ._registry import register_selector

__all__ = ["TypiClustSelector", "typicality_scores", "typiclust_sampling"]

#: added to the mean neighbour distance (the paper's and the official code's constant)
EPS = 1e-5
#: k-means is trained on at most this many rows per cluster (a seeded subsample)
KMEANS_POINTS = 64
#: candidates re-scored exactly when a cluster's neighbours are found approximately
N_REFINE = 256
#: blocks of rows per parallel piece of :func:`typicality_scores`
_BLOCKS_PER_PIECE = 4


def _knn_mean_exact(X, k, groups, squared, rows=None, n_jobs=None):
    """Mean distance of ``X[rows]`` to their ``k`` nearest other rows of ``X`` (exact).

    Blocked Gram expansion in the dtype of ``X``; exactly equal rows (same ``groups``
    id) get distance 0; each row's own index is excluded, its duplicates are not. The
    ``k`` smallest values are sorted before averaging. With ``n_jobs``, pieces of whole
    blocks of rows run through joblib (``X`` is sent once per call).
    """
    n = X.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    sq = np.einsum("ij,ij->i", X, X)
    dup = np.bincount(groups, minlength=n)[groups] > 1  # rows with an exact copy
    step = block_rows(X.itemsize * 4 * n)
    shared = (X, sq, groups, dup, k, squared, step)
    if effective_n_jobs(n_jobs) == 1:
        return _knn_mean_rows(*shared, rows)
    bounds = piece_bounds(len(rows), step, multiple=_BLOCKS_PER_PIECE)
    parts = run_pieces(
        _knn_mean_rows, [(rows[a:b],) for a, b in bounds], n_jobs=n_jobs, shared=shared
    )
    return np.concatenate(parts)


def _knn_mean_rows(X, sq, groups, dup, k, squared, step, rows):
    """:func:`_knn_mean_exact` for ``rows``, ``step`` rows at a time."""
    out = np.empty(len(rows))
    has_dup = bool(dup.any())
    for s in range(0, len(rows), step):
        r = rows[s : s + step]
        D = sq_distances(X[r], X, sq[r], sq)
        if has_dup:
            dup_rows = np.flatnonzero(dup[r])
            sub = D[dup_rows]
            sub[groups[r[dup_rows]][:, None] == groups[None, :]] = 0.0
            D[dup_rows] = sub
        if not squared:
            np.sqrt(D, out=D)
        D[np.arange(len(r)), r] = np.inf
        part = np.partition(D, k - 1, axis=1)[:, :k]
        part.sort(axis=1)
        out[s : s + step] = part.astype(np.float64).mean(axis=1)
    return out


def _approx_draws(n, rng):
    """The random draws of :func:`_knn_mean_approx` for ``n`` rows: its training rows
    and faiss' seed, drawn in the parent before the work is dispatched."""
    nlist = max(1, int(np.sqrt(n)))
    train = np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))
    return train, int(rng.integers(np.iinfo(np.int32).max))


def _knn_mean_approx(X, k, groups, squared, draws):
    """Approximate mean k-NN distance (faiss IVF), for very large clusters.

    Missed neighbours only make the approximate mean larger, so the typicality found is
    a lower bound; the :data:`N_REFINE` most typical candidates are re-scored exactly by
    the caller. ``draws``: the training rows and seed (:func:`_approx_draws`).
    """
    import faiss

    X32, scale = as_faiss_float32(X)
    n, d = X32.shape
    nlist = max(1, int(np.sqrt(n)))
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist)
    train_rows, seed = draws
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1
    index.train(X32[train_rows])
    index.add(X32)
    index.nprobe = min(nlist, 8)
    out = np.empty(n)
    step = FAISS_SEARCH_ROWS
    for s in range(0, n, step):
        D, I = index.search(X32[s : s + step], k + 1)
        rows = np.arange(s, min(s + step, n))
        D = np.maximum(D.astype(np.float64), 0) / scale**2
        valid = I >= 0
        Ic = np.where(valid, I, 0)
        D[valid & (groups[Ic] == groups[rows][:, None])] = 0.0
        D[~valid] = np.inf
        self_hit = I == rows[:, None]
        # drop the row itself (or, if it was not found, the largest of the k + 1)
        D[self_hit] = np.inf
        D.sort(axis=1)
        D = D[:, :k]
        if not squared:
            D = np.sqrt(D)
        with np.errstate(invalid="ignore"):
            out[s : s + step] = D.mean(axis=1)
    return out


def _needs_approx(n, k, knn_exact_max):
    return k > 0 and knn_exact_max is not None and n > knn_exact_max


def _most_typical(squared, knn_exact_max, X, k, groups, draws=None):
    """Position (within ``X``) of the most typical row and its typicality (ties: first).

    ``draws``: the random draws of the approximate search (:func:`_approx_draws`), made
    by the caller when :func:`_needs_approx`; the result depends on nothing else, so
    clusters can be scored in any process.
    """
    n = X.shape[0]
    if k == 0:
        return 0, 0.0
    if not _needs_approx(n, k, knn_exact_max):
        typ = 1.0 / (_knn_mean_exact(X, k, groups, squared) + EPS)
        pos = int(np.argmax(typ))
        return pos, float(typ[pos])
    approx = 1.0 / (_knn_mean_approx(X, k, groups, squared, draws) + EPS)
    approx[~np.isfinite(approx)] = 0.0
    m = min(n, N_REFINE)
    cand = np.sort(np.argpartition(-approx, m - 1)[:m])
    typ = 1.0 / (_knn_mean_exact(X, k, groups, squared, rows=cand) + EPS)
    best = int(np.argmax(typ))
    return int(cand[best]), float(typ[best])


@validate_params(
    {
        "X": ["array-like"],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "squared": ["boolean"],
        "n_jobs": N_JOBS_CONSTRAINT,
    },
    prefer_skip_nested_validation=True,
)
def typicality_scores(X, *, n_neighbors=20, squared=False, n_jobs=None):
    """Typicality of every row of ``X`` among the rows of ``X``.

    ``typicality(x) = 1 / (mean distance from x to its k nearest other rows + 1e-5)``
    with ``k = min(n_neighbors, n // 2)`` (Hacohen et al., 2022). Exactly equal rows
    are neighbours at distance 0. A single row (``k = 0``) gets typicality 0.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Features, used as given (normalise them first for the paper's setting).
    n_neighbors : int, default=20
        Upper bound on ``k``.
    squared : bool, default=False
        Use squared Euclidean distances (the official code's ``faiss.IndexFlatL2``)
        instead of the paper's plain Euclidean distances.
    n_jobs : int, default=None
        Blocks of rows computed in parallel through joblib (``X`` is sent once per
        call); None means 1 unless in a :func:`joblib.parallel_config` context, -1
        means every worker. The result does not depend on it.

    Returns
    -------
    typicality : ndarray of shape (n_samples,), float64

    Examples
    --------
    >>> from peal_sk.selection import typicality_scores
    >>> typicality_scores([[0.0], [0.1], [0.2], [5.0]], n_neighbors=1).round(2).tolist()
    [10.0, 10.0, 10.0, 0.21]
    """
    X = check_features(X, name="X")
    n = X.shape[0]
    k = min(int(n_neighbors), n // 2)
    if k == 0:
        return np.zeros(n)
    groups = duplicate_groups(X)
    return 1.0 / (_knn_mean_exact(X, k, groups, bool(squared), n_jobs=n_jobs) + EPS)


def _cluster_order(sizes, n_labeled_in, min_cluster_size):
    """Visiting order: clusters above ``min_cluster_size`` first (fewest labelled members,
    then largest, then lowest id), then the small ones in the same order; empty
    clusters are dropped."""
    ids = np.flatnonzero(sizes > 0)
    small = sizes[ids] <= min_cluster_size
    order = np.lexsort((ids, -sizes[ids], n_labeled_in[ids], small))
    ids, small = ids[order], small[order]
    return ids[~small], ids[small]


class TypiClustSelector(BaseSelector):
    """TypiClust: the most typical sample of each of the largest clusters with the fewest
    labelled samples (Hacohen et al., ICML 2022).

    A cold-start strategy for very low budgets. The pool and the labelled samples are
    clustered together with k-means (faiss, seeded) into
    ``min(n_labeled + n_instances, max_clusters)`` clusters; clusters are visited with
    the fewest labelled members first, then the largest; in each visited cluster the
    most *typical* available sample is taken, typicality being the inverse of the
    mean distance to its ``k = min(n_neighbors, |P| // 2)`` nearest neighbours among
    the cluster's available samples ``P``.

    Decisions (the definition leaves them open or the official code gets them wrong):

    * Clusters with at most ``min_cluster_size`` members (labelled included) are
      visited only once every larger cluster is exhausted; when ``n_instances``
      exceeds the number of clusters the visits wrap round, skipping exhausted
      clusters (the official code crashes on them).
    * A sample whose features equal those of a labelled or already selected sample is
      taken only when its cluster has nothing else left: a second copy of an image is
      never worth a label while other samples exist. Exact duplicates still count as
      neighbours at distance 0 when typicality is computed.
    * Ties in typicality go to the lowest pool index; a cluster with one available
      sample gives it (score 0).
    * Clusters with more than ``knn_exact_max`` available samples find neighbours
      approximately (faiss IVF), then re-score the 256 most typical candidates exactly.
    * The number of clusters is clipped to the number of distinct (normalised) rows.

    Parameters
    ----------
    max_clusters : int, default=500
        Upper bound on the number of clusters.
    min_cluster_size : int, default=5
        Clusters with at most this many members are visited last.
    n_neighbors : int, default=20
        Upper bound on the number of neighbours of the typicality.
    metric : {"euclidean", "sqeuclidean"}, default="euclidean"
        Distance of the typicality: plain Euclidean as in the paper, or squared as in
        the official code (``faiss.IndexFlatL2``).
    normalize : bool, default=True
        L2-normalise the embeddings first (the paper's setting).
    kmeans_iter : int, default=10
        Iterations of faiss k-means (trained on at most 64 rows per cluster, a seeded
        subsample; every sample is then assigned to its nearest centre).
    knn_exact_max : int or None, default=20000
        Clusters with more available samples use approximate neighbours (None: never).
    random_state : int, Generator or None, default=None
        Seeds k-means (and the approximate neighbour index).
    n_jobs : int, default=None
        Clusters scored in parallel through joblib: the typicality of each visited
        cluster (its k-nearest-neighbour distances) depends on nothing outside the
        cluster, so each pass over the clusters is one parallel batch, and
        ``with joblib.parallel_config(backend="dask"):`` spreads it over a Dask cluster
        (each cluster's rows are sent once; random draws are made before dispatch).
        k-means runs in this process (faiss, multi-threaded). None means 1 unless in a
        :func:`joblib.parallel_config` context, -1 means every worker. The selection
        does not depend on it.

    Attributes
    ----------
    n_clusters_ : int
        Number of k-means clusters of the last query.
    labels_ : ndarray of shape (n_pool,)
        Cluster of every pool sample.
    labeled_labels_ : ndarray of shape (n_labeled,)
        Cluster of every labelled sample.
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The k-means centres (in the normalised space when ``normalize``).

    See Also
    --------
    typiclust_sampling : The modAL function form.
    typicality_scores : The typicality of every sample of a set.
    ProbCoverSelector : The other cold-start strategy of the same authors.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import TypiClustSelector
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 0.1, (40, 2)) + [1, 0], rng.normal(0, 0.1, (40, 2)) + [0, 1]])
    >>> idx = TypiClustSelector(random_state=0).select(X, 2)
    >>> sorted(int(i) // 40 for i in idx)  # one sample from each mode
    [0, 1]
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "max_clusters": [Interval(Integral, 1, None, closed="left")],
        "min_cluster_size": [Interval(Integral, 0, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "metric": [StrOptions({"euclidean", "sqeuclidean"})],
        "normalize": ["boolean"],
        "kmeans_iter": [Interval(Integral, 1, None, closed="left")],
        "knn_exact_max": [Interval(Integral, 2, None, closed="left"), None],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(
        self,
        *,
        max_clusters=500,
        min_cluster_size=5,
        n_neighbors=20,
        metric="euclidean",
        normalize=True,
        kmeans_iter=10,
        knn_exact_max=20_000,
        random_state=None,
        n_jobs=None,
    ):
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.normalize = normalize
        self.kmeans_iter = kmeans_iter
        self.knn_exact_max = knn_exact_max
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.uses_embeddings = True
        return tags

    def _query(self, ctx, n_instances, rng):
        F_pool, F_lab = ctx.pool_embeddings(), ctx.labeled_embeddings()
        n_pool = F_pool.shape[0]
        n_lab = 0 if F_lab is None else F_lab.shape[0]
        F = stack_features(F_pool, F_lab, normalize=self.normalize)
        k = n_distinct_at_least(F, min(n_lab + n_instances, self.max_clusters))
        seed = int(rng.integers(np.iinfo(np.int32).max))
        km = faiss_kmeans(
            F, k, seed, n_iter=self.kmeans_iter, max_points_per_centroid=KMEANS_POINTS
        )
        centres, labels = km.centres, km.labels
        self.n_clusters_ = int(k)
        self.cluster_centers_ = centres
        self.labels_, self.labeled_labels_ = labels[:n_pool], labels[n_pool:]
        return _typiclust_from_clusters(
            F,
            n_pool,
            labels,
            k,
            n_instances,
            n_neighbors=self.n_neighbors,
            min_cluster_size=self.min_cluster_size,
            squared=self.metric == "sqeuclidean",
            knn_exact_max=self.knn_exact_max,
            rng=rng,
            n_jobs=self.n_jobs,
        )


def _typiclust_from_clusters(
    F, n_pool, labels, n_clusters, n_instances, *, n_neighbors, min_cluster_size, squared,
    knn_exact_max, rng, n_jobs=None,
):  # fmt: skip
    """Steps 3-5 of the specification, given the clusters of ``F = [pool; labelled]``.

    The clusters are visited in passes (every alive cluster once per pass, in the
    visiting order). Within a pass a cluster's candidates depend only on its own earlier
    picks, so the visits of one pass are scored independently (in parallel with
    ``n_jobs``) and their picks applied in order afterwards: the same picks as visiting
    them one after the other.
    """
    sizes = np.bincount(labels, minlength=n_clusters)
    n_lab_in = np.bincount(labels[n_pool:], minlength=n_clusters)
    big, small = _cluster_order(sizes, n_lab_in, min_cluster_size)
    by_cluster = np.argsort(labels, kind="stable")  # members by cluster, in index order
    starts = np.concatenate([[0], np.cumsum(sizes)])
    state = {}  # cluster -> (pool members, their groups, available, taken groups)

    def cluster_state(c):
        if c not in state:
            members = by_cluster[starts[c] : starts[c + 1]]
            groups = duplicate_groups(F[members])
            is_pool = members < n_pool
            taken = np.zeros(groups.max() + 1, dtype=bool)
            taken[groups[~is_pool]] = True
            state[c] = [members[is_pool], groups[is_pool], np.ones(is_pool.sum(), bool), taken]
        return state[c]

    picks = np.empty(n_instances, dtype=np.intp)
    scores = np.empty(n_instances)
    t = 0
    for tier in (big, small):
        alive = [int(c) for c in tier]
        while t < n_instances and alive:
            visits = []  # (cluster, candidates, k, random draws) of this pass
            for c in alive:
                if t + len(visits) == n_instances:
                    break
                members, groups, avail, taken = cluster_state(c)
                if not avail.any():
                    continue
                cand = np.flatnonzero(avail & ~taken[groups])
                if cand.size == 0:  # only copies of taken samples are left
                    cand = np.flatnonzero(avail)
                k = min(n_neighbors, cand.size // 2)
                # drawn here, in visiting order, before anything is dispatched
                draws = None
                if _needs_approx(cand.size, k, knn_exact_max):
                    draws = _approx_draws(cand.size, rng)
                visits.append((c, cand, k, draws))

            def pieces(visits=visits):  # sliced lazily: each cluster's rows sent once
                for c, cand, k, draws in visits:
                    members, groups = state[c][0], state[c][1]
                    yield F[members[cand]], k, groups[cand], draws

            results = run_pieces(
                _most_typical,
                pieces(),
                n_jobs=n_jobs,
                shared=(squared, knn_exact_max),
                n_pieces=len(visits),
            )
            still = []
            for (c, cand, _, _), (pos, typ) in zip(visits, results, strict=True):
                members, groups, avail, taken = state[c]
                j = cand[pos]
                picks[t], scores[t] = members[j], typ
                t += 1
                avail[j] = False
                taken[groups[j]] = True
                if avail.any():
                    still.append(c)
            alive = still
    if t != n_instances:  # cannot happen: every pool sample is in some cluster
        raise RuntimeError(f"TypiClust picked {t} of {n_instances} samples.")
    return picks, scores


@validate_params(function_form_constraints(TypiClustSelector), prefer_skip_nested_validation=False)
def typiclust_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    X_labeled=None,
    y_labeled=None,
    max_clusters=500,
    min_cluster_size=5,
    n_neighbors=20,
    metric="euclidean",
    normalize=True,
    kmeans_iter=10,
    knn_exact_max=20_000,
    random_state=None,
    n_jobs=None,
):
    """modAL query strategy: TypiClust (see :class:`TypiClustSelector`).

    Parameters
    ----------
    classifier : learner, estimator or None
        Used only for embeddings (and a learner's training set as labelled samples).
    X_pool : array-like of shape (n_pool, n_features)
    n_instances : int, default=1
    X_labeled, y_labeled : array-like, default=None
        Labelled samples (default: the learner's ``X_training`` / ``y_training``).
    max_clusters, min_cluster_size, n_neighbors, metric, normalize, kmeans_iter, \
knn_exact_max, random_state, n_jobs
        See :class:`TypiClustSelector`.

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
        In the order the clusters were visited.
    scores : ndarray of shape (n_instances,)
        Typicality of each pick in its cluster when picked.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import typiclust_sampling
    >>> X = np.random.default_rng(0).normal(size=(100, 3))
    >>> typiclust_sampling(None, X, 4, random_state=0)[0].shape
    (4,)
    """
    selector = TypiClustSelector(
        max_clusters=max_clusters,
        min_cluster_size=min_cluster_size,
        n_neighbors=n_neighbors,
        metric=metric,
        normalize=normalize,
        kmeans_iter=kmeans_iter,
        knn_exact_max=knn_exact_max,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    return selector(classifier, X_pool, n_instances, X_labeled=X_labeled, y_labeled=y_labeled)


register_selector("typiclust", TypiClustSelector, typiclust_sampling)
