"""PEAL's iterative protocol on real CIFAR-10, scaled to a 2-core CPU.

A stratified pool of CIFAR-10 training images and a stratified test subset (fixed seed)
are written as a ``.npz`` of uint8 arrays, then ``peal-sk simulate`` runs the loop: 10
random initial labels, 10 labels per cycle (the number of classes, as in PEAL), retrain
from the pretrained weights every cycle. Models: PEALClassifier on the real
ImageNet-pretrained EfficientNet-Lite0 (the only pretrained vision weights that install
offline), by linear probing and by LoRA; strategies: random, entropy, feature distance
(class-balanced entropy and the others with ``--strategies``). Defaults: a 3,000-image
pool, 1,000 test images, 64 px, 20 epochs per cycle, 8 cycles, seeds 0 and 1. The
results folder is resumable.

Usage (the two runs reported in benchmarks/README.md)::

    # linear probing at scale: logistic regression on frozen 128 px embeddings
    python benchmarks/cifar10_iterative.py --models logreg --img-size 128 --pool 5000 \
        --test 2000 --seeds 0 1 2 \
        --strategies random entropy margin featdist class_balanced hybrid \
        --out benchmarks/results/cifar10_iterative_probe
    # LoRA vs linear probing (PEALClassifier retrained each cycle), small
    python benchmarks/cifar10_iterative.py --models linear lora --img-size 64 --pool 500 \
        --test 500 --seeds 0 --strategies random entropy --epochs 10 --cycles 4 \
        --out benchmarks/results/cifar10_iterative_lora

Writes ``benchmarks/results/cifar10_iterative/`` (results.json / .csv, table.md,
curves.png). CIFAR-10: Krizhevsky, "Learning Multiple Layers of Features from Tiny
Images", 2009; the shared copy is a JPEG re-encode (see shared/data/README.md next to
the repository).
"""

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from _common import cifar10_npz

from peal_sk.experiments import SimulationConfig, simulate

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"


def decode(npz, split, idx):
    from PIL import Image

    jpeg, offsets = npz[f"{split}_jpeg"], npz[f"{split}_offsets"]
    out = np.empty((len(idx), 32, 32, 3), dtype=np.uint8)
    for k, i in enumerate(idx):
        raw = jpeg[offsets[i] : offsets[i + 1]].tobytes()
        out[k] = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    return out


def stratified(labels, n, rng):
    classes = np.unique(labels)
    per = n // len(classes)
    return np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in classes]
        )
    )


def build_subset(data, pool, test, seed=0):
    path = CACHE / f"cifar10-pool{pool}-test{test}-seed{seed}.npz"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    with np.load(data, allow_pickle=False) as npz:
        rng = np.random.default_rng(seed)
        tr = stratified(npz["train_labels"], pool, rng)
        te = stratified(npz["test_labels"], test, rng)
        arrays = {
            "X_train": decode(npz, "train", tr),
            "y_train": npz["train_labels"][tr],
            "X_test": decode(npz, "test", te),
            "y_test": npz["test_labels"][te],
        }
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="cifar10-jpeg.npz (default: ../shared/data/)"
    )
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--initial", type=int, default=10)
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", default=["linear", "lora"])
    parser.add_argument(
        "--features",
        default="backbone",
        help="for --models logreg: 'backbone' = logistic regression on frozen embeddings",
    )
    parser.add_argument("--strategies", nargs="+", default=["random", "entropy", "featdist"])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cifar10_iterative")
    args = parser.parse_args()
    t0 = time.perf_counter()
    subset = build_subset(cifar10_npz(args.data), args.pool, args.test)
    print(f"subset {subset.name} ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    config = SimulationConfig(
        dataset=str(subset),
        mode="iterative",
        strategies=args.strategies,
        seeds=args.seeds,
        models=args.models,
        features=args.features,
        backbone="efficientnet_lite0",
        img_size=args.img_size,
        epochs=args.epochs,
        lr=args.lr,
        initial=args.initial,
        step=args.step,
        cycles=args.cycles,
    )
    results = simulate(config, args.out, progress=False, log=lambda m: print(m, flush=True))
    print(results["table"])
    print(
        f"wall time {time.perf_counter() - t0:.0f} s; command: python "
        + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    )


if __name__ == "__main__":
    main()
