"""
BiLAF: cores, denoising and boundary samples
============================================

BiLAF ("Boundary Matters", NeurIPS 2024) chooses a labelling budget before any label
exists, in two levels:

1. **cores**: a few representative samples (by default from ActiveFT); every sample
   joins the cluster of its nearest core;
2. **denoising**: each cluster grows outwards from its core in rings, always adding the
   members closest (in mean distance to their nearest already-added members) to what
   has been added; the last ``removal_fraction`` of that order (isolated samples) is
   removed and can never be selected;
3. **boundary samples**: every kept sample gets a boundary score, its distance to the
   nearest *other* core against its mean distance inside its own cluster (lower = closer
   to a boundary). Each cluster spends its share of the budget greedily on low-score
   samples, skipping the neighbourhood of its previous pick so that picks spread along
   the boundary.

This example runs :class:`~peal_sk.selection.BiLAFSelector` on five 2-D blobs plus
scattered noise and draws each stage from the selector's fitted attributes: ``cores_``,
``labels_``, ``removed_``, ``boundary_scores_`` and the returned picks. The full
definition, and where peal_sk departs from the official code, is in :ref:`algorithms`.
"""

# %%
# The pool
# --------
# Five blobs and 40 uniformly scattered points.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_blobs

from peal_sk.selection import BiLAFSelector

angles = 2 * np.pi * np.arange(5) / 5
centers = 5 * np.column_stack([np.cos(angles), np.sin(angles)])
X_blobs, _ = make_blobs(n_samples=800, centers=centers, cluster_std=1.2, random_state=1)
noise = np.random.default_rng(1).uniform(-9, 9, size=(40, 2))
X = np.vstack([X_blobs, noise])

# %%
# Select
# ------
# A budget of 40 with 5 cores: each cluster gets its core, and the remaining 35 picks
# are shared in proportion to the clusters' kept sizes. The cores come from k-means here
# (``core_selector="kmeans"``), which puts one in every blob of this small 2-D example;
# the default, ActiveFT, is what the paper uses on embeddings.
selector = BiLAFSelector(n_cores=5, core_selector="kmeans", random_state=0)
picks = selector.select(X, 40)

cores = selector.cores_
boundary = np.setdiff1d(picks, cores)
print("cores:", cores.tolist())
print("picks per cluster:", selector.allocation_.tolist())
print("removed as noise:", int(selector.removed_.sum()), "of", len(X))
print("seconds per stage:", {k: round(v, 4) for k, v in selector.timings_.items()})

# %%
# Cores, clusters and removed samples
# -----------------------------------
# Left: each sample coloured by its cluster, the cores as stars, removed samples as grey
# crosses: most scattered points, and the thin outer rim of each blob. Right: the boundary
# score of every kept sample (dark = low: the side of a blob that faces another core)
# and the 40 picks. The boundary picks lie on the blobs' rims, away from the cores:
# each cluster starts from the lowest scores and, because every pick skips the
# neighbourhood of the previous one, moves along the rim instead of piling up at one
# spot. The opponent penalty (``opponent_penalty``) makes each pick facing a cluster
# count against further picks facing it, which spreads them over the different
# neighbouring clusters.
kept = ~selector.removed_
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)

ax0.scatter(*X[kept].T, c=selector.labels_[kept], cmap="tab10", vmin=0, vmax=9, s=8)
ax0.scatter(*X[~kept].T, c="0.5", marker="x", s=18, label="removed (noise)")
ax0.scatter(*X[cores].T, c="gold", marker="*", s=300, edgecolor="k", label="core")
ax0.set_title("clusters of the 5 cores, denoised")
ax0.legend(loc="lower left", fontsize=8)

points = ax1.scatter(*X[kept].T, c=selector.boundary_scores_[kept], cmap="viridis", s=8)
ax1.scatter(*X[boundary].T, c="tab:red", edgecolor="k", s=50, label="boundary pick")
ax1.scatter(*X[cores].T, c="gold", marker="*", s=300, edgecolor="k", label="core")
ax1.set_title("boundary scores and the 40 picks")
ax1.legend(loc="lower left", fontsize=8)
fig.colorbar(points, ax=ax1, label="boundary score (lower: nearer a boundary)")

for ax in (ax0, ax1):
    ax.set_aspect("equal")
fig.tight_layout()
plt.show()

# %%
# The same budget without the boundary level
# ------------------------------------------
# ``n_cores`` equal to the budget makes every pick a core: pure representative
# selection, the first level alone. The boundary level is what moves picks from the
# blobs' centres towards the regions between classes, where a classifier's decision
# boundary will be drawn.
all_cores = BiLAFSelector(n_cores=40, core_selector="kmeans", random_state=0).select(X, 40)
fig, ax = plt.subplots(figsize=(5, 5))
ax.scatter(*X.T, c="0.8", s=8)
ax.scatter(*X[all_cores].T, c="gold", marker="*", s=150, edgecolor="k")
ax.set_title("40 cores, no boundary samples")
ax.set_aspect("equal")
fig.tight_layout()
plt.show()
