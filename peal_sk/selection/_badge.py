"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on gradient embeddings."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
from scipy.special import softmax
from sklearn.utils._param_validation import StrOptions, validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._blocks import block_rows
from ..utils._linear_head import check_head_width, final_linear_layer, head_logits, row_chunks
from ..utils._validation import check_features, check_proba
from ._registry import register_selector

__all__ = ["BadgeSelector", "badge_embedding_norms", "badge_sampling"]


def _gradient_factors(proba, Z):
    """``a = onehot(argmax p) - p`` and the squared norms ``|a|^2``, ``|z|^2``, ``|g|^2``."""
    A = -np.asarray(proba, dtype=np.float64)
    A[np.arange(len(A)), np.argmax(proba, axis=1)] += 1.0
    a_sq = np.einsum("ij,ij->i", A, A)
    z_sq = np.einsum("ij,ij->i", Z, Z, dtype=np.float64)
    return A, a_sq, z_sq, a_sq * z_sq


@validate_params(
    {"proba": ["array-like"], "embeddings": ["array-like"]}, prefer_skip_nested_validation=True
)
def badge_embedding_norms(proba, embeddings):
    """Norm of each gradient embedding ``g = (onehot(argmax p) - p) outer z``.

    ``g`` is the gradient of the cross-entropy loss, at the predicted label, with
    respect to the final softmax layer's weights; it is never materialised:
    ``|g| = |a| |z|`` with ``a = onehot(argmax p) - p``. Large norms are uncertain
    samples (``a`` large) with large embeddings.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        Softmax probabilities of the final layer.
    embeddings : array-like of shape (n_samples, n_features)
        Inputs ``z`` of the final layer.

    Returns
    -------
    norms : ndarray of shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import badge_embedding_norms
    >>> badge_embedding_norms([[0.5, 0.5], [1.0, 0.0]], [[3.0, 4.0], [3.0, 4.0]]).tolist()
    [3.5355339059327378, 0.0]
    """
    Z = check_features(embeddings, name="embeddings")
    proba = np.asarray(proba)
    proba = check_proba(proba, Z.shape[0], name="proba")
    return np.sqrt(_gradient_factors(proba, Z)[3])


#: picks between two exact refreshes of every sample's distance (one pass over the pool)
_REFRESH = 64
#: consecutive rejected draws that force an early refresh (e.g. only duplicates are left)
_MAX_REJECT = 32


def _sq_dists(Z, A, g_sq, rows, centres, eps):
    """``|g_i - g_c|^2`` for ``rows`` (a slice or index array) x ``centres``, 2-D."""
    d2 = g_sq[rows][:, None] + g_sq[centres][None, :]
    d2 -= 2.0 * (A[rows] @ A[centres].T) * (Z[rows] @ Z[centres].T)
    d2[d2 <= eps * (g_sq[rows][:, None] + g_sq[centres][None, :])] = 0.0
    return d2


def _badge_seeding(Z, A, g_sq, n_instances, rng, first):
    """k-means++ seeding on ``g_i = a_i outer z_i`` without materialising ``g``.

    ``|g_i - g_c|^2 = |g_i|^2 + |g_c|^2 - 2 (a_i . a_c)(z_i . z_c)``, clipped at 0 and
    set to 0 when below the rounding noise of the expansion (duplicates of a pick).

    Exact D^2 sampling with lazy updates: every sample's squared distance to the picks
    is refreshed in one blocked pass over the pool every ``_REFRESH`` picks (a matrix
    product, so the pool is read B / 64 times instead of B times). In between, a sample
    is drawn proportionally to its stale ``D^2`` (an upper bound) and accepted with
    probability ``D^2_now / D^2_stale``, where ``D^2_now`` also counts the picks made
    since the refresh; accepted draws follow the current ``D^2`` distribution exactly
    (rejection sampling). After ``_MAX_REJECT`` rejections in a row the refresh comes
    early; when every distance is 0 the rest is drawn uniformly among the samples not
    chosen. Returns the picks (in order) and the squared distance of each to the earlier
    picks at the time it was picked.
    """
    n = Z.shape[0]
    eps = 64 * np.finfo(Z.dtype).eps
    chosen = np.zeros(n, dtype=bool)
    picks = np.empty(n_instances, dtype=np.intp)
    d2_at_pick = np.zeros(n_instances)
    D2 = np.full(n, np.inf)
    block = block_rows(4 * Z.dtype.itemsize * Z.shape[1])
    c = int(np.argmax(g_sq)) if first == "largest" else int(rng.integers(n))
    picks[0], chosen[c], d2_at_pick[0] = c, True, g_sq[c]
    recent = [c]  # picks not yet folded into D2
    j, rejected, cum = 1, 0, None
    while j < n_instances:
        if cum is None or len(recent) >= _REFRESH or rejected >= _MAX_REJECT:
            if recent:
                R = np.asarray(recent)
                for s in range(0, n, block):
                    rows = slice(s, min(n, s + block))
                    np.minimum(
                        D2[rows], _sq_dists(Z, A, g_sq, rows, R, eps).min(axis=1), out=D2[rows]
                    )
                recent = []
            D2[chosen] = 0.0
            cum = np.cumsum(D2)
            rejected = 0
            if not cum[-1] > 0:  # every remaining distance is 0: uniform among the rest
                rest = np.flatnonzero(~chosen)
                picks[j:] = rng.choice(rest, n_instances - j, replace=False)
                break
        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        i = min(i, n - 1)
        while D2[i] <= 0:  # rounding at the very top: the last positive one below
            i -= 1
        now = D2[i]
        if recent:
            now = min(now, float(_sq_dists(Z, A, g_sq, [i], recent, eps).min()))
        if chosen[i] or rng.random() * D2[i] >= now:
            rejected += 1
            continue
        picks[j], chosen[i], d2_at_pick[j] = i, True, now
        recent.append(i)
        j, rejected = j + 1, 0
    return picks, d2_at_pick


class BadgeSelector(BaseSelector):
    """BADGE: k-means++ seeding on the gradient embeddings of the final layer.

    Batch Active learning by Diverse Gradient Embeddings (Ash et al., ICLR 2020). The
    gradient embedding of a pool sample is the gradient of the cross-entropy loss at its
    predicted label with respect to the final layer's weights, ``g(x) = (onehot(y_hat)
    - p(x)) outer z(x)``, with ``z`` the final layer's input and ``p`` its softmax
    output; its norm grows with the model's uncertainty and the spread of the seeding
    gives diversity. The ``n_instances`` picks are the k-means++ seeds on ``g``:

    1. the first is the sample with the largest ``|g|`` (``first="largest"``, ties: the
       lowest index) or a uniformly random one (``first="random"``);
    2. each next one is drawn with probability proportional to ``D^2``, the squared
       distance to the nearest earlier pick;
    3. when every ``D`` is 0 (all remaining gradients equal a pick's, e.g. a confident
       model or duplicates), the rest are drawn uniformly among the samples not chosen.

    ``g`` (``n_classes x n_features`` per sample) is never built: distances use
    ``|g_i - g_j|^2 = |a_i|^2 |z_i|^2 + |a_j|^2 |z_j|^2 - 2 (a_i . a_j)(z_i . z_j)``
    with ``a = onehot(y_hat) - p``. The draws are exact D^2 sampling with lazy updates:
    distances are refreshed for the whole pool in one blocked matrix product every 64
    picks, and in between a draw from the stale distances is accepted with probability
    ``D^2_now / D^2_stale`` (rejection sampling), so the pool is read ``B / 64`` times,
    not ``B`` times; memory is ``O(n_pool x (n_features + n_classes))``.

    ``p`` is the softmax of the final linear layer, ``z @ coef_.T + intercept_``, which is
    ``predict_proba`` for a multinomial ``LogisticRegression`` and for a binary one (its
    single row is the two-class softmax ``[0, w]``). The layer is found as for
    :class:`DropQuerySelector`: a fitted linear classifier, the final step of a
    :class:`~sklearn.pipeline.Pipeline` (embeddings: the steps before it), a modAL
    learner's ``estimator``, or any final estimator with ``coef_`` and ``intercept_``
    (``PEALClassifier``).

    Parameters
    ----------
    first : {"largest", "random"}, default="largest"
        How the first pick is made.
    random_state : int, Generator or None, default=None
        Seeds the ``D^2`` draws.

    See Also
    --------
    badge_sampling : The modAL function form.
    badge_embedding_norms : The gradient-embedding norms (``score_samples``).
    DropQuerySelector

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import BadgeSelector, badge_embedding_norms
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> idx = BadgeSelector(random_state=0).select(X, 3, classifier=clf)
    >>> norms = badge_embedding_norms(clf.predict_proba(X), X)
    >>> bool(norms[idx[0]] == norms.max())
    True
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "first": [StrOptions({"largest", "random"})],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.cold_start = False
        tags.selector_tags.requires_proba = True
        tags.selector_tags.uses_embeddings = True
        return tags

    def __init__(self, *, first="largest", random_state=None):
        self.first = first
        self.random_state = random_state

    def _check_context(self, ctx):
        ctx.require_proba_model(type(self).__name__)
        final_linear_layer(ctx.classifier, strategy=type(self).__name__)

    def _factors(self, ctx):
        coef, intercept, _ = final_linear_layer(ctx.classifier, strategy=type(self).__name__)
        Z = ctx.pool_embeddings()
        check_head_width(coef, Z, strategy=type(self).__name__)
        proba = np.empty((Z.shape[0], coef.shape[0]))
        for s in row_chunks(Z.shape[0], Z.shape[1], itemsize=Z.dtype.itemsize):
            proba[s] = softmax(head_logits(Z[s], coef, intercept).astype(np.float64), axis=1)
        return (Z, *_gradient_factors(proba, Z))

    def _score(self, ctx):
        ctx.require_proba_model(type(self).__name__)
        return np.sqrt(self._factors(ctx)[4])

    def _query(self, ctx, n_instances, rng):
        Z, A, _, _, g_sq = self._factors(ctx)
        picks, d2 = _badge_seeding(Z, A, g_sq, n_instances, rng, self.first)
        return picks, np.sqrt(d2)


@validate_params(function_form_constraints(BadgeSelector), prefer_skip_nested_validation=False)
def badge_sampling(classifier, X_pool, n_instances=1, *, first="largest", random_state=None):
    """modAL query strategy: BADGE (see :class:`BadgeSelector`).

    Parameters
    ----------
    classifier : learner or estimator with ``predict_proba`` and a linear final layer
    X_pool : array-like
    n_instances : int, default=1
    first : {"largest", "random"}, default="largest"
    random_state : int, Generator or None, default=None

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
        In k-means++ order.
    scores : ndarray of shape (n_instances,)
        Gradient-embedding distance of each pick to the earlier picks (the first: its
        norm; 0 for uniform fills).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import badge_sampling
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> badge_sampling(clf, X, 2, random_state=0)[0].shape
    (2,)
    """
    selector = BadgeSelector(first=first, random_state=random_state)
    return selector(classifier, X_pool, n_instances)


register_selector("badge", BadgeSelector, badge_sampling)
