"""BackboneEmbedder on Dask collections, block by block, one model per worker process."""

# SPDX-License-Identifier: BSD-3-Clause

import operator
import os
import threading
import warnings
from collections import Counter, OrderedDict
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

__all__ = ["DaskEmbedder", "embed_dask"]

#: embedder parameters that do not change the embeddings (left out of the worker cache key
#: only where noted; ``progress`` is always switched off on the workers)
_WORKER_OFF = {"progress": False}

#: fitted embedders of this process, by configuration digest (most recently used last)
_CACHE = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()
#: how many times this process built (fitted) an embedder, by configuration digest
_LOADS = Counter()


def _import_dask():
    try:
        import dask
        import dask.array as da
        import dask.bag as db
    except ImportError as exc:
        raise ImportError(
            "embedding on Dask collections needs dask; install it with pip install 'peal-sk[dask]'."
        ) from exc
    return dask, da, db


def _check_embedder(embedder):
    from ..classifier import BackboneEmbedder

    if not isinstance(embedder, BackboneEmbedder):
        raise TypeError(
            "embedder must be a peal_sk.classifier.BackboneEmbedder; got "
            f"{type(embedder).__name__}."
        )
    embedder._validate_params()


def worker_params(embedder):
    """``(key, params)``: what a worker needs to rebuild ``embedder``, and its digest.

    Only the constructor parameters travel (never a model), with ``progress`` off. The key
    covers a checkpoint file's size and modification time, so rewritten weights are new.
    """
    import joblib

    params = {**embedder.get_params(deep=False), **_WORKER_OFF}
    stamp = None
    checkpoint = params.get("checkpoint_path")
    if checkpoint is not None and os.path.isfile(checkpoint):
        st = os.stat(checkpoint)
        stamp = (st.st_size, st.st_mtime_ns)
    return joblib.hash((type(embedder).__name__, params, stamp)), params


def cached_embedder(key, params):
    """The fitted embedder of configuration ``key`` in this process, built on first use.

    A worker process builds each configuration once (the model loads once), whatever the
    number of tasks; at most four configurations are kept. A configuration that cannot
    be built raises a one-line ``ValueError`` naming the parameter (:func:`build_embedder`).
    """
    with _CACHE_LOCK:
        embedder = _CACHE.get(key)
        if embedder is not None:
            _CACHE.move_to_end(key)
            return embedder
        embedder = build_embedder(params)
        _LOADS[key] += 1
        _CACHE[key] = embedder
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return embedder


def build_embedder(params):
    """``BackboneEmbedder(**params).fit()``; a failure is a one-line error naming its cause.

    Unknown names, missing weights and invalid parameters keep their own errors
    (``BackboneError``, ``FileNotFoundError``, ``ValueError``). A checkpoint that does not
    load safely (``weights_only`` loading, as every load in peal_sk) or ``backbone_kwargs``
    that the model does not take raise ``ValueError`` naming the parameter; torch's own
    advice to load unsafely is never passed on.
    """
    from ..classifier import BackboneEmbedder

    try:
        return BackboneEmbedder(**params).fit()
    except Exception as exc:  # noqa: BLE001 - every other cause gets a one-line message
        checkpoint = params.get("checkpoint_path")
        problem = None
        if checkpoint is not None and os.path.isfile(checkpoint):
            problem = _weights_problem(checkpoint)
        if problem is not None:
            raise ValueError(
                f"checkpoint_path={os.fspath(checkpoint)!r} is not a weight file that loads "
                f"safely ({problem}); give a state dict saved with "
                "torch.save(model.state_dict(), path), or a .safetensors file."
            ) from None
        if isinstance(exc, ValueError | OSError | ImportError):
            raise  # BackboneError, parameter errors, a missing file: already clear
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        cause = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        kwargs = params.get("backbone_kwargs")
        if kwargs and isinstance(exc, TypeError):
            raise ValueError(
                f"backbone_kwargs={kwargs!r} do not fit the backbone "
                f"{params.get('backbone')!r} ({cause})."
            ) from exc
        raise ValueError(
            f"the backbone {params.get('backbone')!r} cannot be built with these "
            f"parameters ({cause})."
        ) from exc


def _weights_problem(path):
    """None when ``path`` loads as weights without unpickling code, else the error's type."""
    import torch

    try:
        if os.fspath(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            load_file(os.fspath(path))
        else:
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means not a safe weight file
        return type(exc).__name__
    return None


def check_device(device, *, here=True):
    """Check ``device=`` before any work: a torch device, and (``here``) one this machine has.

    ``here=False`` (the workers of a cluster run the model) checks only the spelling.
    """
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:N' "
            "or 'mps'."
        ) from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r}: embeddings run on 'cpu', 'cuda' or 'mps'.")
    if not here:
        return
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(
                f"device={device!r}, but torch finds no CUDA GPU on this machine; use "
                "device='cpu', or device='auto' (CUDA when there is one)."
            )
        if dev.index is not None and dev.index >= n:
            raise ValueError(
                f"device={device!r}, but this machine has {n} CUDA GPU(s) (cuda:0 to cuda:{n - 1})."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device={device!r}, but torch finds no MPS device on this machine; use "
            "device='cpu' or device='auto'."
        )


def _n_features(key, params):
    return int(cached_embedder(key, params).n_features_out_)


def _embed_block(block, key, params, n_features, kind):
    """One block's embeddings on the worker that runs it."""
    embedder = cached_embedder(key, params)
    if kind == "paths":
        block = [os.fspath(p) for p in np.asarray(block, dtype=object).ravel()]
    if len(block) == 0:
        return np.empty((0, n_features), dtype=np.float32)
    return np.asarray(embedder.transform(block), dtype=np.float32)


def _embed_partition(partition, key, params, n_features):
    return [_embed_block(list(partition), key, params, n_features, "paths")]


def random_weights(params):
    """Whether ``params`` build a named backbone with random weights (each process would
    draw its own: ``pretrained=False`` and no ``checkpoint_path``)."""
    return (
        isinstance(params.get("backbone"), str)
        and not params.get("pretrained", True)
        and params.get("checkpoint_path") is None
    )


def _warn_random_weights(params):
    if random_weights(params):
        warnings.warn(
            "pretrained=False without checkpoint_path: every worker process draws its own "
            "random weights, so rows embedded on different workers are not comparable. "
            "Save the weights and pass checkpoint_path for a distributed run.",
            UserWarning,
            stacklevel=3,
        )


def _as_dask_array(images, da, block_size):
    """A Dask array chunked along the rows only, and its kind ("paths" or "array")."""
    if not isinstance(images, da.Array):
        if isinstance(images, (list, tuple)):
            is_path = [isinstance(p, (str, os.PathLike)) for p in images]
            if any(is_path) and not all(is_path):
                raise TypeError(
                    "images mixes file paths and other objects (item "
                    f"{is_path.index(not is_path[0])}); pass only paths or only images."
                )
            if is_path and all(is_path):
                images = np.asarray([os.fspath(p) for p in images], dtype=object)
        images = np.asarray(images)
        if images.ndim == 0 or len(images) == 0:
            raise ValueError(f"images is empty or a scalar; got shape {images.shape}.")
        if images.dtype.kind == "O" and not all(
            isinstance(p, (str, os.PathLike)) for p in images.ravel()
        ):
            raise TypeError(
                "in-memory images must be a numeric array or a list of file paths; got "
                "objects of another type (stack images into one array first)."
            )
        images = da.from_array(images, chunks=(block_size,) + images.shape[1:])
    if images.dtype.kind in "OUS":
        if images.ndim == 2 and images.shape[1] == 1:
            images = images[:, 0]
        if images.ndim != 1:
            raise ValueError(
                f"a Dask array of file paths must be 1-D (or one column); got shape {images.shape}."
            )
        return images, "paths"
    if images.dtype.kind not in "biuf":
        raise TypeError(f"images has dtype {images.dtype}: expected pixel values or paths.")
    if images.ndim < 2 or images.ndim > 4:
        raise ValueError(
            "a Dask array of images must be (n, n_features), (n, H, W), (n, H, W, C) or "
            f"(n, C, H, W); got shape {images.shape}."
        )
    # one block holds whole images: rows split, the other axes in one chunk
    return images.rechunk({i: -1 for i in range(1, images.ndim)}), "array"


def embed_dask(embedder, images, *, block_size=256):
    """Embeddings of a Dask collection, computed block by block on the workers.

    Each worker process rebuilds the embedder from its parameters and loads the backbone
    once, on its first block, then reuses it for every later block of this and later
    calls with the same configuration (a per-process cache keyed by a digest of
    ``embedder.get_params()``); no model is sent with the tasks. Nothing runs until the
    result is computed, on whatever scheduler is active: a ``distributed.Client`` sends
    the blocks to its cluster, otherwise Dask's default (threads in this process).

    Parameters
    ----------
    embedder : BackboneEmbedder
        Fitted or not; only its parameters are used (``progress`` is switched off on the
        workers). With ``pretrained=False`` and no ``checkpoint_path`` every worker would
        draw its own random weights: a warning says so when a distributed client is active.
    images : dask.array.Array, dask.bag.Bag, ndarray or list
        A Dask array of images (``(n, H, W)``, ``(n, H, W, C)``, ``(n, C, H, W)``) or
        feature rows (``(n, d)``), chunked along the rows (other axes are merged into one
        chunk); a 1-D Dask array of file paths (``str`` / object dtype); a Dask bag of file
        paths; or an in-memory array or list of either, split into blocks of
        ``block_size`` rows.
    block_size : int, default=256
        Rows per block of in-memory input (ignored for Dask collections).

    Returns
    -------
    embeddings : dask.array.Array of shape (n_samples, n_features_out), float32
        Row ``i`` embeds image ``i``. Chunks follow the input's rows; for a bag the row
        counts are unknown (``nan``) until computed (``compute_chunk_sizes()``).

    Notes
    -----
    GPU workers: start each with ``dask worker ADDRESS --resources "GPU=1"`` and compute
    with ``client.compute(Z, resources={"GPU": 1})`` (or ``client.persist``): every task
    of that computation then runs only on such workers, one at a time per GPU.
    ``dask.annotate(resources=...)`` does not work here by default: Dask's low-level task
    fusion drops annotations (dask/dask#7036) unless ``optimization.fuse.active`` is off.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from peal_sk.classifier import BackboneEmbedder
    >>> from peal_sk.distributed import embed_dask
    >>> emb = BackboneEmbedder("vit_small_patch14_dinov2", pretrained=False, img_size=28,
    ...                        backbone_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 2})
    >>> images = da.zeros((10, 28, 28, 3), dtype=np.uint8, chunks=(4, 28, 28, 3))
    >>> Z = embed_dask(emb, images)
    >>> Z.shape, Z.chunks[0]
    ((10, 16), (4, 4, 2))
    >>> Z.compute().shape
    (10, 16)
    """
    if not isinstance(block_size, Integral) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1; got {block_size!r}.")
    _check_embedder(embedder)
    dask, da, db = _import_dask()
    key, params = worker_params(embedder)
    if _distributed_client() is not None:
        _warn_random_weights(params)
    if isinstance(images, db.Bag):
        n_features = _dims(embedder, key, params, dask)
        parts = images.map_partitions(_embed_partition, key, params, n_features)
        blocks = [
            da.from_delayed(
                dask.delayed(operator.getitem)(part, 0),
                shape=(np.nan, n_features),
                dtype=np.float32,
            )
            for part in parts.to_delayed(optimize_graph=False)
        ]
        return da.concatenate(blocks, axis=0, allow_unknown_chunksizes=True)

    array, kind = _as_dask_array(images, da, block_size)
    n_features = _dims(embedder, key, params, dask)
    return da.map_blocks(
        _embed_block,
        array,
        key,
        params,
        n_features,
        kind,
        dtype=np.float32,
        chunks=(array.chunks[0], (n_features,)),
        drop_axis=list(range(2, array.ndim)) or None,
        new_axis=[1] if kind == "paths" else None,
        meta=np.empty((0, n_features), dtype=np.float32),
    )


def _dims(embedder, key, params, dask):
    """The embedding width: from a fitted embedder, else from a worker (loading it there)."""
    if hasattr(embedder, "n_features_out_"):
        return int(embedder.n_features_out_)
    return int(dask.delayed(_n_features, pure=True)(key, params).compute())


def _distributed_client():
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


class DaskEmbedder(TransformerMixin, BaseEstimator):
    """A :class:`~peal_sk.classifier.BackboneEmbedder` that transforms Dask collections.

    Like dask-ml's ``ParallelPostFit``: ``transform`` returns a lazy Dask array computed
    block by block on the workers of the active scheduler (see :func:`embed_dask`), each
    worker process loading the backbone once.

    Parameters
    ----------
    embedder : BackboneEmbedder
        The embedder whose parameters the workers use; cloned by ``fit``.
    block_size : int, default=256
        Rows per block of in-memory input.

    Attributes
    ----------
    embedder_ : BackboneEmbedder
        The clone used (not fitted here: the workers load the model).
    n_features_out_ : int
        Embedding width (the model is loaded on a worker to read it).

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from peal_sk.classifier import BackboneEmbedder
    >>> from peal_sk.distributed import DaskEmbedder
    >>> tiny = BackboneEmbedder("vit_small_patch14_dinov2", pretrained=False, img_size=28,
    ...                         backbone_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 2})
    >>> images = da.zeros((6, 28, 28, 3), dtype=np.uint8, chunks=3)
    >>> DaskEmbedder(tiny).fit().transform(images).compute().shape
    (6, 16)
    """

    _parameter_constraints = {
        "embedder": [object],
        "block_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, embedder, *, block_size=256):
        self.embedder = embedder
        self.block_size = block_size

    def fit(self, X=None, y=None):
        """Clone the embedder and read its embedding width (on a worker).

        Parameters
        ----------
        X : ignored
            Not used; present for the scikit-learn API.
        y : ignored
            Not used.

        Returns
        -------
        self : DaskEmbedder
        """
        self._validate_params()
        _check_embedder(self.embedder)
        dask, _, _ = _import_dask()
        self.embedder_ = clone(self.embedder)
        key, params = worker_params(self.embedder_)
        self.n_features_out_ = _dims(self.embedder_, key, params, dask)
        return self

    def transform(self, X):
        """Lazy embeddings of ``X`` (see :func:`embed_dask`).

        Parameters
        ----------
        X : dask.array.Array, dask.bag.Bag, ndarray or list
            Images, feature rows or file paths.

        Returns
        -------
        embeddings : dask.array.Array of shape (n_samples, n_features_out), float32
        """
        check_is_fitted(self, "embedder_")
        return embed_dask(self.embedder_, X, block_size=self.block_size)

    def get_feature_names_out(self, input_features=None):
        """Output feature names: ``embedding0``, ``embedding1``, ...

        Parameters
        ----------
        input_features : ignored
            Not used.

        Returns
        -------
        feature_names_out : ndarray of str objects, shape (n_features_out,)
        """
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"embedding{i}" for i in range(self.n_features_out_)], dtype=object)
