"""The torch modules and skorch nets behind :class:`PEALClassifier`."""

# SPDX-License-Identifier: BSD-3-Clause

import torch
from skorch import NeuralNetClassifier
from skorch.hf import AccelerateMixin
from torch import nn

from ._torch_utils import autocast

__all__ = ["PEALModule"]


class PEALModule(nn.Module):
    """Backbone + linear head; the forward pass runs under bf16 autocast when asked.

    With ``split`` set (a :class:`~._fast.Split`), the backbone is cut before its adapted
    blocks: ``prefix`` maps images to the activations entering them and ``embed_tokens``
    finishes the forward pass, so the frozen prefix can be computed once per image and
    reused. While ``token_input`` is True, ``forward`` takes those activations instead of
    images.

    With ``frozen_norm`` (LoRA: the backbone's own weights are frozen), the backbone's
    batch-normalisation layers and the frozen prefix stay in evaluation mode while
    training: their statistics are the pretrained ones (batch statistics of a few dozen
    labelled images would replace them), and the prefix computes the same function in
    training as at inference, so its stored outputs are exact.
    """

    def __init__(self, backbone, n_features, n_classes, precision="fp32", split=None, *,
                 frozen_norm=False):  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(n_features, n_classes)
        self.precision = precision
        self.split = split
        self.frozen_norm = frozen_norm
        self.token_input = False
        #: run in channels-last memory (set with the module's own memory format)
        self.channels_last = False

    def train(self, mode=True):
        super().train(mode)
        if mode and self.frozen_norm:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
            if self.split is not None:
                for m in self.split.prefix_modules(self.backbone):
                    m.eval()
        return self

    def prefix(self, x):
        with autocast(x, self.precision):
            return self.split.prefix(self.backbone, x).float()

    def embed_tokens(self, t):
        with autocast(t, self.precision):
            return self.split.suffix(self.backbone, t).float()

    def embed(self, x):
        if self.split is not None:
            return self.embed_tokens(self.prefix(x))
        with autocast(x, self.precision):
            return self.backbone(x).float()

    def forward(self, x):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.embed_tokens(x) if self.token_input else self.embed(x))


class AcceleratedNeuralNetClassifier(AccelerateMixin, NeuralNetClassifier):
    """skorch's classifier net with :class:`skorch.hf.AccelerateMixin` (``accelerator``).

    accelerate keeps a reference to every data loader it prepares (for its
    ``save_state``); this net prepares one per ``fit`` / ``predict_proba`` call, so it
    drops its own from that list: an active-learning loop does not keep every pool alive.
    """

    def _initialize_accelerator(self):
        # accelerate (1.15) wraps every module it prepares for CPU processes in
        # DistributedDataParallel, which refuses one without trainable parameters such as
        # the loss (for GPU processes accelerate leaves those unwrapped): the criteria
        # without trainable parameters are not prepared
        criteria = self._criteria

        def trainable(name):
            criterion = getattr(self, name + "_", None)
            return isinstance(criterion, nn.Module) and any(
                p.requires_grad for p in criterion.parameters()
            )

        self._criteria = [name for name in criteria if trainable(name)]
        try:
            return super()._initialize_accelerator()
        finally:
            self._criteria = criteria

    def get_iterator(self, *args, **kwargs):
        iterator = super().get_iterator(*args, **kwargs)
        loaders = getattr(self.accelerator, "_dataloaders", None)
        if isinstance(loaders, list) and loaders and loaders[-1] is iterator:
            loaders.pop()
        return iterator

    def __setstate__(self, state):
        # skorch maps device=None (accelerate places the tensors) to the CPU, with a
        # warning; a copy of this net belongs on the accelerator's device instead
        placed = state.get("device") is None and state.get("accelerator") is not None
        if placed:
            state["device"] = str(state["accelerator"].device)
        super().__setstate__(state)
        if placed:
            self.device = None
