"""Beyond one process: ``peal-sk embed`` in-process vs on a Dask LocalCluster.

Part 1, embedding throughput: ``--n`` generated JPEG files (160 x 160, smooth random
colours, fixed seed) embedded by ``peal-sk embed`` (EfficientNet-Lite0 at 128 px from its
offline weight package by default) in a fresh process each time:

* in-process (no dask; torch's default threads), the baseline, measured in the same run;
* on a LocalCluster of 1 and of 2 worker processes (1 thread each; ``--scheduler``).
  Each cluster runs the command twice: "cold" (every worker loads the model on its first
  shard) and "warm" (the workers' model cache is filled).

Throughput is images / embedding second (the manifest's ``wall_time_s``: listing the
folder, computing and writing the shards; not the interpreter's start-up), also given
with the command's whole wall time.

Part 2, selection on a cluster (BiLAF, TypiClust in-process vs on a LocalCluster through
``joblib.parallel_config(backend="dask")``): not measured yet, see ``bench_selection``.

Usage::

    python benchmarks/bench_scale.py [--n 512] [--img-size 128] [--workers 1 2]

Writes ``benchmarks/results/scale.json``. Needs the ``[torch]`` and ``[dask]`` extras.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import run_metadata
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def make_jpegs(folder, n, size=160, seed=0):
    """``n`` smooth random-colour JPEG files (upsampled 10 x 10 noise), quality 90."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, size=(10, 10, 3), dtype=np.uint8))
        small.resize((size, size), Image.BICUBIC).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


def run_embed(images, out, args, scheduler=None):
    """One ``peal-sk embed`` run in a fresh process; its manifest and wall time."""
    cmd = [
        sys.executable,
        "-m",
        "peal_sk",
        "embed",
        str(images),
        "--out",
        str(out),
        "--backbone",
        args.backbone,
        "--img-size",
        str(args.img_size),
        "--shard-size",
        str(args.shard_size),
    ]
    if scheduler is not None:
        cmd += ["--scheduler", scheduler]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"peal-sk embed failed:\n{proc.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, wall


def row(name, manifest, wall, workers, threads):
    embed_s = manifest["wall_time_s"]
    return {
        "run": name,
        "workers": workers,
        "torch_threads_per_process": threads,
        "images": manifest["n"],
        "embed_s": round(embed_s, 2),
        "images_per_s": round(manifest["n"] / embed_s, 1),
        "command_wall_s": round(wall, 2),
    }


def bench_embedding(args, tmp):
    import distributed
    import torch

    images = make_jpegs(tmp / "images", args.n)
    rows = []
    manifest, wall = run_embed(images, tmp / "out-inprocess", args)
    rows.append(row("in-process", manifest, wall, 0, torch.get_num_threads()))
    reference = np.load(tmp / "out-inprocess" / "shard-00000.npy")
    print(rows[-1])
    for n_workers in args.workers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        with cluster, distributed.Client(cluster) as client:
            client.wait_for_workers(n_workers)
            client.run(importlib.import_module, "peal_sk.classifier")  # imports, not timed
            threads = sorted(
                set(client.run(lambda: __import__("torch").get_num_threads()).values())
            )
            for phase in ("cold", "warm"):
                out = tmp / f"out-{n_workers}w-{phase}"
                manifest, wall = run_embed(images, out, args, cluster.scheduler_address)
                diff = float(np.abs(np.load(out / "shard-00000.npy") - reference).max())
                rows.append(
                    {
                        **row(
                            f"{n_workers} worker{'s' if n_workers > 1 else ''}, {phase}",
                            manifest,
                            wall,
                            n_workers,
                            threads,
                        ),
                        "max_abs_diff_vs_in_process": diff,
                    }
                )
                print(rows[-1])
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speed_vs_in_process"] = round(r["images_per_s"] / base, 2)
    return {
        "images": f"{args.n} generated JPEG files, 160 x 160",
        "backbone": args.backbone,
        "img_size": args.img_size,
        "shard_size": args.shard_size,
        "rows": rows,
    }


def bench_selection(args):
    """Selection in-process vs on a LocalCluster: NOT MEASURED YET.

    TODO (issue 15, part 2; the integrator extends this): once the selectors whose work
    splits into independent pieces (BiLAF's clusters, TypiClust's clusters, ProbCover's
    range-search chunks, k-centre / feature-distance blocks) accept ``n_jobs``, time them
    on a 2,000,000 x 384 synthetic pool (``_common.make_data``) with ``n_jobs=1``
    in-process and with ``n_jobs=-1`` inside ``joblib.parallel_config(backend="dask")``
    on a 2-worker LocalCluster (wall time, peak memory per process), and check that the
    selections are identical. Today no selector takes ``n_jobs``, so nothing is run and
    no number is reported.
    """
    return {
        "status": "skipped",
        "reason": "no selector accepts n_jobs yet (issue 15 part 2); nothing measured",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="number of generated JPEG files")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peal-sk-bench-scale-") as tmp:
        embedding = bench_embedding(args, Path(tmp))
    result = {
        **run_metadata("bench_scale.py"),
        "embedding": embedding,
        "selection": bench_selection(args),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
