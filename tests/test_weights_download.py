"""Pretrained weights downloaded the way timm does it, against a hub on 127.0.0.1.

A tiny DINOv2-architecture ViT (2 blocks, width 32, random weights) is saved as
``model.safetensors`` and served under the real repo id of the default backbone,
``timm/vit_small_patch14_dinov2.lvd142m``, by a local HTTP server (``HF_ENDPOINT`` points at
it; the cache is in a temporary folder). The real DINOv2 file (88 MB) would make the same
requests; the tiny one keeps each test to seconds. Nothing here reaches the network.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("huggingface_hub")
safetensors_torch = pytest.importorskip("safetensors.torch")

from _fake_hub import FakeHub  # noqa: E402

from peal_sk.classifier import BackboneError, create_backbone  # noqa: E402

REPO = "timm/vit_small_patch14_dinov2.lvd142m"
TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2}
SIZE = 28


def tiny_weights():
    """safetensors bytes of a seeded tiny ViT (what the hub would serve)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        model = timm.create_model("vit_small_patch14_dinov2", img_size=SIZE, num_classes=0, **TINY)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return safetensors_torch.save(state), state


@pytest.fixture(scope="module")
def weights():
    return tiny_weights()


@pytest.fixture
def hub(weights, monkeypatch, tmp_path):
    """The local hub, an empty Hugging Face cache, online mode (whatever the session set)."""
    from huggingface_hub import constants

    data, _ = weights
    with FakeHub({(REPO, "model.safetensors"): data}) as server:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        # what huggingface_hub derives from HF_ENDPOINT at import, so that its own side
        # requests (the agent-harness registry of its user agent) go to the stand-in too
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        template = getattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", None)
        if template is not None:
            path = template[template.index("/{repo_id}") :]
            monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + path)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
        yield server


def build(pretrained=True):
    return create_backbone(
        "dinov2_vits14", pretrained=pretrained, img_size=SIZE, backbone_kwargs=TINY
    )[0]


def weight_requests(hub):
    """The requests for weight files (huggingface_hub also fetches its agent-harness
    registry, once a day, to name the client in its user agent)."""
    return [r for r in hub.requests if "/resolve/" in r[1]]


def cached_files(tmp_path):
    root = tmp_path / "hf"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_cold_cache_downloads_once_then_warm_cache_makes_no_request(hub, weights, tmp_path):
    data, state = weights
    model = build()
    # the served weights are the ones loaded
    for key in ("blocks.1.attn.qkv.weight", "pos_embed", "norm.bias"):
        assert torch.equal(model.state_dict()[key], state[key]), key
    assert [r[0] for r in weight_requests(hub)] == ["HEAD", "GET"]
    assert weight_requests(hub)[1][1] == f"/{REPO}/resolve/main/model.safetensors"
    snapshot = [f for f in cached_files(tmp_path) if "snapshots" in f]
    assert snapshot and snapshot[0].endswith("model.safetensors")

    n = len(hub.requests)
    warm = build()
    assert len(hub.requests) == n  # the cached file is used without asking the hub
    assert torch.equal(warm.state_dict()["pos_embed"], state["pos_embed"])


def test_warm_cache_works_offline(hub, monkeypatch):
    build()
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    build()
    build(pretrained="local")
    assert len(hub.requests) == n


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "local"])
def test_offline_mode_never_requests_and_says_how_to_download(hub, monkeypatch, how):
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError) as info:
        build(pretrained="local" if how == "local" else True)
    message = str(info.value)
    assert "HF_HUB_OFFLINE=1 is set" in message or "pretrained='local'" in message
    assert "timm.create_model('vit_small_patch14_dinov2.lvd142m', pretrained=True)" in message
    assert "checkpoint_path=" in message
    assert hub.requests == []


def test_interrupted_download_leaves_no_usable_file_and_the_retry_succeeds(hub, weights, tmp_path):
    from huggingface_hub import try_to_load_from_cache

    data, state = weights
    hub.drop_after = len(data) // 2
    with pytest.raises(BackboneError) as info:
        build()
    message = str(info.value)
    assert "Could not download the pretrained weights of backbone='dinov2_vits14'" in message
    assert hub.url in message and "Try again" in message
    assert "Traceback" not in message and "\n" not in message
    # nothing usable-looking in the cache: no snapshot link, no blob but a partial one
    # (``*.incomplete``: huggingface_hub deletes it, or older versions keep it to resume)
    assert try_to_load_from_cache(REPO, "model.safetensors", cache_dir=tmp_path / "hf") is None
    left = cached_files(tmp_path)
    assert not [f for f in left if "snapshots" in f]
    assert not [f for f in left if "/blobs/" in f and not f.endswith(".incomplete")]

    hub.drop_after, hub.down = None, False  # the network is back
    model = build()
    assert torch.equal(
        model.state_dict()["blocks.1.attn.qkv.weight"], state["blocks.1.attn.qkv.weight"]
    )
    path = try_to_load_from_cache(REPO, "model.safetensors", cache_dir=tmp_path / "hf")
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()


def test_hub_error_is_one_clear_backbone_error(hub):
    hub.files.clear()  # the repo has no weight file: 404 for both names timm tries
    with pytest.raises(BackboneError, match="Could not download the pretrained weights"):
        build()
    names = [r[1].rsplit("/", 1)[1] for r in weight_requests(hub) if r[0] == "HEAD"]
    assert names == ["model.safetensors", "pytorch_model.bin"]


# -- the target: PEALClassifier().fit downloads once, then works offline -------------------
_FIT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from peal_sk.classifier import PEALClassifier

    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, size=(8, 28, 28, 3), dtype=np.uint8)
    y = np.arange(8) % 2
    # the default backbone (DINOv2 ViT-S/14's timm name and hub repo), made tiny
    clf = PEALClassifier(img_size=28, backbone_kwargs=json.loads(sys.argv[1]),
                         max_epochs=1, batch_size=8, random_state=0).fit(X, y)
    print("FIT", clf.predict(X[:2]).tolist())
    """
)


def test_peal_classifier_fit_downloads_once_then_works_offline(weights, tmp_path):
    data, _ = weights
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")
        and not k.startswith("HUGGINGFACE_")
    }
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env.update(
        HF_HOME=str(tmp_path / "hf_home"),
        NO_PROXY="127.0.0.1",
        PYTHONPATH=repo + os.pathsep + env.get("PYTHONPATH", ""),
        PEAL_SK_CACHE_DIR=str(tmp_path / "peal_cache"),
    )
    with FakeHub({(REPO, "model.safetensors"): data}) as hub:
        env["HF_ENDPOINT"] = hub.url

        def fit(**extra):
            return subprocess.run(
                [sys.executable, "-c", _FIT, json.dumps(TINY)],
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=300,
            )

        first = fit()
        assert first.returncode == 0, first.stderr[-3000:]
        assert "FIT" in first.stdout
        assert [r[0] for r in weight_requests(hub)] == ["HEAD", "GET"], hub.requests
        n = len(hub.requests)

        offline = fit(HF_HUB_OFFLINE="1")
        assert offline.returncode == 0, offline.stderr[-3000:]
        assert len(hub.requests) == n  # no request at all the second time
        assert offline.stdout == first.stdout

    empty = fit(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty"))
    assert empty.returncode != 0
    assert "BackboneError" in empty.stderr and "HF_HUB_OFFLINE=1 is set" in empty.stderr
