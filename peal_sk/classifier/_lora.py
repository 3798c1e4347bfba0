"""LoRA injection through peft, with target modules detected from the architecture."""

# SPDX-License-Identifier: BSD-3-Clause

import re

from torch import nn

__all__ = ["auto_target_modules", "inject_lora", "lora_parameter_count"]

_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:blocks|layers|stages)\.(\d+)(?:\.|$)")


def _block_index(name):
    match = _BLOCK_INDEX.search(name)
    return None if match is None else int(match.group(1))


def auto_target_modules(module, last_blocks=None):
    """Names of the layers PEAL adapts, found from the architecture.

    * transformers (timm ViT, DINOv2): every fused attention ``qkv`` ``nn.Linear``;
      separate ``q``/``k``/``v`` (or ``query``/``key``/``value``) projections otherwise;
    * convolutional networks (e.g. timm's ``tf_efficientnet_lite0``): their pointwise
      (1 x 1, ungrouped) convolutions.

    Parameters
    ----------
    module : torch.nn.Module
    last_blocks : int or None, default=None
        Keep only layers of the last ``last_blocks`` numbered blocks (``blocks.<i>``).

    Returns
    -------
    names : list of str
        Full module names, in model order.

    Examples
    --------
    >>> from torch import nn
    >>> from peal_sk.classifier import auto_target_modules
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.blocks = nn.Sequential(Block(), Block())
    >>> auto_target_modules(Net())
    ['blocks.0.qkv', 'blocks.1.qkv']
    >>> auto_target_modules(Net(), last_blocks=1)
    ['blocks.1.qkv']
    """
    linear = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    names = [n for n, _ in linear if n.split(".")[-1] == "qkv"]
    if not names:
        qkv = {"q", "k", "v", "query", "key", "value"}
        names = [n for n, _ in linear if n.split(".")[-1] in qkv]
    if not names:
        names = [
            n
            for n, m in module.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
        ]
    if last_blocks is not None and names:
        indices = sorted({i for i in map(_block_index, names) if i is not None})
        if not indices:
            raise ValueError(
                f"lora_last_blocks={last_blocks} needs numbered blocks (e.g. 'blocks.11'); "
                f"none found among {names[:5]}."
            )
        keep = set(indices[-last_blocks:])
        names = [n for n in names if _block_index(n) in keep]
    return names


def inject_lora(module, *, r, alpha, dropout=0.0, target_modules="auto", last_blocks=None):
    """Add LoRA adapters to ``module`` in place; only the adapters stay trainable.

    Parameters
    ----------
    module : torch.nn.Module
    r : int
        LoRA rank.
    alpha : float
        Scaling numerator: the adapter update is scaled by ``alpha / r``.
    dropout : float, default=0.0
        LoRA dropout (on the adapters' input).
    target_modules : "auto" or list of str, default="auto"
        Full module names or name suffixes (peft's matching); "auto" uses
        :func:`auto_target_modules`.
    last_blocks : int or None, default=None
        With "auto": adapt only the last ``last_blocks`` blocks.

    Returns
    -------
    targets : list of str
        The full names of the adapted layers.

    Examples
    --------
    >>> from torch import nn
    >>> from peal_sk.classifier import inject_lora
    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> inject_lora(net, r=4, alpha=4, target_modules=["0"])
    ['0']
    >>> sorted(name for name, p in net.named_parameters() if p.requires_grad)
    ['0.lora_A.default.weight', '0.lora_B.default.weight']
    """
    from peft import LoraConfig, inject_adapter_in_model

    available = [n for n, m in module.named_modules() if isinstance(m, nn.Linear | nn.Conv2d) and n]
    if isinstance(target_modules, str) and target_modules == "auto":
        targets = auto_target_modules(module, last_blocks)
        if not targets:
            raise ValueError(
                "target_modules='auto' found no layer to adapt (no attention qkv / q, k, v "
                "Linear and no pointwise Conv2d); pass target_modules explicitly, e.g. one "
                f"of {available[:10]}."
            )
    else:
        targets = [
            n for n in available if any(n == t or n.endswith("." + t) for t in target_modules)
        ]
        unknown = [
            t for t in target_modules if not any(n == t or n.endswith("." + t) for n in targets)
        ]
        if unknown:
            raise ValueError(
                f"target_modules {unknown} match no Linear or Conv2d layer of the backbone; "
                f"layers include {available[:10]} ({len(available)} in all)."
            )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    inject_adapter_in_model(config, module)
    return targets


def lora_parameter_count(module, targets, r):
    """``r * (in + out)`` summed over the adapted layers (what LoRA adds)."""
    layers = dict(module.named_modules())
    total = 0
    for name in targets:
        layer = layers[name]
        base = getattr(layer, "base_layer", layer)
        if isinstance(base, nn.Linear):
            total += r * (base.in_features + base.out_features)
        else:
            total += r * (base.in_channels + base.out_channels)
    return total
