"""K-Means selection: the representativeness baseline of the BiLAF paper."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import numpy as np
from sklearn.cluster import KMeans
from sklearn.utils._param_validation import Interval, StrOptions

from ..base import BaseSelector
from ..utils._neighbors import BLOCK_BYTES
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
    step = max(1, BLOCK_BYTES // (8 * len(F)))
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


class KMeansSelector(BaseSelector):
    """K-Means baseline: ``KMeans(n_clusters=n_instances)``, then the sample nearest
    each centre.

    The "K-Means" baseline of the BiLAF paper and a core selector option of
    :class:`BiLAFSelector`. Centres are visited in scikit-learn's order; each takes its
    nearest sample not taken by an earlier centre (ties: lowest index), so the result
    always has ``n_instances`` distinct samples, even with duplicated rows.

    Parameters
    ----------
    n_init : "auto" or int, default="auto"
        Passed to :class:`sklearn.cluster.KMeans`.
    max_iter : int, default=300
        Passed to :class:`sklearn.cluster.KMeans`.
    random_state : int, Generator or None, default=None
        Seeds the KMeans ``random_state`` (an int drawn from this generator).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_instances, n_features)
        Centres of the last selection.

    See Also
    --------
    kmeans_sampling : The modAL function form.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import KMeansSelector
    >>> X = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> sorted(KMeansSelector(random_state=0).select(X, 2).tolist())
    [0, 2]
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.uses_embeddings = True
        return tags

    def __init__(self, *, n_init="auto", max_iter=300, random_state=None):
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state

    def _query(self, ctx, n_instances, rng):
        F = ctx.pool_embeddings()
        # drawn from rng (not random_state itself) so that selector(..., random_state=s)
        # and KMeansSelector(random_state=s) agree, as for every selector
        seed = int(rng.integers(np.iinfo(np.int32).max))
        km = KMeans(
            n_clusters=n_instances, n_init=self.n_init, max_iter=self.max_iter, random_state=seed
        ).fit(F)
        self.cluster_centers_ = km.cluster_centers_
        picks, dists = _nearest_untaken(F, km.cluster_centers_)
        return picks, dists


def kmeans_sampling(
    classifier, X_pool, n_instances=1, *, n_init="auto", max_iter=300, random_state=None
):
    """modAL query strategy: K-Means centres' nearest samples (see :class:`KMeansSelector`).

    Parameters
    ----------
    classifier : learner, estimator or None
        Used only for embeddings.
    X_pool : array-like of shape (n_pool, n_features)
    n_instances : int, default=1
    n_init, max_iter, random_state
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
    selector = KMeansSelector(n_init=n_init, max_iter=max_iter, random_state=random_state)
    return selector(classifier, X_pool, n_instances)


register_selector("kmeans", KMeansSelector, kmeans_sampling)
