"""peal_sk.distributed on a real dask.distributed LocalCluster (2 worker processes)."""

import functools
import importlib
import os
import signal
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
da = pytest.importorskip("dask.array", reason="needs the [dask] extra (dask[array])")
db = pytest.importorskip("dask.bag", reason="needs the [dask] extra (dask[array])")
distributed = pytest.importorskip("distributed", reason="needs the [dask] extra (distributed)")

os.environ["HF_HUB_OFFLINE"] = "1"

from _dask_backbones import N_FEATURES, model_loads, tiny_factory  # noqa: E402
from numpy.testing import assert_allclose  # noqa: E402
from PIL import Image  # noqa: E402

from peal_sk.__main__ import main  # noqa: E402
from peal_sk.classifier import BackboneEmbedder, create_backbone  # noqa: E402
from peal_sk.distributed import (  # noqa: E402
    DaskEmbedder,
    embed_dask,
    embed_to_shards,
    load_shards,
)

TINY_KWARGS = {"depth": 1, "embed_dim": 16, "num_heads": 2}
#: float32 results of different batch compositions agree to about 1e-6
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each; each worker offers one "GPU" resource."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the dashboard's port in use
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            resources={"GPU": 1},
        )
    with cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        # the workers import torch and timm here, in the fixture, not in the first test
        client.run(importlib.import_module, "peal_sk.classifier")
        yield cluster, client


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny ViT's weights on disk: every process loads the same model from it."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.manual_seed(0)
    model, _ = create_backbone(
        "vit_small_patch14_dinov2", pretrained=False, img_size=28, backbone_kwargs=TINY_KWARGS
    )
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def vit(checkpoint):
    return BackboneEmbedder(
        "vit_small_patch14_dinov2",
        checkpoint_path=checkpoint,
        img_size=28,
        backbone_kwargs=TINY_KWARGS,
        batch_size=4,
        precision="fp32",
    )


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).integers(0, 256, size=(22, 28, 28, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def png_paths(X, tmp_path_factory):
    folder = tmp_path_factory.mktemp("png")
    paths = []
    for i, img in enumerate(X[:10]):
        p = folder / f"img{i:02d}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    return paths


def factory_embedder(**kwargs):
    return BackboneEmbedder(
        functools.partial(tiny_factory, **kwargs), img_size=16, batch_size=4, precision="fp32"
    )


# -- without a cluster ---------------------------------------------------------------------
def test_import_needs_neither_torch_nor_dask():
    import subprocess
    import sys

    code = (
        "import sys, peal_sk, peal_sk.distributed\n"
        "bad = [m for m in ('torch', 'dask', 'distributed') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_invalid_arguments_are_named(vit, X):
    with pytest.raises(TypeError, match="BackboneEmbedder"):
        embed_dask(object(), X)
    with pytest.raises(ValueError, match="block_size"):
        embed_dask(vit, X, block_size=0)
    with pytest.raises(ValueError, match="shape"):
        embed_dask(vit, da.zeros((4, 2, 2, 2, 3), chunks=2))
    with pytest.raises(TypeError, match=r"mixes file paths .*item 1"):
        embed_dask(vit, [X[0], "a.png"])
    with pytest.raises(TypeError, match="list of file paths"):
        embed_dask(vit, np.array([{}, {}], dtype=object))
    with pytest.raises(ValueError, match="1-D"):
        embed_dask(vit, da.from_array(np.array([["a", "b"], ["c", "d"]], dtype=object), chunks=1))
    with pytest.raises(ValueError, match="shard_size"):
        embed_to_shards(".", "out", vit, shard_size=0)
    with pytest.raises(ValueError, match="scheduler"):
        embed_to_shards(".", "out", vit, resources={"GPU": 1})


def test_threaded_scheduler_matches_transform(vit, X):
    Z = embed_dask(vit, da.from_array(X, chunks=(5, 28, 28, 3)))
    assert Z.shape == (22, 16) and Z.chunks[0] == (5, 5, 5, 5, 2) and Z.dtype == np.float32
    assert_allclose(Z.compute(scheduler="threads"), vit.fit().transform(X), **TOL)


# -- on the LocalCluster ---------------------------------------------------------------------
def test_image_array_on_cluster_matches_in_process(cluster, vit, X):
    _, client = cluster
    # chunked along more than the rows: the blocks are merged to whole images first
    Z = embed_dask(vit, da.from_array(X, chunks=(6, 14, 28, 3)))
    assert Z.chunks == ((6, 6, 6, 4), (16,))
    assert_allclose(client.compute(Z).result(), vit.fit().transform(X), **TOL)


def test_paths_array_and_bag_on_cluster(cluster, vit, png_paths):
    _, client = cluster
    expected = vit.fit().transform(png_paths)
    paths = da.from_array(np.asarray(png_paths, dtype=object), chunks=3)
    assert_allclose(client.compute(embed_dask(vit, paths)).result(), expected, **TOL)
    bag = db.from_sequence(png_paths, npartitions=3)
    Z = embed_dask(vit, bag)
    assert Z.shape[1] == 16 and np.isnan(Z.shape[0])
    assert_allclose(client.compute(Z).result(), expected, **TOL)
    # an in-memory list of paths, split into blocks here
    Z = embed_dask(vit, png_paths, block_size=4)
    assert Z.chunks[0] == (4, 4, 2)
    assert_allclose(client.compute(Z).result(), expected, **TOL)


def test_model_loaded_once_per_worker(cluster, tmp_path):
    _, client = cluster
    log = tmp_path / "loads.txt"
    emb = factory_embedder(log=str(log))  # unfitted: the width is read on a worker
    X = np.random.default_rng(1).integers(0, 256, size=(48, 16, 16, 3), dtype=np.uint8)
    Z = embed_dask(emb, da.from_array(X, chunks=(4, 16, 16, 3)))  # 12 blocks
    first = client.compute(Z).result()
    second = client.compute(embed_dask(emb, da.from_array(X, chunks=(6, 16, 16, 3)))).result()
    assert_allclose(first, second, **TOL)
    pids = [int(p) for p in log.read_text().split()]
    workers = set(client.run(os.getpid).values())
    # every load happened on a worker, at most once each, although 20 tasks ran
    assert set(pids) <= workers and len(pids) == len(set(pids)) >= 1
    loads = client.run(model_loads)
    assert all(count == 1 for per_worker in loads.values() for count in per_worker.values())
    # the same numbers as in this process
    reference = factory_embedder().fit().transform(X)
    assert_allclose(first, reference, **TOL)
    assert first.shape == (48, N_FEATURES)


def test_resources_restrict_the_blocks(cluster, vit, X):
    """The documented way to GPU workers: compute / persist with resources."""
    _, client = cluster
    Z = embed_dask(vit, da.from_array(X, chunks=(11, 28, 28, 3)))
    Z = client.persist(Z, resources={"GPU": 1})
    distributed.wait(Z)

    def restrictions(dask_scheduler):
        return [
            dict(ts.resource_restrictions)
            for ts in dask_scheduler.tasks.values()
            if "_embed_block" in str(ts.key)
        ]

    seen = client.run_on_scheduler(restrictions)
    assert seen and all(r == {"GPU": 1} for r in seen)
    assert_allclose(Z.compute(), vit.fit().transform(X), **TOL)


def test_random_weights_warn_on_a_cluster(cluster, X):
    emb = BackboneEmbedder(
        "vit_small_patch14_dinov2", pretrained=False, img_size=28, backbone_kwargs=TINY_KWARGS
    )
    with pytest.warns(UserWarning, match="random weights"):
        embed_dask(emb.fit(), X)


def test_dask_embedder_in_a_pipeline(cluster, vit, X):
    _, client = cluster
    wrapper = DaskEmbedder(vit, block_size=8).fit()
    assert wrapper.n_features_out_ == 16 and not hasattr(wrapper.embedder_, "n_features_out_")
    Z = wrapper.transform(X)
    assert Z.chunks[0] == (8, 8, 6)
    assert_allclose(client.compute(Z).result(), vit.fit().transform(X), **TOL)
    assert list(wrapper.get_feature_names_out()[:2]) == ["embedding0", "embedding1"]


def test_embed_command_on_the_cluster(cluster, vit, checkpoint, png_paths, tmp_path, capsys):
    local_cluster, _ = cluster
    folder = os.path.dirname(png_paths[0])
    args = [
        "embed",
        folder,
        "--backbone",
        "vit_small_patch14_dinov2",
        "--checkpoint",
        checkpoint,
        "--img-size",
        "28",
        "--backbone-kwargs",
        '{"depth": 1, "embed_dim": 16, "num_heads": 2}',
        "--precision",
        "fp32",
        "--shard-size",
        "3",
    ]
    assert main([*args, "--out", str(tmp_path / "here")]) == 0
    there = ["--out", str(tmp_path / "there"), "--scheduler", local_cluster.scheduler_address]
    assert main([*args, *there, "--resources", "GPU=1"]) == 0
    assert "4 shards (4 computed" in capsys.readouterr().out
    X_here, p_here = load_shards(tmp_path / "here")
    X_there, p_there = load_shards(tmp_path / "there", verify=True)
    assert list(p_here) == list(p_there) == png_paths
    assert_allclose(X_there, X_here, **TOL)
    assert_allclose(X_there, vit.fit().transform(png_paths), **TOL)


def test_embed_to_shards_with_a_client(cluster, vit, png_paths, tmp_path):
    _, client = cluster
    manifest = embed_to_shards(
        os.path.dirname(png_paths[0]), tmp_path / "out", vit, shard_size=4, scheduler=client
    )
    assert manifest["complete"] and manifest["n"] == 10 and manifest["dims"] == 16
    assert client.status == "running"  # a client passed in stays open
    X, paths = load_shards(tmp_path / "out")
    assert_allclose(X, vit.fit().transform(png_paths), **TOL)


# last: it restarts a worker
def test_worker_killed_mid_run_loses_and_duplicates_no_row(cluster):
    _, client = cluster
    emb = factory_embedder(delay=0.25)
    X = np.random.default_rng(2).integers(0, 256, size=(64, 16, 16, 3), dtype=np.uint8)
    Z = embed_dask(emb, da.from_array(X, chunks=(4, 16, 16, 3))).persist()  # 16 blocks
    futures = distributed.futures_of(Z)
    pids = client.run(os.getpid)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        done = sum(f.done() for f in futures)
        busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
        if 1 <= done < len(futures) - 4 and busy:
            victim = busy[0]
        else:
            time.sleep(0.02)
    assert victim is not None, "no worker was busy mid-run"
    os.kill(pids[victim], signal.SIGKILL)
    result = Z.compute()
    reference = factory_embedder().fit().transform(X)
    assert result.shape == reference.shape == (64, N_FEATURES)
    assert_allclose(result, reference, **TOL)
    client.wait_for_workers(2, timeout=120)  # the nanny restarts the worker
    assert pids[victim] not in client.run(os.getpid).values()


def test_unreachable_scheduler_is_a_clear_error(tmp_path, png_paths, checkpoint, capsys):
    import dask

    folder = os.path.dirname(png_paths[0])
    argv = ["embed", folder, "--out", str(tmp_path / "out"), "--checkpoint", checkpoint]
    argv += ["--backbone", "vit_small_patch14_dinov2", "--img-size", "28"]
    argv += ["--backbone-kwargs", '{"depth": 1, "embed_dim": 16, "num_heads": 2}']
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main([*argv, "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "peal-sk embed: error:" in capsys.readouterr().err
