"""Inference engines of :class:`BackboneEmbedder`: torch, and ONNX Runtime on the CPU.

* :class:`TorchEngine` runs the backbone under ``torch.inference_mode`` and autocast,
  with channels-last memory for convolutional networks (oneDNN's fast layout);
* :class:`OnnxEngine` runs an ONNX export of the backbone with ONNX Runtime's CPU
  provider (the ``[onnx]`` extra). The export is made once and cached on disk (in
  ``cache_dir``, or the user cache folder) under a key of the backbone's configuration
  and the torch / timm versions, like the embedding cache; its output is checked against
  torch's on the first batch of every new export.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import copy
import hashlib
import importlib.util
import io
import os
import threading
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils._io import write_atomic
from ._torch_utils import autocast

__all__ = [
    "ExportMismatch",
    "OnnxEngine",
    "TorchEngine",
    "onnx_available",
    "onnx_cache_dir",
    "run_batches",
]

#: ONNX opset of the export (ONNX Runtime >= 1.14 runs it)
OPSET = 17
#: the export's own version, in its cache key: 2 = static "same" padding
#: (:func:`static_same_padding`); an export of another version is made again
EXPORT_VERSION = 2
#: largest |onnx - torch| allowed on the check batch, relative to max |torch| (float32
#: kernels summing in other orders differ by about 1e-6 of the scale)
CHECK_RTOL = 1e-3
#: whether ONNX Runtime's idle worker threads spin (busy-wait) for work. Off: on a machine
#: whose cores are shared (scikit-learn, faiss, other processes) spinning threads take the
#: cores the busy ones need, and the backbones' operators are long enough that waking a
#: sleeping thread costs nothing measurable (``benchmarks/bench_embed.py`` compares both)
ALLOW_SPINNING = False


class ExportMismatch(RuntimeError):
    """The ONNX export's output differs from the torch model's."""


_sessions = weakref.WeakKeyDictionary()  # model -> {(path or None, threads, spin): session}
_lock = threading.Lock()


def onnx_available():
    """Whether ONNX Runtime and the ONNX package (needed by the exporter) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def onnx_cache_dir():
    """Where exports go without ``cache_dir``: ``$PEAL_SK_CACHE_DIR/onnx`` or the user cache.

    ``$XDG_CACHE_HOME/peal_sk/onnx`` (``~/.cache/peal_sk/onnx`` by default).
    """
    root = os.environ.get("PEAL_SK_CACHE_DIR")
    if root:
        return Path(root) / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "peal_sk" / "onnx"


def _has_convolutions(model):
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    return convs > 1  # a ViT's patch embedding alone does not count


class TorchEngine:
    """The backbone in torch: inference mode, autocast, channels-last for CNNs.

    Parameters
    ----------
    model : torch.nn.Module
        The pristine backbone (not modified: a copy is made when needed).
    device : str
    precision : {"fp32", "bf16", "fp16"}

    Attributes
    ----------
    channels_last : bool
        Whether the model runs in channels-last memory (CNNs), which is then also the
        input layout it takes without a copy.
    """

    name = "torch"

    def __init__(self, model, device, precision):
        self.channels_last = _has_convolutions(model)
        if device != "cpu" or self.channels_last:  # the pristine model is shared
            model = copy.deepcopy(model).to(device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.device = device
        self.precision = precision

    def __call__(self, xb):
        """Embeddings of a batch, float32 on the CPU."""
        with torch.inference_mode():
            xb = xb.to(self.device, non_blocking=True)
            if self.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(xb, self.precision):
                return self.model(xb).float().cpu()


def run_batches(engine, batches, fallback=None):
    """``engine`` over ``batches`` (closed at the end, if it can be), as one float32 array.

    Parameters
    ----------
    engine : callable
        Batch -> float32 CPU tensor (:class:`TorchEngine`, :class:`OnnxEngine`).
    batches : iterable of torch.Tensor
    fallback : callable or None, default=None
        ``fallback()`` returns the engine that takes over when an ONNX export disagrees
        with torch on its first batch (:class:`ExportMismatch`); None lets it raise.

    Returns
    -------
    out : ndarray of float32
    """
    out = []
    try:
        for xb in batches:
            try:
                out.append(engine(xb))
            except ExportMismatch:
                if fallback is None:
                    raise
                engine = fallback()
                out.append(engine(xb))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def static_same_padding(model, input_size):
    """``model``, or a copy whose TF-style "same" convolutions pad by constants.

    timm's ``Conv2dSame`` (the ``tf_*`` models, e.g. ``tf_efficientnet_lite0``, the
    weights of ``"efficientnet_lite0"``) works its padding out from the input's shape at
    every call. Exported, that is a subgraph of shape arithmetic and a Pad of the whole
    activation in front of each such convolution, which ONNX Runtime can neither fold nor
    fuse: Lite0 ran about 1.3x slower than the same network with static padding. The
    export's input size is fixed (only the batch axis is dynamic), so each padding is a
    constant: the copy pads by it (``nn.ZeroPad2d``) before a plain ``nn.Conv2d`` with the
    same weights, the same arithmetic, which ONNX Runtime folds into the convolution.
    """
    from timm.layers import Conv2dSame, get_same_padding

    same = [name for name, m in model.named_modules() if type(m) is Conv2dSame]
    if not same:
        return model
    sizes = {name: set() for name in same}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda mod, args, name=name: sizes[name].add(tuple(args[0].shape[-2:]))
        )
        for name in same
    ]
    try:
        with torch.inference_mode():
            model(torch.zeros((1, *input_size), dtype=torch.float32))
    finally:
        for hook in hooks:
            hook.remove()
    # a module called on inputs of several sizes (shared), or never, keeps its padding
    same = [name for name in same if len(sizes[name]) == 1]
    if not same:
        return model
    sizes = {name: sizes[name].pop() for name in same}
    model = copy.deepcopy(model)
    for name in same:
        conv = model.get_submodule(name)
        # split as timm's pad_same does: the odd pixel goes after
        geometry = zip(sizes[name], conv.kernel_size, conv.stride, conv.dilation, strict=True)
        pad_h, pad_w = (get_same_padding(size, k, st, dil) for size, k, st, dil in geometry)
        top, bottom = pad_h // 2, pad_h - pad_h // 2
        left, right = pad_w // 2, pad_w - pad_w // 2
        plain = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        plain.load_state_dict(conv.state_dict())
        parent, _, child = name.rpartition(".")
        setattr(
            model.get_submodule(parent) if parent else model,
            child,
            nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), plain).eval(),
        )
    return model


def _export(model, input_size, target):
    """ONNX export of ``model`` (CPU, float32) with a dynamic batch axis."""
    model = static_same_padding(model, input_size)
    dummy = torch.zeros((2, *input_size), dtype=torch.float32)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            target,
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "n"}, "embeddings": {0: "n"}},
            opset_version=OPSET,
            dynamo=False,
        )


def export_key(ident):
    """The file name of an export: a digest of the backbone identity and the versions."""
    import timm

    text = repr((ident, torch.__version__, timm.__version__, OPSET, EXPORT_VERSION))
    return f"onnx-{hashlib.sha256(text.encode()).hexdigest()[:32]}.onnx"


class OnnxEngine:
    """The backbone exported to ONNX and run by ONNX Runtime (CPU, float32).

    Parameters
    ----------
    model : torch.nn.Module
        The pristine backbone (CPU, eval mode; not modified).
    input_size : tuple of int
        ``(3, H, W)``.
    path : pathlib.Path or None
        Where the export is cached; None exports in memory (a user factory backbone).
    n_threads : int or None, default=None
        ONNX Runtime's intra-op threads; ``torch.get_num_threads()`` when None, so that
        one setting (``torch.set_num_threads``) governs both engines.
    """

    name = "onnxruntime"
    #: the input layout it takes without a copy: contiguous NCHW
    channels_last = False

    def __init__(self, model, input_size, path, n_threads=None):
        import onnxruntime as ort

        self.n_threads = int(n_threads or torch.get_num_threads())
        self._key = (None if path is None else os.fspath(path), self.n_threads, ALLOW_SPINNING)
        with _lock:
            cached = _sessions.get(model, {}).get(self._key)
        self.checked = cached is not None  # a cached session passed the check
        if cached is None:
            source = self._exported(model, input_size, path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.n_threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            spin = "1" if ALLOW_SPINNING else "0"
            options.add_session_config_entry("session.intra_op.allow_spinning", spin)
            options.add_session_config_entry("session.inter_op.allow_spinning", spin)
            cached = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.session = cached
        self.model = model

    @staticmethod
    def _exported(model, input_size, path):
        """The export's file name (written now when missing) or bytes (no path)."""
        if path is not None and path.is_file():
            return os.fspath(path)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                path = None  # not writable: export in memory
        if path is None:
            buf = io.BytesIO()
            _export(model, input_size, buf)
            return buf.getvalue()
        write_atomic(path, lambda name: _export(model, input_size, name), by_name=True)
        return os.fspath(path)

    def __call__(self, xb):
        """Embeddings of a batch, float32 on the CPU.

        The first batch of a new export is also run by torch, and a disagreement raises
        :class:`ExportMismatch` (the session is then not reused).
        """
        x = np.ascontiguousarray(xb.numpy(), dtype=np.float32)
        out = torch.from_numpy(self.session.run(None, {"images": x})[0])
        if not self.checked:
            with torch.inference_mode():
                ref = self.model(xb.contiguous()).float()
            scale = max(float(ref.abs().max()), 1e-12)
            err = float((out - ref).abs().max()) if out.shape == ref.shape else np.inf
            if not err <= CHECK_RTOL * scale:
                raise ExportMismatch(
                    f"the ONNX export disagrees with torch (max |difference| {err:.3g} for "
                    f"outputs up to {scale:.3g}); use engine='torch'."
                )
            self.checked = True
            with _lock:
                _sessions.setdefault(self.model, {})[self._key] = self.session
        return out
