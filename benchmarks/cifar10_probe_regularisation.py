"""Does the probe's regularisation or the feature normalisation change the iterative verdict?

Re-scores the labelled sets of ``cifar10_iterative_lowbudget.py`` (seed 0, cached runs)
after 120 and 200 labels with logistic-regression probes of other ``C``, on standardised
and on L2-normalised features. The selections themselves are not redone.

Usage::

    python benchmarks/cifar10_probe_regularisation.py

Writes ``benchmarks/results/cifar10_iterative_lowbudget_probe_c.json``.
"""

import argparse
import glob
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "cifar10-jpeg.npz"
FEATURES = HERE / ".cache" / "cifar10_{split}_efficientnet_lite0_128px_fp32.npy"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=HERE / "results" / "cifar10_iterative_lowbudget_probe_c.json"
    )
    args = p.parse_args()
    if not args.data.exists():
        raise SystemExit(f"CIFAR-10 not found at {args.data}; pass --data.")
    warnings.simplefilter("ignore")
    F = np.load(str(FEATURES).format(split="train"))
    T = np.load(str(FEATURES).format(split="test"))
    with np.load(args.data) as d:
        y, yt = d["train_labels"], d["test_labels"]
    mu, sd = F.mean(0), F.std(0) + 1e-6
    unit = np.linalg.norm
    views = {
        "standardised": ((F - mu) / sd, (T - mu) / sd, (0.01, 0.1, 1.0, 10.0)),
        "l2": (
            F / unit(F, axis=1, keepdims=True),
            T / unit(T, axis=1, keepdims=True),
            (1.0, 10.0, 100.0, 1000.0),
        ),
    }
    pattern = str(HERE / ".cache" / "iterative_lowbudget" / f"*-seed{args.seed}-*.json")
    runs = {r["strategy"]: r for r in (json.loads(Path(f).read_text()) for f in glob.glob(pattern))}
    out = []
    for view, (Z, Zt, Cs) in views.items():
        for C in Cs:
            row = {"view": view, "C": C}
            for name, run in sorted(runs.items()):
                lab = np.array(run["labelled"])
                for n in (120, 200):
                    clf = LogisticRegression(C=C, max_iter=2000).fit(Z[lab[:n]], y[lab[:n]])
                    row[f"{name}@{n}"] = round(100 * float((clf.predict(Zt) == yt).mean()), 2)
            print(row, flush=True)
            out.append(row)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
