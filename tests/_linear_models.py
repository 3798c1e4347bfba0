"""Models with a linear final layer, shared by the DropQuery and BADGE tests."""

import numpy as np
from scipy.special import softmax
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression


class HeadModel:
    """The duck type of PEALClassifier as DropQuery / BADGE see it.

    ``transform`` gives the head's inputs (a fixed projection standing in for a backbone),
    ``coef_`` / ``intercept_`` the head, ``predict_proba`` its softmax.
    """

    def __init__(self, projection, coef, intercept, classes=None):
        self.projection = projection
        self.coef_ = coef
        self.intercept_ = intercept
        self.classes_ = np.arange(len(coef)) if classes is None else classes

    def transform(self, X):
        return np.tanh(np.asarray(X, dtype=np.float64) @ self.projection)

    def predict_proba(self, X):
        return softmax(self.transform(X) @ self.coef_.T + self.intercept_, axis=1)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def blobs(n=120, n_classes=4, d=6, seed=0, std=3.0):
    X, y = make_blobs(
        n_samples=n, centers=n_classes, n_features=d, cluster_std=std, random_state=seed
    )
    return X, y


def fitted_logreg(n_classes=4, seed=0, n_labeled=5):
    """A pool and a LogisticRegression fitted on a few labelled samples per class."""
    X, y = blobs(n=150, n_classes=n_classes, seed=seed)
    lab = np.concatenate([np.flatnonzero(y == c)[:n_labeled] for c in range(n_classes)])
    pool = np.setdiff1d(np.arange(len(y)), lab)
    clf = LogisticRegression().fit(X[lab], y[lab])
    return X[pool], clf, X[lab], y[lab]


def head_model(seed=0, d_in=6, d_emb=5, n_classes=3):
    rng = np.random.default_rng(seed)
    return HeadModel(
        rng.normal(size=(d_in, d_emb)),
        rng.normal(size=(n_classes, d_emb)) * 2,
        rng.normal(size=n_classes),
    )
