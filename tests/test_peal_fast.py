"""PEALClassifier's fast path: frozen parts once per image, merged adapters, one pool pass.

Every comparison is against the plain path (the unmerged torch module run on the images,
as before the fast path), on tiny models, at the tolerance of the precision compared.
"""

import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("peft")
pytest.importorskip("skorch")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _cases import stripe_images  # noqa: E402
from numpy.testing import assert_allclose, assert_array_equal  # noqa: E402
from sklearn.base import clone  # noqa: E402

import peal_sk.classifier._autotune as autotune  # noqa: E402
import peal_sk.classifier._fast as fast  # noqa: E402
import peal_sk.classifier._peal_inference as peal  # noqa: E402
import peal_sk.classifier._store as store  # noqa: E402
from peal_sk import ActiveLearner, entropy_sampling, hybrid_sampling  # noqa: E402
from peal_sk.classifier import PEALClassifier  # noqa: E402

TINY_VIT = dict(
    backbone="vit_small_patch14_dinov2",
    pretrained=False,
    backbone_kwargs={"depth": 3, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"},
    img_size=28,
    lora_r=4,
    lora_alpha=4,
    batch_size=16,
    max_epochs=3,
    lr=1e-2,
    random_state=0,
)
#: a randomly initialised EfficientNet-Lite0 at 32 px: the CNN split (stages, BatchNorm)
TINY_CNN = dict(
    backbone="tf_efficientnet_lite0",
    pretrained=False,
    img_size=32,
    lora_r=4,
    lora_alpha=4,
    batch_size=16,
    max_epochs=2,
    lr=1e-2,
    random_state=0,
)


images = stripe_images


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    """No frozen part, store or engine choice carried over from another test."""
    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path / "cache"))
    peal._frozen_parts.clear()
    store.clear_stores()
    autotune._memo.clear()
    yield
    peal._frozen_parts.clear()
    store.clear_stores()


def plain(clf, X, what="proba"):
    """The plain path: the unmerged torch module over the images (no store, no merge)."""
    orig = PEALClassifier._fast
    PEALClassifier._fast = lambda self, source: False
    try:
        return clf.predict_proba(X) if what == "proba" else clf.transform(X)
    finally:
        PEALClassifier._fast = orig


def count_computations(monkeypatch):
    """Images each frozen part computes (the store's misses), as a list of counts."""
    calls = []
    real = fast.FrozenPart._compute

    def counted(self, source):
        calls.append(len(source))
        return real(self, source)

    monkeypatch.setattr(fast.FrozenPart, "_compute", counted)
    return calls


@pytest.mark.parametrize(
    "params",
    [
        {"finetune": "linear"},
        {"finetune": "lora", "lora_last_blocks": 1},  # frozen prefix + merged suffix
        {"finetune": "lora"},  # every block adapted: the merged network on the images
        {"finetune": "full", "max_epochs": 1},
    ],
    ids=["linear", "lora-last-1", "lora-all", "full"],
)
def test_fast_and_plain_paths_agree_in_float32(params):
    X, y = images()
    clf = PEALClassifier(**{**TINY_VIT, **params}, precision="fp32").fit(X[:20], y[:20])
    got = clf.predict_proba(X)
    assert_allclose(got, plain(clf, X), rtol=0, atol=1e-4)
    assert_allclose(clf.transform(X), plain(clf, X, "transform"), rtol=1e-4, atol=1e-4)
    assert clf.prefix_cached_ == ("lora_last_blocks" in params)


def test_reduced_precision_keeps_the_argmax():
    X, y = images(80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bf16 emulated on AVX2 CPUs
        clf = PEALClassifier(**TINY_VIT, lora_last_blocks=1, precision="bf16").fit(X[:20], y[:20])
        fast_pred = clf.predict_proba(X).argmax(1)
        plain_pred = plain(clf, X).argmax(1)
    assert np.mean(fast_pred == plain_pred) >= 0.995


def test_merged_copy_matches_the_adapters():
    from peal_sk.classifier._lora import inject_lora

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    inject_lora(net, r=2, alpha=4, target_modules=["0", "2"])
    for name, p in net.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # a trained-looking update (B starts at zero)
    x = torch.randn(5, 8)
    merged = fast.merged_copy(net)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert_allclose(merged(x).numpy(), net(x).numpy(), rtol=1e-5, atol=1e-5)
    assert any("lora" in n for n, _ in net.named_parameters())  # the original is kept


def test_frozen_prefix_is_computed_once_per_image(monkeypatch):
    calls = count_computations(monkeypatch)
    X, y = images(40)
    pool = np.arange(40)
    est = PEALClassifier(**TINY_VIT, lora_last_blocks=1, precision="fp32")
    learner = ActiveLearner(estimator=est, X_training=X[:10], y_training=y[:10])
    assert calls == [10]  # the labelled images' prefix
    for _ in range(2):
        idx, _ = learner.query(X[pool], n_instances=5)
        learner.teach(X[pool[idx]], y[pool[idx]])
        pool = np.delete(pool, idx)
    # the pool's other 30 images once, at the first query; nothing after (teach, refit,
    # the second query's new array of the same images)
    assert calls == [10, 30]
    clone(est).fit(X[5:25], y[5:25])  # a clone shares the store
    assert calls == [10, 30]


def test_one_pass_gives_proba_and_embeddings(monkeypatch):
    X, y = images(40)
    clf = PEALClassifier(**TINY_VIT, lora_last_blocks=1, precision="fp32").fit(X[:10], y[:10])
    runs = []
    real = peal.run_module

    def counted(module, values, **kwargs):
        runs.append(len(values))
        return real(module, values, **kwargs)

    monkeypatch.setattr(peal, "run_module", counted)
    learner = ActiveLearner(estimator=clf, query_strategy=hybrid_sampling)
    learner.query(X[10:], n_instances=4)  # predict_proba and transform of the pool
    clf.transform(X[10:])
    assert runs == [30]


def test_seeded_query_selects_the_same_on_both_paths():
    X, y = images(60)
    clf = PEALClassifier(**TINY_VIT, lora_last_blocks=1, precision="fp32").fit(X[:12], y[:12])
    idx_fast, _ = entropy_sampling(clf, X[12:], n_instances=8)
    orig = PEALClassifier._fast
    PEALClassifier._fast = lambda self, source: False
    try:
        idx_plain, _ = entropy_sampling(clf, X[12:], n_instances=8)
    finally:
        PEALClassifier._fast = orig
    assert_array_equal(idx_fast, idx_plain)


def test_cnn_split_trains_as_without_the_store():
    X, y = images(24, size=32)
    kw = {**TINY_CNN, "lora_last_blocks": 2, "precision": "fp32"}
    cached = PEALClassifier(**kw).fit(X, y)
    uncached = PEALClassifier(**kw, cache_prefix=False).fit(X, y)
    assert cached.prefix_cached_ and not uncached.prefix_cached_
    assert cached.targets_ == uncached.targets_
    assert all(t.startswith(("blocks.5.", "blocks.6.")) for t in cached.targets_)
    a = {k: v.detach() for k, v in cached.net_.module_.state_dict().items()}
    b = {k: v.detach() for k, v in uncached.net_.module_.state_dict().items()}
    # BatchNorm statistics included: they stay the pretrained ones. The stored prefix may
    # come from ONNX Runtime (float32, summed in another order: 1e-6 of the scale), which
    # Adam's normalised steps carry into the weights: measured 6e-5 at most
    for key in a:
        assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-4, atol=2e-4, err_msg=key)
    assert_allclose(cached.predict_proba(X), plain(uncached, X), atol=1e-4)


def test_float16_store_within_its_tolerance():
    X, y = images(40)
    kw = {**TINY_VIT, "lora_last_blocks": 1, "precision": "fp32"}
    full = PEALClassifier(**kw).fit(X[:20], y[:20])
    half = PEALClassifier(**kw, cache_dtype="float16").fit(X[:20], y[:20])
    # the stored prefix rounds each value to 11 significant bits; after 3 epochs of
    # training and the adapted block the embeddings stay within 1 % of their scale
    e_full, e_half = full.transform(X), half.transform(X)
    assert np.abs(e_full - e_half).max() <= 1e-2 * np.abs(e_full).max()
    assert np.mean(full.predict(X) == half.predict(X)) >= 0.95


def test_store_in_cache_dir_is_reused_by_another_process(tmp_path, monkeypatch):
    X, y = images(30)
    kw = {**TINY_VIT, "lora_last_blocks": 1, "precision": "fp32", "cache_dir": tmp_path}
    first = PEALClassifier(**kw).fit(X, y).predict_proba(X)
    segments = list((tmp_path / "features").rglob("seg-*.npy"))
    assert segments and not list(tmp_path.rglob("*.tmp"))
    # "another process": nothing in memory
    peal._frozen_parts.clear()
    store.clear_stores()
    calls = count_computations(monkeypatch)
    again = PEALClassifier(**kw).fit(X, y).predict_proba(X)
    assert calls == []
    assert_allclose(again, first, rtol=0, atol=1e-6)


def test_row_keys_follow_content(tmp_path):
    from peal_sk.classifier._images import check_images

    X, _ = images(6)
    keys = store.row_keys(check_images(X))
    assert len(set(keys.tolist())) == 6
    assert_array_equal(store.row_keys(check_images(X[[3, 1]])), keys[[3, 1]])
    changed = X.copy()
    changed[2, 0, 0, 0] ^= 1
    assert (store.row_keys(check_images(changed)) != keys).tolist() == [0, 0, 1, 0, 0, 0]


def test_fit_leaves_the_global_torch_generator_alone():
    X, y = images(16)
    torch.manual_seed(123)
    before = torch.random.get_rng_state().clone()
    PEALClassifier(**{**TINY_VIT, "max_epochs": 1}, lora_last_blocks=1).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), before)
    # and the fit is the same whatever the user's generator holds
    a = PEALClassifier(**{**TINY_VIT, "max_epochs": 1}, precision="fp32").fit(X, y).predict_proba(X)
    torch.manual_seed(7)
    b = PEALClassifier(**{**TINY_VIT, "max_epochs": 1}, precision="fp32").fit(X, y).predict_proba(X)
    assert_array_equal(a, b)


def test_split_is_none_where_it_cannot_cut():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert fast.split_backbone(net, 1) is None
    from peal_sk.classifier._torch_utils import pristine_backbone

    vit, _ = pristine_backbone(
        "vit_small_patch14_dinov2", False, None, 28, TINY_VIT["backbone_kwargs"]
    )
    assert fast.split_backbone(vit, 3) is None  # every block adapted: nothing frozen to store
    assert fast.split_backbone(vit, 1).cut == 2


def test_explicit_bf16_where_it_is_emulated(monkeypatch):
    """An AVX2-only CPU: an explicit bf16 runs emulated, with a warning (found by a run
    with the bf16 detection off: the frozen part refused it)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    X, y = images(16)
    with pytest.warns(UserWarning, match="emulated"):
        clf = PEALClassifier(**TINY_VIT, lora_last_blocks=1, precision="bf16").fit(X, y)
    assert clf.precision_ == "bf16" and clf.engine_precision_ == "bf16"
    assert np.isfinite(clf.predict_proba(X)).all()
