"""K-Means selection: the representativeness baseline of the BiLAF paper."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import numpy as np
from sklearn.cluster import KMeans
from sklearn.utils._param_validation import Interval, StrOptions

from ..base import BaseSelector
from ..utils._blocks import block_rows
from ._registry import register_selector

__all__ = ["KMeansSelector", "kmeans_sampling"]


def _nearest_untaken(F, centres):
    """For each centre in order, the nearest sample not taken yet (ties: lowest index).

    Distances are screened with a float64 Gram expansion and the near-ties re-checked by
    direct differences, so exactly tied samples (duplicates) resolve by index.
    """
    F64 = np.asarray(F, dtype=np.float64)
    mu = F64.mean(axis=0)
    Fc = F64 - mu
    Cc = np.asarray(centres, dtype=np.float64) - mu
    f_sq = np.einsum("ij,ij->i", Fc, Fc)
    taken = np.zeros(len(F), dtype=bool)
    picks = np.empty(len(Cc), dtype=np.intp)
    dists = np.empty(len(Cc))
    step = block_rows(8 * len(F), len(Cc))
    for s in range(0, len(Cc), step):
        C = Cc[s : s + step]
        D2 = f_sq[None, :] - 2 * (C @ Fc.T) + np.einsum("ij,ij->i", C, C)[:, None]
        for row, j in enumerate(range(s, s + len(C))):
            d2 = np.where(taken, np.inf, D2[row])
            best = d2.min()
            tol = 1e-9 * (f_sq.max() + float(C[row] @ C[row])) + 1e-12
            near = np.flatnonzero(d2 <= best + tol)
            # exact step on the raw values (as scipy's cdist computes them)
            diff = F64[near] - np.asarray(centres[j], dtype=np.float64)
            exact = np.einsum("ij,ij->i", diff, diff)
            k = near[np.lexsort((near, exact))[0]]
            picks[j], dists[j] = k, np.sqrt(exact.min())
            taken[k] = True
    return picks, dists


#: Lloyd iterations of the faiss backend with ``max_iter="auto"`` (faiss has no
#: convergence test; on CIFAR-10 features 20 iterations end within 1 % of the inertia of
#: scikit-learn's converged k-means++ run, see benchmarks/bench_selectors.py).
FAISS_ITER = 20


def _kmeans_centres(F, n_clusters, seed, *, backend, n_init, max_iter):
    """Cluster centres of ``F`` (float64 array) by faiss or scikit-learn."""
    if backend == "sklearn":
        km = KMeans(
            n_clusters=n_clusters,
            n_init=n_init,
            max_iter=300 if max_iter == "auto" else max_iter,
            random_state=seed,
        ).fit(F)
        return km.cluster_centers_, float(km.inertia_)
    import faiss

    X32 = np.ascontiguousarray(F, dtype=np.float32)
    km = faiss.Kmeans(
        X32.shape[1],
        n_clusters,
        niter=FAISS_ITER if max_iter == "auto" else int(max_iter),
        nredo=1 if n_init == "auto" else int(n_init),
        seed=seed,
        # cluster every sample (no subsampling) and do not warn about small pools
        max_points_per_centroid=max(256, -(-X32.shape[0] // n_clusters)),
        min_points_per_centroid=1,
        verbose=False,
    )
    # initial centres: distinct rows drawn at random (faiss's own draw can take the same
    # point twice when rows are duplicated, leaving a cluster empty)
    rs = np.random.default_rng(seed)
    rows = np.ascontiguousarray(X32 + 0.0).view(np.dtype((np.void, 4 * X32.shape[1])))
    distinct = np.unique(rows.ravel(), return_index=True)[1]
    if distinct.size >= n_clusters:
        init = np.sort(rs.choice(distinct, size=n_clusters, replace=False))
    else:
        others = np.setdiff1d(np.arange(X32.shape[0]), distinct)
        extra = rs.choice(others, size=n_clusters - distinct.size, replace=False)
        init = np.concatenate([np.sort(distinct), np.sort(extra)])
    km.train(X32, init_centroids=X32[init])
    return km.centroids.astype(np.float64), float(km.obj[-1])


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
        ``"faiss"``: faiss's k-means (random initial centres, ``max_iter`` Lloyd
        iterations, float32); about 10x faster than scikit-learn on a 50,000-sample pool
        at 1,000 clusters, with an inertia within 1 % of it. ``"sklearn"``:
        :class:`sklearn.cluster.KMeans` (k-means++, run to convergence), the behaviour of
        peal_sk 0.1; the two give different selections for the same seed.
    n_init : "auto" or int, default="auto"
        Restarts: ``"auto"`` is scikit-learn's rule for ``"sklearn"`` and one run for
        ``"faiss"`` (``nredo``).
    max_iter : "auto" or int, default="auto"
        Lloyd iterations: ``"auto"`` is 300 (with scikit-learn's convergence test) for
        ``"sklearn"`` and 20 for ``"faiss"``.
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
        normalize=False,
        random_state=None,
    ):
        self.backend = backend
        self.n_init = n_init
        self.max_iter = max_iter
        self.normalize = normalize
        self.random_state = random_state

    def _query(self, ctx, n_instances, rng):
        F = ctx.pool_embeddings()
        if self.normalize:
            norms = np.linalg.norm(F, axis=1, keepdims=True)
            F = F / np.where(norms > 0, norms, 1).astype(F.dtype)
        # drawn from rng (not random_state itself) so that selector(..., random_state=s)
        # and KMeansSelector(random_state=s) agree, as for every selector
        seed = int(rng.integers(np.iinfo(np.int32).max))
        centres, self.inertia_ = _kmeans_centres(
            F,
            n_instances,
            seed,
            backend=self.backend,
            n_init=self.n_init,
            max_iter=self.max_iter,
        )
        self.cluster_centers_ = centres
        picks, dists = _nearest_untaken(F, centres)
        return picks, dists


def kmeans_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    backend="faiss",
    n_init="auto",
    max_iter="auto",
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
    backend, n_init, max_iter, normalize, random_state
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
        normalize=normalize,
        random_state=random_state,
    )
    return selector(classifier, X_pool, n_instances)


register_selector("kmeans", KMeansSelector, kmeans_sampling)
register_selector("centroid", KMeansSelector, kmeans_sampling, defaults={"normalize": True})
