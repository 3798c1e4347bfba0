"""K-Means selection: the representativeness baseline of the BiLAF paper."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.cluster import KMeans
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._blocks import block_rows
from ..utils._faiss import as_faiss_float32, faiss_kmeans
from ..utils._neighbors import nearest_distances, nearest_untaken
from ._lowbudget_common import distinct_rows
from ._registry import register_selector

__all__ = ["KMeansSelector", "kmeans_sampling"]


#: Most Lloyd iterations of the faiss backend with ``max_iter="auto"`` (per stage).
FAISS_ITER = 20
#: With ``max_iter="auto"`` the faiss backend stops once an iteration lowers the k-means
#: objective by less than this fraction (each stage of ``init="subspace"`` alike). On the
#: CIFAR-10 features of benchmarks/bench_selectors.py (50,000 x 1,280, 1,000 clusters),
#: from random rows: 12 iterations, ``inertia_`` 0.80 % above scikit-learn's converged
#: k-means++ run (20 iterations: 0.66 %, for 1.7x the time; 10 iterations: about 0.9 %).
FAISS_TOL = 5e-4
#: Principal axes of the first stage of ``init="subspace"``.
SUBSPACE_COMPONENTS = 128
#: Rows (drawn at random) whose covariance gives those axes.
SUBSPACE_SAMPLE = 4096
#: Up to this many features the axes are the covariance's exact eigenvectors (O(d^3):
#: about 0.5 s at 1,280); wider features use a randomized SVD of the sample (O(n d k)).
SUBSPACE_EXACT_MAX = 2048


def _faiss_lloyd(X32, centres, *, seed, max_iter):
    """Lloyd iterations of faiss from ``centres``: ``max_iter`` of them, or with
    ``"auto"`` until one lowers the objective by less than ``FAISS_TOL`` (at most
    ``FAISS_ITER``). ``X32`` comes from :func:`~peal_sk.utils._faiss.as_faiss_float32`.
    Returns the centres (float32), the objective of the last assignment and the
    iterations run."""
    n_iter = FAISS_ITER if max_iter == "auto" else int(max_iter)
    # one Lloyd iteration per call when testing convergence (the same arithmetic as one
    # call of n iterations: tested), else all in one call
    chunk = 1 if max_iter == "auto" else n_iter
    n_clusters = centres.shape[0]
    objective, done = None, 0
    while done < n_iter:
        km = faiss_kmeans(
            X32,
            n_clusters,
            seed,
            n_iter=chunk,
            # cluster every sample (no subsampling)
            max_points_per_centroid=max(256, -(-X32.shape[0] // n_clusters)),
            init_centroids=centres,
            assign=False,
            prepared=True,
        )
        centres, done = km.centres, done + chunk
        previous, objective = objective, km.objective
        if max_iter == "auto" and previous is not None:
            if previous - objective < FAISS_TOL * objective:
                break
    return centres, objective, done


def _principal_axes(X32, seed):
    """Mean and top ``SUBSPACE_COMPONENTS`` principal axes of a random sample of rows.

    The sample's covariance in float64 and its eigenvectors (``numpy.linalg.eigh``), about
    1 s on 1,280-d features whatever the pool's size; above ``SUBSPACE_EXACT_MAX``
    features, where the eigendecomposition's d^3 would dominate, scikit-learn's
    randomized SVD of the centred sample (seeded). Deterministic for a seed either way.
    """
    n, d = X32.shape
    rng = np.random.default_rng([seed, 1])
    rows = rng.choice(n, size=min(n, SUBSPACE_SAMPLE), replace=False)
    S = X32[np.sort(rows)].astype(np.float64)
    mu = S.mean(axis=0)
    S -= mu
    k = min(SUBSPACE_COMPONENTS, d)
    if d <= SUBSPACE_EXACT_MAX:
        _, V = np.linalg.eigh(S.T @ S)  # ascending eigenvalues
        return mu, np.ascontiguousarray(V[:, ::-1][:, :k])
    from sklearn.utils.extmath import randomized_svd

    _, _, Vt = randomized_svd(S, k, random_state=int(rng.integers(2**31 - 1)))
    return mu, np.ascontiguousarray(Vt.T)


def _cluster_means(X32, labels, fallback):
    """Float64 mean of the rows of each label (a label without rows keeps ``fallback``)."""
    n, d = X32.shape
    K = fallback.shape[0]
    sums = np.zeros((K, d))
    step = block_rows(8 * d, n)
    for s in range(0, n, step):
        lab = labels[s : s + step]
        P = csr_matrix((np.ones(lab.size), (lab, np.arange(lab.size))), shape=(K, lab.size))
        sums += P @ X32[s : s + step].astype(np.float64)
    counts = np.bincount(labels, minlength=K)
    means = np.array(fallback, dtype=np.float64)
    filled = counts > 0
    means[filled] = sums[filled] / counts[filled, None]
    return means


def _subspace_start(X32, init, axes, *, seed, max_iter):
    """Full-space starting centres for the rows ``init``: k-means of the pool projected on
    the principal ``axes`` (from those rows' projections), and the full-space mean of
    each of its clusters. Returns the centres (float32) and the subspace iterations."""
    mu, V = axes
    # projection without a centred copy of the pool: (x - mu) V = x V - mu V
    Y = X32 @ V.astype(np.float32)
    Y -= (mu @ V).astype(np.float32)
    centres, _, done = _faiss_lloyd(Y, Y[init], seed=seed, max_iter=max_iter)
    labels = nearest_distances(Y, centres, backend="faiss")[1]
    del Y
    return _cluster_means(X32, labels, X32[init]).astype(np.float32), done


def _kmeans_centres(F, n_clusters, seed, *, backend, n_init, max_iter, init="random"):
    """Cluster centres of ``F`` by faiss or scikit-learn.

    Returns the centres (float64), the k-means objective, the full-space Lloyd iterations
    run and the subspace iterations run before them (``init="subspace"``; else 0).
    faiss runs on :func:`~peal_sk.utils._faiss.as_faiss_float32`'s copy (features of
    extreme magnitude scaled by a power of two); centres and objective are returned in
    the units of ``F``.
    """
    if backend == "sklearn":
        km = KMeans(
            n_clusters=n_clusters,
            n_init=n_init,
            max_iter=300 if max_iter == "auto" else max_iter,
            random_state=seed,
        ).fit(F)
        return km.cluster_centers_, float(km.inertia_), int(km.n_iter_), 0
    X32, scale = as_faiss_float32(F)
    # initial centres: distinct rows drawn at random (faiss's own draw can take the same
    # point twice when rows are duplicated, leaving a cluster empty)
    rs = np.random.default_rng(seed)
    distinct = distinct_rows(X32)
    axes = _principal_axes(X32, seed) if init == "subspace" else None
    best = None
    # restarts from different random centres (faiss's own ``nredo`` would restart every
    # run from the same given centres)
    for _ in range(1 if n_init == "auto" else int(n_init)):
        if distinct.size >= n_clusters:
            rows = np.sort(rs.choice(distinct, size=n_clusters, replace=False))
        else:
            others = np.setdiff1d(np.arange(X32.shape[0]), distinct)
            extra = rs.choice(others, size=n_clusters - distinct.size, replace=False)
            rows = np.concatenate([np.sort(distinct), np.sort(extra)])
        start, sub_iter = X32[rows], 0
        if axes is not None:
            start, sub_iter = _subspace_start(X32, rows, axes, seed=seed, max_iter=max_iter)
        centres, objective, done = _faiss_lloyd(X32, start, seed=seed, max_iter=max_iter)
        if best is None or objective < best[1]:
            best = (centres.astype(np.float64), objective, done, sub_iter)
    centres, objective, done, sub_iter = best
    return centres / scale, objective / scale**2, done, sub_iter


class KMeansSelector(BaseSelector):
    """K-Means baseline: k-means with ``n_instances`` clusters, then the sample nearest
    each centre.

    The "K-Means" baseline of the BiLAF paper and a core selector option of
    :class:`BiLAFSelector`. Centres are visited in the clustering's order; each takes its
    nearest sample not taken by an earlier centre (ties: lowest index), so the result
    always has ``n_instances`` distinct samples, even with duplicated rows.

    Parameters
    ----------
    backend : {"faiss", "sklearn"}, default="faiss"
        ``"faiss"``: faiss's k-means (float32 Lloyd iterations from the start chosen by
        ``init``); on a 50,000 x 1,280 pool at 1,000 clusters about 19x faster than
        scikit-learn with the default start (9-10x from random rows), with an inertia
        within 1 % of it (benchmarks/README.md). ``"sklearn"``:
        :class:`sklearn.cluster.KMeans` (k-means++, run to convergence), the behaviour of
        peal_sk 0.1; the two give different selections for the same seed.
    n_init : "auto" or int, default="auto"
        Restarts: ``"auto"`` is scikit-learn's rule for ``"sklearn"`` and one run for
        ``"faiss"``; with several, each starts from its own random centres and the run
        with the lowest objective is kept.
    max_iter : "auto" or int, default="auto"
        Lloyd iterations: ``"auto"`` is up to 300 with scikit-learn's convergence test for
        ``"sklearn"``, and for ``"faiss"`` up to 20, stopping once an iteration lowers the
        k-means objective by less than 0.05 % (``FAISS_TOL``). An int runs exactly that
        many with faiss. With ``init="subspace"`` this holds for each of the two stages.
    init : {"auto", "random", "subspace"}, default="auto"
        Start of the faiss backend. ``"random"``: distinct rows drawn at random (peal_sk
        0.1's faiss k-means). ``"subspace"``: the same rows, but first clustered in the
        pool's top ``SUBSPACE_COMPONENTS`` (128) principal axes, computed from 4,096
        random rows; the full-space means of those clusters then start the full-space
        Lloyd iterations. The subspace iterations cost ``128 / n_features`` of a
        full-space one and do most of the moving, so far fewer full-space iterations
        follow: on CIFAR-10 features (50,000 x 1,280, 1,000 clusters) 13-14 subspace and
        3 full-space iterations, 1.9x faster than 12-13 from random rows, and an
        objective 0.9 % lower (as low as scikit-learn's k-means++ run to convergence).
        ``"auto"``: ``"subspace"`` when the features have more than twice 128
        dimensions, else ``"random"``. The ``"sklearn"`` backend always starts from
        k-means++ and takes only ``"auto"``.
    normalize : bool, default=False
        Cluster the L2-normalised rows (zero rows stay zero) and pick the normalised sample
        nearest each centre: the "centroid" cold start of the DropQuery paper (Gupte et
        al., TMLR 2024), registered as ``"centroid"``.
    random_state : int, Generator or None, default=None
        Seeds the clustering (an int drawn from this generator).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_instances, n_features)
        Centres of the last selection.
    inertia_ : float
        Sum of squared distances of the samples to their nearest centre (as the backend
        reports it).
    n_iter_ : int
        Full-space Lloyd iterations of the kept run.
    n_iter_subspace_ : int
        Lloyd iterations in the principal subspace before them (0 unless the start was
        ``"subspace"``).

    See Also
    --------
    kmeans_sampling : The modAL function form.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import KMeansSelector
    >>> X = np.array([[0.0], [0.2], [0.3], [5.0], [5.1], [5.3]])
    >>> sorted(KMeansSelector(random_state=0).select(X, 2).tolist())
    [1, 4]
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "backend": [StrOptions({"faiss", "sklearn"})],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"auto", "random", "subspace"})],
        "normalize": ["boolean"],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.uses_embeddings = True
        return tags

    def __init__(
        self,
        *,
        backend="faiss",
        n_init="auto",
        max_iter="auto",
        init="auto",
        normalize=False,
        random_state=None,
    ):
        self.backend = backend
        self.n_init = n_init
        self.max_iter = max_iter
        self.init = init
        self.normalize = normalize
        self.random_state = random_state

    def _query(self, ctx, n_instances, rng):
        if self.backend == "sklearn" and self.init != "auto":
            raise ValueError(
                f"init={self.init!r} needs backend='faiss'; the 'sklearn' backend starts "
                "from k-means++ (init='auto')."
            )
        F = ctx.pool_embeddings()
        init = self.init
        if init == "auto":
            init = "subspace" if F.shape[1] > 2 * SUBSPACE_COMPONENTS else "random"
        if self.normalize:
            norms = np.linalg.norm(F, axis=1, keepdims=True)
            F = F / np.where(norms > 0, norms, 1).astype(F.dtype)
        # drawn from rng (not random_state itself) so that selector(..., random_state=s)
        # and KMeansSelector(random_state=s) agree, as for every selector
        seed = int(rng.integers(np.iinfo(np.int32).max))
        centres, self.inertia_, self.n_iter_, self.n_iter_subspace_ = _kmeans_centres(
            F,
            n_instances,
            seed,
            backend=self.backend,
            n_init=self.n_init,
            max_iter=self.max_iter,
            init=init,
        )
        self.cluster_centers_ = centres
        picks, dists = nearest_untaken(F, centres)
        return picks, dists


@validate_params(function_form_constraints(KMeansSelector), prefer_skip_nested_validation=False)
def kmeans_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    backend="faiss",
    n_init="auto",
    max_iter="auto",
    init="auto",
    normalize=False,
    random_state=None,
):
    """modAL query strategy: K-Means centres' nearest samples (see :class:`KMeansSelector`).

    Parameters
    ----------
    classifier : learner, estimator or None
        Used only for embeddings.
    X_pool : array-like of shape (n_pool, n_features)
    n_instances : int, default=1
    backend, n_init, max_iter, init, normalize, random_state
        See :class:`KMeansSelector`.

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
        One sample per centre, in centre order.
    scores : ndarray of shape (n_instances,)
        Distance of each sample to its centre (lower: more representative).

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import kmeans_sampling
    >>> X = np.random.default_rng(0).normal(size=(50, 3))
    >>> kmeans_sampling(None, X, 4, random_state=0)[0].shape
    (4,)
    """
    selector = KMeansSelector(
        backend=backend,
        n_init=n_init,
        max_iter=max_iter,
        init=init,
        normalize=normalize,
        random_state=random_state,
    )
    return selector(classifier, X_pool, n_instances)


register_selector("kmeans", KMeansSelector, kmeans_sampling)
register_selector("centroid", KMeansSelector, kmeans_sampling, defaults={"normalize": True})
