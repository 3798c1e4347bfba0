"""ProbCover: the specification's tests (docs/user_guide/algorithms.rst, "ProbCover")."""

import numpy as np
import pytest
from _lowbudget_reference import probcover_reference, purity_delta_reference
from sklearn.utils._param_validation import InvalidParameterError

from peal_sk.selection import (
    BiLAFSelector,
    KCenterSelector,
    ProbCoverSelector,
    probcover_sampling,
)
from peal_sk.selection._lowbudget_common import l2_normalize
from peal_sk.selection._probcover import _nearest_other_label, _purity_delta


def gaussian_mixture(seed=0, n_per_mode=60, n_outliers=12):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    modes = np.vstack([c + rng.normal(0, 0.4, (n_per_mode, 2)) for c in centres])
    angle = rng.uniform(0, 2 * np.pi, n_outliers)
    outliers = np.c_[np.cos(angle), np.sin(angle)] * rng.uniform(15, 25, (n_outliers, 1))
    return np.vstack([modes, outliers]), centres, len(modes)


def test_dense_modes_versus_kcenter_outliers():
    X, centres, n_modes = gaussian_mixture()
    sel = ProbCoverSelector(normalize=False, n_classes=3, random_state=0)
    idx = sel.select(X, 3)
    assert np.all(idx < n_modes)
    # one pick per mode, each near its centre
    nearest = np.argmin(np.linalg.norm(X[idx][:, None] - centres[None], axis=2), axis=1)
    assert sorted(nearest.tolist()) == [0, 1, 2]
    assert 0 < sel.delta_ < 6
    kc = KCenterSelector(random_state=0).select(X, 3)
    assert np.sum(kc >= n_modes) >= 2


@pytest.mark.parametrize("n_labeled", [0, 6])
@pytest.mark.parametrize("delta", [0.3, 0.7])
def test_parity_with_reference(n_labeled, delta):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80 + n_labeled, 3))
    X[3] = X[11]  # an exact duplicate
    X_pool, X_lab = X[:80], (X[80:] if n_labeled else None)
    y_lab = None if X_lab is None else np.zeros(n_labeled)
    ref, ref_scores, ref_cov = probcover_reference(l2_normalize(X), 80, delta, 80)
    sel = ProbCoverSelector(delta=delta, search="exact", random_state=0)
    idx, scores = sel(None, X_pool, len(ref), X_labeled=X_lab, y_labeled=y_lab)
    assert idx.tolist() == ref
    np.testing.assert_array_equal(scores, ref_scores)
    assert sel.coverage_ == ref_cov == 1.0
    assert sel.n_filled_ == 0


def test_purity_delta_matches_reference():
    rng = np.random.default_rng(2)
    F = l2_normalize(rng.normal(size=(40, 3)))
    labels = rng.integers(0, 3, 40)
    labels[:15] = 0
    queries = np.arange(0, 40, 3)
    for alpha in (0.5, 0.8, 0.95, 1.0):
        r = _nearest_other_label(F, labels, queries)
        ours = _purity_delta(r, alpha)
        ref = purity_delta_reference(F, labels, queries, alpha)
        assert ours == pytest.approx(ref, rel=1e-9)


def test_delta_estimated_and_exposed():
    X, _, _ = gaussian_mixture()
    sel = ProbCoverSelector(n_classes=3, random_state=0)
    sel.select(X, 2)
    assert 0 < sel.delta_ <= 2 and 0 < sel.coverage_ <= 1
    sel = ProbCoverSelector(n_classes=3, alpha=0.5, random_state=0)
    sel.select(X, 2)
    larger = sel.delta_
    sel = ProbCoverSelector(n_classes=3, alpha=1.0, random_state=0)
    sel.select(X, 2)
    assert sel.delta_ <= larger  # purity falls as delta grows


def test_everything_covered_fills_at_random():
    X, _, _ = gaussian_mixture()
    sel = ProbCoverSelector(delta=2.5, random_state=0)  # one ball holds every unit vector
    idx, scores = sel(None, X, 10)
    assert sel.coverage_ == 1.0 and sel.n_filled_ == 9
    assert np.unique(idx).size == 10 and scores[0] == len(X) and np.all(scores[1:] == 0)
    again = ProbCoverSelector(delta=2.5, random_state=0).select(X, 10)
    np.testing.assert_array_equal(idx, again)  # the fill is seeded


def test_whole_pool_and_labelled_never_returned():
    X = np.random.default_rng(3).normal(size=(40, 3))
    X_lab = X[:4] + 1e-3
    sel = ProbCoverSelector(n_classes=3, random_state=0)
    idx = sel.select(X, 40, X_labeled=X_lab, y_labeled=np.zeros(4))
    assert np.sort(idx).tolist() == list(range(40))


def test_labelled_balls_are_covered():
    X, centres, n_modes = gaussian_mixture()
    X_lab = centres[:2]
    sel = ProbCoverSelector(delta=2.0, normalize=False, random_state=0)
    idx = sel.select(X[:n_modes], 1, X_labeled=X_lab, y_labeled=[0, 1])
    assert np.linalg.norm(X[idx[0]] - centres[2]) < 2.0  # the uncovered mode


def test_exact_duplicates():
    X = np.vstack([np.tile([1.0, 0.0], (10, 1)), [[0.0, 1.0]], [[-1.0, 0.0]]])
    sel = ProbCoverSelector(delta=0.1, random_state=0)
    idx, scores = sel(None, X, 3)
    assert idx[0] == 0 and scores[0] == 10  # the copies cover each other
    assert sorted(idx[1:].tolist()) == [10, 11]
    assert sel.coverage_ == 1.0


def test_single_distinct_row():
    idx = ProbCoverSelector(random_state=0).select(np.ones((6, 2)), 6)
    assert np.sort(idx).tolist() == list(range(6))


def test_ivf_search_close_to_exact():
    rng = np.random.default_rng(4)
    X = np.vstack([rng.normal(size=(1, 16)) + rng.normal(0, 0.3, (300, 16)) for _ in range(5)])
    X = X.astype(np.float32)
    exact = ProbCoverSelector(delta=0.5, search="exact", random_state=0)
    ivf = ProbCoverSelector(delta=0.5, search="ivf", nprobe=8, random_state=0)
    a, b = exact.select(X, 5), ivf.select(X, 5)
    assert ivf.n_edges_ >= 0.8 * exact.n_edges_
    assert np.unique(b).size == 5 and len(set(a) & set(b)) >= 2


def test_max_edges_error_before_building():
    X = np.random.default_rng(5).normal(size=(500, 4))
    with pytest.raises(ValueError, match=r"estimated.*max_edges=1,000"):
        ProbCoverSelector(delta=1.9, max_edges=1000, random_state=0).select(X, 2)


def test_deterministic_and_function_form():
    X = np.random.default_rng(6).normal(size=(200, 5)).astype(np.float32)
    a = ProbCoverSelector(n_classes=4, random_state=2).select(X, 8)
    fn, _ = probcover_sampling(None, X, 8, n_classes=4, random_state=2)
    np.testing.assert_array_equal(a, fn)
    np.testing.assert_array_equal(a, ProbCoverSelector(n_classes=4, random_state=2).select(X, 8))


def test_scale_bounded_memory():
    """A scaled-down version of the 1M x 384 case (IVF graph, chunked build)."""
    X = np.random.default_rng(7).normal(size=(20_000, 32)).astype(np.float32)
    sel = ProbCoverSelector(n_classes=10, search="ivf", random_state=0)
    idx = sel.select(X, 50)
    assert np.unique(idx).size == 50 and sel.n_edges_ >= 20_000


def test_bilaf_core_selector():
    X, _, _ = gaussian_mixture()
    by_name = BiLAFSelector(core_selector="probcover", n_cores=3, random_state=0).select(X, 9)
    inst = BiLAFSelector(core_selector=ProbCoverSelector(), n_cores=3, random_state=0).select(X, 9)
    assert np.unique(by_name).size == 9
    np.testing.assert_array_equal(by_name, inst)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"delta": 0.0}, "delta"),
        ({"delta": -1.0}, "delta"),
        ({"n_classes": 1}, "n_classes"),
        ({"alpha": 0.0}, "alpha"),
        ({"max_edges": 0}, "max_edges"),
        ({"search": "hnsw"}, "search"),
    ],
)
def test_bad_parameters_name_themselves(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        ProbCoverSelector(**params).select(np.zeros((5, 2)), 1)


def test_budget_larger_than_pool():
    with pytest.raises(ValueError, match=r"n_instances=6.*n_pool=5"):
        ProbCoverSelector().select(np.random.default_rng(0).normal(size=(5, 2)), 6)


def test_smaller_budget_is_a_prefix():
    """The greedy is sequential and draws its randomness first: at a radius that does
    not depend on the budget, B picks are the first B picks of a larger budget."""
    X = np.random.default_rng(8).normal(size=(400, 6)).astype(np.float32)
    params = {"n_classes": 4, "budget_coverage": None, "random_state": 1}
    big = ProbCoverSelector(**params)
    idx = big.select(X, 30)
    assert big.n_filled_ == 0
    for b in (1, 7, 29):
        np.testing.assert_array_equal(ProbCoverSelector(**params).select(X, b), idx[:b])


def test_default_radius_keeps_a_minimum_coverage():
    """Issue 27: the purity radius alone can leave every ball with its centre only (the
    greedy then collapses into dense corners); the default radius is at least the one
    whose average ball holds budget_coverage / B of the pool, so the picks cover a
    substantial share of the pool, and that radius shrinks as the budget grows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 64)).astype(np.float32)  # no cluster structure at all
    paper = ProbCoverSelector(budget_coverage=None, random_state=0)
    paper.select(X, 50)
    assert paper.coverage_ < 0.05  # the purity radius covers next to nothing
    deltas, coverages = [], []
    for budget in (20, 50, 150):
        sel = ProbCoverSelector(random_state=0)
        sel.select(X, budget)
        assert sel.delta_ >= sel.purity_delta_
        deltas.append(sel.delta_)
        coverages.append(sel.coverage_)
    assert deltas[0] > deltas[1] > deltas[2]
    assert min(coverages) > 0.2
    # the labelled samples count towards the budget: 100 labelled + 50 new ~ 150 new
    lab = ProbCoverSelector(random_state=0)
    lab.select(X[:2900], 50, X_labeled=X[2900:], y_labeled=np.zeros(100))
    assert lab.delta_ == pytest.approx(deltas[2], rel=0.05)


def test_coverage_radius_alone_stays_within_the_edge_budget():
    """At 5 labels the coverage radius would ask for balls of 10 % of the pool (400,000
    edges); it is capped at half of max_edges instead of making the selection fail."""
    X = np.random.default_rng(3).normal(size=(2000, 32)).astype(np.float32)
    sel = ProbCoverSelector(max_edges=100_000, search="exact", random_state=0)
    assert sel.select(X, 5).shape == (5,)
    assert sel.n_edges_ <= 100_000
    uncapped = ProbCoverSelector(random_state=0)
    uncapped.select(X, 5)
    assert uncapped.delta_ > sel.delta_ and uncapped.n_edges_ > 100_000
