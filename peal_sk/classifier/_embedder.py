"""BackboneEmbedder: frozen foundation-model features as a scikit-learn transformer."""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import hashlib
import math
import os
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..utils._io import write_atomic
from . import _autotune
from ._engines import (
    OnnxEngine,
    TorchEngine,
    _has_convolutions,
    export_key,
    onnx_available,
    onnx_cache_dir,
    run_batches,
)
from ._images import check_images
from ._pipeline import Preprocessor, iter_batches
from ._torch_utils import pristine_backbone, resolve_device, resolve_precision

__all__ = ["BackboneEmbedder"]

#: with engine="auto", smaller inputs run in torch: exporting to ONNX takes seconds
AUTO_ONNX_MIN_IMAGES = 256


def _auto_batch_size(img_size, device, engine="torch", convolutional=True):
    """About 2 million input pixels per batch on a CPU (128 at 128 px, 32 at 224 px).

    A transformer (no convolutions but the patch embedding) run by ONNX Runtime on a CPU
    gets about 200,000 (4 images at 224 px): its activations then stay in the CPU's cache
    between the matrix products and the operators around them (GELU, LayerNorm, softmax,
    the residual additions), which read and write them once each. ViT-S/14 at 224 px ran
    1.1x faster per image with 4 images a batch than with 32 there, and 1.3x slower in
    torch (``benchmarks/bench_embed.py``; the scaling guide).
    """
    on_cpu = str(device).startswith("cpu")
    if on_cpu and engine == "onnxruntime" and not convolutional:
        per_image = 4 * (224 / img_size) ** 2
        return int(min(2 ** round(math.log2(max(per_image, 1.0))), 1024))
    per_image = 128 * (128 / img_size) ** 2
    batch = 2 ** round(math.log2(max(per_image, 1.0)))
    if not on_cpu:
        batch *= 4  # GPUs want larger batches
    return int(min(max(batch, 16), 1024))


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
    pretrained : bool or "local", default=True
        As :class:`PEALClassifier`: "local" never downloads.
    checkpoint_path : str or None, default=None
    backbone_kwargs : dict or None, default=None
    img_size : int, default=224
    batch_size : int or "auto", default="auto"
        Images per forward pass. "auto": on a CPU, about two million input pixels per
        batch (128 images at 128 px, 32 at 224 px), except for a transformer run by ONNX
        Runtime: 200,000 (4 images at 224 px), so that its activations stay in the CPU's
        cache between operators; on a GPU, four times two million.
    device : str, default="auto"
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        "auto": the fastest measured here (see ``engine``), among float32 and, where the
        hardware computes them natively, bfloat16 (a CPU with AVX512-BF16 or AMX, a CUDA
        GPU) and float16 (a CUDA GPU). An explicit "bf16" or "fp16" on a CPU that would
        emulate it warns (it is several times slower than float32 there).
    engine : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the backbone. "torch": torch with ``inference_mode``, autocast and
        channels-last memory for convolutional networks. "onnxruntime": an ONNX export of
        the backbone run by ONNX Runtime on the CPU in float32 (the ``[onnx]`` extra:
        ``pip install "peal-sk[onnx]"``); the export is made once and cached on disk
        (``cache_dir``, else ``$PEAL_SK_CACHE_DIR/onnx`` or ``~/.cache/peal_sk/onnx``;
        randomly initialised weights, ``pretrained=False`` without a checkpoint, are
        exported in memory), and checked against torch on its first batch. Its worker
        threads sleep between operators instead of spinning (faster on shared cores).
        "auto": the engine x precision measured fastest for this backbone, image size,
        batch size and machine. The first ``fit`` of a configuration times each candidate
        (torch in each precision the hardware runs natively; ONNX Runtime when installed,
        on the CPU, for a named backbone) after a warm-up, in three rounds that time one
        batch of synthetic images per candidate in turn (32 images, or the batch size
        when the fastest runs that in a quarter of a second), and keeps the fastest
        candidate by its fastest batch: a few seconds to a minute on a CPU, the
        ONNX export included (``autotune_`` records the rates). The choice is cached in
        ``$PEAL_SK_CACHE_DIR/autotune.json`` (``~/.cache/peal_sk/autotune.json``) per
        machine, so later processes read it. Setting both ``engine`` and ``precision``
        skips the timing. Inputs of fewer than 256 images run in torch (an export does
        not repay itself), in the precision measured fastest for torch. The engines agree
        to about 1e-6 of the embeddings' scale in float32.
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
    precision_ : {"fp32", "bf16", "fp16"}
        The precision chosen (``precision`` resolved for this machine).
    autotune_ : dict
        The choice's record: engine, precision, images per second of each candidate
        timed, whether it came from the cache, and the machine's capability.
    engine_ : {"torch", "onnxruntime"}
        The engine for inputs of at least 256 images (``engine`` resolved; with "auto",
        smaller inputs run in torch).
    batch_size_ : int
        The batch size used by ``engine_`` (``batch_size`` resolved; with "auto", the
        inputs that run in torch instead take torch's batch size).

    Notes
    -----
    Image arrays are resized in batches by a numpy implementation of Pillow's resampling
    (the same tensors as Pillow, bit for bit); files and PIL images are decoded and
    resized by Pillow in a thread pool. Either way the next batches are prepared while
    the backbone runs on the current one.

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
        "pretrained": ["boolean", StrOptions({"local"})],
        "checkpoint_path": [str, os.PathLike, None],
        "backbone_kwargs": [dict, None],
        "img_size": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "device": [str],
        "precision": [StrOptions({"auto", "fp32", "bf16", "fp16"})],
        "engine": [StrOptions({"auto", "torch", "onnxruntime"})],
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
        batch_size="auto",
        device="auto",
        precision="auto",
        engine="auto",
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
        self.engine = engine
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
        device = self._device()
        on_cpu = device == "cpu"
        if self.engine == "onnxruntime":
            if not onnx_available():
                raise ImportError(
                    "engine='onnxruntime' needs onnxruntime and onnx; install them with "
                    "pip install 'peal-sk[onnx]', or use engine='torch'."
                )
            if not on_cpu:
                raise ValueError(
                    f"engine='onnxruntime' runs on the CPU; got device={self.device!r}. Use "
                    "engine='torch' on a GPU."
                )
            if self.precision not in ("auto", "fp32"):
                raise ValueError(
                    "engine='onnxruntime' runs float32; got "
                    f"precision={self.precision!r}. Use precision='auto' or 'fp32'."
                )
        model, config = self._model()
        self.n_features_out_ = int(model.num_features)
        self.data_config_ = dict(config)
        onnx_ok = on_cpu and isinstance(self.backbone, str) and onnx_available()
        pairs = _autotune.candidates(
            device, engine=self.engine, precision=self.precision, onnx_ok=onnx_ok
        )
        if self.engine == "onnxruntime":
            pairs = [("onnxruntime", "fp32")]
        elif not pairs:  # an explicit precision this device would emulate (it warns)
            pairs = [("torch", resolve_precision(self.precision, device))]
        batch_size = self._batch_size_for(pairs[0][0], model)
        choice = _autotune.choose(
            ("embedder", self._ident(), str(device)),
            functools.partial(self._candidate_engine, model, config),
            tuple(config["input_size"]),
            device=device,
            batch_size=batch_size,
            pairs=pairs,
        )
        self.engine_, self.precision_ = choice.engine, choice.precision
        self.autotune_ = choice.as_dict()
        self.batch_size_ = self._batch_size_for(self.engine_, model)
        return self

    def _torch_precision(self):
        """The precision inputs run in torch take (the fastest measured for torch)."""
        if self.engine_ == "torch":
            return self.precision_
        rates = {
            k.split("/")[1]: v
            for k, v in self.autotune_["images_per_s"].items()
            if k.startswith("torch/") and v is not None
        }
        return max(rates, key=rates.get) if rates else "fp32"

    def _batch_size_for(self, engine, model):
        """``batch_size`` resolved for ``engine`` and the backbone ``model``."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        return _auto_batch_size(
            self.img_size, self._device(), engine, convolutional=_has_convolutions(model)
        )

    def _engine_for(self, n_images):
        """The engine that embeds ``n_images`` images."""
        if self.engine == "auto" and n_images < AUTO_ONNX_MIN_IMAGES:
            return "torch"
        return self.engine_

    def _ident(self):
        """The backbone configuration, as keyed in the caches."""
        checkpoint = None
        if self.checkpoint_path is not None:
            checkpoint = os.fspath(self.checkpoint_path)
            if os.path.isfile(checkpoint):  # a checkpoint rewritten in place is new weights
                st = os.stat(checkpoint)
                checkpoint = (checkpoint, st.st_size, st.st_mtime_ns)
        return (
            self.backbone if isinstance(self.backbone, str) else repr(self.backbone),
            self.pretrained,
            checkpoint,
            sorted((self.backbone_kwargs or {}).items()),
            self.img_size,
        )

    def _onnx_path(self):
        """Where the ONNX export is cached, or None (exported in memory)."""
        # randomly initialised weights (pretrained=False, no checkpoint) differ from one
        # process to the next: an export on disk would hold another draw's weights
        fixed_weights = self.pretrained or self.checkpoint_path is not None
        if not (isinstance(self.backbone, str) and fixed_weights):
            return None
        folder = Path(self.cache_dir) if self.cache_dir is not None else onnx_cache_dir()
        return folder / export_key(self._ident())

    def _candidate_engine(self, model, config, name, precision):
        """An engine to time (an export that fails raises: that candidate is out)."""
        if name == "onnxruntime":
            return OnnxEngine(model, tuple(config["input_size"]), self._onnx_path())
        return TorchEngine(model, self._device(), precision)

    def _make_engine(self, name, model, config, precision=None):
        if name == "onnxruntime":
            try:
                return OnnxEngine(model, tuple(config["input_size"]), self._onnx_path())
            except Exception as exc:
                if self.engine != "auto":
                    raise
                warnings.warn(
                    f"exporting {self.backbone!r} to ONNX failed ({type(exc).__name__}: "
                    f"{exc}); embedding with torch instead.",
                    UserWarning,
                    stacklevel=3,
                )
        if precision is None:
            precision = self._torch_precision()
        return TorchEngine(model, self._device(), precision)

    def _cache_path(self, source, engine):
        precision = self.precision_ if engine == self.engine_ else self._torch_precision()
        ident = (*self._ident(), precision)
        if engine != "torch":  # torch's keys are those of earlier versions
            ident = (*ident, engine)
        ident = repr(ident)
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
        engine_name = self._engine_for(len(source))
        path = None
        if self.cache_dir is not None:
            path = self._cache_path(source, engine_name)
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
        engine = self._make_engine(engine_name, model, config)
        pre = None
        if source.kind != "features":
            # the layout the engine takes without a copy (channels-last for torch CNNs)
            pre = Preprocessor(config, channels_last=engine.channels_last)
        batch_size = self._batch_size_for(engine.name, model)
        batches = iter_batches(source, pre, batch_size, progress=self.progress)

        def fallback():
            warnings.warn(
                f"the ONNX export of {self.backbone!r} disagrees with torch; embedding with "
                "torch instead.",
                UserWarning,
                stacklevel=3,
            )
            return TorchEngine(model, self._device(), self._torch_precision())

        emb = run_batches(engine, batches, None if self.engine != "auto" else fallback)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # unique per process and thread; open() keeps the umask's permissions
            write_atomic(path, lambda fh: np.save(fh, emb, allow_pickle=False))
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
