"""Torch helpers shared by the estimator and the embedder: device, precision, backbone cache.

* :func:`resolve_device` turns ``device="auto"`` into ``"cuda"`` or ``"cpu"``;
* :func:`resolve_precision` turns ``precision="auto"`` into what the hardware runs natively
  (bfloat16 on CPUs with AVX512-BF16 or AMX and on bf16-capable GPUs, float16 on older
  GPUs where allowed, float32 elsewhere) and warns when an explicit reduced precision
  would be emulated, hence slow;
* :func:`autocast` is the matching ``torch.autocast`` context;
* :func:`pristine_backbone` loads a backbone once per process.
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import os
import warnings

import torch

from ._backbones import create_backbone

__all__ = [
    "autocast",
    "native_bf16_cpu",
    "pristine_backbone",
    "resolve_device",
    "resolve_precision",
]

#: autocast dtype of each reduced precision
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device):
    """``"auto"``: CUDA when available, else the CPU; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _cpu_flag(name):
    probe = getattr(torch.cpu, name, None)
    if not callable(probe):
        return False
    try:
        return bool(probe())
    except (RuntimeError, AttributeError):  # pragma: no cover - exotic builds
        return False


def native_bf16_cpu():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), per torch.

    Without either, oneDNN emulates bfloat16 with float32 instructions plus conversions:
    slower than plain float32 (about six times on an AVX2 CPU for EfficientNet-Lite0).
    """
    return _cpu_flag("_is_avx512_bf16_supported") or _cpu_flag("_is_amx_tile_supported")


def _cuda_bf16(device):
    try:
        index = torch.device(device).index
        if index is None:
            index = torch.cuda.current_device()
        major, _ = torch.cuda.get_device_capability(index)
    except (RuntimeError, AssertionError, ValueError):  # pragma: no cover - no CUDA
        return False
    return major >= 8  # Ampere and later compute bfloat16 natively


def _device_type(device):
    return torch.device(device).type if isinstance(device, str | torch.device) else "cpu"


def resolve_precision(precision, device, *, allow_fp16=True, name="precision"):
    """The precision to run in: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"}
        ``"auto"``: bfloat16 where the hardware computes it natively (a CPU with
        AVX512-BF16 or AMX; a CUDA GPU of compute capability 8.0 or newer), float16 on
        older CUDA GPUs when ``allow_fp16``, float32 everywhere else. An explicit value is
        returned unchanged, with a ``UserWarning`` when it would be emulated on the CPU.
    device : str
        A resolved device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    allow_fp16 : bool, default=True
        Whether ``"auto"`` may choose float16 (inference only: training under float16
        autocast would need loss scaling).
    name : str, default="precision"
        Parameter name used in the warning.

    Returns
    -------
    str
    """
    kind = _device_type(device)
    if precision == "auto":
        if kind == "cuda":
            if _cuda_bf16(device):
                return "bf16"
            return "fp16" if allow_fp16 else "fp32"
        if kind == "cpu" and native_bf16_cpu():
            return "bf16"
        return "fp32"
    if kind == "cpu" and precision == "bf16" and not native_bf16_cpu():
        warnings.warn(
            f"{name}='bf16' on a CPU without native bfloat16 (AVX512-BF16 or AMX; torch "
            f"reports {torch.backends.cpu.get_cpu_capability()}): bfloat16 is emulated and "
            f"usually several times slower than float32. Use {name}='auto' to let the "
            "machine choose.",
            UserWarning,
            stacklevel=3,
        )
    if kind == "cpu" and precision == "fp16" and not _cpu_flag("_is_amx_fp16_supported"):
        warnings.warn(
            f"{name}='fp16' on a CPU without AMX-FP16: float16 is emulated and slow. Use "
            f"{name}='auto' to let the machine choose.",
            UserWarning,
            stacklevel=3,
        )
    return precision


def autocast(x, precision):
    """``torch.autocast`` on ``x``'s device for ``"bf16"`` / ``"fp16"``, else a no-op."""
    device_type = x.device.type if x.device.type in ("cpu", "cuda") else "cpu"
    dtype = _DTYPES.get(precision, torch.bfloat16)
    return torch.autocast(device_type, dtype=dtype, enabled=precision in _DTYPES)


def pristine_backbone(backbone, pretrained, checkpoint_path, img_size, backbone_kwargs):
    """The pretrained backbone and its data config, loaded once per process.

    Callers must not modify the model (deep-copy it first). A checkpoint file is keyed by
    its path, size and modification time, so a rewritten file is loaded again.
    """
    path = None if checkpoint_path is None else os.fspath(checkpoint_path)
    stamp = None
    if path is not None and os.path.exists(path):
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    kwargs = tuple(sorted((backbone_kwargs or {}).items()))
    return _pristine_backbone(backbone, bool(pretrained), path, stamp, int(img_size), kwargs)


@functools.lru_cache(maxsize=4)
def _pristine_backbone(backbone, pretrained, checkpoint_path, stamp, img_size, kwargs_items):
    model, data_config = create_backbone(
        backbone,
        pretrained=pretrained,
        checkpoint_path=checkpoint_path,
        img_size=img_size,
        backbone_kwargs=dict(kwargs_items),
    )
    model.eval()
    return model, data_config
