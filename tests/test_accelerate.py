"""PEALClassifier(accelerator=...): skorch's AccelerateMixin, in one process and in two.

The in-process tests use ``Accelerator(cpu=True)`` (one process, no mixed precision: the
shared AcceleratorState of a pytest process cannot change afterwards). The two-process
test launches a tiny fit with ``accelerate launch --multi_gpu --num_processes 2`` on the
CPU (gloo backend, localhost) and checks what the ranks wrote.
"""

import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("peft")
pytest.importorskip("skorch")
accelerate = pytest.importorskip("accelerate")

from _cases import stripe_images  # noqa: E402
from numpy.testing import assert_allclose, assert_array_equal  # noqa: E402
from sklearn.base import clone  # noqa: E402

from peal_sk.classifier import PEALClassifier  # noqa: E402
from peal_sk.classifier._torch_utils import check_accelerator, native_bf16_cpu  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]

#: the 2-block DINOv2-architecture ViT at 28 px of test_classifier.py
TINY_VIT = dict(
    backbone="vit_small_patch14_dinov2",
    pretrained=False,
    backbone_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"},
    img_size=28,
    lora_r=4,
    lora_alpha=4,
    batch_size=8,
)


def images(n=24, seed=0, size=28):
    """Two classes of stripe images (tests/_cases.py), this file's default count."""
    return stripe_images(n, seed, size)


@pytest.fixture(scope="module")
def accelerator():
    return accelerate.Accelerator(cpu=True)


class _FakeAccelerator:
    """Just enough of an Accelerator for the parameter checks (mixed precision varies)."""

    def __init__(self, mixed_precision="no", device="cpu"):
        self.mixed_precision = mixed_precision
        self.device = torch.device(device)

    def prepare(self, *args):  # pragma: no cover - never reached: the checks raise first
        raise AssertionError("prepare called")

    def unwrap_model(self, model, **kwargs):  # pragma: no cover
        return model

    def gather_for_metrics(self, x):  # pragma: no cover
        return x


# -- one process ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {},  # LoRA on every block, class-balanced sampler
        {"finetune": "linear"},
        {"lora_last_blocks": 1},  # frozen-prefix cache
        {"class_balanced": False, "finetune": "full"},  # shuffled loader
    ],
    ids=["lora", "linear", "prefix-cache", "full-shuffle"],
)
def test_single_process_accelerator_matches_plain_fit(accelerator, params):
    # one process: the same batches, the same Adam steps, hence the same model
    X, y = images(16)
    kw = dict(TINY_VIT, max_epochs=2, random_state=0, **params)
    plain = PEALClassifier(**kw, device="cpu").fit(X, y)
    acc = PEALClassifier(**kw, accelerator=accelerator).fit(X, y)
    assert type(acc.net_).__name__ == "AcceleratedNeuralNetClassifier"
    assert acc.accelerator_ is accelerator
    assert acc.net_.device is None  # accelerate places module and batches
    assert acc.precision_ == plain.precision_
    assert acc.prefix_cached_ == plain.prefix_cached_
    assert_allclose(acc.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert_allclose(acc.transform(X), plain.transform(X), rtol=1e-5, atol=1e-5)
    assert_allclose(acc.coef_, plain.coef_, rtol=1e-5, atol=1e-6)
    assert_array_equal(acc.predict(X), plain.predict(X))
    # the module is unwrapped after training and accelerate holds no stale loaders
    assert not isinstance(acc.net_.module_, torch.nn.parallel.DistributedDataParallel)
    assert accelerator._dataloaders == []


def test_auto_builds_an_accelerator_at_fit(accelerator):
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, max_epochs=1, random_state=0, device="cpu")
    clf.set_params(accelerator="auto")
    before = clf.transform(X)  # unfitted: the pretrained backbone, on the accelerator
    assert before.shape == (len(X), 32)
    clf.fit(X, y)
    assert clf.accelerator == "auto"
    assert clf.accelerator_.device.type == "cpu"
    assert clf.accelerator_.num_processes == 1
    assert clf.predict_proba(X).shape == (len(X), 2)
    # refitting without an accelerator drops the fitted one
    clf.set_params(accelerator=None).fit(X, y)
    assert not hasattr(clf, "accelerator_")
    assert type(clf.net_).__name__ == "NeuralNetClassifier"


def test_clone_and_get_params_share_the_accelerator(accelerator):
    clf = PEALClassifier(**TINY_VIT, accelerator=accelerator)
    assert clf.get_params()["accelerator"] is accelerator
    twin = clone(clf)
    # an Accelerator stands for this process's distributed setup: shared, not copied
    assert twin.accelerator is accelerator
    assert clone(PEALClassifier(accelerator="auto")).accelerator == "auto"


def test_pickle_gives_a_single_process_model(accelerator, tmp_path):
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, max_epochs=1, random_state=0, accelerator=accelerator)
    proba = clf.fit(X, y).predict_proba(X)
    loaded = pickle.loads(pickle.dumps(clf))
    # the instance does not travel: "auto" builds the loading process's own on refit
    assert loaded.accelerator == "auto"
    assert not hasattr(loaded, "accelerator_")
    assert type(loaded.net_).__name__ == "NeuralNetClassifier"
    assert_allclose(loaded.predict_proba(X), proba, rtol=1e-6)
    assert_allclose(loaded.coef_, clf.coef_)
    assert len(loaded.net_.history) == 1
    # the live estimator is untouched, and an unfitted one pickles too
    assert clf.accelerator is accelerator
    assert type(clf.net_).__name__ == "AcceleratedNeuralNetClassifier"
    unfitted = pickle.loads(pickle.dumps(PEALClassifier(accelerator=accelerator)))
    assert unfitted.accelerator == "auto"
    assert pickle.loads(pickle.dumps(PEALClassifier(accelerator="auto"))).accelerator == "auto"


def test_save_adapters_with_accelerator(accelerator, tmp_path):
    X, y = images()
    clf = PEALClassifier(**TINY_VIT, max_epochs=1, random_state=0, accelerator=accelerator)
    clf.fit(X, y)
    path = clf.save_adapters(tmp_path / "model")
    meta = json.loads((path / "peal_sk.json").read_text())
    assert "accelerator" not in meta["params"]  # not a setting of the saved model
    loaded = PEALClassifier.load_adapters(path)
    assert loaded.accelerator is None
    assert_allclose(loaded.coef_, clf.coef_)


def test_quiet_unless_verbose(accelerator, capsys):
    X, y = images()
    PEALClassifier(**TINY_VIT, max_epochs=1, accelerator=accelerator).fit(X, y)
    assert capsys.readouterr().out == ""
    PEALClassifier(**TINY_VIT, max_epochs=1, accelerator=accelerator, verbose=1).fit(X, y)
    assert "train_loss" in capsys.readouterr().out


# -- contradictory settings: clear errors before any backbone is built -----------------
def _no_backbone():
    raise AssertionError("the backbone was built before the settings were checked")


@pytest.mark.parametrize(
    "mixed, precision, message",
    [
        ("bf16", "fp32", r"precision='fp32' contradicts the accelerator's mixed_precision"),
        ("fp16", "bf16", r"precision='bf16' contradicts the accelerator's mixed_precision"),
        ("fp8", "auto", r"mixed_precision='fp8' is not supported"),
    ],
)
def test_contradictory_precision_raises_before_loading(mixed, precision, message):
    X, y = images(8)
    clf = PEALClassifier(_no_backbone, accelerator=_FakeAccelerator(mixed), precision=precision)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_contradictory_device_raises_before_loading(accelerator):
    X, y = images(8)
    clf = PEALClassifier(_no_backbone, accelerator=accelerator, device="cuda")
    with pytest.raises(ValueError, match=r"device='cuda' contradicts the accelerator"):
        clf.fit(X, y)


def test_precision_follows_the_accelerator():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_accelerator(_FakeAccelerator("bf16"), "auto", "auto") == ("cpu", "bf16")
        assert check_accelerator(_FakeAccelerator("bf16"), "cpu", "bf16") == ("cpu", "bf16")
    # bfloat16 asked of a CPU that emulates it: said, naming the setting
    assert bool(caught) != native_bf16_cpu()
    assert all("accelerator.mixed_precision='bf16'" in str(w.message) for w in caught)
    fp16 = _FakeAccelerator("fp16", "cuda:1")
    assert check_accelerator(fp16, "cuda", "auto") == ("cuda:1", "fp16")
    # mixed_precision="no": precision applies as without accelerate
    assert check_accelerator(_FakeAccelerator("no"), "auto", "fp32") == ("cpu", "fp32")
    with pytest.raises(ValueError, match="device='cuda:0' contradicts"):
        check_accelerator(_FakeAccelerator("no", "cuda:1"), "cuda:0", "auto")


def test_invalid_accelerator_parameter():
    X, y = images(8)
    with pytest.raises(ValueError, match="accelerator"):
        PEALClassifier(_no_backbone, accelerator={"cpu": True}).fit(X, y)


# -- two processes -----------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import torch

    # pretrained=False: the random backbone comes from a fixed seed, the same on every rank
    from peal_sk.classifier import PEALClassifier

    out = sys.argv[1]
    tiny = json.loads(sys.argv[2])
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 28, 28, 3), dtype=np.uint8)
    y = np.arange(40) % 2
    X[y == 1, ::2] //= 2  # something to learn
    clf = PEALClassifier(**tiny, max_epochs=2, random_state=0, device="cpu",
                         accelerator="auto").fit(X, y)
    acc = clf.accelerator_
    rank = acc.process_index
    trained = {k: v for k, v in clf.net_.module_.state_dict().items()
               if "lora_" in k or k.startswith("head.")}
    torch.save(trained, os.path.join(out, f"rank{rank}.pt"))
    proba = clf.predict_proba(X)
    emb = clf.transform(X)
    path = clf.save_adapters(os.path.join(out, "model"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({
            "rank": rank,
            "world": acc.num_processes,
            "distributed_type": str(acc.distributed_type),
            "backend": str(acc.state.backend),
            "main": acc.is_main_process,
            "batches_last_epoch": len(clf.net_.history[-1, "batches"]),
            "model_there_after_save": os.path.isfile(os.path.join(path, "head.safetensors")),
            "proba": proba.tolist(),
            "emb_sum": float(np.abs(emb).sum()),
            "n_emb": len(emb),
        }, f)
    """
)


def _two_process_prerequisites():
    """What a two-process CPU run needs that this machine lacks (None: nothing)."""
    if not torch.distributed.is_available():
        return "torch was built without torch.distributed"
    if not torch.distributed.is_gloo_available():
        return "torch.distributed has no gloo backend (needed for CPU processes)"
    return None


def test_two_processes_on_cpu(tmp_path):
    missing = _two_process_prerequisites()
    if missing:
        pytest.skip(f"two-process accelerate run impossible here: {missing}")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out"
    out.mkdir()
    tiny = dict(TINY_VIT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(
        CUDA_VISIBLE_DEVICES="",  # CPU processes even on a GPU machine
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        ACCELERATE_DISABLE_RICH="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # torchrun-style launcher; the worker asks for the CPU (gloo)
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",  # a free port
        str(script),
        str(out),
        json.dumps(tiny),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]  # both ranks finished
    for r in reports:
        assert r["world"] == 2
        assert r["distributed_type"].endswith("MULTI_CPU")
        assert r["backend"] == "gloo"
        assert r["model_there_after_save"]  # save_adapters waits for the main process
        assert r["n_emb"] == 40
    assert [r["main"] for r in reports] == [True, False]
    # each rank trained on its half of the batches: 40 images / 8 = 5 batches -> 3 each
    # (accelerate pads the last round with repeated samples)
    assert [r["batches_last_epoch"] for r in reports] == [3, 3]

    # gradients were averaged: both ranks end with the same adapters and head, although
    # each saw different batches
    p0, p1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert p0.keys() == p1.keys() and any("lora_" in k for k in p0)
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
    assert p0["head.weight"].abs().sum() > 0

    # predictions and embeddings were gathered: the full result, the same on both ranks
    proba0, proba1 = (np.asarray(r["proba"]) for r in reports)
    assert proba0.shape == (40, 2)
    assert_allclose(proba0, proba1, rtol=1e-6)
    assert reports[0]["emb_sum"] == pytest.approx(reports[1]["emb_sum"], rel=1e-6)

    # rank 0 wrote the model: the saved head and adapters are the trained ones
    from safetensors.torch import load_file

    model = out / "model"
    assert sorted(p.name for p in model.iterdir()) == [
        "adapter_model.safetensors",
        "head.safetensors",
        "peal_sk.json",
    ]
    assert not list(out.glob(".model.tmp-*"))
    head = load_file(model / "head.safetensors")
    assert torch.equal(head["weight"], p0["head.weight"])
    adapters = load_file(model / "adapter_model.safetensors")
    assert len(adapters) == sum("lora_" in k for k in p0)
