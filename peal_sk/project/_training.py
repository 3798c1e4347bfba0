"""Models of a project: the logistic regression on embeddings, its estimate, fine-tuning.

Nothing here reads or writes the database: the callers pass arrays and labels and
record what comes back.
"""

# SPDX-License-Identifier: BSD-3-Clause

import io
from pathlib import Path

import numpy as np

from ._common import ProjectError, claim, require_torch, write_atomic

__all__ = [
    "estimate",
    "fit_finetuned",
    "fit_logreg",
    "holdout_estimate",
    "holdout_split",
    "logreg",
    "predict",
]


def logreg():
    """StandardScaler + LogisticRegression: the project's model on frozen embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def estimate(y, classes, X_fn):
    """Cross-validated accuracy of :func:`logreg` on embeddings (``X_fn()`` gives them).

    Returns
    -------
    estimate : float or None
    note : str
        How it was computed, or why there is none.
    """
    y = np.asarray(y)
    counts = {c: int(np.sum(y == c)) for c in classes}
    short = [f"{c} ({n})" for c, n in counts.items() if n < 2]
    if short:
        return None, (
            "no estimate: cross-validation needs >= 2 labels of every class; too few "
            f"for {', '.join(short)}"
        )
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n_splits = min(5, min(counts.values()))
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=0)
    score = float(np.mean(cross_val_score(logreg(), X_fn(), y, cv=cv)))
    return score, f"{n_splits}-fold CV accuracy of logreg on embeddings, {len(y)} labels"


def predict(X_lab, y, X):
    """Labels and their probabilities for ``X`` from :func:`logreg` fitted on the labels."""
    model = logreg().fit(X_lab, y)
    proba = model.predict_proba(X)
    best = np.argmax(proba, axis=1)
    return model.classes_[best].tolist(), proba[np.arange(len(best)), best].tolist()


def _free_name(models, n, make):
    while not make(models, n):
        n += 1
    return n


def fit_logreg(models, n, X, y, *, backbone, classes):
    """Fit :func:`logreg` and save it with joblib as ``models/model-<n>-logreg.joblib``."""
    import joblib

    models = Path(models)
    models.mkdir(exist_ok=True)
    payload = {
        "model": logreg().fit(X, y),
        "features": "frozen backbone embeddings (peal_sk.classifier.BackboneEmbedder)",
        "backbone": backbone,
        "classes": classes,
    }
    buf = io.BytesIO()
    joblib.dump(payload, buf)
    n = _free_name(models, n, lambda m, k: claim(m / f"model-{k}-logreg.joblib"))
    path = models / f"model-{n}-logreg.joblib"
    write_atomic(path, buf.getvalue(), overwrite=True)
    return path, "logreg"


def holdout_split(y, fraction):
    """Stratified, seeded ``(train indices, held-out indices)``; ``ProjectError`` if the
    labels are too few to hold out ``fraction`` of every class."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        return train_test_split(idx, test_size=fraction, stratify=y, random_state=0)
    except ValueError as exc:
        raise ProjectError(
            f"cannot hold out {fraction:g} of {len(y)} labels with every class on both "
            f"sides ({exc}); label more images or pass a larger --holdout."
        ) from None


def _finetuned(backbone, classes, finetune, epochs, lr, verbose):
    require_torch(f"train --finetune {finetune}")
    from ..classifier import PEALClassifier

    return PEALClassifier(
        backbone["backbone"],
        pretrained=backbone["pretrained"],
        img_size=backbone["img_size"],
        backbone_kwargs=backbone["backbone_kwargs"] or None,
        finetune=finetune,
        max_epochs=epochs,
        lr=lr,
        classes=classes,
        random_state=0,
        verbose=verbose,
    )


def holdout_estimate(
    paths, y, split, *, backbone, classes, finetune, epochs, lr, verbose=0, log=print
):
    """Accuracy of the fine-tuned model on held-out labels: ``(estimate, note)``."""
    train, held = split
    paths, y = np.asarray(paths, dtype=object), np.asarray(y)
    clf = _finetuned(backbone, classes, finetune, epochs, lr, verbose)
    log(
        f"estimate: fine-tuning {finetune} on {len(train)} labels, {epochs} epochs, to score "
        f"it on {len(held)} held-out ones"
    )
    clf.fit(list(paths[train]), y[train])
    score = float(clf.score(list(paths[held]), y[held]))
    return score, (
        f"hold-out accuracy of PEALClassifier(finetune={finetune!r}) on {len(held)} labels, "
        f"trained on the other {len(train)}"
    )


def fit_finetuned(
    models, n, paths, y, *, backbone, classes, finetune, epochs, lr, verbose=0, log=print
):
    """Train :class:`~peal_sk.classifier.PEALClassifier` on the images and save adapters."""
    clf = _finetuned(backbone, classes, finetune, epochs, lr, verbose)
    models = Path(models)
    models.mkdir(exist_ok=True)
    log(f"fine-tuning {finetune} on {len(y)} labels, {epochs} epochs")
    clf.fit(paths, y)

    def make(m, k):
        try:
            (m / f"model-{k}-{finetune}").mkdir()
        except FileExistsError:
            return False
        return True

    n = _free_name(models, n, make)
    path = models / f"model-{n}-{finetune}"
    clf.save_adapters(path)
    return path, f"PEALClassifier(finetune={finetune!r})"
