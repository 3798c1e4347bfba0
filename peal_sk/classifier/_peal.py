"""PEALClassifier: a foundation-model backbone, LoRA adapters and a linear head, via skorch."""

# SPDX-License-Identifier: BSD-3-Clause

import copy
import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from skorch import NeuralNetClassifier
from torch import nn

from ._images import ImageDataset, check_images, make_transform
from ._modes import MODES, fork_rng
from ._nets import AcceleratedNeuralNetClassifier, PEALModule
from ._peal_accelerate import _AcceleratorMixin
from ._peal_files import _AdapterFilesMixin
from ._peal_inference import _FastInferenceMixin
from ._torch_utils import (
    autocast,
    check_accelerator,
    pristine_backbone,
    resolve_device,
    resolve_precision,
    shard_loader,
)

__all__ = ["PEALClassifier"]


class PEALClassifier(
    _FastInferenceMixin, _AdapterFilesMixin, _AcceleratorMixin, ClassifierMixin, BaseEstimator
):
    """PEAL's estimator: a vision foundation model fine-tuned with LoRA, plus a linear head.

    ``fit`` builds a skorch :class:`~skorch.NeuralNetClassifier` (``net_``) around the
    backbone (restored to its pretrained weights for every fit), LoRA adapters on the
    attention ``qkv`` layers (or pointwise convolutions of a CNN) and a linear head on the
    pooled / CLS embedding, and trains adapters and head with Adam on class-balanced
    batches. ``transform`` returns the adapted embeddings that feature-based query
    strategies compare; before ``fit`` it returns the pretrained backbone's embeddings, so
    cold-start strategies (BiLAF) can use an unfitted classifier.

    Parameters
    ----------
    backbone : str or callable, default="vit_small_patch14_dinov2.lvd142m"
        A timm model name, a name from :func:`peal_sk.classifier.list_backbones`, or a
        factory returning an ``nn.Module`` with ``num_features`` that maps a batch to
        embeddings ``(n, num_features)``.
    pretrained : bool or "local", default=True
        Load pretrained weights: from ``checkpoint_path``, an installed weights package,
        the local timm / Hugging Face cache, or else downloaded once into that cache as
        timm does (with a progress bar). "local", or ``HF_HUB_OFFLINE=1``: never
        download (a clear error says how to get the weights).
    checkpoint_path : str or None, default=None
        A local weights file loaded through timm (ViT position embeddings resampled to
        ``img_size``).
    backbone_kwargs : dict or None, default=None
        Extra keyword arguments for ``timm.create_model`` (e.g. ``depth`` for tiny test
        models).
    img_size : int, default=224
        Input resolution; resizing and normalisation follow the backbone's config.
    finetune : {"lora", "linear", "full"}, default="lora"
        "lora": adapters + head; "linear": frozen backbone, head only (linear probing,
        backbone features computed once per fit); "full": every parameter.
    lora_r, lora_alpha : int, default=16
        LoRA rank and scaling numerator (the adapter update is scaled by alpha / r).
    lora_dropout : float, default=0.0
    target_modules : "auto" or list of str, default="auto"
        Layers to adapt; "auto" detects them (see
        :func:`peal_sk.classifier.auto_target_modules`).
    lora_last_blocks : int or None, default=None
        With "auto" targets, adapt only the last ``lora_last_blocks`` blocks (transformer
        blocks of a ViT, stages of an EfficientNet); see :ref:`peal-loop` for the
        accuracy / time trade-off.
    cache_prefix : bool, default=True
        With ``lora_last_blocks`` on a timm ViT or EfficientNet: the frozen blocks' output
        is computed once per image (stored by content, see ``cache_dir``) and reused by
        every later ``fit``, ``predict_proba`` and ``transform``; only the adapted blocks
        run each cycle. Same result as without the store.
    classes : array-like or None, default=None
        All class labels, when early labelled sets may miss some: ``predict_proba`` then
        has a column for each.
    max_epochs : int, default=50
    lr : float, default=1e-3
        Adam learning rate.
    batch_size : int, default=32
        Training and inference batch size.
    class_balanced : bool, default=True
        Sample training batches with probability inversely proportional to class
        frequency.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        With an ``accelerator``, leave "auto": accelerate places each process on its
        device (any other value must name that device, or ``fit`` raises).
    precision : {"auto", "fp32", "bf16"}, default="auto"
        "bf16": bfloat16 autocast, fast where the hardware computes bfloat16 natively (a
        CPU with AVX512-BF16 or AMX, a CUDA GPU of compute capability 8.0 or newer) and
        emulated, several times slower, elsewhere (an explicit "bf16" there warns).
        "auto": the faster of fp32 and (where native) bf16, measured once per machine for
        this network (:ref:`estimator`); ``precision_`` records the choice. With an
        ``accelerator`` whose ``mixed_precision`` is "bf16" or "fp16",
        "auto" follows the accelerator, and "fp32" (or the other reduced precision)
        contradicts it: ``fit`` raises a ``ValueError``. With ``mixed_precision="no"``,
        ``precision`` applies as without accelerate.
    random_state : int or None, default=None
        Seeds torch (weights of the head and adapters, batch sampling), in a fork of
        torch's generator: the global one is left as it was.
    verbose : int, default=0
        skorch's epoch log when > 0.
    callbacks : list or None, default=None
        skorch callbacks.
    accelerator : None, "auto" or accelerate.Accelerator, default=None
        Train data-parallel with Hugging Face accelerate, through skorch's
        :class:`~skorch.hf.AccelerateMixin` (needs the ``[accelerate]`` extra). ``None``:
        one process, on ``device``. ``"auto"``: an ``Accelerator()`` built at ``fit``
        time and configured by the launcher (``accelerate launch --multi_gpu
        --num_processes N script.py``: processes, ``--mixed_precision``,
        ``--gradient_accumulation_steps``), with ``cpu=True`` when ``device="cpu"``.
        An ``Accelerator`` instance: yours, with any settings (e.g.
        ``DistributedDataParallelKwargs(find_unused_parameters=True)``); it is shared,
        not copied, by :func:`~sklearn.base.clone`. Every process runs the same script
        with the same ``X, y``: each trains on its share of every epoch's batches
        (``batch_size`` is per process, so one optimiser step sees ``batch_size x
        processes x gradient_accumulation_steps`` images), gradients are averaged across
        processes, and ``predict_proba`` / ``transform`` return the full result on every
        process (call them on all processes). :meth:`save_adapters` writes from the
        main process only. A pickled fitted estimator holds a plain single-process model
        (an accelerator belongs to the process that made it): an instance comes back
        as "auto". See :ref:`scaling`.
    engine : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the frozen parts over images (the pretrained backbone for "linear" and
        before ``fit``, the frozen prefix for ``lora_last_blocks``) and the merged adapted
        network: "auto" times the candidates once per machine, as
        :class:`BackboneEmbedder` does (``engine_``).
    cache_dir : str or None, default=None
        Keep the frozen parts' per-image outputs there (memory-mapped ``.npy`` segments
        reused by later processes); None keeps them in memory for the process.
    cache_dtype : {"float32", "float16"}, default="float32"
        Storage of those outputs; "float16" halves it (relative error 2**-11 per value).
    progress : bool, default=False
        Progress bars over long passes (embedding, prefix, adapted blocks).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    net_ : skorch.NeuralNetClassifier
        The trained network (for "linear": the head alone, on cached features); with an
        ``accelerator``, a subclass with :class:`~skorch.hf.AccelerateMixin` whose
        module is unwrapped after training.
    targets_ : list of str
        Adapted layers ("lora" mode).
    n_features_out_ : int
        Embedding size of ``transform``.
    coef_ : ndarray of shape (n_classes, n_features_out)
        The linear head's weights (a copy), applied to ``transform``'s embeddings: the
        final linear layer that DropQuery and BADGE use, as for a LogisticRegression.
    intercept_ : ndarray of shape (n_classes,)
        The linear head's bias (a copy).
    precision_ : {"fp32", "bf16", "fp16"}
        The precision training and inference ran in (``precision`` resolved; "fp16" only
        under an accelerator with ``mixed_precision="fp16"``, which scales the loss).
    accelerator_ : accelerate.Accelerator
        The accelerator ``fit`` trained with (``accelerator``, or the one built for
        "auto"); only when ``accelerator`` is set.
    prefix_cached_ : bool
        Whether the frozen blocks' output was computed once and reused (``cache_prefix``).
    engine_, engine_precision_ : str or None
        The engine and precision of the frozen parts (None on the plain path: feature
        vectors, or several processes).

    Notes
    -----
    ``fit`` runs overridable steps in skorch's style: :meth:`initialize_backbone` (a fresh
    copy of the pretrained backbone), :meth:`initialize_adapters` (LoRA, or freezing for
    "linear"), :meth:`initialize_module` (what is trained: backbone + head, or the head),
    :meth:`initialize_net` (the skorch net) and :meth:`fit_loop` (the training).

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from peal_sk.classifier import PEALClassifier
    >>> class Tiny(nn.Sequential):
    ...     num_features = 8
    >>> def tiny():
    ...     return Tiny(nn.Linear(4, 8), nn.ReLU())
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> clf = PEALClassifier(tiny, pretrained=False, finetune="full", max_epochs=20,
    ...                      random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape, clf.transform(X[:2]).shape
    ((2, 2), (2, 8))
    """

    _parameter_constraints = {
        "backbone": [str, callable],
        "pretrained": ["boolean", StrOptions({"local"})],
        "checkpoint_path": [str, os.PathLike, None],
        "backbone_kwargs": [dict, None],
        "img_size": [Interval(Integral, 1, None, closed="left")],
        "finetune": [StrOptions({"lora", "linear", "full"})],
        "lora_r": [Interval(Integral, 1, None, closed="left")],
        "lora_alpha": [Interval(Real, 0, None, closed="neither")],
        "lora_dropout": [Interval(Real, 0, 1, closed="left")],
        "target_modules": [StrOptions({"auto"}), list, tuple],
        "lora_last_blocks": [Interval(Integral, 1, None, closed="left"), None],
        "cache_prefix": ["boolean"],
        "classes": ["array-like", None],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "class_balanced": ["boolean"],
        "device": [str],
        "precision": [StrOptions({"auto", "fp32", "bf16"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callbacks": [list, None],
        "accelerator": [
            None,
            StrOptions({"auto"}),
            HasMethods(["prepare", "unwrap_model", "gather_for_metrics"]),
        ],
        "engine": [StrOptions({"auto", "torch", "onnxruntime"})],
        "cache_dir": [str, os.PathLike, None],
        "cache_dtype": [StrOptions({"float32", "float16"})],
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
        finetune="lora",
        lora_r=16,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules="auto",
        lora_last_blocks=None,
        cache_prefix=True,
        classes=None,
        max_epochs=50,
        lr=1e-3,
        batch_size=32,
        class_balanced=True,
        device="auto",
        precision="auto",
        random_state=None,
        verbose=0,
        callbacks=None,
        accelerator=None,
        engine="auto",
        cache_dir=None,
        cache_dtype="float32",
        progress=False,
    ):
        self.backbone = backbone
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.backbone_kwargs = backbone_kwargs
        self.img_size = img_size
        self.finetune = finetune
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.target_modules = target_modules
        self.lora_last_blocks = lora_last_blocks
        self.cache_prefix = cache_prefix
        self.classes = classes
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.class_balanced = class_balanced
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.accelerator = accelerator
        self.engine = engine
        self.cache_dir = cache_dir
        self.cache_dtype = cache_dtype
        self.progress = progress

    # -- helpers ------------------------------------------------------------------------
    def _mode(self):
        """``finetune`` resolved: what is trained and what inference reuses."""
        return MODES[self.finetune]

    def _device(self):
        accelerator = self._accelerator()
        if accelerator is None:
            return resolve_device(self.device)
        return str(accelerator.device)

    def _backbone_and_config(self):
        """A fresh copy of the pretrained backbone (sklearn semantics: refit from scratch)."""
        model, config = pristine_backbone(
            self.backbone,
            self.pretrained,
            self.checkpoint_path,
            self.img_size,
            self.backbone_kwargs,
        )
        return copy.deepcopy(model), dict(config)

    def _dataset(self, source, y=None, data_config=None):
        if source.kind == "features":
            return ImageDataset(source, y)
        return ImageDataset(source, y, make_transform(data_config))

    def _loader(self, dataset):
        return torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=False)

    def _check_input(self, X):
        source = check_images(X, name="X")
        expected = getattr(self, "n_features_in_", None)
        if expected is not None and source.kind == "features":
            if source.data.shape[1] != expected:
                raise ValueError(
                    f"X has {source.data.shape[1]} features, but {type(self).__name__} is "
                    f"expecting {expected} features as input."
                )
        return source

    def _precision(self):
        """The fitted precision, or ``precision`` resolved now (before fit)."""
        if hasattr(self, "precision_"):
            return self.precision_
        return resolve_precision(self.precision, self._device(), allow_fp16=False)

    def _autocast(self, backbone, x, precision=None):
        with autocast(x, self._precision() if precision is None else precision):
            return backbone(x).float()

    def _frozen_embed(self, x):
        return self._autocast(self.backbone_, x)

    @torch.no_grad()
    def _embed(self, module_embed, source, data_config):
        """``module_embed`` over ``source`` in batches; split across processes, gathered."""
        device = self._device()
        accelerator = self._accelerator()
        loader = self._loader(self._dataset(source, None, data_config))
        sharded = shard_loader(loader, accelerator)
        out = []
        for xb, _ in sharded:
            z = module_embed(xb.to(device)).float()
            if sharded is not loader:
                z = accelerator.gather_for_metrics(z)
            out.append(z.cpu())
        return torch.cat(out).numpy()

    def _trained_module(self):
        """``net_``'s module, unwrapped from accelerate's (DDP, autocast) wrappers."""
        module = self.net_.module_
        accelerator = getattr(self, "accelerator_", None)
        if accelerator is not None:
            module = accelerator.unwrap_model(module, keep_fp32_wrapper=False)
        return module

    def _check_y(self, y, n):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        y = column_or_1d(y, warn=True)  # a column vector warns and is raveled
        check_classification_targets(y)
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"y must be 1-D with one label per image ({n}); got shape {y.shape}.")
        if self.classes is not None:
            classes = np.unique(np.asarray(self.classes))
            unknown = np.setdiff1d(np.unique(y), classes)
            if unknown.size:
                raise ValueError(
                    f"y has labels {unknown.tolist()} that are not in classes={classes.tolist()}."
                )
        else:
            classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(
                f"y has a single class, one class in all ({classes.tolist()}); a classifier "
                "needs at least two. Pass classes=[...] to declare the others."
            )
        return classes, np.searchsorted(classes, y).astype(np.int64)

    # -- the steps of fit (override one to change it) ------------------------------------
    def initialize_backbone(self):
        """A fresh copy of the pretrained backbone; sets ``data_config_`` and more.

        Sets ``data_config_``, ``n_features_out_`` and ``precision_``. The copy is
        restored from the per-process cache of pretrained weights (scikit-learn
        semantics: every fit starts from the pretrained weights).

        Returns
        -------
        backbone : torch.nn.Module
        """
        accelerator = self._accelerator()
        if accelerator is None:
            self.precision_ = resolve_precision(self.precision, self._device(), allow_fp16=False)
        else:
            _, self.precision_ = check_accelerator(accelerator, self.device, self.precision)
        backbone, data_config = self._backbone_and_config()
        self.data_config_ = data_config
        self.n_features_out_ = int(backbone.num_features)
        return backbone

    def initialize_adapters(self, backbone):
        """Make the trainable part trainable: LoRA adapters, or nothing of the backbone.

        "lora" injects adapters in place; "linear" freezes every backbone parameter;
        "full" leaves the backbone as it is.

        Parameters
        ----------
        backbone : torch.nn.Module
            From :meth:`initialize_backbone`; modified in place.

        Returns
        -------
        targets : list of str
            The adapted layers (empty unless ``finetune="lora"``).
        """
        return self._mode().adapt(self, backbone)

    def initialize_module(self, backbone):
        """The module to train: a linear head ("linear") or backbone + head.

        For "linear" the backbone is kept as ``backbone_`` (moved to the device) and the
        module is the head alone, trained on the backbone's features. With
        ``lora_last_blocks`` and ``cache_prefix`` on a timm ViT, the module is split
        after the frozen blocks (see ``prefix_cached_``).

        Parameters
        ----------
        backbone : torch.nn.Module
            From :meth:`initialize_adapters`.

        Returns
        -------
        module : torch.nn.Module
        """
        return self._mode().module(self, backbone)

    def initialize_net(self, module, y_enc):
        """The skorch :class:`~skorch.NeuralNetClassifier` that trains ``module``.

        Adam, cross-entropy, no validation split; with ``class_balanced`` a seeded
        :class:`~torch.utils.data.WeightedRandomSampler` draws the training batches.
        With an accelerator, the net has skorch's :class:`~skorch.hf.AccelerateMixin`
        (``device=None``: accelerate places module and batches; accelerate keeps the
        sampler's generator in step across processes, which then take turns on its
        batches) and unwraps the module after training.

        Parameters
        ----------
        module : torch.nn.Module
            From :meth:`initialize_module`.
        y_enc : ndarray of shape (n_samples,)
            Labels encoded as indices into ``classes_``.

        Returns
        -------
        net : skorch.NeuralNetClassifier
        """
        kwargs = {}
        if self.class_balanced:
            counts = np.bincount(y_enc, minlength=len(self.classes_)).astype(np.float64)
            weights = 1.0 / counts[y_enc]
            generator = torch.Generator()
            if self.random_state is not None:
                generator.manual_seed(int(self.random_state))
            kwargs["iterator_train__sampler"] = torch.utils.data.WeightedRandomSampler(
                torch.as_tensor(weights), num_samples=len(y_enc), generator=generator
            )
            kwargs["iterator_train__shuffle"] = False
        else:
            kwargs["iterator_train__shuffle"] = True
        kwargs.update(self._net_params(), callbacks=self.callbacks)
        accelerator = self._accelerator()
        if accelerator is None:
            return NeuralNetClassifier(module, device=self._device(), **kwargs)
        # AccelerateMixin: device=None when accelerate places the tensors; the module is
        # unwrapped after training (pickling, transform, save_adapters need the plain one).
        # Its "auto" log sink (accelerator.print: the main process only) prints whatever
        # the verbosity, so it is asked for only when verbose.
        return AcceleratedNeuralNetClassifier(
            module,
            accelerator=accelerator,
            device=None if accelerator.device_placement else self._device(),
            unwrap_after_train=True,
            callbacks__print_log__sink="auto" if self.verbose else print,
            **kwargs,
        )

    def _net_params(self):
        return dict(
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.Adam,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=None,
            verbose=self.verbose,
            classes=list(range(len(self.classes_))),
        )

    # -- scikit-learn API ----------------------------------------------------------------
    def fit(self, X, y):
        """Fine-tune on images ``X`` with labels ``y`` (from the pretrained weights).

        Parameters
        ----------
        X : images
            Arrays (N, H, W, C), (N, C, H, W) or (N, H, W), lists of arrays, PIL images or
            file paths; 2-D arrays are feature vectors for vector backbones.
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : PEALClassifier
        """
        self._validate_params()
        source = check_images(X, name="X")
        self.classes_, y_enc = self._check_y(y, len(source))
        self._fit_accelerator()
        if source.kind == "features":
            self.n_features_in_ = int(source.data.shape[1])
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        backbone = self.initialize_backbone()
        # seeded after loading (the first load in a process draws random numbers, later
        # ones come from the cache), inside a fork of torch's generator: the user's global
        # generator is left as it was
        with fork_rng(self.random_state):
            self.targets_ = self.initialize_adapters(backbone)
            with fork_rng(self.random_state):  # same head init whatever the adapters drew
                module = self.initialize_module(backbone)
            self.net_ = self.initialize_net(module, y_enc)
            self.fit_loop(source, y_enc)
        return self

    def fit_loop(self, source, y_enc):
        """Train ``net_`` on the images (or on features / tokens computed once).

        "linear": the frozen backbone's features are computed once and the head trains on
        them. With a split module (``prefix_cached_``), the frozen blocks' output is
        computed once and the adapted blocks train on it. Otherwise the whole module
        trains on the images.

        Parameters
        ----------
        source : ImageSource
            The validated training images (``check_images(X)``).
        y_enc : ndarray of shape (n_samples,)
            Labels encoded as indices into ``classes_``.

        Returns
        -------
        self : PEALClassifier
        """
        module = self.net_.module
        split = getattr(module, "split", None) if isinstance(module, PEALModule) else None
        self.prefix_cached_ = split is not None
        frozen = self._frozen_part(source, split)
        self.engine_ = self.engine_precision_ = None
        if frozen is not None:
            self.engine_, self.engine_precision_ = frozen.choice.engine, frozen.choice.precision
        if self.finetune != "linear":
            self._choose_training(module, source, frozen, split)
        if self.finetune == "linear":
            if frozen is None:
                feats = self._embed(self._frozen_embed, source, self.data_config_)
            else:
                feats = frozen(source)
            self.net_.fit(torch.as_tensor(feats), torch.as_tensor(y_enc))
        elif split is None:
            self.net_.fit(self._dataset(source, y_enc, self.data_config_), None)
        else:
            # the frozen blocks' output, once per image; the adapted blocks train on it
            module.to(self._device())
            if frozen is None:
                module.eval()
                tokens = self._embed(module.prefix, source, self.data_config_)
            else:
                tokens = frozen(source)
            module.token_input = True
            try:
                self.net_.fit(torch.as_tensor(tokens), torch.as_tensor(y_enc))
            finally:
                module.token_input = False
        return self

    def fit_transform(self, X, y):
        """Fit on ``(X, y)``, then return the adapted embeddings of ``X``.

        Parameters
        ----------
        X : images
            As in :meth:`fit`.
        y : array-like of shape (n_samples,)
            Labels.

        Returns
        -------
        embeddings : ndarray of shape (n_samples, n_features_out), float32
        """
        return self.fit(X, y).transform(X)

    def predict_proba(self, X):
        """Class probabilities, one column per ``classes_`` entry.

        Parameters
        ----------
        X : images
            As in :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "net_")
        source = self._check_input(X)
        if self._fast(source):
            return self._head_proba(self._embeddings(source))
        if self.finetune == "linear":
            feats = self._embed(self._frozen_embed, source, self.data_config_)
            proba = self.net_.predict_proba(torch.as_tensor(feats))
        else:
            proba = self.net_.predict_proba(self._dataset(source, None, self.data_config_))
        return np.asarray(proba, dtype=np.float64)

    def predict(self, X):
        """Predicted class labels (``classes_`` values, not indices).

        Parameters
        ----------
        X : images
            As in :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)  # checks fitted before touching classes_
        return self.classes_[np.argmax(proba, axis=1)]

    def transform(self, X):
        """Embeddings of ``X``: the adapted backbone's after fit, the pretrained one's before.

        Parameters
        ----------
        X : images
            As in :meth:`fit`.

        Returns
        -------
        embeddings : ndarray of shape (n_samples, n_features_out), float32
        """
        self._validate_params()
        source = self._check_input(X)
        return self._embeddings(source)

    def _head(self):
        if not hasattr(self, "net_"):
            raise NotFittedError(
                "This PEALClassifier is not fitted yet: its linear head (coef_, intercept_) "
                "exists after fit."
            )
        return self._mode().head(self._trained_module())

    @property
    def coef_(self):
        """The linear head's weights, shape (n_classes, n_features_out) (a copy)."""
        return self._head().weight.detach().float().cpu().numpy().copy()

    @property
    def intercept_(self):
        """The linear head's bias, shape (n_classes,) (a copy)."""
        return self._head().bias.detach().float().cpu().numpy().copy()

    def __sklearn_tags__(self):
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        # transform() gives embeddings (float32), not a transformed copy of X
        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        return tags
