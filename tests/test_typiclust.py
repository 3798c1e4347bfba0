"""TypiClust: the specification's tests (docs/user_guide/algorithms.rst, "TypiClust")."""

import numpy as np
import pytest
from _lowbudget_reference import typicality, typiclust_reference
from sklearn.utils._param_validation import InvalidParameterError

from peal_sk.selection import (
    BiLAFSelector,
    KCenterSelector,
    TypiClustSelector,
    typicality_scores,
    typiclust_sampling,
)
from peal_sk.selection._lowbudget_common import l2_normalize


def gaussian_mixture(seed=0, n_per_mode=60, n_outliers=12):
    """Three tight 2-D modes and outliers spread far around them."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    modes = np.vstack([c + rng.normal(0, 0.4, (n_per_mode, 2)) for c in centres])
    angle = rng.uniform(0, 2 * np.pi, n_outliers)
    outliers = np.c_[np.cos(angle), np.sin(angle)] * rng.uniform(15, 25, (n_outliers, 1))
    return np.vstack([modes, outliers]), centres, len(modes)


def test_dense_modes_versus_kcenter_outliers():
    X, centres, n_modes = gaussian_mixture()
    idx = TypiClustSelector(normalize=False, random_state=0).select(X, 3)
    assert np.all(idx < n_modes)  # every pick in a dense mode
    dist = np.linalg.norm(X[idx][:, None] - centres[None], axis=2).min(axis=1)
    assert np.all(dist < 0.5)  # near the mode's centre: typical
    kc = KCenterSelector(random_state=0).select(X, 3)
    assert np.sum(kc >= n_modes) >= 2  # k-centre goes for the outliers


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("n_labeled", [0, 7])
@pytest.mark.parametrize("budget", [5, 23, 60])
def test_parity_with_reference(squared, n_labeled, budget):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(70 + n_labeled, 3))
    X[5] = X[9]  # an exact duplicate
    X_pool, X_lab = X[:70], X[70:] if n_labeled else None
    sel = TypiClustSelector(
        max_clusters=8,
        n_neighbors=4,
        min_cluster_size=3,
        metric="sqeuclidean" if squared else "euclidean",
        random_state=0,
    )
    y_lab = None if X_lab is None else np.zeros(n_labeled)
    idx, scores = sel(None, X_pool, budget, X_labeled=X_lab, y_labeled=y_lab)
    F = l2_normalize(X)
    labels = np.concatenate([sel.labels_, sel.labeled_labels_])
    ref, ref_scores = typiclust_reference(
        F, 70, labels, budget, n_neighbors=4, min_cluster_size=3, squared=squared
    )
    assert idx.tolist() == ref
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-9)


def test_typicality_scores_match_reference():
    X = np.random.default_rng(2).normal(size=(25, 4))
    np.testing.assert_allclose(typicality_scores(X, n_neighbors=5), typicality(X, 5), rtol=1e-9)
    np.testing.assert_allclose(
        typicality_scores(X, n_neighbors=30, squared=True), typicality(X, 12, True), rtol=1e-9
    )
    assert typicality_scores([[1.0, 2.0]]).tolist() == [0.0]


def test_labelled_clusters_come_last():
    """Clusters holding labelled samples are visited after those without."""
    X, centres, n_modes = gaussian_mixture()
    X_lab = centres[:2] + 0.01  # modes 0 and 1 already have a label
    sel = TypiClustSelector(normalize=False, max_clusters=3, random_state=0)
    idx = sel.select(X[:n_modes], 1, X_labeled=X_lab, y_labeled=[0, 1])
    assert np.linalg.norm(X[idx[0]] - centres[2]) < 1.0


def test_exhausted_clusters_are_skipped():
    """Budget above the cluster count wraps round; exhausted clusters are skipped."""
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(size=(3, 2)) * 0.01, rng.normal(size=(40, 2)) * 0.01 + 5])
    sel = TypiClustSelector(normalize=False, max_clusters=2, min_cluster_size=0, random_state=0)
    idx = sel.select(X, 20)
    assert np.unique(idx).size == 20
    assert set(range(3)) <= set(idx.tolist())  # the small cluster was emptied, then skipped


def test_small_clusters_only_when_nothing_else_left():
    rng = np.random.default_rng(4)
    X = np.vstack([rng.normal(size=(3, 2)) * 0.01, rng.normal(size=(40, 2)) * 0.01 + 5])
    sel = TypiClustSelector(normalize=False, max_clusters=2, min_cluster_size=5, random_state=0)
    idx = sel.select(X, 10)
    assert np.all(idx >= 3)  # the 3-member cluster is ignored while the other has samples
    idx = sel.select(X, 43)
    assert np.sort(idx).tolist() == list(range(43))  # the whole pool


def test_whole_pool_and_labelled_never_returned():
    X = np.random.default_rng(5).normal(size=(50, 3))
    X_lab = X[:5] + 1e-3
    idx = TypiClustSelector(random_state=0).select(X, 50, X_labeled=X_lab, y_labeled=np.zeros(5))
    assert np.sort(idx).tolist() == list(range(50))


def test_exact_duplicates_not_degenerate():
    """Copies of a picked (or labelled) sample are taken only when nothing else is left."""
    rng = np.random.default_rng(6)
    X = np.vstack([np.tile([1.0, 0.0], (30, 1)), rng.normal([1.0, 0.0], 0.2, (20, 2))])
    sel = TypiClustSelector(normalize=False, max_clusters=1, random_state=0)
    idx = sel.select(X, 5)
    assert np.sum(idx < 30) == 1  # one copy, then the other samples
    assert np.all(np.isfinite(sel(None, X, 5)[1]))
    # a labelled copy: no copy at all
    idx = sel.select(X, 5, X_labeled=[[1.0, 0.0]], y_labeled=[0])
    assert np.sum(idx < 30) == 0
    # all identical: every copy is still selectable
    same = np.ones((8, 3))
    assert np.sort(TypiClustSelector(random_state=0).select(same, 8)).tolist() == list(range(8))


def test_deterministic_and_seeded():
    X = np.random.default_rng(7).normal(size=(300, 8)).astype(np.float32)
    a = TypiClustSelector(random_state=3).select(X, 12)
    b = TypiClustSelector(random_state=3).select(X, 12)
    np.testing.assert_array_equal(a, b)
    fn, _ = typiclust_sampling(None, X, 12, random_state=3)
    np.testing.assert_array_equal(fn, a)


def test_labelled_from_learner_honoured(learner, data):
    with_lab = TypiClustSelector(random_state=0).select(data.X_pool, 5, classifier=learner)
    explicit = TypiClustSelector(random_state=0).select(
        data.X_pool, 5, X_labeled=data.X_labeled, y_labeled=data.y_labeled
    )
    np.testing.assert_array_equal(with_lab, explicit)


def test_approximate_neighbours_for_large_clusters():
    """Above knn_exact_max the pick comes from approximate neighbours re-scored exactly."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    exact = TypiClustSelector(max_clusters=2, random_state=0).select(X, 2)
    approx = TypiClustSelector(max_clusters=2, knn_exact_max=100, random_state=0).select(X, 2)
    assert np.unique(approx).size == 2
    assert len(set(exact) & set(approx)) >= 1  # the same pick in at least one cluster


def test_scale_bounded_memory():
    """A scaled-down version of the 1M x 384 case: 30k x 32 float32."""
    X = np.random.default_rng(9).normal(size=(30_000, 32)).astype(np.float32)
    sel = TypiClustSelector(max_clusters=50, random_state=0)
    idx = sel.select(X, 100)
    assert np.unique(idx).size == 100 and sel.n_clusters_ == 50


def test_bilaf_core_selector():
    X, _, _ = gaussian_mixture()
    by_name = BiLAFSelector(core_selector="typiclust", n_cores=3, random_state=0).select(X, 9)
    inst = BiLAFSelector(core_selector=TypiClustSelector(), n_cores=3, random_state=0).select(X, 9)
    assert np.unique(by_name).size == 9
    np.testing.assert_array_equal(by_name, inst)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"max_clusters": 0}, "max_clusters"),
        ({"n_neighbors": 0}, "n_neighbors"),
        ({"min_cluster_size": -1}, "min_cluster_size"),
        ({"metric": "cosine"}, "metric"),
        ({"knn_exact_max": 1}, "knn_exact_max"),
    ],
)
def test_bad_parameters_name_themselves(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        TypiClustSelector(**params).select(np.zeros((5, 2)), 1)


def test_budget_larger_than_pool():
    with pytest.raises(ValueError, match=r"n_instances=6.*n_pool=5"):
        TypiClustSelector().select(np.random.default_rng(0).normal(size=(5, 2)), 6)
