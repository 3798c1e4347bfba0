"""One PEAL cycle on a CIFAR-10 pool: the fast path against today's plain path, same run.

A cycle, as an active-learning loop runs it: ``fit`` on the labelled images (LoRA on
EfficientNet-Lite0 at 128 px, ImageNet weights, 50 epochs), ``predict_proba`` and
``transform`` over the whole pool, then an entropy and a feature-distance (PEAL's
``class_mean``) selection of 20 images each.

* **fast path** (the default ``PEALClassifier``): the frozen blocks' output is computed
  once per image (the first cycle pays for the pool's; ``prefix pass`` below), the
  adapters train on it, and inference runs the merged adapted blocks on the stored
  activations; ``transform`` after ``predict_proba`` reuses the same pass. Timed twice:
  the first cycle (with the pool's prefix pass) and a second cycle on the labels plus the
  20 the entropy query picked (every later cycle costs this).
* **plain path** (``cache_prefix=False`` and the plain inference loop, i.e. the code
  before the fast path): the whole network trains on the images every epoch and runs
  over the pool for each of ``predict_proba`` and ``transform``. At 8 images/s, a pass
  over 50,000 images takes hours, so it is timed on ``--plain-images`` pool images and
  ``--plain-epochs`` epochs, and scaled linearly to the pool and to 50 epochs (both
  costs are linear in them); the JSON says which figures are scaled.

Usage::

    python benchmarks/bench_peal_cycle.py                 # 50,000-image pool
    python benchmarks/bench_peal_cycle.py --pool 10000 --last-blocks 1

Writes ``benchmarks/results/peal_cycle.json`` (timings, the ratio, the engine choice
with the machine's CPU capability, and the agreement of the fast path with the plain
path of the same fitted model, float32 and training precision, on ``--agreement-images``
pool images).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cifar10_npz, run_metadata, write_json
from cifar10_iterative import CACHE, decode


def pool_arrays(data, n_pool, n_labels, seed):
    """A seeded pool of CIFAR-10 training images (uint8, 32 px) and its first labels."""
    path = CACHE / f"cifar10-train-{n_pool}-seed{seed}.npz"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        with np.load(data, allow_pickle=False) as npz:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.permutation(len(npz["train_labels"]))[:n_pool])
            X, y = decode(npz, "train", idx), npz["train_labels"][idx]
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, X=X, y=y)
        tmp.replace(path)
    with np.load(path) as f:
        X, y = f["X"], f["y"]
    labelled = np.random.default_rng(seed + 1).choice(len(X), n_labels, replace=False)
    return X, y, np.sort(labelled)


def selections(clf, X_pool, X_labeled, y_labeled, n):
    """Entropy and featdist (class_mean) picks on the pool, and their times."""
    from peal_sk import EntropySelector, FeatureDistanceSelector

    t0 = time.perf_counter()
    entropy = EntropySelector(random_state=0).select(X_pool, n, classifier=clf)
    t1 = time.perf_counter()
    FeatureDistanceSelector("class_mean", random_state=0).select(
        X_pool, n, classifier=clf, X_labeled=X_labeled, y_labeled=y_labeled
    )
    return entropy, t1 - t0, time.perf_counter() - t1


def pool_sample(n, labelled, size=None):
    """The indices of the first ``size`` pool images (those not labelled; None: all)."""
    return np.setdiff1d(np.arange(n), labelled)[:size]


def _agree(a, b):
    return {
        "argmax_equal": float(np.mean(a.argmax(1) == b.argmax(1))),
        "max_abs_proba": float(np.abs(a - b).max()),
    }


def agreement(clf, X_sample):
    """The fast path's probabilities against the plain path's, same fitted weights.

    The plain path runs the unmerged network on the images, in float32 (the reference:
    the reduced-precision target bounds the fast path's error against it) and in the
    precision the model trained in (``precision_``, the plain path's default: bfloat16
    autocast over the whole network where the machine has it natively, itself the larger
    error).
    """
    fast = clf.predict_proba(X_sample)
    suffix = clf._inference().get("suffix_choice")  # the merged adapted blocks' engine
    module = clf._trained_module()
    trained = clf.precision_
    clf._fast = lambda source: False  # this instance only: the plain path
    try:
        plain = clf.predict_proba(X_sample)
        module.precision = clf.precision_ = "fp32"
        plain32 = plain if trained == "fp32" else clf.predict_proba(X_sample)
    finally:
        del clf._fast
        module.precision = clf.precision_ = trained
    out = {
        "n": int(len(X_sample)),
        "fast_path": {
            "prefix": f"{clf.engine_}/{clf.engine_precision_}",
            "suffix": f"{suffix.engine}/{suffix.precision}" if suffix else None,
            "training": trained,
        },
        "vs_plain_fp32": _agree(fast, plain32),
    }
    if trained != "fp32":
        out[f"vs_plain_{trained}"] = _agree(fast, plain)
        out[f"plain_{trained}_vs_plain_fp32"] = _agree(plain, plain32)
    return out


def cycle(clf, X, y, labelled, n_query):
    """fit, predict_proba and transform over the pool, two selections; timings."""
    pool_idx = pool_sample(len(X), labelled)
    row = {"n_labels": int(len(labelled)), "n_pool": int(len(pool_idx))}
    t0 = time.perf_counter()
    clf.fit(X[labelled], y[labelled])
    row["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = clf.predict_proba(X[pool_idx])
    row["predict_proba_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clf.transform(X[pool_idx])
    row["transform_s"] = time.perf_counter() - t0
    picks, t_entropy, t_featdist = selections(clf, X[pool_idx], X[labelled], y[labelled], n_query)
    row["entropy_selection_s"], row["featdist_selection_s"] = t_entropy, t_featdist
    row["selection_s"] = t_entropy + t_featdist
    row["total_s"] = row["fit_s"] + row["predict_proba_s"] + row["transform_s"] + row["selection_s"]
    row["pool_accuracy"] = float(np.mean(clf.classes_[proba.argmax(1)] == y[pool_idx]))
    new = pool_idx[picks]
    return row, new, proba


BASELINE = """
import json, sys, time
import numpy as np
from peal_sk.classifier import PEALClassifier
a = json.loads(sys.argv[1])
with np.load(a["arrays"]) as f:
    X_lab, y_lab, X_pool = f["X_lab"], f["y_lab"], f["X_pool"]
clf = PEALClassifier("efficientnet_lite0", img_size=a["img_size"], lora_last_blocks=a["k"],
                     max_epochs=a["epochs"], random_state=0)
t0 = time.perf_counter(); clf.fit(X_lab, y_lab); fit_s = time.perf_counter() - t0
t0 = time.perf_counter(); clf.predict_proba(X_pool); pass_s = time.perf_counter() - t0
print(json.dumps({"fit_s": fit_s, "pass_s": pass_s, "precision": clf.precision_}))
"""


def baseline_subprocess(args, X_lab, y_lab, X_pool):
    """fit and predict_proba timed with the code in ``args.baseline_from`` (a subprocess)."""
    import json
    import os
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        arrays_file = Path(tmp) / "arrays.npz"
        np.savez(arrays_file, X_lab=X_lab, y_lab=y_lab, X_pool=X_pool)
        spec = {"arrays": str(arrays_file), "img_size": args.img_size, "k": args.last_blocks,
                "epochs": args.plain_epochs}  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(Path(args.baseline_from).resolve())}
        out = subprocess.run(
            [sys.executable, "-c", BASELINE, json.dumps(spec)],
            env=env, capture_output=True, text=True, check=True, cwd=tmp,
        )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print("baseline (today's code):", result)
    return result["fit_s"], result["pass_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="cifar10-jpeg.npz")
    parser.add_argument("--pool", type=int, default=50_000)
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--query", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--last-blocks", type=int, default=2)
    parser.add_argument("--plain-images", type=int, default=500)
    parser.add_argument("--plain-epochs", type=int, default=2)
    parser.add_argument(
        "--agreement-images", type=int, default=1000,
        help="pool images on which the fast and the plain path's probabilities are compared",
    )  # fmt: skip
    parser.add_argument("--cache-dir", default=None, help="store of the frozen prefix")
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument(
        "--baseline-from",
        default=None,
        help="a checkout of the code before the fast path (git worktree add DIR 0cce5a7): "
        "today's path is timed there, in a subprocess of this run",
    )
    parser.add_argument("--out", default="benchmarks/results/peal_cycle.json")
    args = parser.parse_args()
    if args.agreement_images < 1:
        parser.error(f"--agreement-images must be at least 1; got {args.agreement_images}")
    data = cifar10_npz(args.data)

    import torch

    from peal_sk.classifier import PEALClassifier

    X, y, labelled = pool_arrays(data, args.pool, args.labels, seed=0)
    common = dict(
        img_size=args.img_size,
        lora_last_blocks=args.last_blocks,
        max_epochs=args.epochs,
        random_state=0,
    )
    result = {"meta": run_metadata("bench_peal_cycle.py"), "args": vars(args)}
    result["meta"]["torch_threads"] = torch.get_num_threads()
    # the pool's stored prefix (1.4 GB for 50,000 images in float32): removed at exit
    # unless --cache-dir keeps it
    scratch = None if args.cache_dir else tempfile.TemporaryDirectory(prefix="peal-cycle-")
    cache_dir = args.cache_dir or scratch.name

    # -- the fast path: first cycle (prefix pass of the pool included), then a later one
    fast = PEALClassifier("efficientnet_lite0", **common, cache_dir=cache_dir, progress=True)
    first, new, proba = cycle(fast, X, y, labelled, args.query)
    second, _, _ = cycle(fast, X, y, np.sort(np.concatenate([labelled, new])), args.query)
    result["fast"] = {
        "first_cycle": first,
        "later_cycle": second,
        "engine": fast.engine_,
        "engine_precision": fast.engine_precision_,
        "training_precision": fast.precision_,
        "prefix_cached": fast.prefix_cached_,
        "cache_dtype": fast.cache_dtype,
    }
    from peal_sk.classifier._peal_inference import _frozen_parts

    choices = {repr(k[1]): v.choice.as_dict() for k, v in _frozen_parts.items()}
    result["fast"]["engine_choices"] = choices
    print("fast path:", first, second, sep="\n  ")

    if not args.skip_plain:
        # -- the plain path, on a sample of the pool and a few epochs, scaled
        sample = pool_sample(len(X), labelled, args.plain_images)
        if args.baseline_from:
            fit_s, pass_s = baseline_subprocess(args, X[labelled], y[labelled], X[sample])
        else:
            plain = PEALClassifier(
                "efficientnet_lite0", **{**common, "max_epochs": args.plain_epochs},
                cache_prefix=False,
            )  # fmt: skip
            plain._fast = lambda source: False
            t0 = time.perf_counter()
            plain.fit(X[labelled], y[labelled])
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            plain.predict_proba(X[sample])
            pass_s = time.perf_counter() - t0
        n_pool = first["n_pool"]
        per_image = pass_s / len(sample)
        scaled = {
            "code": args.baseline_from or "this checkout, fast path off (cache_prefix=False)",
            "fit_s_measured": fit_s,
            "fit_epochs_measured": args.plain_epochs,
            "pool_pass_s_measured": pass_s,
            "pool_images_measured": int(len(sample)),
            "fit_s": fit_s * args.epochs / args.plain_epochs,  # scaled
            "predict_proba_s": per_image * n_pool,  # scaled
            "transform_s": per_image * n_pool,  # scaled: a second full pass
            "selection_s": first["selection_s"],  # the same selection code
            "images_per_s": len(sample) / pass_s,
        }
        scaled["total_s"] = sum(
            scaled[k] for k in ("fit_s", "predict_proba_s", "transform_s", "selection_s")
        )
        result["plain"] = scaled
        result["ratio_later_cycle"] = scaled["total_s"] / second["total_s"]
        result["ratio_first_cycle"] = scaled["total_s"] / first["total_s"]
        print("plain path (scaled):", scaled)
        later, first_ratio = result["ratio_later_cycle"], result["ratio_first_cycle"]
        print(f"ratio: {later:.1f}x (first cycle {first_ratio:.1f}x)")
    # the fast path against the plain path of the same fitted model, on pool images:
    # against the plain path in float32 (the reference: what the weights compute), and in
    # the precision the model trained in (what the plain path runs by default)
    result["agreement"] = agreement(fast, X[pool_sample(len(X), labelled, args.agreement_images)])
    print("agreement:", result["agreement"])
    write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
