"""ActiveLearner: a modAL-compatible loop over arrays, DataFrames, images and file paths."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from peal_sk import ActiveLearner
from peal_sk.learner import QueryRecord
from peal_sk.selection import (
    ClassBalancedSelector,
    EntropySelector,
    FeatureDistanceSelector,
    HybridSelector,
    KCenterSelector,
    MarginSelector,
    RandomSelector,
    entropy_sampling,
    featdist_sampling,
    least_confident_sampling,
    random_sampling,
)

STRATEGIES = [
    entropy_sampling,
    random_sampling,
    EntropySelector(),
    MarginSelector(),
    FeatureDistanceSelector(),
    FeatureDistanceSelector("kcenter"),
    KCenterSelector(),
    ClassBalancedSelector(EntropySelector()),
    HybridSelector(candidate_factor=3),
]
STRATEGY_IDS = [getattr(s, "__name__", None) or repr(s) for s in STRATEGIES]


def blobs(n=60, seed=0):
    X, y = make_blobs(n_samples=n, centers=3, n_features=4, cluster_std=2.5, random_state=seed)
    return X, y


def initial_split(y, per_class=2):
    return np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])


def run_loop(learner, X_pool, y_pool, n_cycles=3, n_instances=3):
    """A modAL-style loop: query, teach, remove from the pool. Returns the queried rows."""
    queried = []
    for _ in range(n_cycles):
        idx, X_query = learner.query(X_pool, n_instances=n_instances)
        learner.teach(X_query, y_pool[idx])
        queried.append(X_query)
        keep = np.setdiff1d(np.arange(len(y_pool)), idx)
        X_pool = X_pool.iloc[keep] if hasattr(X_pool, "iloc") else X_pool[keep]
        y_pool = y_pool[keep]
    return queried


# -- numpy ------------------------------------------------------------------------------------
def test_numpy_api_shapes():
    X, y = blobs()
    init = initial_split(y)
    pool = np.setdiff1d(np.arange(len(y)), init)
    learner = ActiveLearner(
        LogisticRegression(), entropy_sampling, X_training=X[init], y_training=y[init]
    )
    idx, X_query = learner.query(X[pool])
    assert idx.dtype == np.intp and idx.shape == (1,)
    assert X_query.shape == (1, 4)
    np.testing.assert_array_equal(X_query, X[pool][idx])

    idx, X_query = learner.query(X[pool], n_instances=5)
    assert idx.shape == (5,) and X_query.shape == (5, 4)
    assert learner.teach(X_query, y[pool][idx]) is None
    assert learner.X_training.shape == (len(init) + 5, 4)
    assert learner.y_training.shape == (len(init) + 5,)
    np.testing.assert_array_equal(learner.y_training[-5:], y[pool][idx])

    assert learner.predict(X).shape == (60,)
    proba = learner.predict_proba(X)
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    score = learner.score(X, y)
    assert isinstance(score, float) and 0.0 <= score <= 1.0
    np.testing.assert_array_equal(learner.predict(X), learner.estimator.predict(X))

    assert learner.fit(X[:9], y[:9]) is learner
    assert learner.X_training.shape == (9, 4) and learner.n_labeled == 9


def test_default_strategy_is_least_confident():
    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), X_training=X[:12], y_training=y[:12])
    assert learner.query_strategy is least_confident_sampling
    idx, _ = learner.query(X[12:], n_instances=2)
    proba = learner.predict_proba(X[12:])
    assert set(idx.tolist()) == set(np.argsort(proba.max(axis=1))[:2].tolist())


def test_return_metrics():
    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), EntropySelector(), X[:12], y[:12])
    idx, X_query, scores = learner.query(X[12:], n_instances=4, return_metrics=True)
    assert scores.shape == (4,) and scores.dtype == np.float64
    assert np.all(np.diff(scores) <= 0)
    np.testing.assert_array_equal(X_query, X[12:][idx])


def test_teach_only_new_and_bootstrap():
    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), X_training=X[:12], y_training=y[:12])
    learner.teach(X[12:24], y[12:24], only_new=True)
    assert learner.n_labeled == 24
    expected = LogisticRegression().fit(X[12:24], y[12:24]).coef_
    np.testing.assert_allclose(learner.estimator.coef_, expected)

    runs = [
        ActiveLearner(
            LogisticRegression(), X_training=X, y_training=y, bootstrap_init=True, random_state=3
        ).estimator.coef_
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], LogisticRegression().fit(X, y).coef_)


def test_teach_and_fit_refit_on_all_labelled_data():
    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), X_training=X[:12], y_training=y[:12])
    np.testing.assert_allclose(
        learner.estimator.coef_, LogisticRegression().fit(X[:12], y[:12]).coef_
    )
    learner.teach(X[12:20], y[12:20])
    np.testing.assert_allclose(
        learner.estimator.coef_, LogisticRegression().fit(X[:20], y[:20]).coef_
    )
    learner.fit(X[30:45], y[30:45])
    np.testing.assert_allclose(
        learner.estimator.coef_, LogisticRegression().fit(X[30:45], y[30:45]).coef_
    )


def test_teach_mismatched_lengths():
    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), X_training=X[:12], y_training=y[:12])
    with pytest.raises(ValueError, match="X has 5 samples but y has 4 labels"):
        learner.teach(X[:5], y[:4])


# -- every strategy, every kind of pool ----------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES, ids=STRATEGY_IDS)
def test_every_strategy_in_a_loop(strategy):
    X, y = blobs()
    init = initial_split(y)
    pool = np.setdiff1d(np.arange(len(y)), init)
    learner = ActiveLearner(LogisticRegression(), strategy, X[init], y[init], random_state=0)
    queried = run_loop(learner, X[pool], y[pool])
    assert learner.n_labeled == len(init) + 9
    assert all(q.shape == (3, 4) for q in queried)
    assert len(np.unique(np.concatenate(queried), axis=0)) == 9  # never the same sample twice


def test_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    X, y = blobs()
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    init = initial_split(y)
    pool = np.setdiff1d(np.arange(len(y)), init)
    for strategy in (entropy_sampling, FeatureDistanceSelector(), KCenterSelector()):
        learner = ActiveLearner(
            LogisticRegression(), strategy, df.iloc[init], pd.Series(y[init]), random_state=0
        )
        idx, X_query = learner.query(df.iloc[pool], n_instances=3)
        assert isinstance(X_query, pd.DataFrame)
        assert list(X_query.columns) == ["a", "b", "c", "d"]
        pd.testing.assert_frame_equal(X_query, df.iloc[pool].iloc[idx])
        learner.teach(X_query, y[pool][idx])
        assert isinstance(learner.X_training, pd.DataFrame)
        assert learner.X_training.shape == (len(init) + 3, 4)
        assert learner.predict(df).shape == (60,)
        assert learner.predict_proba(df).shape == (60, 3)
        run_loop(learner, df.iloc[pool], y[pool], n_cycles=2)
        assert learner.n_labeled == len(init) + 9


def _flatten(X):
    X = np.asarray(X)
    return X.reshape(len(X), -1).astype(np.float64) / 255.0


def make_images(n=45, seed=0):
    """Tiny 6x6 RGB images whose mean brightness depends on the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    base = (y * 70 + 30)[:, None, None, None]
    X = np.clip(base + rng.normal(scale=25, size=(n, 6, 6, 3)), 0, 255).astype(np.uint8)
    return X, y


@pytest.mark.parametrize(
    "strategy",
    [
        entropy_sampling,
        FeatureDistanceSelector(),
        KCenterSelector(),
        HybridSelector(),
        ClassBalancedSelector(EntropySelector()),
    ],
    ids=["entropy_sampling", "featdist", "kcenter", "hybrid", "class_balanced"],
)
def test_four_d_image_arrays(strategy):
    X, y = make_images()
    model = make_pipeline(FunctionTransformer(_flatten), LogisticRegression(max_iter=500))
    learner = ActiveLearner(model, strategy, X[:6], y[:6], random_state=0)
    before = X.copy()
    idx, X_query = learner.query(X[6:], n_instances=4)
    assert X_query.shape == (4, 6, 6, 3) and X_query.dtype == np.uint8
    np.testing.assert_array_equal(X_query, X[6:][idx])
    learner.teach(X_query, y[6:][idx])
    assert learner.X_training.shape == (10, 6, 6, 3)
    assert learner.predict(X).shape == (45,)
    assert learner.predict_proba(X).shape == (45, 3)
    np.testing.assert_array_equal(X, before)


def test_four_d_images_embeddings_come_from_the_pipeline():
    X, y = make_images()
    model = make_pipeline(FunctionTransformer(_flatten), LogisticRegression(max_iter=500))
    learner = ActiveLearner(model, KCenterSelector(), X[:6], y[:6])
    idx, _ = learner.query(X[6:], n_instances=3, random_state=1)
    expected = KCenterSelector(random_state=1).select(
        _flatten(X[6:]), 3, X_labeled=_flatten(X[:6]), y_labeled=y[:6]
    )
    np.testing.assert_array_equal(idx, expected)


def _load_paths(paths):
    return np.stack([np.load(p) for p in np.asarray(paths).tolist()])


@pytest.fixture
def path_data(tmp_path):
    X, y = blobs(n=30)
    paths = []
    for i, x in enumerate(X):
        path = tmp_path / f"sample_{i:03d}.npy"
        np.save(path, x)
        paths.append(str(path))
    return np.array(paths), y, X


@pytest.mark.parametrize("kind", ["str", "object", "list"])
@pytest.mark.parametrize(
    "strategy",
    [entropy_sampling, FeatureDistanceSelector(), KCenterSelector(), random_sampling],
    ids=["entropy_sampling", "featdist", "kcenter", "random_sampling"],
)
def test_file_paths(path_data, kind, strategy):
    paths, y, X = path_data
    if kind == "object":
        paths = paths.astype(object)
    model = make_pipeline(FunctionTransformer(_load_paths), StandardScaler(), LogisticRegression())
    init = initial_split(y)
    pool = np.setdiff1d(np.arange(len(y)), init)
    X_init, X_pool = paths[init], paths[pool]
    if kind == "list":
        X_init, X_pool = X_init.tolist(), X_pool.tolist()
    learner = ActiveLearner(model, strategy, X_init, y[init], random_state=0)
    idx, X_query = learner.query(X_pool, n_instances=3)
    expected = [paths[pool][i] for i in idx]
    assert list(X_query) == expected
    if kind != "list":
        assert X_query.dtype == paths.dtype
    learner.teach(X_query, y[pool][idx])
    assert len(learner.X_training) == len(init) + 3
    assert list(learner.X_training)[-3:] == expected
    assert learner.predict(paths).shape == (30,)
    assert learner.score(paths, y) > 0.5


def test_file_paths_featdist_uses_loaded_features(path_data):
    paths, y, X = path_data
    model = make_pipeline(FunctionTransformer(_load_paths), LogisticRegression())
    learner = ActiveLearner(model, X_training=paths[:6], y_training=y[:6])
    idx, _ = featdist_sampling(learner, paths[6:], 4, mode="nearest", random_state=0)
    expected = FeatureDistanceSelector("nearest", random_state=0).select(
        X[6:], 4, X_labeled=X[:6], y_labeled=y[:6]
    )
    np.testing.assert_array_equal(idx, expected)


# -- history and random_state -----------------------------------------------------------------
def test_history():
    X, y = blobs()
    init = initial_split(y)
    pool = np.setdiff1d(np.arange(len(y)), init)
    learner = ActiveLearner(LogisticRegression(), EntropySelector(), X[init], y[init])
    assert learner.history_ == []
    X_pool, y_pool = X[pool], y[pool]
    for cycle in range(3):
        idx, X_query, scores = learner.query(X_pool, n_instances=2, return_metrics=True)
        record = learner.history_[-1]
        assert isinstance(record, QueryRecord)
        assert record.cycle == cycle
        np.testing.assert_array_equal(record.query_idx, idx)
        np.testing.assert_array_equal(record.scores, scores)
        assert record.n_labeled == len(init) + 2 * cycle
        assert record.n_pool == len(X_pool)
        assert record.strategy == "EntropySelector"
        learner.teach(X_query, y_pool[idx])
        keep = np.setdiff1d(np.arange(len(y_pool)), idx)
        X_pool, y_pool = X_pool[keep], y_pool[keep]
    assert len(learner.history_) == 3
    learner2 = ActiveLearner(LogisticRegression(), entropy_sampling, X[init], y[init])
    learner2.query(X[pool])
    assert learner2.history_[0].strategy == "entropy_sampling"


def _history(strategy, seed, X, y):
    init = initial_split(y)
    pool = np.setdiff1d(np.arange(len(y)), init)
    learner = ActiveLearner(LogisticRegression(), strategy, X[init], y[init], random_state=seed)
    run_loop(learner, X[pool], y[pool], n_cycles=4, n_instances=2)
    return [r.query_idx.tolist() for r in learner.history_]


@pytest.mark.parametrize(
    "strategy, random",
    [
        (random_sampling, True),
        (RandomSelector(), True),
        (ClassBalancedSelector(RandomSelector(), gamma=0.5), True),
        (KCenterSelector(), False),
        (EntropySelector(), False),
    ],
    ids=["random_sampling", "RandomSelector", "ClassBalanced(Random)", "KCenter", "Entropy"],
)
def test_same_seed_same_run(strategy, random):
    X, y = blobs()
    first = _history(strategy, 42, X, y)
    assert len(first) == 4
    assert _history(strategy, 42, X, y) == first
    if random:
        others = [_history(strategy, seed, X, y) for seed in (1, 2, 3)]
        assert any(o != first for o in others)


def test_same_seed_same_cold_start_run():
    """No initial data: the first k-centre pick is seeded by the learner."""
    X, y = blobs()
    runs = []
    for seed in (0, 0, 1, 2, 3):
        learner = ActiveLearner(LogisticRegression(), KCenterSelector(), random_state=seed)
        run_loop(learner, X, y, n_cycles=3, n_instances=4)
        runs.append([r.query_idx.tolist() for r in learner.history_])
    assert runs[0] == runs[1]
    assert any(r != runs[0] for r in runs[2:])


def test_each_query_gets_a_fresh_seed():
    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), random_sampling, X[:12], y[:12], random_state=0)
    a, _ = learner.query(X[12:], n_instances=5)
    b, _ = learner.query(X[12:], n_instances=5)
    assert a.tolist() != b.tolist()


def test_explicit_random_state_in_query_wins():
    X, y = blobs()
    learners = [
        ActiveLearner(LogisticRegression(), random_sampling, X[:12], y[:12], random_state=s)
        for s in (0, 1)
    ]
    a, _ = learners[0].query(X[12:], n_instances=5, random_state=7)
    b, _ = learners[1].query(X[12:], n_instances=5, random_state=7)
    np.testing.assert_array_equal(a, b)


# -- construction -----------------------------------------------------------------------------
class FitRaises(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        raise RuntimeError("fit was called")


def test_no_fit_in_init_without_data():
    learner = ActiveLearner(FitRaises(), entropy_sampling)
    assert learner.X_training is None and learner.y_training is None
    assert learner.n_labeled == 0
    assert learner.history_ == []
    with pytest.raises(RuntimeError, match="fit was called"):
        ActiveLearner(FitRaises(), entropy_sampling, X_training=np.zeros((2, 1)), y_training=[0, 1])


def test_first_teach_fits():
    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), random_sampling, random_state=0)
    idx, X_query = learner.query(X, n_instances=12)
    learner.teach(X_query, y[idx])
    assert learner.n_labeled == 12
    assert learner.predict(X).shape == (60,)


def test_init_errors():
    with pytest.raises(TypeError, match="query_strategy must be callable"):
        ActiveLearner(LogisticRegression(), "entropy")
    with pytest.raises(ValueError, match="X_training and y_training must be given together"):
        ActiveLearner(LogisticRegression(), X_training=np.zeros((2, 1)))
    with pytest.raises(NotImplementedError, match="on_transformed"):
        ActiveLearner(LogisticRegression(), on_transformed=True)
    with pytest.raises(ValueError, match="X has 3 samples but y has 2"):
        ActiveLearner(LogisticRegression(), X_training=np.zeros((3, 1)), y_training=[0, 1])


def test_repr():
    learner = ActiveLearner(LogisticRegression(), EntropySelector())
    assert repr(learner) == (
        "ActiveLearner(estimator=LogisticRegression(), query_strategy=EntropySelector, n_labeled=0)"
    )


# -- strategies of other shapes --------------------------------------------------------------
def test_modal_style_strategy_without_random_state():
    calls = []

    def strategy(classifier, X_pool, n_instances=1):
        calls.append(classifier)
        return np.arange(n_instances), np.ones(n_instances)

    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), strategy, X[:12], y[:12], random_state=0)
    idx, X_query = learner.query(X[12:], n_instances=3)
    assert idx.tolist() == [0, 1, 2] and calls == [learner]


@pytest.mark.parametrize("n_instances", [1, 2, 3])
def test_strategy_returning_indices_only(n_instances):
    """modAL's trap: an indices-only return of length 2 must not unpack into two scalars."""

    def strategy(classifier, X_pool, n_instances=1):
        return np.arange(10, 10 + n_instances)

    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), strategy, X[:12], y[:12])
    idx, X_query = learner.query(X[12:], n_instances=n_instances)
    assert idx.tolist() == list(range(10, 10 + n_instances))
    assert X_query.shape == (n_instances, 4)
    assert learner.history_[-1].scores is None


def test_selector_instance_as_strategy_is_seeded_by_learner():
    X, y = blobs()
    runs = [
        ActiveLearner(LogisticRegression(), RandomSelector(), X[:12], y[:12], random_state=5)
        .query(X[12:], n_instances=4)[0]
        .tolist()
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    "output, error, match",
    [
        (np.array([0.5, 1.5]), TypeError, "returned indices of dtype float64"),
        (np.array([0, 48]), ValueError, r"outside \[0, 48\)"),
        (np.array([-1, 2]), ValueError, r"outside \[0, 48\)"),
        ((np.array([True, False]), np.zeros(2)), TypeError, "dtype bool"),
        ((np.array([3, 3]), np.zeros(2)), ValueError, "duplicate"),
    ],
    ids=["float", "too_large", "negative", "bool", "duplicates"],
)
def test_bad_strategy_output(output, error, match):
    def strategy(classifier, X_pool, n_instances=1):
        return output

    X, y = blobs()
    learner = ActiveLearner(LogisticRegression(), strategy, X[:12], y[:12])
    with pytest.raises(error, match=match):
        learner.query(X[12:], n_instances=2)
    assert learner.history_ == []


def test_teach_dataframe_then_numpy_is_a_clear_error():
    pd = pytest.importorskip("pandas")
    X, y = blobs()
    df = pd.DataFrame(X[:12], columns=list("abcd"))
    learner = ActiveLearner(LogisticRegression(), X_training=df, y_training=y[:12])
    with pytest.raises(TypeError, match="ndarray.*DataFrame"):
        learner.teach(X[12:14], y[12:14])
    with pytest.raises(ValueError, match="columns"):
        learner.teach(pd.DataFrame(X[12:14], columns=list("abce")), y[12:14])
    assert learner.n_labeled == 12  # nothing was added


def test_strategy_output_2d_and_score_length_are_errors():
    X, y = blobs()

    def two_d(classifier, X_pool, n_instances=1):
        return np.array([[0, 1]]), np.zeros(2)

    def short_scores(classifier, X_pool, n_instances=1):
        return np.array([0, 1]), np.zeros(1)

    for strategy, match in ((two_d, "shape"), (short_scores, "2 indices but 1 scores")):
        learner = ActiveLearner(LogisticRegression(), strategy, X[:12], y[:12])
        with pytest.raises(ValueError, match=match):
            learner.query(X[12:], n_instances=2)
        assert learner.history_ == []


def test_failed_teach_is_all_or_nothing():
    """Issue 16: a NaN label used to stay in the training data and break every teach."""
    X, y = make_blobs(n_samples=40, centers=2, random_state=0)
    learner = ActiveLearner(LogisticRegression(), X_training=X[:10], y_training=y[:10])
    with pytest.raises(ValueError, match="NaN labels.*position 1.*Nothing was taught"):
        learner.teach(X[10:12], np.array([0.0, np.nan]))
    assert learner.n_labeled == 10
    learner.teach(X[10:12], y[10:12])  # later teaches work
    assert learner.n_labeled == 12 and learner.y_training.dtype.kind in "iu"


def test_failed_fit_in_teach_restores_training_data():
    class Fails(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            if len(y) > 10:
                raise RuntimeError("out of memory")
            self.classes_ = np.unique(y)
            return self

    X, y = make_blobs(n_samples=20, centers=2, random_state=0)
    learner = ActiveLearner(Fails(), X_training=X[:10], y_training=y[:10])
    with pytest.raises(RuntimeError, match="out of memory"):
        learner.teach(X[10:12], y[10:12])
    assert learner.n_labeled == 10 and len(learner.X_training) == 10


def test_teach_refuses_mixed_label_types():
    X, y = make_blobs(n_samples=30, centers=2, random_state=0)
    learner = ActiveLearner(LogisticRegression(), X_training=X[:10], y_training=y[:10])
    with pytest.raises(TypeError, match="string labels .* numeric.*Nothing was taught"):
        learner.teach(X[10:12], np.array(["a", "b"]))
    assert learner.n_labeled == 10 and learner.y_training.dtype.kind in "iu"
    words = ActiveLearner(
        LogisticRegression(), X_training=X[:4], y_training=np.array(["a", "b", "a", "b"])
    )
    with pytest.raises(TypeError, match="numeric labels"):
        words.teach(X[4:6], [1, 0])
    words.teach(X[4:6], ["b", "a"])  # the same type is fine
    assert words.y_training.tolist()[-2:] == ["b", "a"]
