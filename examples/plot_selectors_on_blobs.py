"""
What each query strategy picks
==============================

Six strategies choose 12 points from the same 2-D pool of five blobs. The pool is small
enough to see every choice, which makes the families easy to tell apart:

* **uncertainty** (entropy, margin) needs a fitted classifier: it picks the points the
  model is least sure about, which lie on the decision boundaries between the classes it
  has seen. With 10 labelled points and a linear model, those boundaries are straight
  lines, and the picks crowd along them;
* **diversity** (k-centre) needs no model: each pick is the point farthest from
  everything labelled or picked so far, so it spreads out and favours the edges;
* **representative** one-shot strategies (k-means, ActiveFT) need no labels either:
  they spread the budget over the blobs, a few picks in each;
* **BiLAF** (cold start) takes a few representative cores (here 5, from ActiveFT) and
  spends the rest of the budget on points near the boundaries *between* those cores'
  clusters.

Each panel shows the pool (grey), the labelled points where the strategy uses them
(black squares) and the 12 picks (red, numbered in the order they were returned: most
informative first for entropy, margin and k-centre; the centres' order for k-means;
ascending index for ActiveFT; cluster by cluster, core first, for BiLAF).
"""

# %%
# The pool and a weak initial model
# ---------------------------------
# Five Gaussian blobs, 600 points, and 10 labelled points (two per blob) to fit the
# logistic regression that the uncertainty strategies ask for ``predict_proba``.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

from peal_sk.selection import (
    ActiveFTSelector,
    BiLAFSelector,
    EntropySelector,
    KCenterSelector,
    KMeansSelector,
    MarginSelector,
)

angles = 2 * np.pi * np.arange(5) / 5
centers = 5 * np.column_stack([np.cos(angles), np.sin(angles)])
X, y = make_blobs(n_samples=600, centers=centers, cluster_std=1.1, random_state=0)
# ActiveFT (also BiLAF's core selector) compares directions: it L2-normalises the
# features. Around the origin of a 2-D plane a direction is only an angle, so a constant
# third coordinate is appended: directions then stand for positions, as in embedding
# spaces, where features share a large common component. Euclidean distances, which the
# other strategies use, do not change.
X = np.column_stack([X, np.full(len(X), 10.0)])
rng = np.random.default_rng(0)
labeled = np.concatenate([rng.choice(np.flatnonzero(y == c), 2, replace=False) for c in range(5)])
pool = np.setdiff1d(np.arange(len(X)), labeled)
X_pool, X_labeled, y_labeled = X[pool], X[labeled], y[labeled]

clf = LogisticRegression().fit(X_labeled, y_labeled)

# %%
# Twelve picks per strategy
# -------------------------
# Every selector has the same ``select(X_pool, n_instances, ...)`` call. The uncertainty
# selectors get the classifier; k-centre gets the labelled points (it starts from them);
# the one-shot strategies get the pool alone. ``random_state`` fixes every choice.
n_instances = 12
selectors = {
    "entropy": (EntropySelector(random_state=0), {"classifier": clf}),
    "margin": (MarginSelector(random_state=0), {"classifier": clf}),
    "k-centre": (
        KCenterSelector(random_state=0),
        {"X_labeled": X_labeled, "y_labeled": y_labeled},
    ),
    "k-means": (KMeansSelector(random_state=0), {}),
    "ActiveFT": (ActiveFTSelector(random_state=0), {}),
    "BiLAF (5 cores)": (BiLAFSelector(n_cores=5, random_state=0), {}),
}
picks = {
    name: selector.select(X_pool, n_instances, **kwargs)
    for name, (selector, kwargs) in selectors.items()
}
for name, idx in picks.items():
    print(f"{name:>16}: {idx.tolist()}")

# %%
# Where the picks are
# -------------------
fig, axes = plt.subplots(2, 3, figsize=(11, 7.5), sharex=True, sharey=True)
for ax, (name, idx) in zip(axes.ravel(), picks.items(), strict=True):
    ax.scatter(*X_pool[:, :2].T, s=6, c="0.8")
    uses_labels = name in ("entropy", "margin", "k-centre")
    if uses_labels:
        ax.scatter(*X_labeled[:, :2].T, s=40, c="k", marker="s", label="labelled")
    ax.scatter(*X_pool[idx, :2].T, s=60, c="tab:red", edgecolor="k", zorder=3, label="picked")
    for rank, (px, py) in enumerate(X_pool[idx, :2], start=1):
        ax.annotate(str(rank), (px, py), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_title(name)
    ax.set_aspect("equal")
axes[0, 0].legend(loc="lower right", fontsize=8)
fig.suptitle("12 picks from the same pool of 600 points")
fig.tight_layout()
plt.show()

# %%
# Reading the picture
# -------------------
# Entropy and margin agree on the region (the boundaries of a 10-point model) and
# differ in how they rank it. K-centre reaches the outskirts of the pool first; k-means
# and ActiveFT put two or three picks in every blob. BiLAF's cores are one per blob
# (picks 1, 3, 5, 7 and 10); its other picks lie mostly between neighbouring blobs.
# Which of these helps most depends on the model and the budget: see :ref:`choosing`.
