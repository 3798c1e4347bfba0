"""Torch helpers shared by the estimator and the embedder: device, precision, backbone cache.

* :func:`resolve_device` turns ``device="auto"`` into ``"cuda"`` or ``"cpu"``;
* :func:`resolve_precision` turns ``precision="auto"`` into what the hardware runs natively
  (bfloat16 on CPUs with AVX512-BF16 or AMX and on bf16-capable GPUs, float16 on older
  GPUs where allowed, float32 elsewhere) and warns when an explicit reduced precision
  would be emulated, hence slow;
* :func:`autocast` is the matching ``torch.autocast`` context;
* :func:`pristine_backbone` loads a backbone once per process;
* :func:`make_accelerator`, :func:`check_accelerator` and :func:`shard_loader` serve
  ``PEALClassifier(accelerator=...)`` (data-parallel training with accelerate).
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import os
import warnings

import torch

from ._backbones import create_backbone

__all__ = [
    "autocast",
    "check_accelerator",
    "make_accelerator",
    "native_bf16_cpu",
    "pristine_backbone",
    "resolve_device",
    "resolve_precision",
    "shard_loader",
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
    pretrained = pretrained if pretrained == "local" else bool(pretrained)
    return _pristine_backbone(backbone, pretrained, path, stamp, int(img_size), kwargs)


#: seed of the random weights of ``pretrained=False`` without a checkpoint
RANDOM_WEIGHTS_SEED = 0


@functools.lru_cache(maxsize=4)
def _pristine_backbone(backbone, pretrained, checkpoint_path, stamp, img_size, kwargs_items):
    def create():
        return create_backbone(
            backbone,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            img_size=img_size,
            backbone_kwargs=dict(kwargs_items),
        )

    if pretrained or checkpoint_path is not None:
        model, data_config = create()
    else:
        # randomly initialised weights are drawn from a fixed seed, leaving the caller's
        # torch generator untouched: the same weights in every process, so embeddings
        # and ONNX exports cached on disk, and the processes of a distributed fit,
        # all agree (they would hold another process's draw otherwise)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model, data_config = create()
    model.eval()
    return model, data_config


# -- accelerate ---------------------------------------------------------------------------
def make_accelerator(device="auto"):
    """The :class:`accelerate.Accelerator` of ``accelerator="auto"``, configured by the launcher.

    ``accelerate launch`` passes its settings (number of processes, ``--mixed_precision``,
    ``--gradient_accumulation_steps``) through environment variables, which
    ``Accelerator()`` reads; ``device="cpu"`` asks for ``cpu=True`` (no GPU, the gloo
    backend between processes).
    """
    try:
        from accelerate import Accelerator
    except ImportError as exc:  # pragma: no cover - accelerate is in the tests extra
        raise ImportError(
            "accelerator='auto' needs accelerate; install it with "
            "pip install 'peal-sk[accelerate]'."
        ) from exc
    return Accelerator(cpu=device == "cpu")


def check_accelerator(accelerator, device, precision):
    """The device and training precision an accelerator implies, checked against the params.

    Parameters
    ----------
    accelerator : accelerate.Accelerator
    device : str
        The estimator's ``device``: ``"auto"`` follows the accelerator; anything else must
        name the accelerator's device (accelerate places each process on its own).
    precision : {"auto", "fp32", "bf16"}
        The estimator's ``precision``. With the accelerator's ``mixed_precision="no"`` it is
        resolved as without accelerate (bfloat16 only on native hardware for ``"auto"``).
        With ``"bf16"`` / ``"fp16"``, ``"auto"`` follows the accelerator, the same value
        agrees, and anything else contradicts it.

    Returns
    -------
    device : str
    precision : {"fp32", "bf16", "fp16"}

    Raises
    ------
    ValueError
        When ``device`` or ``precision`` contradicts the accelerator, or for a mixed
        precision other than "no", "bf16" and "fp16".
    """
    have = torch.device(accelerator.device)
    if device != "auto":
        want = torch.device(device)
        if want.type != have.type or (
            want.index is not None and have.index is not None and want.index != have.index
        ):
            raise ValueError(
                f"device={device!r} contradicts the accelerator, which runs this process on "
                f"{have}: accelerate places each process on its device. Leave device='auto' "
                "with an accelerator (or pass Accelerator(cpu=True) to train on the CPU)."
            )
    mixed = str(getattr(accelerator, "mixed_precision", "no") or "no")
    if mixed == "no":
        return str(have), resolve_precision(precision, have, allow_fp16=False)
    if mixed not in _DTYPES:
        raise ValueError(
            f"The accelerator's mixed_precision={mixed!r} is not supported by "
            "PEALClassifier; use 'no', 'bf16' or 'fp16'."
        )
    if precision not in ("auto", mixed):
        raise ValueError(
            f"precision={precision!r} contradicts the accelerator's "
            f"mixed_precision={mixed!r}. Pass precision='auto' (or {mixed!r}) to train in "
            f"{mixed} under the accelerator, or an Accelerator with mixed_precision='no' "
            f"(accelerate launch --mixed_precision no) to keep precision={precision!r}."
        )
    # warns when the accelerator asks for bfloat16 / float16 that this CPU emulates
    return str(have), resolve_precision(mixed, have, name="accelerator.mixed_precision")


def shard_loader(loader, accelerator):
    """``loader`` split across the accelerator's processes (unchanged for one process).

    Batches are dealt to the processes in turn (``even_batches``: the last ones are
    padded by repeating samples); ``accelerator.gather_for_metrics`` on each batch's
    output returns the whole batch sequence in the original order, padding dropped.
    The caller moves the batches to the device.
    """
    if accelerator is None or accelerator.num_processes <= 1:
        return loader
    from accelerate.data_loader import prepare_data_loader

    return prepare_data_loader(
        loader,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
        put_on_device=False,
        even_batches=True,
    )
