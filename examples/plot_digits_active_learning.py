"""
An active-learning loop on digits
=================================

Pool-based active learning with :class:`~peal_sk.learner.ActiveLearner` on
scikit-learn's 8x8 handwritten digits: start from 10 random labels, then, 8 times, ask a
query strategy for 10 more, "label" them (the labels are known here, the loop only
reveals them) and refit. Three strategies are compared:

* ``random_sampling``: the baseline every strategy must beat;
* ``margin_sampling``: the samples with the smallest gap between the two most probable
  classes (uncertainty);
* ``hybrid_sampling``: the 10 x 10 most uncertain samples (entropy) as candidates, then
  greedy k-centre among them so that the 10 picks are also diverse.

The model is a scikit-learn ``Pipeline`` (standardisation, then logistic regression).
The hybrid strategy compares samples in the pipeline's *embedding*, which peal_sk takes
from the steps before the final estimator: here, the standardised pixels.

This is a toy (64 pixels, no foundation model), so read the curves as a demonstration of
the loop, not as evidence about the strategies; ``peal-sk simulate`` runs the same
protocol on your own data and backbones.
"""

# %%
# Data and model
# --------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from peal_sk import ActiveLearner
from peal_sk.selection import hybrid_sampling, margin_sampling, random_sampling

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0
)


def make_model():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


# %%
# The loop
# --------
# ``query`` returns the chosen indices into the pool and the samples themselves;
# ``teach`` adds them to the labelled set and refits the model on all of it. The
# learner's ``random_state`` seeds the strategy of every query (and nothing else is
# random), so each run below is reproducible.
n_initial, n_step, n_cycles = 10, 10, 8


def run(strategy, seed):
    rng = np.random.default_rng(seed)
    initial = rng.choice(len(y_train), size=n_initial, replace=False)
    pool = np.setdiff1d(np.arange(len(y_train)), initial)
    learner = ActiveLearner(
        make_model(),
        strategy,
        X_training=X_train[initial],
        y_training=y_train[initial],
        random_state=seed,
    )
    accuracy = [learner.score(X_test, y_test)]
    for _ in range(n_cycles):
        query_idx, X_query = learner.query(X_train[pool], n_instances=n_step)
        learner.teach(X_query, y_train[pool[query_idx]])  # the oracle's labels
        pool = np.delete(pool, query_idx)
        accuracy.append(learner.score(X_test, y_test))
    return np.array(accuracy)


strategies = {
    "random": random_sampling,
    "margin": margin_sampling,
    "hybrid (entropy + k-centre)": hybrid_sampling,
}
seeds = [0, 1, 2]
curves = {name: np.array([run(fn, seed) for seed in seeds]) for name, fn in strategies.items()}
n_labels = n_initial + n_step * np.arange(n_cycles + 1)

for name, acc in curves.items():
    final = 100 * acc[:, -1]
    print(f"{name:>28}: {final.mean():.1f} +/- {final.std():.1f} % with {n_labels[-1]} labels")

# %%
# Learning curves
# ---------------
# Mean test accuracy over the three seeds, with one standard deviation shaded.
fig, ax = plt.subplots(figsize=(6, 4))
for name, acc in curves.items():
    mean, std = 100 * acc.mean(axis=0), 100 * acc.std(axis=0)
    ax.plot(n_labels, mean, marker="o", label=name)
    ax.fill_between(n_labels, mean - std, mean + std, alpha=0.2)
ax.set_xlabel("labelled samples")
ax.set_ylabel("test accuracy (%)")
ax.set_title("Digits, logistic regression, 3 seeds")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# What the learner remembers
# --------------------------
# Every query is recorded in ``history_`` (a list of
# :class:`~peal_sk.learner.QueryRecord`): the indices, the strategy's scores, the sizes
# of the pool and of the labelled set at that moment.
learner = ActiveLearner(
    make_model(), margin_sampling, X_training=X_train[:10], y_training=y_train[:10], random_state=0
)
query_idx, _ = learner.query(X_train[10:], n_instances=3)
record = learner.history_[-1]
print(record.strategy, record.query_idx, record.scores.round(3), record.n_labeled, record.n_pool)
