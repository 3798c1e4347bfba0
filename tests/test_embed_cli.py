"""``peal-sk embed``: sharded, atomic, resumable embeddings of an image folder (no dask)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

os.environ["HF_HUB_OFFLINE"] = "1"

from numpy.testing import assert_allclose  # noqa: E402
from PIL import Image  # noqa: E402

from peal_sk.__main__ import main  # noqa: E402
from peal_sk.classifier import BackboneEmbedder, create_backbone  # noqa: E402
from peal_sk.distributed import embed_to_shards, list_images, load_shards  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_KWARGS = {"depth": 1, "embed_dim": 16, "num_heads": 2}
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.manual_seed(0)
    model, _ = create_backbone(
        "vit_small_patch14_dinov2", pretrained=False, img_size=28, backbone_kwargs=TINY_KWARGS
    )
    torch.save(model.state_dict(), path)
    return str(path)


def embedder(checkpoint):
    return BackboneEmbedder(
        "vit_small_patch14_dinov2",
        checkpoint_path=checkpoint,
        img_size=28,
        backbone_kwargs=TINY_KWARGS,
        precision="fp32",
    )


def args(source, out, checkpoint, *extra, shard_size=3):
    return [
        "embed",
        str(source),
        "--out",
        str(out),
        "--backbone",
        "vit_small_patch14_dinov2",
        "--checkpoint",
        checkpoint,
        "--img-size",
        "28",
        "--backbone-kwargs",
        json.dumps(TINY_KWARGS),
        "--precision",
        "fp32",
        "--shard-size",
        str(shard_size),
        *extra,
    ]


def make_images(folder, n=8, size=32, seed=0):
    """``n`` PNG and JPEG files, every other one in a sub-folder; returns the paths sorted."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / ("nested" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"img{i:02d}.{'png' if i % 3 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return sorted(paths)


def stamps(out):
    """(inode, mtime) of every shard file: a rewritten file gets a new inode (os.replace)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.glob("shard-*"))}


def test_folder_with_an_unreadable_image(tmp_path, checkpoint, capsys):
    src = tmp_path / "images"
    good = make_images(src)
    (src / "nested" / "broken.png").write_bytes(b"not an image")
    (src / ".hidden.png").write_bytes(b"skipped: hidden")
    (src / "notes.txt").write_text("not an image extension")
    assert main(args(src, tmp_path / "out", checkpoint)) == 0
    captured = capsys.readouterr()
    assert "skipped unreadable image" in captured.err and "broken.png" in captured.err
    assert "8 embeddings x 16 in 3 shards (3 computed, 0 kept" in captured.out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n"] == 8 and manifest["dims"] == 16
    assert manifest["n_paths"] == 9 and manifest["n_shards"] == 3
    assert [s["path"] for s in manifest["skipped"]] == [str(src / "nested" / "broken.png")]
    assert manifest["config"]["img_size"] == 28 and manifest["config"]["shard_size"] == 3
    assert manifest["config"]["checkpoint_path"]["sha256"]
    assert [s["file"] for s in manifest["shards"]] == [f"shard-0000{i}.npy" for i in range(3)]
    X, paths = load_shards(tmp_path / "out", verify=True)
    assert list(paths) == good and X.dtype == np.float32
    assert_allclose(X, embedder(checkpoint).fit().transform(good), **TOL)
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob(".*tmp"))


def test_list_file_source(tmp_path, checkpoint, capsys):
    paths = make_images(tmp_path / "pool", n=4)
    listing = tmp_path / "list.txt"
    lines = [
        "# the pool",
        os.path.relpath(paths[0], tmp_path),
        "",
        paths[1],
        str(tmp_path / "gone.png"),
        *paths[2:],
    ]
    listing.write_text("\n".join(lines) + "\n")
    assert list_images(listing) == [paths[0], paths[1], str(tmp_path / "gone.png"), *paths[2:]]
    assert main(args(listing, tmp_path / "out", checkpoint, shard_size=10)) == 0
    assert "gone.png (missing" in capsys.readouterr().err
    X, got = load_shards(tmp_path / "out")
    assert list(got) == paths
    assert_allclose(X, embedder(checkpoint).fit().transform(paths), **TOL)


@pytest.mark.parametrize(
    "make_source, message",
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no image files under"),
        (lambda tmp: make_images(tmp / "one", n=1)[0], "is an image"),
        (lambda tmp: (tmp / "l.txt").write_text("# nothing\n\n") and tmp / "l.txt", "names no"),
    ],
    ids=["missing", "empty-folder", "an-image", "empty-list"],
)
def test_source_errors_before_any_output(tmp_path, checkpoint, capsys, make_source, message):
    source = make_source(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args(source, tmp_path / "out", checkpoint))
    assert exc.value.code == 1  # a data error, not a command-line one (issue 25)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_weights_errors(tmp_path, checkpoint):
    make_images(tmp_path / "imgs", n=2)
    random = BackboneEmbedder("vit_small_patch14_dinov2", pretrained=False, img_size=28)
    with pytest.raises(ValueError, match="random weights"):
        embed_to_shards(tmp_path / "imgs", tmp_path / "out", random)
    with pytest.raises(ValueError, match="no_such_backbone"):
        embed_to_shards(tmp_path / "imgs", tmp_path / "out", BackboneEmbedder("no_such_backbone"))
    assert not (tmp_path / "out").exists()


def test_rerun_keeps_shards_and_another_config_refuses(tmp_path, checkpoint, capsys):
    src, out = tmp_path / "images", tmp_path / "out"
    make_images(src, n=7)
    assert main(args(src, out, checkpoint)) == 0
    before = stamps(out)
    (out / ".shard-00001.npy.999.tmp").write_bytes(b"left by a killed run")
    capsys.readouterr()
    assert main(args(src, out, checkpoint, "--batch-size", "2")) == 0  # batch size: same config
    assert "(0 computed, 3 kept" in capsys.readouterr().out
    assert stamps(out) == before
    assert not list(out.glob(".*.tmp"))

    with pytest.raises(SystemExit):
        main(args(src, out, checkpoint, shard_size=5))
    assert "another configuration (shard_size: 3 -> 5)" in capsys.readouterr().err
    assert stamps(out) == before
    assert main(args(src, out, checkpoint, "--force", shard_size=5)) == 0
    assert sorted(stamps(out)) == [
        "shard-00000.npy",
        "shard-00000.paths.txt",
        "shard-00001.npy",
        "shard-00001.paths.txt",
    ]
    assert load_shards(out)[0].shape == (7, 16)


def test_changed_image_or_damaged_shard_recomputes_only_that_shard(tmp_path, checkpoint, capsys):
    src, out = tmp_path / "images", tmp_path / "out"
    paths = make_images(src, n=9)
    assert main(args(src, out, checkpoint)) == 0
    before = stamps(out)
    # shard 0: a new image in place of an old one; shard 2: a truncated shard file
    Image.new("RGB", (32, 32), (255, 0, 0)).save(paths[1])
    os.utime(paths[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    npy = out / "shard-00002.npy"
    npy.write_bytes(npy.read_bytes()[:50])
    capsys.readouterr()
    assert main(args(src, out, checkpoint)) == 0
    assert "(2 computed, 1 kept" in capsys.readouterr().out
    after = stamps(out)
    assert after["shard-00001.npy"] == before["shard-00001.npy"]
    assert after["shard-00000.npy"] != before["shard-00000.npy"]
    assert after["shard-00002.npy"] != before["shard-00002.npy"]
    X, _ = load_shards(out, verify=True)
    assert_allclose(X, embedder(checkpoint).fit().transform(paths), **TOL)


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, checkpoint):
    fcntl = pytest.importorskip("fcntl")
    src, out = tmp_path / "images", tmp_path / "out"
    make_images(src, n=2)
    out.mkdir()
    with open(out / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(FileExistsError, match="another peal-sk embed"):
            embed_to_shards(src, out, embedder(checkpoint))


def test_killed_run_resumes_without_recomputing_or_partial_shards(tmp_path, checkpoint, capsys):
    src, out = tmp_path / "images", tmp_path / "out"
    paths = make_images(src, n=48, size=64)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "peal_sk", *args(src, out, checkpoint, shard_size=2)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "manifest.json"
    done = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.exists():
                state = json.loads(manifest.read_text())  # replaced atomically: never partial
                if state["shards"]:
                    done = state["shards"]
                    break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done, f"no shard was finished before the run ended: {proc.stderr.read()!r}"
    state = json.loads(manifest.read_text())
    assert not state["complete"], "the run finished before it was killed"
    finished = {e["file"] for e in state["shards"]}
    # every shard file on disk is whole (temporary files aside), listed or not
    for npy in out.glob("shard-*.npy"):
        assert np.load(npy).shape[1] == 16
    before = {name: stamp for name, stamp in stamps(out).items() if name in finished}

    assert main(args(src, out, checkpoint, shard_size=2)) == 0
    report = capsys.readouterr().out
    assert f"{24 - len(finished)} computed, {len(finished)} kept" in report
    after = stamps(out)
    assert {name: after[name] for name in before} == before  # finished shards untouched
    assert not list(out.glob(".*.tmp"))
    X, got = load_shards(out, verify=True)
    assert list(got) == paths
    assert_allclose(X, embedder(checkpoint).fit().transform(paths), **TOL)


# -- issue 27: names that break lines, failed runs, options checked before any work -----------
ODD_NAMES = ["form\x0cfeed", "vertical\x0btab", "fs\x1c", "gs\x1d", "rs\x1e", "nel\x85", "ls\u2028"]
ODD_NAMES += ["ps\u2029", "new\nline", "carriage\rreturn"]


def test_file_names_with_line_separators_round_trip(tmp_path, checkpoint):
    src, out = tmp_path / "images", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for k, name in enumerate(ODD_NAMES):
        p = src / f"{k:02d}-{name}.png"
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    assert main(args(src, out, checkpoint, shard_size=4)) == 0
    X, got = load_shards(out, verify=True)
    assert list(got) == sorted(paths)
    assert_allclose(X, embedder(checkpoint).fit().transform(sorted(paths)), **TOL)
    # shards written before the encoding (one plain path per line) are still read, at the
    # form feed and its kin too
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["shards"]:
        rows = [p for p in got[4 * entry["index"] : 4 * entry["index"] + entry["rows"]]]
        if any(c in p for p in rows for c in "\n\r"):
            continue  # such names were never written by older runs
        (out / entry["paths_file"]).write_text("".join(p + "\n" for p in rows), encoding="utf-8")
        del entry["paths_encoding"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert list(load_shards(out)[1]) == sorted(paths)


def test_a_failed_run_leaves_no_manifest(tmp_path, checkpoint, capsys):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    src, out = tmp_path / "images", tmp_path / "out"
    make_images(src, n=4)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(args(src, out, checkpoint, "--scheduler", "tcp://127.0.0.1:1")) == 2
    assert "peal-sk embed: error:" in capsys.readouterr().err
    assert not (out / "manifest.json").exists()
    # the corrected command, with another shard size, is not refused
    assert main(args(src, out, checkpoint, shard_size=2)) == 0
    assert load_shards(out)[0].shape == (4, 16)


def test_a_manifest_without_shards_does_not_block_another_configuration(tmp_path, checkpoint):
    src, out = tmp_path / "images", tmp_path / "out"
    make_images(src, n=3)
    assert main(args(src, out, checkpoint, shard_size=2)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["shards"]:
        (out / entry["file"]).unlink()
        (out / entry["paths_file"]).unlink()
    manifest.update(shards=[], complete=False)  # what a failed older run left
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(args(src, out, checkpoint, shard_size=5)) == 0
    assert json.loads((out / "manifest.json").read_text())["config"]["shard_size"] == 5


def test_library_errors_name_parameters_and_the_command_its_flags(tmp_path, checkpoint, capsys):
    src, out = tmp_path / "images", tmp_path / "out"
    make_images(src, n=3)
    assert main(args(src, out, checkpoint)) == 0
    with pytest.raises(FileExistsError, match=r"pass force=True"):
        embed_to_shards(src, out, embedder(checkpoint), shard_size=2)
    with pytest.raises(SystemExit):
        main(args(src, out, checkpoint, shard_size=2))
    err = capsys.readouterr().err
    assert "pass --force" in err and "force=True" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--backbone-kwargs", '{"depth": 1, "embed_dim": 16, "num_heads": 2, "bogus_arg": 1}'],
            "--backbone-kwargs {'depth': 1, 'embed_dim': 16, 'num_heads': 2, 'bogus_arg': 1} do "
            "not fit",
        ),
        (["--device", "bogus"], "--device 'bogus' is not a torch device"),
        (["--device", "cuda"], "--device 'cuda', but torch finds no CUDA GPU"),
        (["--device", "cuda:7"], "--device 'cuda:7', but "),
        (["--checkpoint", "NOT_WEIGHTS"], "is not a weight file that loads safely"),
    ],
    ids=[
        "backbone-kwargs",
        "device-bogus",
        "device-cuda",
        "device-cuda-7",
        "checkpoint-not-weights",
    ],
)
def test_embed_options_fail_before_any_work(tmp_path, checkpoint, capsys, extra, message):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    if "cuda:7" in extra and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    src, out = tmp_path / "images", tmp_path / "out"
    make_images(src, n=2)
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    extra = [str(tmp_path / "junk.pth") if e == "NOT_WEIGHTS" else e for e in extra]
    with pytest.raises(SystemExit) as exc:
        main([*args(src, out, checkpoint), *extra])
    # option values checked against the machine and the files: a data error (exit 1, one
    # line, no usage), not a command-line one (docs/cli.rst, "Exit codes")
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "weights_only" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
