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

Part 2, selection on a cluster (``--part selection``): a synthetic pool
(``_common.make_data``: ``--n`` x ``--d`` float32, default 2,000,000 x 384, 100 Gaussian
blobs) and BiLAF and TypiClust run twice each, in-process with ``n_jobs=1`` (the baseline,
in the same run) and with ``n_jobs=-1`` inside ``joblib.parallel_config(backend="dask")``
on a fresh LocalCluster of ``--workers`` worker processes (1 thread each). Reported per
run: wall time, peak RSS of the parent (sampled, and ``resource.getrusage`` over the
script's life) and of each worker (sampled every 50 ms with psutil on the worker pids;
the workers' own ``getrusage`` is useless here: a spawned process inherits its parent's
peak), and whether the selections (indices and scores) are identical. BiLAF gets its
cores from k-centre, computed once beforehand and passed as ``core_indices`` (the core
stage runs in one process either way; its time is reported separately). Part 2 also
times k-centre's per-pick update split over row blocks (see ``bench_kcenter_update``).

Usage::

    python benchmarks/bench_scale.py [--n 512] [--img-size 128] [--workers 1 2]
    python benchmarks/bench_scale.py --part selection [--n 2000000] [--d 384] [--workers 2]

Writes ``benchmarks/results/scale.json`` (embedding) or ``scale_selection.json``
(selection). Needs the ``[dask]`` extra (and ``[torch]`` for the embedding part).
"""

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from _common import make_data, run_metadata, write_json

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def make_jpegs(folder, n, size=160, seed=0):
    """``n`` smooth random-colour JPEG files (upsampled 10 x 10 noise), quality 90."""
    from PIL import Image

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


class PeakRSS:
    """Peak resident memory of some processes, sampled every ``interval`` s in a thread."""

    def __init__(self, pids, interval=0.05):
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = dict.fromkeys(pids, 0)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            for pid, proc in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], proc.memory_info().rss)
                except Exception:  # a worker that went away
                    pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _mib(nbytes):
    return round(nbytes / 2**20, 1)


def _maxrss_mib():
    """This process's lifetime peak RSS (``ru_maxrss`` is in KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _selectors(args, cores):
    from peal_sk.selection import BiLAFSelector, TypiClustSelector

    return {
        "BiLAF": lambda n_jobs: BiLAFSelector(core_indices=cores, random_state=0, n_jobs=n_jobs),
        "TypiClust": lambda n_jobs: TypiClustSelector(random_state=0, n_jobs=n_jobs),
    }


def bench_selection(args):
    """BiLAF and TypiClust in-process (n_jobs=1) vs on a LocalCluster (dask backend)."""
    import distributed
    import joblib

    from peal_sk.selection import KCenterSelector

    t0 = time.perf_counter()
    X = make_data(args.n, args.d)
    gen_s = time.perf_counter() - t0
    print(f"pool {X.shape} float32 ({_mib(X.nbytes)} MiB) generated in {gen_s:.1f} s")
    n_cores = max(1, round(args.bilaf_cores * args.n))
    t0 = time.perf_counter()
    cores = KCenterSelector(random_state=0).select(X, n_cores)
    cores_s = time.perf_counter() - t0
    print(f"{n_cores} k-centre cores in {cores_s:.1f} s")
    budgets = {"BiLAF": args.bilaf_budget, "TypiClust": args.typiclust_budget}
    rows = []
    for name, factory in _selectors(args, cores).items():
        budget = budgets[name]
        with PeakRSS([os.getpid()]) as mem:
            t0 = time.perf_counter()
            sel = factory(1)
            ref_idx, ref_scores = sel(None, X, budget)
            wall = time.perf_counter() - t0
        base = {
            "selector": name,
            "budget": budget,
            "params": {
                k: v for k, v in sel.get_params().items() if k not in ("core_indices", "n_jobs")
            },
        }
        rows.append(
            {
                **base,
                "run": "in-process, n_jobs=1",
                "wall_s": round(wall, 2),
                "parent_peak_rss_mib_sampled": _mib(mem.peak[os.getpid()]),
                "parent_maxrss_mib_so_far": _maxrss_mib(),
            }
        )
        print(rows[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = distributed.LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
        with cluster, distributed.Client(cluster) as client:
            client.wait_for_workers(args.workers)
            client.run(importlib.import_module, "peal_sk.selection")  # imports, not timed
            pids = client.run(os.getpid)
            idle = {a: _mib(r) for a, r in client.run(lambda: psutil_rss()).items()}
            with PeakRSS([os.getpid(), *pids.values()]) as mem:
                t0 = time.perf_counter()
                with joblib.parallel_config(backend="dask"):
                    sel = factory(-1)
                    idx, scores = sel(None, X, budget)
                wall = time.perf_counter() - t0
        same_scores = bool(np.array_equal(scores, ref_scores))
        extra = {}
        if not same_scores:
            # the workers run BLAS on 1 thread, this process on all cores: OpenBLAS rounds
            # a multi-threaded GEMM differently; the same in-process run on 1 BLAS thread
            # tells whether that is the whole difference
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1, user_api="blas"):
                one_idx, one_scores = factory(1)(None, X, budget)
            extra["in_process_1_blas_thread_identical_to_cluster"] = bool(
                np.array_equal(one_idx, idx) and np.array_equal(one_scores, scores)
            )
        rows.append(
            {
                **base,
                "run": f"LocalCluster, {args.workers} workers x 1 thread, dask backend, n_jobs=-1",
                "wall_s": round(wall, 2),
                "parent_peak_rss_mib_sampled": _mib(mem.peak[os.getpid()]),
                "parent_maxrss_mib_so_far": _maxrss_mib(),
                "worker_idle_rss_mib": list(idle.values()),
                "worker_peak_rss_mib_sampled": [_mib(mem.peak[p]) for p in pids.values()],
                "identical_indices": bool(np.array_equal(idx, ref_idx)),
                "identical_scores": same_scores,
                "max_abs_score_diff": float(np.abs(scores - ref_scores).max()),
                **extra,
            }
        )
        print(rows[-1])
        rows[-1]["speed_vs_in_process"] = round(rows[-2]["wall_s"] / rows[-1]["wall_s"], 2)
    return {
        "pool": f"{args.n} x {args.d} float32, _common.make_data (100 blobs, seed 0)",
        "pool_mib": _mib(X.nbytes),
        "bilaf_cores": {"n_cores": n_cores, "selector": "KCenterSelector", "seconds": cores_s},
        "rows": rows,
        "kcenter_update": bench_kcenter_update(X[: min(len(X), 300_000)]),
    }


def psutil_rss():
    import psutil

    return psutil.Process().memory_info().rss


def _update_block(X, sq, c, c_sq, mind2):
    d2 = sq - 2 * (X @ c) + c_sq
    np.minimum(mind2, d2, out=mind2)  # in place: the caller's block of mind2
    return None


def bench_kcenter_update(X, picks=20):
    """k-centre's per-pick update (one matrix-vector product over the pool and a minimum)
    in one call vs split in two row blocks through joblib (threading, each block with 1
    BLAS thread; loky would copy the distances back every pick)."""
    import joblib
    from threadpoolctl import threadpool_limits

    sq = np.einsum("ij,ij->i", X, X)
    rng = np.random.default_rng(0)
    centres = X[rng.choice(len(X), size=picks, replace=False)]
    mind2 = np.full(len(X), np.inf, dtype=np.float32)
    t0 = time.perf_counter()
    for c in centres:
        _update_block(X, sq, c, float(c @ c), mind2)
    serial = (time.perf_counter() - t0) / picks
    ref = mind2.copy()
    mind2[:] = np.inf
    half = len(X) // 2
    blocks = [slice(0, half), slice(half, len(X))]
    with joblib.Parallel(n_jobs=2, backend="threading") as parallel, threadpool_limits(1):
        t0 = time.perf_counter()
        for c in centres:
            parallel(
                joblib.delayed(_update_block)(X[b], sq[b], c, float(c @ c), mind2[b])
                for b in blocks
            )
        threaded = (time.perf_counter() - t0) / picks
    out = {
        "rows": len(X),
        "picks": picks,
        "serial_ms_per_pick": round(1e3 * serial, 2),
        "threading_2_blocks_ms_per_pick": round(1e3 * threaded, 2),
        "same_distances": bool(np.array_equal(mind2, ref)),
    }
    print(out)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", choices=["embedding", "selection"], default="embedding", help="which part"
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="embedding: generated JPEG files (512); selection: pool rows (2,000,000)",
    )
    parser.add_argument("--d", type=int, default=384, help="selection: pool features")
    parser.add_argument("--bilaf-cores", type=float, default=0.005, help="K as a pool fraction")
    parser.add_argument("--bilaf-budget", type=int, default=None, help="default: 3 K")
    parser.add_argument("--typiclust-budget", type=int, default=100)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=None, help="embedding: 1 2; selection: 2"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.part == "selection":
        args.n = 2_000_000 if args.n is None else args.n
        args.workers = 2 if args.workers is None else args.workers[0]
        if args.bilaf_budget is None:
            args.bilaf_budget = 3 * max(1, round(args.bilaf_cores * args.n))
        out = args.out or RESULTS / "scale_selection.json"
        result = {**run_metadata("bench_scale.py"), "selection": bench_selection(args)}
    else:
        args.n = 512 if args.n is None else args.n
        args.workers = [1, 2] if args.workers is None else args.workers
        out = args.out or RESULTS / "scale.json"
        with tempfile.TemporaryDirectory(prefix="peal-sk-bench-scale-") as tmp:
            embedding = bench_embedding(args, Path(tmp))
        result = {**run_metadata("bench_scale.py"), "embedding": embedding}
    args.out = out
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
