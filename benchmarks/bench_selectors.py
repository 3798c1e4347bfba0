"""Every feature-based selector on real CIFAR-10 features, side by side with the official
BiLAF / ActiveFT code in the same run.

Features: the cached CIFAR-10 train embeddings of ``cifar10_oneshot.py``
(EfficientNet-Lite0, 128 px, fp32, 50,000 x 1,280) and the same projected to 384-d by
PCA (the width of DINOv2 ViT-S). Each selection runs in a fresh subprocess, so its wall
time and peak RSS (``ru_maxrss``) are its own; the RSS after loading the features is
reported too. Budgets B = 250 and 1,000; ActiveFT also at K = 50 (BiLAF's cores).

``--baselines`` adds, in the same run, the previous implementations of k-centre and
ActiveFT (frozen copies in ``tests/_kcenter_reference.py`` and
``tests/_activeft_reference.py``) and scikit-learn's k-means (``KMeansSelector(
backend="sklearn")``, the previous default), and prints before/after ratios with a
check that the picks are the same (k-centre, ActiveFT) or the inertia within 1 %
(k-means). ``--probe`` adds the test accuracy of a logistic-regression linear probe
on each selection (the protocol of ``cifar10_oneshot.py``).

``--official-dir DIR`` runs the official code of Thinklab-SJTU/BiLAF from a local copy
(never part of this repository): ``DIR/data_selection/Core_Selection/ActiveFT_CIFAR.py``
(and its ``utils.py``) and ``DIR/data_selection/Boundary_Selection/density_cluster.py``.
The adapter below imports them unchanged; ActiveFT's ``.cuda()`` calls are made no-ops
(``torch.Tensor.cuda`` / ``nn.Module.cuda`` return ``self``), which is all the "CPU
copy" needs, so an unmodified copy works too. The official ActiveFT runs
``optimize_dist`` (300 iterations, lr 1e-3, temperature 0.07, random init) on the same
L2-normalised features; the official BiLAF boundary stage runs ``distance_cluster``,
``density_cluster_denoise`` and ``selection`` on the same features with the same K = 50
cores (peal_sk's ActiveFT cores of seed 0), timed like peal_sk's ``BiLAFSelector`` with
``core_indices``. Ratios are official time / peal_sk time of the same configuration in
this run.

Threads: ``--threads 1`` (default) sets BLAS, OpenMP, faiss and torch to one thread in
every subprocess, official code included: on a shared machine two-thread BLAS stalls
whenever another process holds a core. Use ``--threads 0`` to leave the defaults.

Usage::

    python benchmarks/bench_selectors.py                       # peal_sk only
    python benchmarks/bench_selectors.py --baselines --probe --official-dir DIR

The strategies are every registered cold-start selector that uses the features
(``list_selectors(cold_start=True, uses_embeddings=True)``) plus random, built with
``get_selector(name, random_state=seed)``: a newly registered strategy is benchmarked
without editing this file (``OVERRIDES`` holds the few benchmark-specific parameters).
Writes ``benchmarks/results/selectors.json``.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import cpu_flags, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
FEATURES = CACHE / "cifar10_train_efficientnet_lite0_128px_fp32.npy"
TEST_FEATURES = CACHE / "cifar10_test_efficientnet_lite0_128px_fp32.npy"
DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.npz"


# -- strategies: read from the registry ----------------------------------------------------
#: parameters that differ from a strategy's registered defaults in this benchmark
#: (BiLAF: the K = 50 ActiveFT cores the official boundary stage is timed with)
OVERRIDES = {"bilaf": {"n_cores": 50}}


def _feature_based():
    """Every registered strategy that selects from the features alone (cold start)."""
    from peal_sk.selection import list_selectors

    return [info.name for info in list_selectors(cold_start=True, uses_embeddings=True)]


def _make(name, seed):
    from peal_sk.selection import get_selector

    return get_selector(name, **OVERRIDES.get(name, {}), random_state=seed)


STRATEGY_NAMES = ["random", *_feature_based()]


def _baseline(name, seed, B):
    """The previous implementations, for before/after ratios in the same run."""
    from peal_sk.selection import KMeansSelector

    if name == "kmeans-sklearn":
        return KMeansSelector(backend="sklearn", random_state=seed)
    from peal_sk.utils._validation import check_rng

    if name == "kcenter-before":
        reference = _import_file(REPO / "tests" / "_kcenter_reference.py", "_kcenter_reference")
        kcenter_greedy_reference = reference.kcenter_greedy_reference

        class Before:
            def select(self, X, n):
                return kcenter_greedy_reference(X, n, check_rng(seed))[0]

        return Before()
    if name == "activeft-before":
        tests = REPO / "tests"
        _import_file(tests / "_kcenter_reference.py", "_kcenter_reference")  # it imports it
        reference = _import_file(tests / "_activeft_reference.py", "_activeft_reference")
        activeft_select_reference = reference.activeft_select_reference

        class Before:
            def select(self, X, n):
                # ActiveFTSelector(random_state=seed) passes check_rng(seed) the same way
                return activeft_select_reference(X, n, check_rng(seed))[0]

        return Before()
    raise KeyError(name)


# -- child processes -----------------------------------------------------------------------
def _limit_threads(n):
    if n <= 0:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _rss_mib():
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it does not carry the parent's
    high-water mark across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(job):
    X = np.load(job["features"])
    if job.get("pca"):
        X = _pca(X, job["pca"], job["features"])
    return np.ascontiguousarray(X, dtype=np.float32)


def _pca(X, dim, source):
    """PCA projection of the features, cached next to them."""
    path = Path(source).with_name(Path(source).stem + f"_pca{dim}.npy")
    if path.exists():
        return np.load(path)
    from sklearn.decomposition import PCA

    Z = PCA(n_components=dim, random_state=0).fit_transform(X).astype(np.float32)
    np.save(path, Z)
    return Z


def child(job):
    """Run one selection; print a JSON line."""
    X = _load(job)
    rss_data = _rss_mib()
    out = {"rss_after_load_mib": round(rss_data, 1)}
    kind = job["kind"]
    if kind == "peal":  # imports and construction are not timed
        name, seed, B = job["name"], job["seed"], job["budget"]
        if name in STRATEGY_NAMES:
            sel = _make(name, seed)
        else:
            sel = _baseline(name, seed, B)
        if job.get("core_indices") is not None:
            sel.set_params(core_indices=np.asarray(job["core_indices"]))
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "peal":
        idx = np.asarray(sel.select(X, B))
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0
        out["idx"] = idx.tolist()
        for attr in ("inertia_", "timings_", "n_iter_", "n_iter_subspace_"):
            if hasattr(sel, attr):
                v = getattr(sel, attr)
                out[attr.rstrip("_")] = v if not isinstance(v, np.ndarray) else v.tolist()
        if hasattr(sel, "cores_"):
            out["cores"] = sel.cores_.tolist()
    elif kind == "official-activeft":
        idx, out["seconds"], out["cpu_seconds"] = _official_activeft(job, X)
        out["idx"] = idx
    elif kind == "official-bilaf":
        idx, out["seconds"], out["cpu_seconds"] = _official_bilaf(job, X)
        out["idx"] = idx
    if "inertia" not in out and job.get("inertia"):
        out["inertia"] = _inertia(X, np.asarray(out["idx"]))
    out["peak_rss_mib"] = round(_rss_mib(), 1)
    print(json.dumps(out))


def _inertia(X, idx):
    """Sum of squared distances of every sample to its nearest selected sample."""
    import faiss

    index = faiss.IndexFlatL2(X.shape[1])
    index.add(np.ascontiguousarray(X[idx]))
    D, _ = index.search(X, 1)
    return float(D.sum())


# -- the adapter for the official code (kept here, the code itself is never committed) ----
def _import_file(path, name):
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # modules it imports by this name find it
    spec.loader.exec_module(module)
    return module


def _official_activeft(job, X):
    import argparse as ap
    import contextlib
    import io
    import random

    import torch
    import torch.nn.functional as F

    if job["threads"] > 0:
        torch.set_num_threads(job["threads"])
    torch.Tensor.cuda = lambda self, *a, **k: self  # the CPU copy: .cuda() is a no-op
    torch.nn.Module.cuda = lambda self, *a, **k: self
    core = Path(job["official_dir"]) / "data_selection" / "Core_Selection"
    # the official script does `from utils import *` from its own folder: that folder
    # is searched first while it is imported, and only then
    sys.path[:0] = [str(core)]
    try:
        mod = _import_file(core / "ActiveFT_CIFAR.py", "official_activeft")
    finally:
        sys.path.remove(str(core))
    random.seed(job["seed"])
    torch.manual_seed(job["seed"])
    args = ap.Namespace(
        temperature=0.07,
        init="random",
        distance="euclidean",
        balance=1.0,
        lr=0.001,
        scheduler="none",
        max_iter=300,
    )
    # timed like peal_sk: normalisation, 300 steps, mapping
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every iteration
        feats = F.normalize(torch.from_numpy(X), dim=1)
        ids = mod.optimize_dist(feats, job["budget"], args)
    return sorted(int(i) for i in ids), time.perf_counter() - t0, time.process_time() - c0


def _official_bilaf(job, X):
    import contextlib
    import io

    path = Path(job["official_dir"]) / "data_selection" / "Boundary_Selection"
    mod = _import_file(path / "density_cluster.py", "official_density_cluster")
    indices = np.asarray(job["core_indices"])
    nums = len(indices)
    feats = X.astype(np.float64)  # np.load of the official .npy features gives float64
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        core_feats = feats[indices]
        c2i = mod.distance_cluster(feats, core_feats, nums)
        c2i, _ = mod.density_cluster_denoise(
            c2i,
            feats,
            indices,
            nums,
            density_nearst_number=10,
            remove_percentage=0.1,
            cycle_percentage=0.1,
        )
        pts = mod.selection(
            c2i, core_feats, feats, indices, nums, job["budget"], same_oppo_penalty_ratio=1.1
        )
    return [int(i) for i in pts], time.perf_counter() - t0, time.process_time() - c0


# -- the parent ----------------------------------------------------------------------------
def run_child(job, timeout):
    env = dict(os.environ)
    src = str(REPO)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    if job["threads"] > 0:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(job["threads"])
    cmd = [sys.executable, __file__, "--child", json.dumps(job)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def probe_accuracy(idx, F_train, y_train, F_test, y_test):
    """Linear probe of cifar10_oneshot.py: standardised by the pool, LogisticRegression."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = F_train.mean(axis=0), F_train.std(axis=0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=5000)
    clf.fit((F_train[idx] - mu) / sd, y_train[idx])
    return float(clf.score((F_test - mu) / sd, y_test))


def metadata(args):
    from threadpoolctl import threadpool_info

    meta = {
        # the official copy's location is this machine's business: shown as DIR
        "command": "python benchmarks/bench_selectors.py "
        + " ".join(
            "DIR" if args.official_dir and a == str(args.official_dir) else a for a in sys.argv[1:]
        ),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": args.threads,
        "load_average_at_start": list(os.getloadavg()),
        "blas": [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpool_info()
        ],
    }
    meta["cpu_flags"] = cpu_flags()
    try:
        model = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        meta["cpu_model"] = model[0].split(":", 1)[1].strip() if model else None
    except (OSError, IndexError):
        pass
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        meta["torch_threads"] = args.threads if args.threads > 0 else torch.get_num_threads()
    except ImportError:
        meta["torch"] = None
    import faiss

    meta["faiss"] = faiss.__version__
    return meta


def plan(args):
    """The list of jobs: (label, job)."""
    base = {"features": str(args.features), "threads": args.threads, "seed": args.seed}
    jobs = []
    for pca in [None] + ([args.pca] if args.pca else []):
        width = "1280" if pca is None else f"PCA-{pca}"
        for name in args.strategies:
            budgets = list(args.budgets)
            if name == "activeft" and 50 not in budgets:
                budgets = [50] + budgets
            for B in budgets:
                job = {**base, "kind": "peal", "name": name, "budget": B, "pca": pca}
                jobs.append(((name, width, B), job))
    if args.baselines:
        for name, B in [
            ("kcenter-before", max(args.budgets)),
            ("kmeans-sklearn", max(args.budgets)),
            ("activeft-before", 50),
        ]:
            job = {**base, "kind": "peal", "name": name, "budget": B, "pca": None}
            jobs.append(((name, "1280", B), job))
    return jobs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=FEATURES)
    p.add_argument("--test-features", type=Path, default=TEST_FEATURES)
    p.add_argument("--data", type=Path, default=DATA, help="cifar10-jpeg.npz (labels)")
    p.add_argument("--budgets", type=int, nargs="+", default=[250, 1000])
    p.add_argument("--strategies", nargs="+", default=STRATEGY_NAMES)
    p.add_argument("--pca", type=int, default=384, help="also on PCA-projected features (0: no)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baselines", action="store_true", help="previous implementations too")
    p.add_argument("--probe", action="store_true", help="linear-probe accuracy of each pick")
    p.add_argument("--official-dir", type=Path, help="local copy of Thinklab-SJTU/BiLAF")
    p.add_argument("--official-activeft-k", type=int, nargs="+", default=[50, 250])
    p.add_argument("--official-bilaf-budget", type=int, default=500)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
    p.add_argument("--out", type=Path, default=RESULTS / "selectors.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        _limit_threads(job["threads"])
        return child(job)
    if not args.features.exists():
        sys.exit(
            f"features not found: {args.features} (run benchmarks/cifar10_oneshot.py once to "
            "embed CIFAR-10, or pass --features)"
        )
    if args.probe:  # checked before an hour of selections, not after
        missing = [str(p) for p in (args.test_features, args.data) if not p.exists()]
        if missing:
            sys.exit(f"--probe needs {' and '.join(missing)} (pass --test-features / --data)")
    unknown = set(args.strategies) - set(STRATEGY_NAMES)
    if unknown:
        sys.exit(f"unknown strategies {sorted(unknown)}; known: {STRATEGY_NAMES}")
    meta = metadata(args)
    print(json.dumps({k: meta[k] for k in ("machine", "threads", "blas")}, default=str))
    results = {}

    def record(label, job, r):
        results[label] = r
        shown = {k: v for k, v in r.items() if k not in ("idx", "cores")}
        print(f"{label}: {json.dumps(shown, default=str)}", flush=True)

    for label, job in plan(args):
        job["inertia"] = job["name"].startswith("kmeans")
        record(label, job, run_child(job, args.timeout))

    # BiLAF boundary stage only (cores given), the configuration the official code times
    bilaf_B = args.official_bilaf_budget
    cores = results.get(("activeft", "1280", 50), {}).get("idx")
    if cores is not None:
        job = {
            "features": str(args.features),
            "threads": args.threads,
            "seed": args.seed,
            "kind": "peal",
            "name": "bilaf",
            "budget": bilaf_B,
            "pca": None,
            "core_indices": cores,
        }
        record(("bilaf-boundary", "1280", bilaf_B), job, run_child(job, args.timeout))
    if args.official_dir:
        for K in args.official_activeft_k:
            if ("activeft", "1280", K) not in results:
                job = {**job, "kind": "peal", "name": "activeft", "budget": K}
                job.pop("core_indices", None)
                record(("activeft", "1280", K), job, run_child(job, args.timeout))
            ojob = {
                "features": str(args.features),
                "threads": args.threads,
                "seed": args.seed,
                "kind": "official-activeft",
                "budget": K,
                "official_dir": str(args.official_dir),
            }
            record(("official-activeft", "1280", K), ojob, run_child(ojob, args.timeout))
        if cores is not None:
            ojob = {
                "features": str(args.features),
                "threads": args.threads,
                "seed": args.seed,
                "kind": "official-bilaf",
                "budget": bilaf_B,
                "core_indices": cores,
                "official_dir": str(args.official_dir),
            }
            record(
                ("official-bilaf-boundary", "1280", bilaf_B), ojob, run_child(ojob, args.timeout)
            )

    probe = {}
    if args.probe:
        F_tr, F_te = np.load(args.features), np.load(args.test_features)
        d = np.load(args.data)
        y_tr, y_te = d["train_labels"], d["test_labels"]
        for label, r in results.items():
            if "idx" in r and label[1] == "1280":
                probe[label] = probe_accuracy(np.asarray(r["idx"]), F_tr, y_tr, F_te, y_te)

    # one table
    official = {
        ("activeft", "1280", K): results.get(("official-activeft", "1280", K))
        for K in args.official_activeft_k
    }
    official[("bilaf-boundary", "1280", bilaf_B)] = results.get(
        ("official-bilaf-boundary", "1280", bilaf_B)
    )
    top = max(args.budgets)
    before = {
        ("kcenter", "1280", top): ("kcenter-before", "1280", top),
        ("kmeans", "1280", top): ("kmeans-sklearn", "1280", top),
        ("activeft", "1280", 50): ("activeft-before", "1280", 50),
    }
    header = (
        "| strategy | features | B | wall (s) | CPU (s) | peak RSS (MiB) | official / peal_sk "
        "| previous / peal_sk | probe acc (%) |"
    )
    lines = [header, "|" + "---|" * 9]

    def cost(r):
        # one thread per process: CPU time is the work done, insensitive to other
        # processes sharing the machine; wall time where CPU time was not recorded
        return r.get("cpu_seconds") or r["seconds"]

    for label, r in results.items():
        name, width, B = label
        if "seconds" not in r:
            lines.append(f"| {name} | {width} | {B} | {r.get('error')} | | | | | |")
            continue
        o = official.get(label)
        ratio = f"{cost(o) / cost(r):.1f}x" if o and "seconds" in o else ""
        prev = results.get(before.get(label, ()), {})
        prev_ratio = ""
        if "seconds" in prev:
            prev_ratio = f"{cost(prev) / cost(r):.1f}x"
            if name == "kmeans":
                prev_ratio += f" (inertia {r['inertia'] / prev['inertia']:.4f} of sklearn's)"
            else:
                n_diff = len(set(prev["idx"]) - set(r["idx"]))
                prev_ratio += f" ({n_diff} of {B} picks differ)"
        acc = f"{100 * probe[label]:.2f}" if label in probe else ""
        lines.append(
            f"| {name} | {width} | {B} | {r['seconds']:.2f} | {r.get('cpu_seconds', 0):.2f} | "
            f"{r['peak_rss_mib']:.0f} | "
            f"{ratio} | {prev_ratio} | {acc} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta["load_average_at_end"] = list(os.getloadavg())
    out = {
        "meta": meta,
        "table_markdown": table,
        "results": [
            {
                "strategy": k[0],
                "features": k[1],
                "budget": k[2],
                **{kk: vv for kk, vv in v.items() if kk not in ("idx", "cores")},
                "probe_acc": probe.get(k),
            }
            for k, v in results.items()
        ],
    }
    write_json(args.out, out)


if __name__ == "__main__":
    main()
