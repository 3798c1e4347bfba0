"""PEALClassifier's inference: the fast path (frozen parts stored per image, merged adapters,
one pool pass for probabilities and embeddings) and the plain torch path it replaces."""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import os
import weakref

import numpy as np
import torch

from ._fast import (
    FrozenPart,
    PrefixModule,
    SuffixModule,
    checkpoint_ident,
    choose_training,
    fixed_weights,
    merged_copy,
    run_images,
    run_module,
    suffix_choice,
)
from ._store import RowStore, row_keys, subset
from ._torch_utils import check_accelerator, resolve_precision

__all__ = []

#: frozen parts (pristine backbones, prefixes) with their per-image stores, per
#: configuration: shared by every fit and clone in the process (the four last used)
_frozen_parts = {}
#: per fitted net: the merged network and the embeddings it computed (dropped with the net)
_fitted_state = weakref.WeakKeyDictionary()


class _FastInferenceMixin:
    """Embeddings and probabilities of PEALClassifier, through the fast path where it applies."""

    def _choose_training(self, module, source, frozen, split):
        """Train in the precision and memory layout measured fastest (``precision="auto"``).

        Sets ``precision_`` (and the module's); skipped under an accelerator with a mixed
        precision of its own, on several processes and for feature vectors.
        """
        accelerator = self._accelerator()
        mixed = str(getattr(accelerator, "mixed_precision", "no") or "no")
        if frozen is None or mixed != "no":  # several processes, or accelerate's precision
            return
        if split is not None:
            input_shape = frozen.item_shape
        else:
            input_shape = tuple(int(s) for s in self.data_config_["input_size"])
        module.token_input = split is not None
        try:
            layout, precision = choose_training(
                module,
                (self._ident(), repr(split), self.finetune, len(self.classes_)),
                input_shape,
                device=self._device(),
                precision=self.precision,
                batch_size=self.batch_size,
            )
        finally:
            module.token_input = False
        self.precision_ = module.precision = precision
        if layout == "channels_last":
            module.to(memory_format=torch.channels_last)
            module.channels_last = True

    def _fast(self, source):
        """Whether ``source`` goes through the fast path (images, one process).

        Several accelerate processes take the plain path, which splits the images
        between them.
        """
        accelerator = self._accelerator()
        one_process = accelerator is None or accelerator.num_processes <= 1
        return source.kind != "features" and one_process

    def _ident(self):
        return (
            self.backbone if isinstance(self.backbone, str) else repr(self.backbone),
            bool(self.pretrained),
            checkpoint_ident(self.checkpoint_path),
            repr(sorted((self.backbone_kwargs or {}).items())),
            int(self.img_size),
            str(self._device()),
        )

    def _frozen_part(self, source, split=None):
        """The frozen part of the network for ``source``'s images, or None (plain path).

        The pristine backbone (linear probing, or ``transform`` before ``fit``), or the
        prefix before the adapted blocks (``split``); one per configuration and process,
        shared by every fit and clone, with its per-image store.
        """
        if not self._fast(source):
            return None
        key = (
            self._ident(),
            repr(split),
            self.engine,
            self.precision,
            None if self.cache_dir is None else os.fspath(self.cache_dir),
            self.cache_dtype,
        )
        part = _frozen_parts.get(key)
        if part is None:
            model, config = self._backbone_and_config()
            module = model if split is None else PrefixModule(model, split)
            fixed = fixed_weights(self.backbone, self.pretrained, self.checkpoint_path)
            part = FrozenPart(
                module,
                (self._ident(), repr(split)),
                config,
                device=self._device(),
                engine=self.engine,
                precision=self.precision,
                exportable=fixed,
                cache_dir=self.cache_dir,
                store_dtype=self.cache_dtype,
                named=isinstance(self.backbone, str),
            )
            _frozen_parts[key] = part
            while len(_frozen_parts) > 4:
                _frozen_parts.pop(next(iter(_frozen_parts)))
        part.progress = self.progress
        return part

    def _inference(self):
        """This fit's inference state: the merged network and the embeddings it computed."""
        state = _fitted_state.get(self.net_)
        if state is None:
            state = _fitted_state[self.net_] = {}
        return state

    def _embeddings(self, source):
        """Embeddings of ``source``: adapted after fit, pretrained before; once per image.

        On the fast path, every image's embedding is kept for the fit it came from, so a
        query that needs ``predict_proba`` and ``transform`` of the same pool (hybrid,
        BADGE, feature distance with predicted classes) runs the network once.
        """
        if not hasattr(self, "net_"):
            part = self._frozen_part(source)
            if part is not None:
                return part(source)
            accelerator = self._accelerator()
            if accelerator is None:
                precision = resolve_precision(self.precision, self._device(), allow_fp16=False)
            else:
                _, precision = check_accelerator(accelerator, self.device, self.precision)
            backbone, config = self._backbone_and_config()
            backbone.to(self._device())
            embed = functools.partial(self._autocast, backbone, precision=precision)
            return self._embed(embed, source, config)
        if not self._fast(source):
            if self.finetune == "linear":
                return self._embed(self._frozen_embed, source, self.data_config_)
            module = self._trained_module()
            module.eval()
            return self._embed(module.embed, source, self.data_config_)
        if self.finetune == "linear":
            return self._frozen_part(source)(source)
        keys = row_keys(source)
        state = self._inference()
        memo = state.get("memo")
        if memo is None:
            memo = state["memo"] = RowStore((self.n_features_out_,))
        return memo.fill(keys, lambda index: self._adapted(subset(source, index), keys[index]))

    def _adapted(self, source, keys):
        """Embeddings of the fitted (adapted) network, adapters merged, on ``source``."""
        state = self._inference()
        module = self._trained_module()
        split = module.split
        if "merged" not in state:
            if split is None:
                state["merged"] = merged_copy(module.backbone)
            else:
                state["merged"] = merged_copy(SuffixModule(module.backbone, split))
        merged = state["merged"]
        if split is None:
            choice = self._frozen_part(source).choice  # the pristine network's engine
            return run_images(
                merged,
                source,
                self.data_config_,
                device=self._device(),
                choice=choice,
                precision=self.precision_ if self.precision != "auto" else None,
                progress=self.progress,
            )
        prefix = self._frozen_part(source, split)
        tokens = prefix(source, keys)
        if "suffix_choice" not in state:

            def pristine_suffix():
                backbone, _ = self._backbone_and_config()
                return SuffixModule(backbone, split).eval()

            state["suffix_choice"] = suffix_choice(
                pristine_suffix,
                (self._ident(), repr(split)),
                prefix.item_shape,
                device=self._device(),
                engine=self.engine,
                precision=self.precision,
                named=isinstance(self.backbone, str),
            )
        return run_module(
            merged, tokens, device=self._device(), choice=state["suffix_choice"],
            progress=self.progress,
        )  # fmt: skip

    def _head_proba(self, emb):
        """Softmax of the linear head on embeddings ``emb``, float64."""
        head = self._head()
        with torch.inference_mode():
            logits = head.float().cpu()(torch.from_numpy(np.ascontiguousarray(emb)))
            return torch.softmax(logits, dim=1).double().numpy()
