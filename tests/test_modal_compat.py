"""Our strategies used unchanged as query_strategy of modAL's own ActiveLearner.

Runs only where modAL-python is installed (its 0.4.2.1 release breaks on scikit-learn
>= 1.8, so this lives in a separate environment).
"""

import numpy as np
import pytest
from _cases import CASE_IDS, SELECTOR_CASES
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

from peal_sk.selection import (
    ClassBalancedSelector,
    EntropySelector,
    activeft_sampling,
    bilaf,
    class_balanced_sampling,
    entropy_sampling,
    featdist_sampling,
    hybrid_sampling,
    kcenter_sampling,
    kmeans_sampling,
    least_confident_sampling,
    margin_sampling,
    random_sampling,
)

modAL = pytest.importorskip("modAL")
from modAL import uncertainty as modal_uncertainty  # noqa: E402
from modAL.models import ActiveLearner as ModalLearner  # noqa: E402

pytestmark = [
    pytest.mark.modal,
    # modAL 0.4.2.1 calls check_array(force_all_finite=...), deprecated in scikit-learn 1.6
    pytest.mark.filterwarnings("ignore:.*force_all_finite.*:FutureWarning"),
]

FUNCTIONS = [
    entropy_sampling,
    margin_sampling,
    least_confident_sampling,
    random_sampling,
    featdist_sampling,
    kcenter_sampling,
    hybrid_sampling,
    class_balanced_sampling,
    activeft_sampling,
    bilaf,
    kmeans_sampling,
]


def _blobs():
    X, y = make_blobs(n_samples=60, centers=3, n_features=4, cluster_std=2.5, random_state=0)
    init = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(3)])
    pool = np.setdiff1d(np.arange(len(y)), init)
    return X[init], y[init], X[pool], y[pool]


def _run(strategy, n_cycles=3, n_instances=3):
    X_init, y_init, X_pool, y_pool = _blobs()
    learner = ModalLearner(
        estimator=LogisticRegression(),
        query_strategy=strategy,
        X_training=X_init,
        y_training=y_init,
    )
    taught = []
    for _ in range(n_cycles):
        idx, X_query = learner.query(X_pool, n_instances=n_instances)
        assert isinstance(idx, np.ndarray) and idx.dtype == np.intp
        assert idx.shape == (n_instances,)
        assert np.unique(idx).size == n_instances
        assert idx.min() >= 0 and idx.max() < len(X_pool)
        assert X_query.shape == (n_instances, 4)
        np.testing.assert_array_equal(X_query, X_pool[idx])
        learner.teach(X_query, y_pool[idx])
        taught.append(X_query)
        X_pool, y_pool = np.delete(X_pool, idx, axis=0), np.delete(y_pool, idx)
    assert len(learner.y_training) == len(y_init) + n_cycles * n_instances
    return learner, X_pool


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
def test_sampling_function_in_modal_learner(function):
    learner, X_pool = _run(function)
    idx, X_query, scores = learner.query(X_pool, n_instances=2, return_metrics=True)
    assert scores.shape == (2,) and scores.dtype == np.float64


@pytest.mark.parametrize("case", SELECTOR_CASES, ids=CASE_IDS)
def test_selector_instance_in_modal_learner(case):
    learner, X_pool = _run(case.factory(random_state=0))
    # the same seeded selector called directly on modAL's learner agrees with its query
    idx, _ = learner.query(X_pool, n_instances=3)
    direct = case.factory(random_state=0).select(X_pool, 3, classifier=learner)
    np.testing.assert_array_equal(idx, direct)


def test_labels_come_from_the_modal_learner():
    learner, X_pool = _run(EntropySelector(random_state=0))
    sel = ClassBalancedSelector(EntropySelector(), random_state=0)
    a = sel.select(X_pool, 3, classifier=learner)
    b = sel.select(
        X_pool,
        3,
        classifier=learner.estimator,
        X_labeled=learner.X_training,
        y_labeled=learner.y_training,
    )
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (entropy_sampling, modal_uncertainty.entropy_sampling),
        (margin_sampling, modal_uncertainty.margin_sampling),
        (least_confident_sampling, modal_uncertainty.uncertainty_sampling),
    ],
    ids=["entropy", "margin", "least_confident"],
)
def test_same_choice_as_modal_uncertainty(ours, theirs):
    X_init, y_init, X_pool, _ = _blobs()
    learner = ModalLearner(LogisticRegression(), ours, X_training=X_init, y_training=y_init)
    our_idx, _ = ours(learner, X_pool, n_instances=5, random_state=0)
    their_idx, _ = theirs(learner, X_pool, n_instances=5)  # modAL's (idx, values)
    assert set(our_idx.tolist()) == set(their_idx.tolist())


def test_bilaf_cold_start_in_modal_learner():
    """No labels at all and an unfitted estimator: BiLAF still picks n_instances."""
    _, _, X_pool, y_pool = _blobs()
    learner = ModalLearner(estimator=LogisticRegression(), query_strategy=bilaf)
    idx, X_query = learner.query(X_pool, n_instances=9, n_cores=3, random_state=0)
    assert idx.dtype == np.intp and np.unique(idx).size == 9
    np.testing.assert_array_equal(X_query, X_pool[idx])
    learner.teach(X_query, y_pool[idx])  # modAL fits on the first labels
    assert learner.score(X_pool, y_pool) > 0.5
