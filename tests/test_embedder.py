"""BackboneEmbedder: frozen backbone embeddings as a scikit-learn transformer, on a tiny ViT."""

import contextlib
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

os.environ["HF_HUB_OFFLINE"] = "1"

from _cases import stripe_images  # noqa: E402
from numpy.testing import assert_allclose, assert_array_equal  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from torch import nn  # noqa: E402

import peal_sk.classifier._embedder as embedder_module  # noqa: E402
from peal_sk.classifier import BackboneEmbedder, PEALClassifier  # noqa: E402
from peal_sk.classifier._torch_utils import native_bf16_cpu  # noqa: E402
from peal_sk.selection import FeatureDistanceSelector, KCenterSelector  # noqa: E402

#: a 2-block DINOv2-architecture ViT at 28 px (random weights; average pooling, see
#: test_classifier.py); 32 features
TINY = dict(
    backbone="vit_small_patch14_dinov2",
    pretrained=False,
    backbone_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"},
    img_size=28,
)
N_FEATURES = 32


def images(n=12, seed=0, size=28):
    """Two classes of stripe images (tests/_cases.py), this file's default count."""
    return stripe_images(n, seed, size)


def embedder(**kwargs):
    # float32 unless a test asks otherwise: "auto" picks the precision measured fastest,
    # which may differ by CPU kind and batch size; comparisons here are of float32 values
    return BackboneEmbedder(**{**TINY, "batch_size": 8, "precision": "fp32", **kwargs})


def cache_files(path, pattern="embeddings-*.npy"):
    return sorted(path.glob(pattern))


def no_model(*args, **kwargs):
    raise AssertionError("the backbone was loaded although the embeddings are cached")


@pytest.fixture(scope="module")
def X():
    return images()[0]


@pytest.fixture(scope="module")
def fitted(X):
    return embedder().fit(X)


@pytest.fixture
def png_paths(X, tmp_path):
    paths = []
    for i, img in enumerate(X[:4]):
        p = tmp_path / "png" / f"img{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(p)
        paths.append(str(p))
    return paths


# -- the estimator API --------------------------------------------------------------------
def test_fit_transform_shapes_dtype_and_attributes(X, fitted):
    assert fitted.n_features_out_ == N_FEATURES
    assert tuple(fitted.data_config_["input_size"]) == (3, 28, 28)
    emb = fitted.transform(X)
    assert emb.shape == (len(X), N_FEATURES)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    assert emb.std(axis=0).max() > 0  # not a constant output

    emb2 = embedder().fit_transform(X)
    assert emb2.shape == (len(X), N_FEATURES) and emb2.dtype == np.float32
    assert_array_equal(emb2, emb)
    assert embedder().fit().n_features_out_ == N_FEATURES  # fit needs no data

    names = fitted.get_feature_names_out()
    assert names.shape == (N_FEATURES,)
    assert names[0] == "embedding0" and names[-1] == f"embedding{N_FEATURES - 1}"
    assert len(set(names)) == N_FEATURES


def test_not_fitted(X):
    with pytest.raises(NotFittedError):
        embedder().transform(X)
    with pytest.raises(NotFittedError):
        embedder().get_feature_names_out()


def test_clone_and_params(fitted, tmp_path):
    params = fitted.get_params()
    assert params["img_size"] == 28 and params["backbone_kwargs"] == TINY["backbone_kwargs"]
    assert params["precision"] == "fp32" and params["cache_dir"] is None
    assert params["engine"] == "auto" and params["batch_size"] == 8
    c = clone(fitted)
    assert not hasattr(c, "n_features_out_")
    assert c.get_params() == params
    c.set_params(batch_size=3, cache_dir=str(tmp_path))
    assert c.batch_size == 3 and c.cache_dir == str(tmp_path)
    assert fitted.batch_size == 8  # the original is untouched


@pytest.mark.parametrize(
    "param, value",
    [
        ("batch_size", 0),
        ("batch_size", "big"),
        ("precision", "fp8"),
        ("engine", "tensorrt"),
        ("img_size", 0),
        ("progress", "yes"),
    ],
)
def test_invalid_params(param, value):
    with pytest.raises(ValueError, match=param):
        embedder(**{param: value}).fit()


# -- determinism and agreement with PEALClassifier ------------------------------------------
def test_deterministic_and_matches_unfitted_classifier(X, fitted):
    a, b = fitted.transform(X), fitted.transform(X)
    assert_array_equal(a, b)
    # batching does not change the embeddings
    assert_allclose(embedder(batch_size=5).fit(X).transform(X), a, rtol=1e-5, atol=1e-5)
    # an unfitted PEALClassifier embeds with the same pristine (pretrained) backbone
    clf = PEALClassifier(**TINY, batch_size=16, precision="fp32")
    assert_allclose(clf.transform(X), a, rtol=1e-5, atol=1e-6)
    # ... and the classifier's deep copy did not change the shared backbone
    assert_array_equal(fitted.transform(X), a)


def test_bf16_runs(X, fitted):
    slow = (
        contextlib.nullcontext()
        if native_bf16_cpu()
        else pytest.warns(UserWarning, match="emulated")
    )
    with slow:
        bf16 = embedder(precision="bf16").fit(X)
    assert bf16.precision_ == "bf16"
    emb = bf16.transform(X[:4])
    assert emb.dtype == np.float32 and emb.shape == (4, N_FEATURES)
    assert_allclose(emb, fitted.transform(X[:4]), atol=0.1)


# -- image inputs ---------------------------------------------------------------------------
def test_input_forms_agree(X, fitted, png_paths):
    X4 = X[:4]
    ref = fitted.transform(X4)
    forms = {
        "nchw": np.ascontiguousarray(X4.transpose(0, 3, 1, 2)),
        "float": X4 / 255.0,
        "pil": [Image.fromarray(img) for img in X4],
        "list": list(X4),
        "tensor": torch.from_numpy(X4),
        "paths": png_paths,
        "path_array": np.array(png_paths),
    }
    for name, form in forms.items():
        assert_allclose(fitted.transform(form), ref, rtol=1e-5, atol=1e-5, err_msg=name)


# -- on-disk cache --------------------------------------------------------------------------
def test_cache_hit_skips_the_model(X, tmp_path, monkeypatch):
    emb = embedder(cache_dir=tmp_path).fit(X)
    fresh = clone(emb).fit(X)  # another equal embedder (another process, say)
    first = emb.transform(X)
    files = cache_files(tmp_path)
    assert len(files) == 1
    assert_array_equal(np.load(files[0]), first)
    assert not list(tmp_path.glob("*.tmp"))

    monkeypatch.setattr(embedder_module, "pristine_backbone", no_model)
    second = emb.transform(X)
    assert_array_equal(second, first)
    assert second.dtype == np.float32
    # the same images channels-first are the same pixels: the same cache entry
    assert_array_equal(emb.transform(np.ascontiguousarray(X.transpose(0, 3, 1, 2))), first)
    assert_array_equal(fresh.transform(X), first)  # reads the same file
    assert len(cache_files(tmp_path)) == 1


def test_cache_keys(X, tmp_path):
    emb = embedder(cache_dir=tmp_path).fit(X)
    emb.transform(X)
    assert len(cache_files(tmp_path)) == 1
    emb.transform(X[:6])  # different input
    assert len(cache_files(tmp_path)) == 2
    X_changed = X.copy()
    X_changed[0, 0, 0, 0] ^= 1  # one pixel
    emb.transform(X_changed)
    assert len(cache_files(tmp_path)) == 3

    deeper = {**TINY["backbone_kwargs"], "depth": 1}
    other = embedder(cache_dir=tmp_path, backbone_kwargs=deeper).fit(X)
    other.transform(X)  # different backbone_kwargs
    assert len(cache_files(tmp_path)) == 4
    bigger = embedder(cache_dir=tmp_path, img_size=42).fit(X)
    out = bigger.transform(X)  # different img_size
    assert len(cache_files(tmp_path)) == 5
    assert out.shape == (len(X), N_FEATURES)
    # the batch size does not change the embeddings, so it shares the cache
    embedder(cache_dir=tmp_path, batch_size=3).fit(X).transform(X)
    assert len(cache_files(tmp_path)) == 5
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_paths_invalidated_by_mtime(X, png_paths, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    emb = embedder(cache_dir=cache).fit(X)
    first = emb.transform(png_paths)
    assert len(cache_files(cache)) == 1

    # unchanged files: a cache hit
    with monkeypatch.context() as m:
        m.setattr(embedder_module, "pristine_backbone", no_model)
        assert_array_equal(emb.transform(png_paths), first)

    # rewrite one file with other pixels, keeping its size but giving it a new mtime
    st = os.stat(png_paths[0])
    Image.fromarray(X[5]).save(png_paths[0])
    os.utime(png_paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = emb.transform(png_paths)
    assert len(cache_files(cache)) == 2
    want = embedder().fit().transform(np.concatenate([X[5:6], X[1:4]]))  # no cache
    assert_allclose(second, want, atol=1e-5)
    assert not np.allclose(second[0], first[0])

    # touching alone (same content) is also a new key
    os.utime(png_paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    emb.transform(png_paths)
    assert len(cache_files(cache)) == 3


def test_cache_ignores_a_wrong_file(X, tmp_path):
    emb = embedder(cache_dir=tmp_path).fit(X)
    first = emb.transform(X)
    (path,) = cache_files(tmp_path)

    np.save(path, np.zeros((3, 5), dtype=np.float32))  # wrong shape
    assert_array_equal(emb.transform(X), first)
    assert np.load(path).shape == first.shape  # rewritten

    np.save(path, first.astype(np.float64))  # wrong dtype
    out = emb.transform(X)
    assert out.dtype == np.float32
    assert_array_equal(out, first)

    path.write_bytes(b"not an npy file")  # unreadable
    assert_array_equal(emb.transform(X), first)
    assert_array_equal(np.load(path), first)
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_write_failure_leaves_no_tmp(X, tmp_path, monkeypatch):
    emb = embedder(cache_dir=tmp_path).fit(X)

    def failing_save(fh, arr, **kwargs):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(embedder_module.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        emb.transform(X)
    assert list(tmp_path.iterdir()) == []


class _Vec(nn.Sequential):
    num_features = 8


def vector_backbone():
    """Feature vectors of width 5 -> 8 (a factory backbone, seeded)."""
    torch.manual_seed(0)
    return _Vec(nn.Linear(5, 8), nn.Tanh())


def test_cache_dataframe_features_keyed_by_values(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    a = pd.DataFrame(rng.normal(size=(4, 5)), columns=list("abcde"))
    b = pd.DataFrame(rng.normal(size=(4, 5)), columns=list("abcde"))
    emb = BackboneEmbedder(vector_backbone, cache_dir=tmp_path).fit()
    plain = BackboneEmbedder(vector_backbone).fit()
    ea, eb = emb.transform(a), emb.transform(b)
    assert len(cache_files(tmp_path)) == 2  # same columns and shape, other values
    assert_allclose(ea, plain.transform(a.to_numpy()), atol=1e-6)
    assert_allclose(eb, plain.transform(b.to_numpy()), atol=1e-6)
    assert not np.allclose(ea, eb)


def test_cache_checkpoint_rewritten_in_place(tmp_path, monkeypatch):
    """New weights under the same checkpoint path (a newer mtime) are a new cache key."""
    # the in-process model cache is keyed by the file's size and mtime too
    ckpt = tmp_path / "weights.pth"
    torch.save(vector_backbone().state_dict(), ckpt)
    X = np.random.default_rng(0).normal(size=(4, 5))
    cache = tmp_path / "cache"
    emb = BackboneEmbedder(vector_backbone, checkpoint_path=ckpt, cache_dir=cache)
    first = emb.fit().transform(X)
    assert len(cache_files(cache)) == 1

    other = vector_backbone()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-2.0)
    st = os.stat(ckpt)
    torch.save(other.state_dict(), ckpt)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = emb.fit().transform(X)
    assert len(cache_files(cache)) == 2
    assert not np.allclose(second, first)


# -- Pipeline and selectors -----------------------------------------------------------------
def test_pipeline_and_feature_based_selectors():
    X, y = images(n=16)
    pipe = make_pipeline(embedder(), LogisticRegression(max_iter=500)).fit(X, y)
    pred = pipe.predict(X)
    assert pred.shape == (16,) and set(pred) <= {0, 1}
    assert pipe.predict_proba(X).shape == (16, 2)
    assert pipe.score(X, y) >= 0.75  # stripes are easy even for random features

    emb = pipe[0]
    F = emb.transform(X)
    assert_array_equal(pipe[:-1].transform(X), F)
    got = KCenterSelector(random_state=0).select(X, 3, classifier=pipe)
    assert_array_equal(got, KCenterSelector(random_state=0).select(F, 3))
    labeled = [0, 1]
    pool = np.arange(2, 16)
    got = FeatureDistanceSelector(mode="nearest", random_state=0).select(
        X[pool], 3, classifier=pipe, X_labeled=X[labeled], y_labeled=y[labeled]
    )
    want = FeatureDistanceSelector(mode="nearest", random_state=0).select(
        F[pool], 3, X_labeled=F[labeled], y_labeled=y[labeled]
    )
    assert_array_equal(got, want)


def test_progress_bar(X, capsys):
    emb = embedder(progress=True, batch_size=4).fit(X)
    out = emb.transform(X)
    assert out.shape == (len(X), N_FEATURES)
    assert "embedding" in capsys.readouterr().err


# -- random weights are the same in every process -----------------------------------------
def test_random_weights_are_the_same_in_every_process(X, tmp_path):
    """``pretrained=False`` without a checkpoint draws its weights from a fixed seed.

    Regression: the weights came from the process's torch generator, so another process
    (a Dask worker, an accelerate rank, the next run reading ``cache_dir``) had other
    weights and a disk cache returned another draw's embeddings.
    """
    import subprocess
    import sys

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    ours = embedder().fit(X).transform(X)
    # the caller's generator is not consumed by the draw
    assert torch.equal(torch.random.get_rng_state(), state)
    code = (
        "import sys, numpy as np, torch; torch.manual_seed(int(sys.argv[2]));"
        "from peal_sk.classifier import BackboneEmbedder;"
        f"emb = BackboneEmbedder(**{TINY!r}, batch_size=8, engine='torch', precision='fp32').fit();"
        "np.save(sys.argv[1], emb.transform(np.load(sys.argv[1] + '.X.npy')))"
    )
    out = tmp_path / "theirs.npy"
    np.save(str(out) + ".X.npy", X)
    subprocess.run([sys.executable, "-c", code, str(out), "7"], check=True, timeout=300)
    assert_allclose(np.load(out), embedder(engine="torch").fit(X).transform(X), rtol=1e-5)
    assert_allclose(np.load(out), ours, rtol=1e-4, atol=1e-5)
