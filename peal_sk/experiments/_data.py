"""Datasets for ``peal-sk simulate``: built-in names, ``.npz`` files and image folders."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import warnings
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np

from ..utils._image_files import IMAGE_EXTENSIONS, is_image_name, unreadable_reason

__all__ = ["BUILTIN", "Dataset", "load_dataset"]

#: Built-in datasets (shipped with a dependency: nothing is downloaded).
BUILTIN = {"digits": "scikit-learn's 8x8 handwritten digits, 1,797 images, 10 classes"}


@dataclass
class Dataset:
    """Train/test split of one dataset.

    ``X_*`` are images (arrays or file paths) when ``kind == "images"``, feature rows
    when ``kind == "features"``; ``features_*`` hold the raw pixels as features when a
    dataset has both (digits).

    Attributes
    ----------
    name : str
        ``"digits"``, or the name of the ``.npz`` file or image folder.
    kind : {"images", "features"}
        What ``X_train`` and ``X_test`` hold.
    X_train, X_test : ndarray or list
        Training and test samples: images (an array, or a list of file paths for an
        image folder) or feature rows.
    y_train, y_test : ndarray of shape (n_train,) and (n_test,)
        Their labels.
    classes : ndarray
        Every label of the dataset, sorted.
    features_train, features_test : ndarray of shape (n_train, n_features) or None
        Raw pixels as feature rows, for datasets that have both (digits); else None.
    skipped : tuple of str
        Unreadable files of an image folder, with the reason (they are left out).
    own_test_split : bool
        Whether the test samples are the dataset's own test split (a ``.npz`` with
        ``X_test`` and ``y_test``) rather than a split of its samples.

    See Also
    --------
    load_dataset : Builds it.

    Examples
    --------
    >>> from peal_sk.experiments import load_dataset
    >>> data = load_dataset("digits", seed=0)
    >>> data.kind, data.X_train.shape, data.features_train.shape, len(data.classes)
    ('images', (1347, 8, 8), (1347, 64), 10)
    """

    name: str
    kind: str
    X_train: object
    y_train: np.ndarray
    X_test: object
    y_test: np.ndarray
    classes: np.ndarray
    features_train: np.ndarray = None
    features_test: np.ndarray = None
    skipped: tuple = ()
    own_test_split: bool = False


#: Test fraction of a dataset without a test split of its own (``test_size=None``).
DEFAULT_TEST_SIZE = 0.25


def _split(X, y, seed, test_size):
    from sklearn.model_selection import train_test_split

    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed
    )
    return idx_train, idx_test


def _take(X, idx):
    return [X[i] for i in idx] if isinstance(X, list) else X[idx]


def _check_lengths(name, pairs):
    for x_name, X, y_name, y in pairs:
        n_x = len(X)
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(
                f"{name}: {y_name} must be 1-D (one label per sample); got shape {y.shape}."
            )
        if n_x != len(y):
            raise ValueError(
                f"{name}: {x_name} has {n_x} samples but {y_name} has {len(y)} labels; they "
                "must have the same length."
            )


def _from_arrays(name, X, y, seed, test_size, X_test=None, y_test=None):
    pairs = (
        [("X", X, "y", y)]
        if X_test is None
        else [
            ("X_train", X, "y_train", y),
            ("X_test", X_test, "y_test", y_test),
        ]
    )
    _check_lengths(name, pairs)
    y = np.asarray(y)
    own = X_test is not None
    if not own:
        tr, te = _split(X, y, seed, DEFAULT_TEST_SIZE if test_size is None else test_size)
        X, X_test, y, y_test = _take(X, tr), _take(X, te), y[tr], y[te]
    elif test_size is not None:  # a seeded, stratified part of the dataset's own test split
        y_test = np.asarray(y_test)
        keep = _subset(y_test, test_size, seed, "test_size", f"test samples of {name}")
        X_test, y_test = _take(X_test, keep), y_test[keep]
    X_arr = X if isinstance(X, list) else np.asarray(X)
    kind = "features" if not isinstance(X_arr, list) and X_arr.ndim == 2 else "images"
    return Dataset(
        name,
        kind,
        X_arr,
        y,
        X_test,
        np.asarray(y_test),
        np.unique(np.concatenate([y, y_test])),
        own_test_split=own,
    )


def _subset(y, size, seed, param, what):
    """Sorted positions of a seeded, stratified subsample of ``size`` (a count or fraction)."""
    n = len(y)
    if isinstance(size, Integral) and size >= n:
        if size == n:
            return np.arange(n)
        raise ValueError(
            f"{param}={size} exceeds the {n} {what}; choose a smaller {param} or None (all)."
        )
    n_classes = len(np.unique(y))
    count = size if isinstance(size, Integral) else int(np.ceil(size * n))
    if count < n_classes:
        raise ValueError(
            f"{param}={size} keeps {count} of the {n} {what}, fewer than their {n_classes} "
            "classes; a stratified subsample needs one sample per class at least."
        )
    try:
        _, keep = _split(None, y, seed, size)
    except ValueError as exc:  # e.g. a class with a single sample
        raise ValueError(
            f"{param}={size}: cannot draw a stratified subsample of the {n} {what}: {exc}"
        ) from exc
    return np.sort(keep)


def _subsample_pool(data, pool_size, seed):
    """Keep a seeded, stratified ``pool_size`` of the training samples, in dataset order."""
    what = f"training samples of {data.name}"
    keep = _subset(data.y_train, pool_size, seed, "pool_size", what)
    if len(keep) == len(data.y_train):
        return data
    data.X_train = _take(data.X_train, keep)
    data.y_train = data.y_train[keep]
    if data.features_train is not None:
        data.features_train = data.features_train[keep]
    return data


def _image_folder(root, seed, test_size):
    """One sub-folder per class; unreadable files are skipped with a warning naming them.

    Every file is decoded once (:func:`~peal_sk.utils._image_files.unreadable_reason`),
    so a truncated JPEG is skipped like a truncated PNG instead of failing the run later.
    """
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(
            f"dataset folder {root} must hold one sub-folder per class (at least 2); found "
            f"{classes}."
        )
    paths, labels, skipped = [], [], []
    for label in classes:
        for path in sorted((root / label).rglob("*")):
            if not path.is_file() or not is_image_name(path.name):
                continue
            reason = unreadable_reason(path)
            if reason is not None:
                skipped.append(f"{path} ({reason})")
                continue
            paths.append(str(path))
            labels.append(label)
    if skipped:
        shown = "; ".join(skipped[:10]) + (
            f"; ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        )
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s) in {root}: {shown}", stacklevel=3
        )
    if not paths:
        raise ValueError(
            f"dataset folder {root} holds no readable images ({', '.join(IMAGE_EXTENSIONS)})."
        )
    paths = np.asarray(paths, dtype=object)
    data = _from_arrays(str(root), paths, np.asarray(labels), seed, test_size)
    data.X_train, data.X_test = list(data.X_train), list(data.X_test)
    data.kind = "images"
    data.skipped = tuple(skipped)
    return data


def load_dataset(spec, *, seed=0, test_size=None, pool_size=None):
    """Load ``spec`` and split it (stratified, seeded) unless it has its own test split.

    The test samples never enter the training split, so a pool drawn from it never
    holds a test image.

    Parameters
    ----------
    spec : str or path-like
        ``"digits"``; a ``.npz`` with ``X``, ``y`` (or ``X_train``, ``y_train``,
        ``X_test``, ``y_test``): images (N, H, W[, C]) or features (N, d); or a folder
        with one sub-folder of images per class.
    seed : int, default=0
        Seeds the split and the subsamples.
    test_size : float, int or None, default=None
        A dataset without a test split of its own is split into train and test, the test
        part being this fraction (a float in (0, 1)) or number (an int) of its samples;
        None means 0.25. A ``.npz`` with ``X_test`` and ``y_test`` is tested on that
        split: all of it when None, else a stratified subsample of this fraction or
        number of it.
    pool_size : int or None, default=None
        Keep a stratified subsample of this many training samples (the unlabelled pool
        of a simulation), in dataset order; None keeps them all. It is drawn after the
        test split, so runs with different pool sizes share their test samples.

    Returns
    -------
    Dataset

    Examples
    --------
    >>> from peal_sk.experiments import load_dataset
    >>> data = load_dataset("digits", seed=0, test_size=0.25)
    >>> data.name, len(data.y_train), len(data.y_test)
    ('digits', 1347, 450)
    >>> len(load_dataset("digits", seed=0, pool_size=500).y_train)
    500
    """
    data = _load(spec, seed, test_size)
    return data if pool_size is None else _subsample_pool(data, int(pool_size), seed)


def _load(spec, seed, test_size):
    if str(spec) == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        size = DEFAULT_TEST_SIZE if test_size is None else test_size
        tr, te = _split(digits.data, digits.target, seed, size)
        images = (digits.images * (255 / 16)).round().astype(np.uint8)
        return Dataset(
            "digits",
            "images",
            images[tr],
            digits.target[tr],
            images[te],
            digits.target[te],
            np.unique(digits.target),
            features_train=digits.data[tr],
            features_test=digits.data[te],
        )
    path = Path(os.fspath(spec))
    if path.is_dir():
        return _image_folder(path, seed, DEFAULT_TEST_SIZE if test_size is None else test_size)
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if {"X_train", "y_train", "X_test", "y_test"} <= keys:
                return _from_arrays(
                    path.name,
                    npz["X_train"],
                    npz["y_train"],
                    seed,
                    test_size,
                    npz["X_test"],
                    npz["y_test"],
                )
            if {"X", "y"} <= keys:
                return _from_arrays(path.name, npz["X"], npz["y"], seed, test_size)
            raise ValueError(
                f"{path} must hold arrays X and y (or X_train, y_train, X_test, y_test); "
                f"it has {sorted(keys)}."
            )
    known = ", ".join(BUILTIN)
    raise ValueError(
        f"unknown dataset {str(spec)!r}: expected a built-in name ({known}), a .npz file or "
        "an image folder with one sub-folder per class."
    )
