"""What ``PEALClassifier(finetune=...)`` trains, resolved once into an object, and seeding."""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib

import torch
from torch import nn

from ._fast import split_backbone
from ._lora import inject_lora
from ._nets import PEALModule

__all__ = ["MODES", "fork_rng", "save_tensors"]


def fork_rng(random_state):
    """A context in which torch's global generator is seeded, restored afterwards.

    Seeding inside ``torch.random.fork_rng`` leaves the user's generator as it was
    (scikit-learn's rule: an estimator never reseeds the global generator).
    """
    if random_state is None:
        return contextlib.nullcontext()
    ctx = torch.random.fork_rng(devices=[])
    return _Seeded(ctx, int(random_state))


class _Seeded:
    def __init__(self, ctx, seed):
        self.ctx, self.seed = ctx, seed

    def __enter__(self):
        self.ctx.__enter__()
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


class _Mode:
    """What ``finetune`` trains and how, resolved once (``finetune`` names one of these)."""

    name = None

    def adapt(self, est, backbone):
        """Make the trainable part trainable; the adapted layers' names."""
        return []

    def module(self, est, backbone):
        n_classes = len(est.classes_)
        return PEALModule(backbone, est.n_features_out_, n_classes, est.precision_)

    def head(self, module):
        return module.head

    def save(self, module, folder):
        """Write what training changed besides the head."""

    def load(self, est, backbone, folder):
        """Restore what :meth:`save` wrote into ``backbone``; the module to wrap."""
        return self.module(est, backbone)


class _Linear(_Mode):
    """Linear probing: the frozen backbone's embeddings, the head trained on them."""

    name = "linear"

    def adapt(self, est, backbone):
        for p in backbone.parameters():
            if not isinstance(p, nn.parameter.UninitializedParameter):
                p.requires_grad_(False)
        return []

    def module(self, est, backbone):
        est.backbone_ = backbone.to(est._device())
        return nn.Linear(est.n_features_out_, len(est.classes_))

    def head(self, module):
        return module


class _Lora(_Mode):
    """LoRA adapters (and the head) trained; the backbone's own weights frozen."""

    name = "lora"

    def adapt(self, est, backbone):
        return inject_lora(
            backbone,
            r=est.lora_r,
            alpha=est.lora_alpha,
            dropout=est.lora_dropout,
            target_modules=est.target_modules,
            last_blocks=est.lora_last_blocks,
        )

    def module(self, est, backbone):
        split = None
        if est.lora_last_blocks and est.cache_prefix:
            split = split_backbone(backbone, est.lora_last_blocks)
        n_classes = len(est.classes_)
        return PEALModule(
            backbone, est.n_features_out_, n_classes, est.precision_, split, frozen_norm=True
        )

    def save(self, module, folder):
        from peft import get_peft_model_state_dict

        save_tensors(get_peft_model_state_dict(module.backbone), folder / "adapter_model")

    def load(self, est, backbone, folder):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        inject_lora(
            backbone,
            r=est.lora_r,
            alpha=est.lora_alpha,
            dropout=est.lora_dropout,
            target_modules=est.targets_,
        )
        set_peft_model_state_dict(backbone, load_file(folder / "adapter_model.safetensors"))
        return self.module(est, backbone)


class _Full(_Mode):
    """Every parameter of the backbone trained."""

    name = "full"

    def save(self, module, folder):
        save_tensors(module.backbone.state_dict(), folder / "backbone")

    def load(self, est, backbone, folder):
        from safetensors.torch import load_file

        backbone.load_state_dict(load_file(folder / "backbone.safetensors"))
        return self.module(est, backbone)


MODES = {mode.name: mode for mode in (_Linear(), _Lora(), _Full())}


def save_tensors(tensors, stem):
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        stem.with_name(stem.name + ".safetensors"),
    )
