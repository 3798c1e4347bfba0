"""BackboneEmbedder: frozen foundation-model features as a scikit-learn transformer."""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import copy
import hashlib
import os
import threading
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._images import ImageDataset, check_images, make_transform
from ._torch_utils import autocast, pristine_backbone, resolve_device

__all__ = ["BackboneEmbedder"]


def _input_fingerprint(source):
    """A digest of the validated input: pixel or feature bytes, or paths with size and mtime.

    It reads ``source.data`` (what :func:`check_images` returns), not the user's object:
    iterating a DataFrame, for instance, yields its column labels, not its rows.
    """
    h = hashlib.sha256(f"{source.kind}|{len(source)}\n".encode())
    if source.kind == "paths":
        for p in source.data:
            st = os.stat(p)
            h.update(f"{os.fspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    elif source.kind == "pil":
        for im in source.data:
            h.update(f"{im.mode}|{im.size}\n".encode())
            h.update(im.tobytes())
            palette = im.getpalette() if im.mode in ("P", "PA") else None
            h.update(repr(palette).encode())
    elif isinstance(source.data, np.ndarray):
        h.update(f"{source.data.dtype}|{source.data.shape}\n".encode())
        h.update(np.ascontiguousarray(source.data).tobytes())
    else:  # kind "list": per-image arrays
        for item in source.data:
            arr = np.asarray(item)
            h.update(f"{arr.dtype}|{arr.shape}\n".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


class BackboneEmbedder(TransformerMixin, BaseEstimator):
    """Embeddings of a frozen pretrained backbone (linear probing, cold-start selection).

    ``make_pipeline(BackboneEmbedder(...), LogisticRegression())`` is the linear-probing
    baseline of PEAL; feature-based query strategies then compare the embedder's output
    (the steps before the final estimator of a Pipeline). Nothing is trained: ``fit``
    only loads the backbone.

    Parameters
    ----------
    backbone : str or callable, default="vit_small_patch14_dinov2.lvd142m"
        As :class:`PEALClassifier`.
    pretrained : bool, default=True
    checkpoint_path : str or None, default=None
    backbone_kwargs : dict or None, default=None
    img_size : int, default=224
    batch_size : int, default=64
    device : str, default="auto"
    precision : {"fp32", "bf16"}, default="fp32"
    cache_dir : str or None, default=None
        When set, embeddings are stored there as ``.npy`` files keyed by the backbone
        configuration and a digest of the input (array bytes, or file paths with size and
        modification time), and read back instead of recomputed. Files are written to a
        temporary name and renamed, so an interrupted run leaves no partial file.
    progress : bool, default=False
        Show a progress bar over batches (tqdm).

    Attributes
    ----------
    n_features_out_ : int
    data_config_ : dict
        The preprocessing (input size, mean, std, interpolation, crop_pct).

    Examples
    --------
    >>> import numpy as np
    >>> from peal_sk.classifier import BackboneEmbedder
    >>> emb = BackboneEmbedder("vit_small_patch14_dinov2", pretrained=False, img_size=28,
    ...                        backbone_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 2})
    >>> X = np.zeros((3, 28, 28, 3), dtype=np.uint8)
    >>> emb.fit_transform(X).shape
    (3, 16)
    """

    _parameter_constraints = {
        "backbone": [str, callable],
        "pretrained": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "backbone_kwargs": [dict, None],
        "img_size": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "precision": [StrOptions({"fp32", "bf16"})],
        "cache_dir": [str, os.PathLike, None],
        "progress": ["boolean"],
    }

    def __init__(
        self,
        backbone="vit_small_patch14_dinov2.lvd142m",
        *,
        pretrained=True,
        checkpoint_path=None,
        backbone_kwargs=None,
        img_size=224,
        batch_size=64,
        device="auto",
        precision="fp32",
        cache_dir=None,
        progress=False,
    ):
        self.backbone = backbone
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.backbone_kwargs = backbone_kwargs
        self.img_size = img_size
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.cache_dir = cache_dir
        self.progress = progress

    def _model(self):
        return pristine_backbone(
            self.backbone,
            self.pretrained,
            self.checkpoint_path,
            self.img_size,
            self.backbone_kwargs,
        )

    def _device(self):
        return resolve_device(self.device)

    def fit(self, X=None, y=None):
        """Load the backbone (nothing is trained).

        Parameters
        ----------
        X : ignored
            Not used; present for the scikit-learn API (``Pipeline.fit``).
        y : ignored
            Not used.

        Returns
        -------
        self : BackboneEmbedder
        """
        self._validate_params()
        model, config = self._model()
        self.n_features_out_ = int(model.num_features)
        self.data_config_ = dict(config)
        return self

    def _cache_path(self, source):
        checkpoint = None
        if self.checkpoint_path is not None:
            checkpoint = os.fspath(self.checkpoint_path)
            if os.path.isfile(checkpoint):  # a checkpoint rewritten in place is new weights
                st = os.stat(checkpoint)
                checkpoint = (checkpoint, st.st_size, st.st_mtime_ns)
        ident = repr(
            (
                self.backbone if isinstance(self.backbone, str) else repr(self.backbone),
                self.pretrained,
                checkpoint,
                sorted((self.backbone_kwargs or {}).items()),
                self.img_size,
                self.precision,
            )
        )
        key = hashlib.sha256((ident + _input_fingerprint(source)).encode()).hexdigest()
        return Path(self.cache_dir) / f"embeddings-{key[:32]}.npy"

    def transform(self, X):
        """Embeddings of ``X``.

        Parameters
        ----------
        X : images (see :class:`PEALClassifier`)

        Returns
        -------
        embeddings : ndarray of shape (n_samples, n_features_out), float32
        """
        check_is_fitted(self, "n_features_out_")
        source = check_images(X, name="X")
        path = None
        if self.cache_dir is not None:
            path = self._cache_path(source)
            if path.exists():
                try:
                    cached = np.load(path, allow_pickle=False)
                except (OSError, ValueError, EOFError):
                    cached = None  # unreadable (e.g. truncated by hand): recompute
                if (
                    isinstance(cached, np.ndarray)
                    and cached.shape == (len(source), self.n_features_out_)
                    and cached.dtype == np.float32
                ):
                    return cached
        model, config = self._model()
        device = self._device()
        if device != "cpu":  # the cached model is shared: move a copy
            model = copy.deepcopy(model).to(device)
        dataset = (
            ImageDataset(source)
            if source.kind == "features"
            else ImageDataset(source, None, make_transform(config))
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size)
        if self.progress:
            from tqdm.auto import tqdm

            loader = tqdm(loader, desc="embedding", unit="batch")
        out = []
        with torch.no_grad():
            for xb, _ in loader:
                xb = xb.to(device)
                with autocast(xb, self.precision):
                    out.append(model(xb).float().cpu())
        emb = torch.cat(out).numpy().astype(np.float32, copy=False)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # unique per process and thread; open() keeps the umask's permissions
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    np.save(fh, emb, allow_pickle=False)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return emb

    def get_feature_names_out(self, input_features=None):
        """Output feature names: ``embedding0``, ``embedding1``, ...

        Parameters
        ----------
        input_features : ignored
            Not used; the output does not depend on input feature names.

        Returns
        -------
        feature_names_out : ndarray of str objects, shape (n_features_out,)
        """
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"embedding{i}" for i in range(self.n_features_out_)], dtype=object)
