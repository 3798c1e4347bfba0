"""Issue 27's selection reproductions: features of extreme magnitude reach faiss only
scaled (no abort, the exact picks), and bad values or indices from users get clear errors."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from peal_sk import ActiveLearner
from peal_sk.selection import (
    BiLAFSelector,
    ClassBalancedSelector,
    FeatureDistanceSelector,
    KMeansSelector,
    ProbCoverSelector,
    RandomSelector,
    TypiClustSelector,
    get_selector,
    list_selectors,
)
from peal_sk.utils._faiss import as_faiss_float32, faiss_kmeans, float32_scale

pytest.importorskip("faiss")


def _pool(n=300, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_kmeans_on_1e20_features_does_not_abort_the_process():
    """The reproduction itself, in a child process: faiss's C++ exception aborted it."""
    code = (
        "import numpy as np; from peal_sk.selection import KMeansSelector as K; "
        "print(K(random_state=0).select(np.random.default_rng(0).normal(size=(300,8))*1e20,8))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.parametrize(
    "scale, dtype", [(1e20, np.float64), (1e30, np.float32), (1e-30, np.float64)]
)
def test_kmeans_picks_do_not_depend_on_the_magnitude(scale, dtype):
    X = _pool()
    expected = KMeansSelector(random_state=0).select(X, 8)
    sel = KMeansSelector(random_state=0)
    np.testing.assert_array_equal(sel.select((X * scale).astype(dtype), 8), expected)
    assert np.isfinite(sel.inertia_) and np.all(np.isfinite(sel.cluster_centers_))


def test_bilaf_with_kmeans_cores_on_1e20_features():
    X = _pool()
    params = {"n_cores": 5, "core_selector": "kmeans", "random_state": 0}
    expected = BiLAFSelector(**params).select(X, 20)
    np.testing.assert_array_equal(BiLAFSelector(**params).select(X * 1e20, 20), expected)


@pytest.mark.parametrize("cls", [TypiClustSelector, ProbCoverSelector])
def test_low_budget_selectors_unnormalised_on_1e20_features(cls):
    X = _pool()
    expected = cls(normalize=False, random_state=0).select(X, 8)
    sel = cls(normalize=False, random_state=0)
    np.testing.assert_array_equal(sel.select(X * 1e20, 8), expected)
    if cls is ProbCoverSelector:  # reported in the features' own units
        ref = ProbCoverSelector(normalize=False, random_state=0)
        ref.select(X, 8)
        assert sel.delta_ == pytest.approx(ref.delta_ * 1e20, rel=1e-6)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_nearest_faiss_picks_what_numpy_picks_at_extreme_magnitudes(scale):
    """float32 features near 1e30: faiss's float32 distances overflowed (other picks)."""
    X = (_pool(200, 16) * scale).astype(np.float32)
    y = np.arange(20) % 3
    picks = {
        b: FeatureDistanceSelector("nearest", backend=b).select(
            X[20:], 10, X_labeled=X[:20], y_labeled=y
        )
        for b in ("faiss", "numpy")
    }
    np.testing.assert_array_equal(picks["faiss"], picks["numpy"])


def test_float64_features_too_small_even_for_float64_are_refused():
    with pytest.raises(ValueError, match=r"magnitude .*underflow even in float64.*Rescale"):
        KMeansSelector().select(_pool() * 1e-200, 3)


def test_faiss_guard_scales_by_a_power_of_two_only_when_needed():
    X = _pool()
    X32, scale = as_faiss_float32(X)
    assert scale == 1.0 and X32.dtype == np.float32
    same = np.ascontiguousarray(X, dtype=np.float32)
    assert as_faiss_float32(same)[0] is same  # no copy for ordinary float32 input
    X32, scale = as_faiss_float32(X * 1e200)
    assert np.log2(scale).is_integer() and 0.5 <= np.abs(X32).max() < 1
    np.testing.assert_array_equal(X32, ((X * 1e200) * scale).astype(np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        float32_scale(0.0, np.inf, 3)


def test_faiss_kmeans_single_cluster_is_the_mean():
    X = _pool()
    km = faiss_kmeans(X, 1, 0, n_iter=5)
    np.testing.assert_allclose(km.centres[0], X.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(km.labels, 0)


# -- values and indices from the user -------------------------------------------------------
@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_in_the_pool_is_refused_even_by_random_sampling(bad):
    X = _pool(50, 4)
    X[7, 2] = bad
    with pytest.raises(ValueError, match=r"X_pool contains NaN or infinite.*row 7, column 2"):
        RandomSelector(random_state=0).select(X, 3)
    with pytest.raises(ValueError, match=r"X_labeled contains NaN or infinite"):
        RandomSelector(random_state=0).select(_pool(50, 4), 3, X_labeled=X, y_labeled=[0] * 50)


def test_nan_in_the_pool_passes_where_nothing_computes_on_it():
    """NaN is a missing value to scikit-learn estimators (HistGradientBoosting)."""
    X = _pool(50, 4)
    X[7, 2] = np.nan
    assert RandomSelector(random_state=0).select(X, 3).shape == (3,)


def _learner():
    X = _pool(60, 4)
    y = np.arange(60) % 3
    return X, ActiveLearner(LogisticRegression(), lambda *a, **k: None, X[:12], y[:12])


@pytest.mark.parametrize("how", ["keyword", "positional", "default"])
def test_learner_refuses_a_strategy_returning_more_indices_than_asked(how):
    def greedy(classifier, X_pool, n_instances=3):
        return np.arange(8), np.zeros(8)

    X, learner = _learner()
    learner.query_strategy = greedy
    args, kwargs = {"keyword": ((), {"n_instances": 3}), "positional": ((3,), {}),
                    "default": ((), {})}[how]  # fmt: skip
    with pytest.raises(ValueError, match=r"greedy returned 8 indices for n_instances=3"):
        learner.query(X[12:], *args, **kwargs)
    assert learner.history_ == []


@pytest.mark.parametrize(
    "output, match",
    [
        (lambda n: np.arange(n) + 10_000, r"outside \[0, 120\)"),
        (lambda n: np.zeros(n, dtype=int), "duplicate"),
        (lambda n: np.arange(n + 2), r"returned 6 indices for n_instances=4"),
        (lambda n: np.arange(n) + 0.5, "dtype float64"),
    ],
    ids=["out_of_range", "duplicates", "too_many", "floats"],
)
def test_bilaf_core_selector_callable_with_bad_indices(output, match):
    def my_cores(classifier, X_pool, n_instances):
        return output(n_instances), None

    with pytest.raises((ValueError, TypeError), match=f"core_selector=my_cores.*{match}"):
        BiLAFSelector(n_cores=4, core_selector=my_cores).select(_pool(120, 4), 10)


@pytest.mark.parametrize(
    "output, match",
    [
        (lambda n: np.arange(n) + 10_000, r"outside \[0, 100\)"),
        (lambda n: np.zeros(n, dtype=int), "duplicate"),
        (lambda n: np.arange(n - 1), r"returned 9 indices for n_instances=10"),
    ],
    ids=["out_of_range", "duplicates", "too_few"],
)
def test_class_balanced_base_callable_with_bad_indices(output, match):
    def my_base(classifier, X_pool, n_instances=1):
        return output(n_instances), np.zeros(n_instances)

    X = _pool(120, 4)
    y = np.arange(120) % 3
    clf = LogisticRegression().fit(X[:20], y[:20])
    with pytest.raises(ValueError, match=f"base=my_base.*{match}"):
        ClassBalancedSelector(my_base, random_state=0).select(
            X[20:], 5, classifier=clf, X_labeled=X[:20], y_labeled=y[:20]
        )


def test_centroid_function_form_normalises_like_the_registered_strategy():
    """The function form of "centroid" was plain kmeans_sampling (no normalize=True)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 5)) * rng.uniform(0.1, 10, size=(200, 1))
    function = {i.name: i for i in list_selectors()}["centroid"].function
    idx, _ = function(None, X, 5, random_state=0)
    np.testing.assert_array_equal(idx, get_selector("centroid", random_state=0).select(X, 5))
    plain = get_selector("kmeans", random_state=0).select(X, 5)
    assert not np.array_equal(idx, plain)  # the data make normalising matter
    # an explicit argument still wins
    np.testing.assert_array_equal(function(None, X, 5, normalize=False, random_state=0)[0], plain)


@pytest.mark.parametrize("name", ["kmeans", "centroid", "typiclust", "probcover", "kcenter"])
def test_registry_strategies_on_1e20_features(name):
    """``simulate --strategies kmeans`` builds its selectors with make_selector."""
    from peal_sk.selection import make_selector

    X = _pool()
    expected = make_selector(name, n_instances=8, random_state=0).select(X, 8)
    got = make_selector(name, n_instances=8, random_state=0).select(X * 1e20, 8)
    np.testing.assert_array_equal(got, expected)
