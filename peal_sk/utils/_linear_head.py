"""The final linear layer of a classifier, for strategies that perturb or differentiate it.

DropQuery and BADGE work on the last layer of the model: logits ``z @ coef.T + intercept``
where ``z`` are the embeddings every feature-based strategy uses
(:func:`peal_sk.base.get_embeddings`: a Pipeline's steps before its final estimator, a
model's ``transform``, or the features themselves).
"""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._blocks import block_rows

__all__ = ["check_head_width", "final_linear_layer", "head_logits", "row_chunks"]

_NEEDS = (
    "it needs a fitted linear final layer: `coef_` of shape (n_classes, n_features) or "
    "(1, n_features) for two classes, and `intercept_`, on the final estimator (a "
    "LogisticRegression, the last step of a Pipeline, PEALClassifier's head), applied to "
    "embeddings of n_features columns (the Pipeline's steps before it, or the model's "
    "`transform`)"
)


def _final_estimator(classifier):
    est = classifier
    # a modAL-style learner (`.estimator` and `.X_training`) wraps its model; a scikit-learn
    # ensemble or meta-estimator has an unfitted template as `.estimator`: not unwrapped
    if hasattr(classifier, "estimator") and hasattr(classifier, "X_training"):
        est = classifier.estimator
    if isinstance(est, Pipeline):
        est = est.steps[-1][1]
    return est


def final_linear_layer(classifier, *, strategy="This strategy"):
    """``(coef, intercept, classes)`` of the final linear layer of a fitted classifier.

    Found on: a fitted linear classifier (``LogisticRegression``), the final step of a
    :class:`~sklearn.pipeline.Pipeline`, the ``estimator`` of a modAL-style learner, and
    any final estimator exposing ``coef_`` and ``intercept_`` (``PEALClassifier``, duck
    typed).

    A binary linear model stores one row, ``coef_ = w`` with ``P(classes_[1]) =
    sigmoid(w.z + b)``; it is returned as the equivalent two-class softmax layer, rows
    ``[0, w]`` and intercepts ``[0, b]``: ``softmax([0, w.z + b])`` is exactly
    ``[1 - sigmoid, sigmoid]``. (For BADGE this scales every gradient embedding by
    ``sqrt(2)`` relative to the sigmoid form, which changes no distance ratio and hence no
    k-means++ draw.)

    Parameters
    ----------
    classifier : estimator or learner
    strategy : str
        Name used in error messages.

    Returns
    -------
    coef : ndarray of shape (n_classes, n_features), float64
    intercept : ndarray of shape (n_classes,), float64
    classes : ndarray of shape (n_classes,) or None
        ``classes_`` of the final estimator (or of the classifier), when present.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        When the final estimator is a scikit-learn estimator that is not fitted.
    TypeError
        When no linear final layer is found (the message says what is needed).
    """
    est = _final_estimator(classifier)
    coef = getattr(est, "coef_", None)
    intercept = getattr(est, "intercept_", None)
    if coef is None or intercept is None:
        try:
            check_is_fitted(est)
        except NotFittedError as exc:
            raise NotFittedError(
                f"{strategy} needs a fitted model; {type(est).__name__} is not fitted yet "
                f"({_NEEDS})."
            ) from exc
        except TypeError:  # not a scikit-learn estimator: report the missing attribute
            pass
        raise TypeError(
            f"{strategy} could not find the final linear layer of {type(est).__name__}: "
            f"{_NEEDS}. {type(est).__name__} has "
            f"{'no `coef_`' if coef is None else 'no `intercept_`'}."
        )
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
    if coef.ndim != 2 or intercept.ndim != 1 or coef.shape[0] != intercept.shape[0]:
        raise TypeError(
            f"{strategy}: the final layer of {type(est).__name__} has coef_ of shape "
            f"{coef.shape} and intercept_ of shape {intercept.shape}; {_NEEDS}."
        )
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError(f"{strategy}: the final layer of {type(est).__name__} is not finite.")
    classes = getattr(est, "classes_", None)
    if classes is None:
        classes = getattr(classifier, "classes_", None)
    classes = None if classes is None else np.asarray(classes)
    if coef.shape[0] == 1:
        if classes is not None and len(classes) != 2:
            raise TypeError(
                f"{strategy}: {type(est).__name__} has one row of coef_ but "
                f"{len(classes)} classes; {_NEEDS}."
            )
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    elif classes is not None and len(classes) != coef.shape[0]:
        raise TypeError(
            f"{strategy}: {type(est).__name__} has {coef.shape[0]} rows of coef_ but "
            f"{len(classes)} classes; {_NEEDS}."
        )
    return coef, intercept, classes


def check_head_width(coef, embeddings, *, strategy="This strategy"):
    """Raise a clear error when the embeddings do not fit the final layer."""
    if embeddings.shape[1] != coef.shape[1]:
        raise ValueError(
            f"{strategy}: the embeddings have {embeddings.shape[1]} columns but the final "
            f"layer expects {coef.shape[1]} ({_NEEDS})."
        )


def row_chunks(n_rows, n_cols, *, itemsize=8):
    """Row slices whose ``(rows, n_cols)`` temporaries fit the block budget (_blocks)."""
    step = block_rows(itemsize * max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def head_logits(Z, coef, intercept):
    """``Z @ coef.T + intercept`` in the precision of ``Z`` (float32 stays float32)."""
    W = coef.astype(Z.dtype, copy=False)
    out = Z @ W.T
    out += intercept.astype(Z.dtype, copy=False)
    return out
