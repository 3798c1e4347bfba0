"""DropQuery (Gupte et al., TMLR 2024): dropout disagreement, then k-means diversity."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, validate_params

from ..base import BaseSelector, function_form_constraints
from ..utils._faiss import faiss_kmeans
from ..utils._linear_head import check_head_width, final_linear_layer, head_logits, row_chunks
from ..utils._neighbors import nearest_untaken
from ..utils._validation import check_features, check_rng
from ._registry import register_selector

__all__ = ["DropQuerySelector", "dropquery_sampling", "dropquery_scores"]


def _keep_mask(rng, shape, keep):
    """Bernoulli(``keep``) mask drawn as integers (much faster than floats).

    ``keep`` is used as ``round(keep * 256) / 256`` when that is exact (``p = 0.75``:
    one byte per entry), else ``round(keep * 65536) / 65536``; returns the mask and the
    keep probability actually used.
    """
    if float(keep * 256).is_integer():
        return rng.integers(0, 256, size=shape, dtype=np.uint8) < int(keep * 256), keep
    level = int(round(keep * 65536))
    return rng.integers(0, 65536, size=shape, dtype=np.uint16) < level, level / 65536


def _dropout_mismatch(Z, coef, intercept, n_passes, p, rescale, rng):
    """Clean predictions and, per sample, how many dropout passes disagree with them.

    Passes are drawn one after the other; within a pass, rows in fixed-size chunks (the
    chunking depends only on the number of columns), so the draws are reproducible.
    """
    n, d = Z.shape
    clean = np.empty(n, dtype=np.intp)
    chunks = list(row_chunks(n, d, itemsize=Z.dtype.itemsize * 2))
    for s in chunks:
        clean[s] = np.argmax(head_logits(Z[s], coef, intercept), axis=1)
    mismatch = np.zeros(n, dtype=np.intp)
    if p == 0:
        return clean, mismatch
    W = coef.astype(Z.dtype, copy=False).T
    b = intercept.astype(Z.dtype, copy=False)
    for _ in range(n_passes):
        for s in chunks:
            mask, keep = _keep_mask(rng, (s.stop - s.start, d), 1.0 - p)
            dropped = np.multiply(Z[s], mask)
            logits = dropped @ W
            if rescale and keep > 0:
                logits *= Z.dtype.type(1.0 / keep)
            logits += b
            mismatch[s] += np.argmax(logits, axis=1) != clean[s]
    return clean, mismatch


@validate_params(
    {
        "embeddings": ["array-like"],
        "coef": ["array-like"],
        "intercept": ["array-like"],
        "n_passes": [Interval(Integral, 1, None, closed="left")],
        "p": [Interval(Real, 0, 1, closed="left")],
        "rescale": ["boolean"],
        "random_state": ["random_state", np.random.Generator],
    },
    prefer_skip_nested_validation=True,
)
def dropquery_scores(
    embeddings, coef, intercept, *, n_passes=3, p=0.75, rescale=True, random_state=None
):
    """Fraction of dropout passes whose prediction differs from the clean prediction.

    Each pass zeroes every entry of the embeddings with probability ``p`` (inverted
    dropout: the kept entries are scaled by ``1 / (1 - p)`` when ``rescale``), applies
    the linear layer ``z @ coef.T + intercept`` and takes the argmax. The mask is drawn
    as integers: ``1 - p`` is used as a multiple of 1/256 when exact (``p = 0.75``) and
    rounded to a multiple of 1/65536 otherwise.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        Inputs of the final layer.
    coef : array-like of shape (n_classes, n_features)
    intercept : array-like of shape (n_classes,)
    n_passes : int, default=3
    p : float in [0, 1), default=0.75
    rescale : bool, default=True
    random_state : int, Generator or None, default=None

    Returns
    -------
    scores : ndarray of shape (n_samples,)
        Mismatch counts divided by ``n_passes``, in [0, 1]; larger is more uncertain.

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.selection import dropquery_scores
    >>> Z = np.array([[3.0, 0.0], [0.2, 0.1]])
    >>> W, b = np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2)
    >>> dropquery_scores(Z, W, b, p=0.0).tolist()
    [0.0, 0.0]

    The second sample flips to class 1 when only its second entry survives
    (probability 0.75 x 0.25); the first never flips:

    >>> dropquery_scores(Z, W, b, n_passes=4000, random_state=0).round(2).tolist()
    [0.0, 0.18]
    """
    Z = check_features(embeddings, name="embeddings")
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
    check_head_width(coef, Z, strategy="dropquery_scores")
    rng = check_rng(random_state)
    _, mismatch = _dropout_mismatch(Z, coef, intercept, int(n_passes), p, rescale, rng)
    return mismatch / n_passes


class DropQuerySelector(BaseSelector):
    """DropQuery: samples whose prediction flips under dropout, spread by k-means.

    The method of Gupte et al. (TMLR 2024), the strongest reported for iterative active
    learning on frozen foundation-model features. With ``B = n_instances``:

    1. clean prediction = argmax of the final linear layer on each pool embedding;
    2. ``n_passes`` passes of inverted dropout with rate ``p`` on those *input
       embeddings* (zero a fraction ``p``, scale the rest by ``1 / (1 - p)`` when
       ``rescale``), the final layer, argmax;
    3. mismatch = passes disagreeing with the clean prediction; candidates = mismatch
       ``> t``, ``t`` starting at ``n_passes // 2`` and lowered while there are fewer
       than ``candidate_factor * B`` candidates (down to ``t = 0``);
    4. fewer than ``B`` candidates: all of them, then a uniform random fill among the
       others; otherwise k-means with ``k = B`` on the L2-normalised candidate
       embeddings (faiss, seeded from ``random_state``) and the candidate nearest each
       centre (each centre takes its nearest candidate not taken yet, so duplicates
       cannot repeat an index; :func:`peal_sk.utils._neighbors.nearest_untaken`: exact
       float64 distances, exact ties to the lowest index).

    The final layer is ``coef_`` / ``intercept_`` of a fitted linear classifier
    (``LogisticRegression``; a binary one is used as the equivalent two-class softmax),
    of the final step of a :class:`~sklearn.pipeline.Pipeline` (the embeddings are then
    the output of the steps before it), or of any final estimator exposing ``coef_`` and
    ``intercept_`` with a ``transform`` giving its inputs (``PEALClassifier``); modAL
    learners are unwrapped through ``.estimator``.

    **Dropout on a probe trained without dropout.** The original trains its probe with
    the same input dropout. A scikit-learn ``LogisticRegression`` is not, and ``p = 0.75``
    then flips many clean predictions: on CIFAR-10 EfficientNet-Lite0 features (see the
    documentation's benchmark page) a large share of the pool is a candidate. Lower ``p``
    makes the candidates more selective.

    Parameters
    ----------
    n_passes : int, default=3
        Dropout passes ``M``.
    p : float in [0, 1), default=0.75
        Dropout rate on the final layer's inputs. ``1 - p`` is used as a multiple of
        1/256 when exact, else rounded to a multiple of 1/65536 (the mask is drawn as
        integers, which is several times faster).
    rescale : bool, default=True
        Scale the kept entries by ``1 / (1 - p)`` (inverted dropout). Without it, the
        logits shrink relative to the intercept.
    candidate_factor : int, default=25
        Candidates wanted per requested instance before the threshold stops dropping.
    max_iter : int, default=20
        k-means iterations (faiss ``niter``).
    random_state : int, Generator or None, default=None
        Seeds the dropout masks, the k-means initialisation and the random fill. k-means
        runs in faiss, which is deterministic for a given machine and thread count.

    Attributes
    ----------
    n_candidates_ : int
        Number of candidates of the last query.
    threshold_ : int
        The mismatch threshold ``t`` used (candidates have mismatch ``> t``).
    mismatch_ : ndarray of shape (n_pool,)
        Mismatch counts of the last query.

    See Also
    --------
    dropquery_sampling : The modAL function form.
    dropquery_scores : The per-sample dropout disagreement.
    BadgeSelector : Another model-based diversity strategy.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from peal_sk.selection import DropQuerySelector
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=500).fit(X[::10], y[::10])
    >>> selector = DropQuerySelector(random_state=0)
    >>> selector.select(X, 3, classifier=clf).shape
    (3,)
    >>> selector.n_candidates_ >= 3
    True
    """

    _parameter_constraints = {
        **BaseSelector._parameter_constraints,
        "n_passes": [Interval(Integral, 1, None, closed="left")],
        "p": [Interval(Real, 0, 1, closed="left")],
        "rescale": ["boolean"],
        "candidate_factor": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.selector_tags.cold_start = False
        tags.selector_tags.requires_proba = True
        tags.selector_tags.uses_embeddings = True
        return tags

    def __init__(
        self,
        *,
        n_passes=3,
        p=0.75,
        rescale=True,
        candidate_factor=25,
        max_iter=20,
        random_state=None,
    ):
        self.n_passes = n_passes
        self.p = p
        self.rescale = rescale
        self.candidate_factor = candidate_factor
        self.max_iter = max_iter
        self.random_state = random_state

    def _check_context(self, ctx):
        ctx.require_proba_model(type(self).__name__)
        final_linear_layer(ctx.classifier, strategy=type(self).__name__)

    def _mismatch(self, ctx, rng):
        coef, intercept, _ = final_linear_layer(ctx.classifier, strategy=type(self).__name__)
        Z = ctx.pool_embeddings()
        check_head_width(coef, Z, strategy=type(self).__name__)
        _, mismatch = _dropout_mismatch(
            Z, coef, intercept, self.n_passes, float(self.p), self.rescale, rng
        )
        return Z, mismatch

    def _score(self, ctx):
        ctx.require_proba_model(type(self).__name__)
        _, mismatch = self._mismatch(ctx, check_rng(self.random_state))
        return mismatch / self.n_passes

    def _query(self, ctx, n_instances, rng):
        Z, mismatch = self._mismatch(ctx, rng)
        # one draw for k-means whatever the branch, so the fill does not shift the stream
        seed = int(rng.integers(np.iinfo(np.int32).max))
        wanted = self.candidate_factor * n_instances
        t = self.n_passes // 2
        while t > 0 and np.count_nonzero(mismatch > t) < wanted:
            t -= 1
        cand = np.flatnonzero(mismatch > t)
        self.threshold_, self.n_candidates_, self.mismatch_ = t, int(cand.size), mismatch
        scores = mismatch / self.n_passes
        if cand.size <= n_instances:
            order = cand[np.argsort(-mismatch[cand], kind="stable")]
            others = np.setdiff1d(np.arange(ctx.n_pool), cand, assume_unique=True)
            fill = rng.choice(others, n_instances - cand.size, replace=False)
            idx = np.concatenate([order, fill]).astype(np.intp)
            return idx, scores[idx]
        F = np.asarray(Z[cand], dtype=np.float32)
        norms = np.linalg.norm(F, axis=1, keepdims=True)
        np.divide(F, norms, out=F, where=norms > 0)
        centres = faiss_kmeans(F, n_instances, seed, n_iter=self.max_iter, assign=False).centres
        picks = cand[nearest_untaken(F, centres)[0]]
        idx = picks[np.argsort(-mismatch[picks], kind="stable")]
        return idx, scores[idx]


@validate_params(function_form_constraints(DropQuerySelector), prefer_skip_nested_validation=False)
def dropquery_sampling(
    classifier,
    X_pool,
    n_instances=1,
    *,
    n_passes=3,
    p=0.75,
    rescale=True,
    candidate_factor=25,
    max_iter=20,
    random_state=None,
):
    """modAL query strategy: DropQuery (see :class:`DropQuerySelector`).

    Parameters
    ----------
    classifier : learner or estimator with ``predict_proba`` and a linear final layer
    X_pool : array-like
    n_instances : int, default=1
    n_passes, p, rescale, candidate_factor, max_iter, random_state
        See :class:`DropQuerySelector`.

    Returns
    -------
    query_idx : ndarray of shape (n_instances,), dtype=np.intp
        Candidates with more dropout disagreement first.
    scores : ndarray of shape (n_instances,)
        Fraction of dropout passes disagreeing with the clean prediction.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from peal_sk.selection import dropquery_sampling
    >>> X, y = load_iris(return_X_y=True)
    >>> pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[::10], y[::10])
    >>> dropquery_sampling(pipe, X, 2, random_state=0)[0].shape
    (2,)
    """
    selector = DropQuerySelector(
        n_passes=n_passes,
        p=p,
        rescale=rescale,
        candidate_factor=candidate_factor,
        max_iter=max_iter,
        random_state=random_state,
    )
    return selector(classifier, X_pool, n_instances)


register_selector("dropquery", DropQuerySelector, dropquery_sampling)
