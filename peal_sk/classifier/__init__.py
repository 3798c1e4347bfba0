"""The estimator half of PEAL: foundation-model backbones, LoRA and a linear head.

Needs the ``[torch]`` extra (torch, torchvision, timm, peft, skorch)::

    pip install "peal-sk[torch]"

``import peal_sk`` and every query strategy work without it; ``peal_sk.PEALClassifier``
and ``peal_sk.BackboneEmbedder`` load this package on first use.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "peal_sk.classifier needs torch, timm, peft and skorch; install them with "
        "pip install 'peal-sk[torch]'."
    ) from exc

from ._backbones import BackboneError, create_backbone, list_backbones
from ._embedder import BackboneEmbedder
from ._lora import auto_target_modules, inject_lora
from ._peal import PEALClassifier

__all__ = [
    "BackboneEmbedder",
    "BackboneError",
    "PEALClassifier",
    "auto_target_modules",
    "create_backbone",
    "inject_lora",
    "list_backbones",
]
