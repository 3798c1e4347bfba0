"""PEALClassifier's fast path: the network split at the adapted blocks, frozen parts computed
once per image, adapters merged for inference, each part on the engine that runs it fastest.

* :func:`split_backbone` cuts a timm ViT or an EfficientNet-style CNN before its last
  ``k`` blocks: a frozen *prefix* (images -> the activations entering block ``-k``) and
  the adapted *suffix* (those activations -> the pooled embedding);
* :class:`FrozenPart` runs a frozen module (the whole backbone for linear probing, the
  prefix for LoRA) over images with the engine and precision measured fastest
  (:mod:`._autotune`), through the embedder's batched input pipeline, and keeps every
  image's result in a :class:`~._store.RowStore`: computed once per image, in any
  later ``fit``, ``predict_proba`` or ``transform``;
* :func:`merged_copy` folds LoRA adapters into a copy of the weights (``W + B A``), which
  then runs as a plain network: no adapter branch at inference.
"""

# SPDX-License-Identifier: BSD-3-Clause

import copy
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import _autotune
from ._embedder import AUTO_ONNX_MIN_IMAGES, _auto_batch_size
from ._engines import (
    OnnxEngine,
    TorchEngine,
    export_key,
    onnx_available,
    onnx_cache_dir,
    run_batches,
)
from ._pipeline import Preprocessor, iter_batches
from ._store import get_store, row_keys, subset
from ._torch_utils import resolve_precision

__all__ = [
    "FrozenPart",
    "choose_training",
    "suffix_choice",
    "Split",
    "merged_copy",
    "run_images",
    "run_module",
    "split_backbone",
]


class Split:
    """Where and how a backbone is cut: ``prefix(x)`` then ``suffix(t)`` is ``backbone(x)``.

    Parameters
    ----------
    kind : {"vit", "cnn"}
    cut : int
        Index of the first block of the suffix.
    """

    def __init__(self, kind, cut):
        self.kind = kind
        self.cut = int(cut)

    def __repr__(self):
        return f"Split({self.kind!r}, cut={self.cut})"

    def prefix(self, b, x):
        if self.kind == "vit":
            x = b.norm_pre(b.patch_drop(b._pos_embed(b.patch_embed(x))))
        else:
            x = b.bn1(b.conv_stem(x))
        for block in b.blocks[: self.cut]:
            x = block(x)
        return x

    def suffix(self, b, t):
        for block in b.blocks[self.cut :]:
            t = block(t)
        if self.kind == "vit":
            return b.forward_head(b.norm(t), pre_logits=True)
        return b.forward_head(b.bn2(b.conv_head(t)), pre_logits=True)

    def prefix_modules(self, b):
        """The modules the prefix runs (frozen when the suffix alone is adapted)."""
        names = ("patch_embed", "norm_pre") if self.kind == "vit" else ("conv_stem", "bn1")
        return [getattr(b, n) for n in names] + list(b.blocks[: self.cut])


_VIT_PARTS = ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm")
_CNN_PARTS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")


def split_backbone(backbone, last_blocks):
    """A :class:`Split` before the last ``last_blocks`` blocks, or None when not possible.

    Supported: timm ViTs (DINOv2 included) and timm's EfficientNet family (EfficientNet,
    EfficientNet-Lite, MobileNet-style networks with ``conv_stem`` / ``blocks`` /
    ``conv_head``), where a "block" is an entry of ``backbone.blocks`` (a transformer
    block; a CNN stage).
    """
    if not last_blocks or not hasattr(backbone, "forward_head"):
        return None
    if all(hasattr(backbone, a) for a in _VIT_PARTS):
        kind = "vit"
    elif all(hasattr(backbone, a) for a in _CNN_PARTS):
        kind = "cnn"
    else:
        return None
    n_blocks = len(backbone.blocks)
    if not 0 < last_blocks < n_blocks:
        return None
    return Split(kind, n_blocks - last_blocks)


class PrefixModule(nn.Module):
    """The frozen prefix of ``backbone`` as a module (for an engine or an ONNX export)."""

    def __init__(self, backbone, split):
        super().__init__()
        self.backbone = backbone
        self.split = split

    def forward(self, x):
        return self.split.prefix(self.backbone, x)


class SuffixModule(nn.Module):
    """The suffix of ``backbone`` as a module: activations -> embeddings."""

    def __init__(self, backbone, split):
        super().__init__()
        self.backbone = backbone
        self.split = split

    def forward(self, t):
        return self.split.suffix(self.backbone, t)


def merged_copy(module):
    """A copy of ``module`` with every LoRA adapter merged into its base layer.

    The copy computes ``W x + (alpha / r) B A x`` as one layer of weights
    ``W + (alpha / r) B A`` (peft's ``merge``), and the adapter wrappers are replaced by
    their base layers: a plain network, exportable and as fast as the pretrained one.
    Differences from the unmerged module are float32 rounding (tested: probabilities
    within 1e-4).
    """
    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(module)
    for name, layer in list(merged.named_modules()):
        if isinstance(layer, LoraLayer):
            layer.merge()
            parent_name, _, child = name.rpartition(".")
            parent = merged.get_submodule(parent_name) if parent_name else merged
            setattr(parent, child, layer.get_base_layer())
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged.eval()


def _batches_of(values, batch_size):
    for start in range(0, len(values), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(values[start : start + batch_size]))


def suffix_choice(make_suffix, ident, token_shape, *, device, engine, precision, named):
    """The engine x precision that runs the adapted suffix fastest on stored activations.

    Timed once per machine on the pristine suffix (``make_suffix()``; the adapters do not
    change its speed), like the frozen parts. ONNX Runtime then runs an export of each
    fit's merged suffix, made in memory (under a second for Lite0's last stage).
    """
    on_cpu = torch.device(device).type == "cpu"
    onnx_ok = on_cpu and named and onnx_available()
    pairs = _autotune.candidates(device, engine=engine, precision=precision, onnx_ok=onnx_ok)
    if not pairs:
        pairs = [("torch", "fp32" if precision == "auto" else precision)]
    suffix = []

    def make(name, prec):
        if not suffix:
            suffix.append(make_suffix())
        if name == "onnxruntime":
            return OnnxEngine(suffix[0], token_shape, None)
        return TorchEngine(suffix[0], device, prec)

    return _autotune.choose(
        ("suffix", ident), make, token_shape, device=device, batch_size=SUFFIX_BATCH, pairs=pairs
    )


#: rows of stored activations per batch of the adapted suffix: EfficientNet-Lite0's last
#: two stages (112 x 8 x 8 rows) on a 2-core AVX512-BF16 CPU ran at 2,770 / 2,918 / 2,448 /
#: 1,648 rows/s in torch bf16 at 64 / 128 / 256 / 512 rows per batch (ONNX Runtime: 1,788 /
#: 1,970 / 1,748 / 1,765): larger batches leave the caches
SUFFIX_BATCH = 128


def run_module(module, values, *, device, choice, progress=False):
    """``module`` (the merged suffix) over stored activations ``values``, float32 out.

    On the engine of ``choice``: ONNX Runtime runs an in-memory export of these weights
    when at least ``AUTO_ONNX_MIN_IMAGES`` rows are asked for, torch otherwise (and if
    the export disagrees with torch on its first batch).
    """
    token_shape = tuple(values.shape[1:])
    engine = None
    if choice.engine == "onnxruntime" and len(values) >= AUTO_ONNX_MIN_IMAGES:
        try:
            engine = OnnxEngine(module, token_shape, None)
        except Exception:  # an export that fails: torch
            engine = None
    if engine is None:
        engine = TorchEngine(module, device, choice.best_for("torch"))
    batches = _batches_of(values, SUFFIX_BATCH)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-len(values) // SUFFIX_BATCH), desc="adapted blocks")

    def fallback():
        return TorchEngine(module, device, choice.best_for("torch"))

    return run_batches(engine, batches, fallback)


def choose_training(module, ident, input_shape, *, device, precision, batch_size):
    """The precision and memory layout in which ``module`` trains fastest here.

    Which one wins depends on the network and the CPU (EfficientNet-Lite0's last two
    stages on an AVX512-BF16 CPU: 351, 339, 329 and 251 images/s for fp32 channels-last,
    bf16 channels-last, bf16 and fp32 contiguous), so a few optimiser steps on a copy of
    ``module`` are timed (float32 and, where native, bfloat16; both layouts for a CNN),
    once per machine.

    Returns
    -------
    layout : {"contiguous", "channels_last"}
    precision : {"fp32", "bf16"}
    """
    precisions = [precision]
    if precision == "auto":
        precisions = [p for e, p in _autotune.candidates(device) if e == "torch" and p != "fp16"]
    convolutional = len(input_shape) == 3 and any(
        isinstance(m, nn.Conv2d) for m in module.modules()
    )
    layouts = ["contiguous", "channels_last"] if convolutional else ["contiguous"]
    pairs = [(layout, p) for layout in layouts for p in precisions]

    def make(layout, prec):
        trial = copy.deepcopy(module).to(device)
        trial.precision = prec
        if layout == "channels_last":
            trial = trial.to(memory_format=torch.channels_last)
        trial.train()
        params = [p for p in trial.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-6)

        def step(batch):
            batch = batch.to(device)
            if layout == "channels_last":
                batch = batch.contiguous(memory_format=torch.channels_last)
            opt.zero_grad()
            out = trial(batch)
            out.float().logsumexp(dim=1).mean().backward()
            opt.step()

        step.name, step.precision = layout, prec
        return step

    choice = _autotune.choose(
        ("train", ident), make, input_shape, device=device, batch_size=batch_size, pairs=pairs
    )
    return choice.engine, choice.precision


def _run_engine(engine, source, data_config, batch_size, progress, fallback=None):
    pre = Preprocessor(data_config, channels_last=engine.channels_last)
    return run_batches(engine, iter_batches(source, pre, batch_size, progress=progress), fallback)


def run_images(model, source, data_config, *, device, choice, precision=None, progress=False):
    """A (merged, adapted) network over images, on the engine ``choice`` found fastest.

    ``choice`` is the pristine network's (same architecture, same speed). ONNX Runtime
    needs an export of these weights, made in memory (a few seconds): only for inputs of
    at least ``AUTO_ONNX_MIN_IMAGES`` images, torch otherwise. ``precision`` forces the
    precision (torch).
    """
    input_shape = tuple(int(s) for s in data_config["input_size"])
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    use_onnx = (
        precision is None and choice.engine == "onnxruntime" and len(source) >= AUTO_ONNX_MIN_IMAGES
    )
    if use_onnx:
        try:
            engine = OnnxEngine(model, input_shape, None)
        except Exception:  # an export that fails: torch
            use_onnx = False
    if not use_onnx:
        engine = TorchEngine(model, device, precision or choice.best_for("torch"))
    batch = _auto_batch_size(input_shape[-1], device, engine.name, convolutional=convolutional)

    def fallback():
        return TorchEngine(model, device, choice.best_for("torch"))

    return _run_engine(engine, source, data_config, batch, progress, fallback)


class FrozenPart:
    """A frozen module run over images on the fastest engine, each image's result stored.

    Parameters
    ----------
    module : torch.nn.Module
        Frozen (never modified): the pristine backbone, or its :class:`PrefixModule`.
    ident : tuple
        The module's identity (backbone configuration, split): keys the store, the ONNX
        export and the engine choice.
    data_config : dict
        The backbone's preprocessing.
    device : str
    engine : {"auto", "torch", "onnxruntime"}
    precision : {"auto", "fp32", "bf16", "fp16"}
    exportable : bool
        Whether the weights are fixed (a named backbone with pretrained weights or a
        checkpoint): the ONNX export may then be cached on disk.
    cache_dir : path-like or None
        Where the store (and the export) live; None: in memory (the export in the user
        cache folder).
    store_dtype : {"float32", "float16"}
    progress : bool
    """

    def __init__(
        self,
        module,
        ident,
        data_config,
        *,
        device,
        engine="auto",
        precision="auto",
        exportable=False,
        cache_dir=None,
        store_dtype="float32",
        progress=False,
        named=True,
    ):
        self.module = module.eval()
        self.ident = ident
        self.data_config = data_config
        self.device = device
        self.engine = engine
        self.exportable = exportable
        self.cache_dir = cache_dir
        self.progress = progress
        self.input_shape = tuple(int(s) for s in data_config["input_size"])
        on_cpu = torch.device(device).type == "cpu"
        self.convolutional = any(isinstance(m, nn.Conv2d) for m in module.modules())
        onnx_ok = on_cpu and named and onnx_available()
        pairs = _autotune.candidates(device, engine=engine, precision=precision, onnx_ok=onnx_ok)
        if not pairs and engine in ("auto", "torch") and precision != "auto":
            # an explicit precision this device would emulate: as asked, with a warning
            pairs = [("torch", resolve_precision(precision, device))]
        if not pairs:
            raise ValueError(
                f"engine={engine!r} cannot run precision={precision!r} on device={device!r}; "
                "use engine='auto' or precision='auto'."
            )
        batch = self._batch_size(pairs[0][0])
        self.choice = _autotune.choose(
            ("frozen", ident, batch),
            self._make_engine,
            self.input_shape,
            device=device,
            batch_size=batch,
            pairs=pairs,
        )
        with torch.inference_mode():
            probe = self.module(torch.zeros((1, *self.input_shape)))
        self.item_shape = tuple(probe.shape[1:])
        store_ident = (ident, self.choice.engine, self.choice.precision)
        self.store = get_store(store_ident, self.item_shape, dtype=store_dtype, cache_dir=cache_dir)

    def _batch_size(self, engine):
        return _auto_batch_size(
            self.input_shape[-1], self.device, engine, convolutional=self.convolutional
        )

    def _make_engine(self, name, precision):
        if name == "onnxruntime":
            path = None
            if self.exportable:
                folder = onnx_cache_dir() if self.cache_dir is None else Path(self.cache_dir)
                path = folder / export_key(("frozen-part", self.ident))
            return OnnxEngine(self.module, self.input_shape, path)
        return TorchEngine(self.module, self.device, precision)

    def _compute(self, source):
        """The module's outputs for ``source`` (every image), float32."""
        name, precision = self.choice.engine, self.choice.precision
        if name == "onnxruntime" and len(source) < AUTO_ONNX_MIN_IMAGES and self.engine == "auto":
            name, precision = "torch", self.choice.best_for("torch")
        engine = self._make_engine(name, precision)

        def fallback():
            return TorchEngine(self.module, self.device, self.choice.best_for("torch"))

        fallback = None if self.engine != "auto" else fallback
        return _run_engine(
            engine, source, self.data_config, self._batch_size(name), self.progress, fallback
        )

    def __call__(self, source, keys=None):
        """Stored (or now computed) outputs for every image of ``source``, float32."""
        if keys is None:
            keys = row_keys(source)
        # at most 4,096 images a segment: a killed pass keeps the segments it finished
        return self.store.fill(keys, lambda index: self._compute(subset(source, index)), chunk=4096)


def fixed_weights(backbone, pretrained, checkpoint_path):
    """Whether the backbone's weights are the same in every process (exportable to disk)."""
    return isinstance(backbone, str) and (pretrained or checkpoint_path is not None)


def checkpoint_ident(checkpoint_path):
    """A checkpoint's identity in cache keys: path, size and modification time."""
    if checkpoint_path is None:
        return None
    path = os.fspath(checkpoint_path)
    if os.path.isfile(path):
        st = os.stat(path)
        return (path, st.st_size, st.st_mtime_ns)
    return path
