"""How many of EfficientNet-Lite0's stages to adapt: accuracy and time of one fit, by k.

For each ``lora_last_blocks`` k (and linear probing), a ``PEALClassifier`` (ImageNet
Lite0 at 128 px, 50 epochs) is fitted on the same random CIFAR-10 labels and scored on
test images; the fit time is measured with the frozen prefix already stored (what every
cycle after the first costs), and the first fit's time (prefix pass included) is kept
too. Several seeds draw other labelled sets.

Usage::

    python benchmarks/bench_lora_blocks.py --labels 200 --blocks 1 2 3 --seeds 0 1

Writes ``benchmarks/results/lora_blocks.json``.
"""

import argparse
import time

import numpy as np
from _common import cifar10_npz, run_metadata, write_json
from cifar10_peal import arrays


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/lora_blocks.json")
    args = parser.parse_args()

    from peal_sk.classifier import PEALClassifier

    X, y, X_test, y_test = arrays(cifar10_npz(args.data), args.pool)
    test = np.random.default_rng(0).choice(len(X_test), args.test, replace=False)
    X_test, y_test = X_test[test], y_test[test]
    rows = []
    for seed in args.seeds:
        lab = np.random.default_rng(seed).choice(len(X), args.labels, replace=False)
        for k in [None, *args.blocks]:
            kw = dict(img_size=args.img_size, max_epochs=args.epochs, random_state=seed,
                      classes=np.arange(10))  # fmt: skip
            if k is None:
                kw["finetune"] = "linear"
            else:
                kw["lora_last_blocks"] = k
            clf = PEALClassifier("efficientnet_lite0", **kw)
            t0 = time.perf_counter()
            clf.fit(X[lab], y[lab])
            first = time.perf_counter() - t0
            acc = float(np.mean(clf.predict(X_test) == y_test))
            t0 = time.perf_counter()
            clf.fit(X[lab], y[lab])  # the prefix is stored now: a later cycle's fit
            fit_s = time.perf_counter() - t0
            row = {"seed": seed, "model": "linear" if k is None else f"lora k={k}",
                   "accuracy": acc, "fit_s": fit_s, "first_fit_s": first,
                   "training_precision": clf.precision_, "engine": clf.engine_,
                   "engine_precision": clf.engine_precision_}  # fmt: skip
            print(row)
            rows.append(row)
    summary = {}
    for r in rows:
        summary.setdefault(r["model"], []).append(r)
    table = {
        m: {"accuracy_mean": float(np.mean([r["accuracy"] for r in rs])),
            "accuracy_std": float(np.std([r["accuracy"] for r in rs])),
            "fit_s_mean": float(np.mean([r["fit_s"] for r in rs])), "n_seeds": len(rs)}
        for m, rs in summary.items()
    }  # fmt: skip
    for m, t in table.items():
        print(f"{m}: {100 * t['accuracy_mean']:.1f} ± {100 * t['accuracy_std']:.1f} %, "
              f"fit {t['fit_s_mean']:.1f} s")  # fmt: skip
    write_json(args.out, {"meta": run_metadata("bench_lora_blocks.py"), "args": vars(args),
                          "rows": rows, "summary": table})  # fmt: skip


if __name__ == "__main__":
    main()
