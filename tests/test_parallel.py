"""``n_jobs``: the selectors' independent pieces through joblib give the n_jobs=1 result.

Every parallel selector is run on small seeded data with exact duplicates and ties
(integer-valued features), with ``n_jobs=1``, with ``n_jobs=2`` on the loky and
threading backends, and on a real ``dask.distributed.LocalCluster`` (2 worker
processes, 1 thread each) through ``joblib.parallel_config(backend="dask")``; the
selections must be identical and the scores bitwise equal. A small ``working_memory``
and patched chunk sizes split the tiny inputs into many pieces.
"""

import re
import warnings

import joblib
import numpy as np
import pytest
import sklearn
from numpy.testing import assert_array_equal
from sklearn.utils._param_validation import InvalidParameterError

from peal_sk.selection import (
    BiLAFSelector,
    FeatureDistanceSelector,
    KCenterSelector,
    ProbCoverSelector,
    TypiClustSelector,
    bilaf_sampling,
    featdist_sampling,
    kcenter_sampling,
    probcover_sampling,
    typicality_scores,
    typiclust_sampling,
)
from peal_sk.selection import _probcover as probcover_module
from peal_sk.utils import _neighbors, kcenter_greedy, nearest_distances
from peal_sk.utils import _parallel as parallel_module

#: MiB of temporaries per block: splits these tiny inputs into many blocks
WORKING_MEMORY = 0.02


def _pool(kind, seed=0, n=240, d=6):
    rng = np.random.default_rng(seed)
    if kind == "integers":  # a small grid: exact ties, exact arithmetic
        X = rng.integers(-2, 3, size=(n, d)).astype(np.float64)
    else:
        centres = rng.normal(scale=3.0, size=(5, d))
        X = centres[rng.integers(5, size=n)] + rng.normal(size=(n, d))
    m = min(20, n // 4)
    X[n // 2 : n // 2 + m] = X[:m]  # exact duplicates
    return X.astype(np.float32) if kind == "float32" else X


#: (id, selector factory taking n_jobs, select() keyword arguments, n_instances)
CASES = [
    (
        "bilaf",
        lambda n_jobs: BiLAFSelector(
            n_cores=6, core_selector="kcenter", n_neighbors=3, random_state=0, n_jobs=n_jobs
        ),
        {},
        24,
    ),
    (
        "bilaf-few-cores",  # B < K: the k-centre subset of the cores
        lambda n_jobs: BiLAFSelector(
            n_cores=8, core_selector="kcenter", random_state=1, n_jobs=n_jobs
        ),
        {},
        5,
    ),
    (
        "typiclust",
        lambda n_jobs: TypiClustSelector(
            max_clusters=6, n_neighbors=4, random_state=0, n_jobs=n_jobs
        ),
        {},
        20,  # more picks than clusters: several passes
    ),
    (
        "typiclust-approx",  # faiss IVF neighbours, random draws made before dispatch
        lambda n_jobs: TypiClustSelector(
            max_clusters=4, knn_exact_max=20, normalize=False, random_state=2, n_jobs=n_jobs
        ),
        {"labeled": 5},
        9,
    ),
    (
        "probcover-exact",
        lambda n_jobs: ProbCoverSelector(
            n_classes=4, purity_samples=60, random_state=0, n_jobs=n_jobs
        ),
        {"labeled": 7},
        10,
    ),
    (
        "probcover-ivf",
        lambda n_jobs: ProbCoverSelector(
            delta=0.6, search="ivf", nprobe=3, random_state=0, n_jobs=n_jobs
        ),
        {},
        10,
    ),
    (
        "featdist-nearest",
        lambda n_jobs: FeatureDistanceSelector(mode="nearest", random_state=0, n_jobs=n_jobs),
        {"labeled": 9},
        12,
    ),
    (
        "featdist-kcenter",
        lambda n_jobs: FeatureDistanceSelector(mode="kcenter", random_state=0, n_jobs=n_jobs),
        {"labeled": 9},
        12,
    ),
    (
        "kcenter",
        lambda n_jobs: KCenterSelector(random_state=3, n_jobs=n_jobs),
        {"labeled": 9},
        12,
    ),
]
KINDS = ["float64", "float32", "integers"]


@pytest.fixture
def many_pieces(monkeypatch):
    """Small blocks and chunks (fixed in the parent, whatever n_jobs is)."""
    monkeypatch.setattr(probcover_module, "CHUNK", 16)
    monkeypatch.setattr(_neighbors, "_FAISS_QUERY_BLOCK", 2)  # 32-row faiss pieces
    with sklearn.config_context(working_memory=WORKING_MEMORY):
        yield


def _select(factory, kwargs, n_instances, X, n_jobs):
    n_lab = kwargs.get("labeled", 0)
    inputs = {}
    if n_lab:
        X_lab = X[:n_lab] + 0.25
        inputs = {"X_labeled": X_lab, "y_labeled": np.arange(n_lab) % 3}
    sel = factory(n_jobs)
    idx = sel.select(X, n_instances, **inputs)
    _, scores = sel(None, X, n_instances, **inputs)
    return idx, scores, sel


def _reference(factory, kwargs, n_instances, X):
    return _select(factory, kwargs, n_instances, X, 1)


def _assert_same(got, ref):
    assert_array_equal(got[0], ref[0])
    assert_array_equal(got[1], ref[1])  # bitwise: assert_array_equal compares exactly
    for attr in ("labels_", "removed_", "boundary_scores_", "delta_", "n_edges_"):
        if hasattr(ref[2], attr):
            assert_array_equal(getattr(got[2], attr), getattr(ref[2], attr))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", ["loky", "threading"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_n_jobs_2_equals_n_jobs_1(case, backend, kind, many_pieces):
    _, factory, kwargs, n_instances = case
    X = _pool(kind)
    ref = _reference(factory, kwargs, n_instances, X)
    with joblib.parallel_config(backend=backend):
        got = _select(factory, kwargs, n_instances, X, 2)
    _assert_same(got, ref)


@pytest.mark.parametrize("kind", KINDS)
def test_kernels_equal_in_parallel(kind, many_pieces):
    X = _pool(kind, seed=4)
    R = X[::7] + 0.5
    for n_jobs in (2, -1):
        with joblib.parallel_config(backend="loky"):
            for got, ref in [
                (nearest_distances(X, R, n_jobs=n_jobs), nearest_distances(X, R)),
                (
                    nearest_distances(X, R, backend="numpy", n_jobs=n_jobs),
                    nearest_distances(X, R, backend="numpy"),
                ),
                (
                    kcenter_greedy(X, 15, 0, X_labeled=R, n_jobs=n_jobs),
                    kcenter_greedy(X, 15, 0, X_labeled=R),
                ),
            ]:
                assert_array_equal(got[0], ref[0])
                assert_array_equal(got[1], ref[1])
            assert_array_equal(
                typicality_scores(X, n_neighbors=5, n_jobs=n_jobs),
                typicality_scores(X, n_neighbors=5),
            )


def test_default_path_does_not_use_joblib(monkeypatch, many_pieces):
    """n_jobs=None (no context) and n_jobs=1 run the pieces in a plain loop."""

    def fail(*args, **kwargs):
        raise AssertionError("joblib.Parallel was used")

    import sklearn.utils.parallel

    monkeypatch.setattr(sklearn.utils.parallel, "Parallel", fail)
    X = _pool("float32")
    for _, factory, kwargs, n_instances in CASES:
        for n_jobs in (None, 1):
            _select(factory, kwargs, n_instances, X, n_jobs)
    # n_jobs=1 stays in this process even inside a parallel_config context
    with joblib.parallel_config(backend="loky", n_jobs=2):
        BiLAFSelector(n_cores=4, core_selector="kcenter", n_jobs=1).select(X, 10)
    # one piece: no joblib either
    assert parallel_module.run_pieces(abs, [(-3,)], n_jobs=2) == [3]


def test_parallel_config_n_jobs_applies_to_none(monkeypatch):
    calls = []
    real = parallel_module.effective_n_jobs
    monkeypatch.setattr(parallel_module, "effective_n_jobs", lambda n: calls.append(n) or real(n))
    assert real(None) == 1 and real(1) == 1
    with joblib.parallel_config(backend="threading", n_jobs=2):
        assert real(None) == 2
        assert parallel_module.run_pieces(abs, [(-1,), (-2,)], n_jobs=None) == [1, 2]
    assert calls == [None]


BAD_N_JOBS = [0, "x", 1.5]
CLASSES = [BiLAFSelector, TypiClustSelector, ProbCoverSelector, FeatureDistanceSelector]


@pytest.mark.parametrize("n_jobs", BAD_N_JOBS)
@pytest.mark.parametrize("cls", [*CLASSES, KCenterSelector])
def test_bad_n_jobs_is_a_clear_error(cls, n_jobs):
    X = _pool("float64", n=30)
    sel = (
        cls(n_jobs=n_jobs) if cls is not FeatureDistanceSelector else cls("kcenter", n_jobs=n_jobs)
    )
    with pytest.raises(InvalidParameterError, match=r"'n_jobs' parameter .*Got .* instead"):
        sel.select(X, 2)


@pytest.mark.parametrize("n_jobs", BAD_N_JOBS)
def test_bad_n_jobs_in_functions(n_jobs):
    X = _pool("float64", n=30)
    for fn in (bilaf_sampling, typiclust_sampling, probcover_sampling, kcenter_sampling):
        with pytest.raises(InvalidParameterError, match="n_jobs"):
            fn(None, X, 2, n_jobs=n_jobs)
    with pytest.raises(InvalidParameterError, match="n_jobs"):
        featdist_sampling(None, X, 2, mode="kcenter", n_jobs=n_jobs)
    with pytest.raises(InvalidParameterError, match="n_jobs"):
        kcenter_greedy(X, 2, 0, n_jobs=n_jobs)
    match = rf"'n_jobs' parameter of typicality_scores .*Got {re.escape(repr(n_jobs))} instead"
    with pytest.raises(InvalidParameterError, match=match):
        typicality_scores(X, n_jobs=n_jobs)


# -- on a real LocalCluster ------------------------------------------------------------------
try:
    import distributed
except ImportError:  # the [dask] extra is optional; only the cluster tests need it
    distributed = None
needs_dask = pytest.mark.skipif(
    distributed is None, reason="needs the [dask] extra (dask.distributed is not installed)"
)


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each, on localhost (as in test_dask.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the dashboard's port in use
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    with cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        client.run(__import__, "peal_sk.selection")  # imports, not in the first test
        yield cluster, client


@needs_dask
def test_dask_backend_equals_n_jobs_1(cluster, many_pieces):
    _, client = cluster
    X = _pool("integers", seed=5)  # exact ties and duplicates
    refs = [_reference(f, kw, n, X) for _, f, kw, n in CASES]
    workers = set(client.scheduler_info()["workers"])
    with distributed.get_task_stream(client) as stream:
        with joblib.parallel_config(backend="dask"):
            for (_, factory, kwargs, n_instances), ref in zip(CASES, refs, strict=True):
                # n_jobs=-1: every worker thread of the cluster
                _assert_same(_select(factory, kwargs, n_instances, X, -1), ref)
    # the pieces ran on both workers, not in this process
    ran_on = {task["worker"] for task in stream.data}
    assert ran_on == workers, (ran_on, workers)


@needs_dask
def test_dask_backend_scatters_shared_arrays_once(cluster, monkeypatch, many_pieces):
    """ProbCover's features (needed by every range-search chunk) are scattered once per
    parallel call, not sent with each of its ~15 chunks."""
    _, client = cluster
    X = _pool("float32", seed=6)
    scattered = []
    real_scatter = client.scatter

    def scatter(data, *args, **kwargs):
        scattered.append(getattr(data, "shape", None))
        return real_scatter(data, *args, **kwargs)

    monkeypatch.setattr(client, "scatter", scatter)
    sel = ProbCoverSelector(delta=0.5, search="exact", random_state=0, n_jobs=-1)
    with joblib.parallel_config(backend="dask"):
        idx = sel.select(X, 5)
    assert_array_equal(
        idx, ProbCoverSelector(delta=0.5, search="exact", random_state=0).select(X, 5)
    )
    n_chunks = -(-len(X) // 16)
    assert n_chunks > 10
    assert scattered.count(X.shape) == 1, scattered
