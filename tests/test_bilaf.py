"""Correctness of BiLAFSelector against the slow reference in ``_bilaf_reference.py``.

The reference is written from docs/user_guide/algorithms.rst (section "BiLAF") with the
project's decisions on the points the spec leaves open; with ``core_indices`` given no
randomness is involved, so the fast selector must return the same samples in the same
order, and the same intermediate results (cores, clusters, denoising, allocation; boundary
scores up to rounding).
"""

import itertools

import numpy as np
import pytest
from _bilaf_reference import allocate, bilaf_reference, prepare, select_from
from numpy.testing import assert_allclose, assert_array_equal
from scipy.spatial.distance import cdist
from sklearn import config_context
from sklearn.linear_model import LogisticRegression

from peal_sk import ActiveLearner
from peal_sk.selection import BiLAFSelector

PARAMS = ("n_neighbors", "ring_fraction", "removal_fraction", "opponent_penalty")


# -- pools -------------------------------------------------------------------------------
def make_features(rng, kind, n, d):
    if kind == "blobs":
        n_blobs = int(rng.integers(2, 8))
        centres = rng.normal(scale=5.0, size=(n_blobs, d))
        return centres[rng.integers(n_blobs, size=n)] + rng.uniform(0.3, 1.5) * rng.normal(
            size=(n, d)
        )
    return rng.uniform(size=(n, d))


COMBOS = list(itertools.product(("blobs", "uniform"), (2, 5, 16), (1, 2, 5, 12)))


def random_pool(seed, n_range=(50, 401)):
    """Seeded pool covering every (kind, d, K) combination across the seeds."""
    kind, d, K = COMBOS[seed % len(COMBOS)]
    rng = np.random.default_rng(seed)
    n = int(rng.integers(*n_range))
    F = make_features(rng, kind, n, d)
    cores = rng.choice(n, size=K, replace=False)
    return F, cores


def budgets(n, K, n_kept):
    """Small, medium, = K, < K, around the number of kept samples, = N (top-up)."""
    candidates = [1, K - 1, K, K + 1, K + 3, (K + n_kept) // 2, n // 5]
    candidates += [n_kept - 1, n_kept, n_kept + 1, n]
    return sorted({b for b in candidates if 1 <= b <= n})


# -- comparison with the reference -------------------------------------------------------
def first_difference(a, b):
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def assert_same_as_reference(F, cores, B, **params):
    """Run the fast selector and the reference; compare stage by stage."""
    ref_idx, info = bilaf_reference(F, B, cores, **params)
    sel = BiLAFSelector(core_indices=cores, **params)
    idx = sel.select(F, B)
    case = f"B={B}, N={len(F)}, cores={sorted(np.asarray(cores).tolist())}, params={params}"

    assert_array_equal(sel.cores_, info["cores"], err_msg=f"stage 0 cores_ differ; {case}")
    assert np.asarray(sel.cores_).dtype == np.intp
    assert_array_equal(sel.labels_, info["labels"], err_msg=f"stage 0 labels_ differ; {case}")
    assert_array_equal(
        sel.removed_, info["removed"], err_msg=f"stage 1 removed_ (denoising) differs; {case}"
    )
    assert np.asarray(sel.removed_).dtype == bool
    assert_allclose(
        sel.boundary_scores_,
        info["boundary_scores"],
        rtol=1e-9,
        atol=1e-12,
        err_msg=f"stage 2 boundary_scores_ differ; {case}",
    )
    assert_array_equal(
        sel.opponents_, info["opponents"], err_msg=f"stage 2 opponents_ differ; {case}"
    )
    if info["allocation"] is not None:  # B >= K
        assert_array_equal(
            sel.allocation_, info["allocation"], err_msg=f"stage 3 allocation_ differs; {case}"
        )
    assert idx.dtype == np.intp
    pos = first_difference(idx, ref_idx)
    assert_array_equal(
        idx,
        ref_idx,
        err_msg=f"stage 3 selection differs (first at position {pos}); {case}",
    )
    return sel, idx, info


def check_pool(F, cores, **params):
    """All budgets of interest on one pool (stages 0-2 of the reference computed once)."""
    state = prepare(F, cores, **{k: v for k, v in params.items() if k != "opponent_penalty"})
    n_kept = int((~state["removed"]).sum())
    for B in budgets(len(F), len(state["cores"]), n_kept):
        ref_idx, alloc = select_from(state, B, params.get("opponent_penalty", 1.1))
        sel = BiLAFSelector(core_indices=cores, **params)
        idx = sel.select(F, B)
        case = f"B={B}, N={len(F)}, K={len(state['cores'])}, params={params}"
        assert_array_equal(sel.cores_, state["cores"], err_msg=f"stage 0 cores_; {case}")
        assert_array_equal(sel.labels_, state["labels"], err_msg=f"stage 0 labels_; {case}")
        assert_array_equal(sel.removed_, state["removed"], err_msg=f"stage 1 removed_; {case}")
        assert_allclose(
            sel.boundary_scores_,
            state["boundary_scores"],
            rtol=1e-9,
            atol=1e-12,
            err_msg=f"stage 2 boundary_scores_; {case}",
        )
        assert_array_equal(
            sel.opponents_, state["opponents"], err_msg=f"stage 2 opponents_; {case}"
        )
        if alloc is not None:
            assert_array_equal(sel.allocation_, alloc, err_msg=f"stage 3 allocation_; {case}")
        pos = first_difference(idx, ref_idx)
        assert_array_equal(idx, ref_idx, err_msg=f"stage 3 selection (first diff at {pos}); {case}")
        check_invariants(sel, idx, B)


def check_invariants(sel, idx, B):
    """Properties every BiLAF selection has, whatever the reference says."""
    n = len(sel.labels_)
    cores = np.asarray(sel.cores_)
    K = len(cores)
    removed = np.asarray(sel.removed_)
    assert idx.dtype == np.intp
    assert idx.shape == (B,)
    assert np.unique(idx).size == B, "duplicate indices"
    assert idx.min() >= 0 and idx.max() < n
    assert_array_equal(np.sort(cores), cores)
    assert np.unique(cores).size == K
    assert_array_equal(np.asarray(sel.labels_)[cores], np.arange(K))  # own cluster each
    n_kept = int((~removed).sum())
    if B < K:
        assert set(idx.tolist()) <= set(cores.tolist()), "B < K must return cores only"
        assert idx[0] == cores[0]
        return
    assert set(cores.tolist()) <= set(idx.tolist()), "a core is missing"
    alloc = np.asarray(sel.allocation_)
    assert alloc.shape == (K,) and (alloc >= 1).all()
    assert alloc.sum() == min(B, n_kept)
    if B <= n_kept:
        assert not removed[idx].any(), "a removed sample was selected"
    else:
        assert removed[idx[n_kept:]].all() and not removed[idx[:n_kept]].any()
    # cluster blocks in cluster order, each starting with its core, of size b_j
    start = 0
    labels = np.asarray(sel.labels_)
    for j in range(K):
        block = idx[start : start + alloc[j]]
        assert block[0] == cores[j]
        assert (labels[block] == j).all()
        start += alloc[j]


# -- (a) the fast selector equals the reference ------------------------------------------
@pytest.mark.parametrize("seed", range(48))
def test_matches_reference_random_pools(seed):
    F, cores = random_pool(seed)
    check_pool(F, cores)


@pytest.mark.parametrize("seed", range(100, 124))
def test_matches_reference_other_parameters(seed):
    F, cores = random_pool(seed, n_range=(40, 160))
    rng = np.random.default_rng(seed + 1)
    params = {
        "n_neighbors": int(rng.choice([1, 3, 10, 50])),
        "ring_fraction": float(rng.choice([0.05, 0.1, 0.25, 0.5, 1.0])),
        "removal_fraction": float(rng.choice([0.0, 0.1, 0.3, 0.5])),
        "opponent_penalty": float(rng.choice([1.0, 1.1, 2.0])),
    }
    check_pool(F, cores, **params)


def test_matches_reference_unsorted_cores_given_as_list():
    F, cores = random_pool(7)
    cores = [int(c) for c in cores[::-1]]
    assert_same_as_reference(F, cores, 20)


# -- (b) invariants and edge cases -------------------------------------------------------
def test_all_rows_equal():
    F = np.full((30, 4), 2.5)
    for B in (1, 5, 27, 28, 30):
        sel, idx, info = assert_same_as_reference(F, [7, 0, 29], B)
        assert_array_equal(sel.cores_, [0])  # duplicates of core 0 are dropped
        assert_array_equal(sel.labels_, np.zeros(30))
        assert_array_equal(sel.boundary_scores_, np.ones(30))
        check_invariants(sel, idx, B)


def test_duplicated_rows():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(25, 3))
    F = base[rng.permutation(np.repeat(np.arange(25), 4))]
    _, first = np.unique(F, axis=0, return_index=True)
    cores = rng.choice(first, size=5, replace=False)
    check_pool(F, cores)


def test_duplicated_rows_many_clusters():
    rng = np.random.default_rng(1)
    base = make_features(rng, "blobs", 40, 2)
    F = base[rng.permutation(np.repeat(np.arange(40), 3))]
    _, first = np.unique(F, axis=0, return_index=True)
    check_pool(F, rng.choice(first, size=4, replace=False))


def test_duplicate_core_features_are_dropped():
    rng = np.random.default_rng(2)
    F = make_features(rng, "blobs", 80, 3)
    F[50] = F[10]  # core 50 duplicates core 10's features
    F[70] = F[3]
    cores = [50, 70, 10, 3, 40]
    for B in (2, 3, 4, 10, 40, 80):
        sel, idx, _ = assert_same_as_reference(F, cores, B)
        assert_array_equal(sel.cores_, [3, 10, 40])
        check_invariants(sel, idx, B)


def test_clusters_smaller_than_10_are_kept_whole():
    rng = np.random.default_rng(3)
    F = make_features(rng, "uniform", 40, 2)
    cores = rng.choice(40, size=12, replace=False)
    check_pool(F, cores)
    sel = BiLAFSelector(core_indices=cores)
    sel.select(F, 20)
    sizes = np.bincount(sel.labels_, minlength=len(sel.cores_))
    small = np.isin(sel.labels_, np.flatnonzero(sizes < 10))
    assert small.any()
    assert not np.asarray(sel.removed_)[small].any()


def test_cluster_of_exactly_10():
    # two far groups: 10 points (one is an outlier) and 9 points
    rng = np.random.default_rng(4)
    a = np.vstack([rng.normal(size=(9, 2)) * 0.1, [[3.0, 3.0]]])
    b = rng.normal(size=(9, 2)) * 0.1 + 100
    F = np.vstack([a, b])
    for B in (2, 5, 10, 18, 19):
        sel, idx, _ = assert_same_as_reference(F, [0, 10], B)
        check_invariants(sel, idx, B)
    assert_array_equal(np.flatnonzero(sel.removed_), [9])  # int(10 * 0.9) = 9 kept


def test_budget_equal_to_pool_size():
    rng = np.random.default_rng(5)
    F = make_features(rng, "blobs", 120, 5)
    cores = rng.choice(120, size=5, replace=False)
    sel, idx, _ = assert_same_as_reference(F, cores, 120)
    assert_array_equal(np.sort(idx), np.arange(120))
    check_invariants(sel, idx, 120)
    assert np.asarray(sel.removed_).any()  # so the top-up was exercised


def test_single_core():
    rng = np.random.default_rng(6)
    F = make_features(rng, "uniform", 90, 2)
    for B in (1, 2, 30, 81, 90):
        sel, idx, _ = assert_same_as_reference(F, [17], B)
        assert_array_equal(sel.opponents_, np.full(90, -1))
        assert_array_equal(sel.boundary_scores_, np.ones(90))
        assert idx[0] == 17
        check_invariants(sel, idx, B)


def test_budget_below_number_of_cores_is_kcenter_of_cores():
    F = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0], [5.0]])
    cores = [0, 1, 3, 5, 6]
    for B, expected in [(1, [0]), (2, [0, 5]), (3, [0, 5, 3]), (4, [0, 5, 3, 6])]:
        sel, idx, _ = assert_same_as_reference(F, cores, B)
        assert_array_equal(idx, expected)


def test_integer_lattice_ties():
    # many exactly tied distances; with one core the boundary scores are all 1, so the
    # selection depends only on distance ties broken by index
    x, y = np.meshgrid(np.arange(12.0), np.arange(12.0))
    F = np.column_stack([x.ravel(), y.ravel()])
    check_pool(F, [0])
    check_pool(F, [65])
    # with several cores compare the stages that do not involve summing distances
    state = prepare(F, [0, 65, 143])
    for B in (3, 10, 50, 144):
        sel = BiLAFSelector(core_indices=[0, 65, 143])
        sel.select(F, B)
        assert_array_equal(sel.labels_, state["labels"])
        assert_array_equal(sel.removed_, state["removed"])
        assert_array_equal(sel.allocation_, select_from(state, B)[1])


def test_tiny_pools():
    rng = np.random.default_rng(18)
    for n in (1, 2, 3, 9):
        F = rng.normal(size=(n, 2))
        for K in range(1, n + 1):
            cores = rng.choice(n, size=K, replace=False)
            for B in range(1, n + 1):
                sel, idx, _ = assert_same_as_reference(F, cores, B)
                check_invariants(sel, idx, B)


@pytest.mark.parametrize(
    "params",
    [
        {"ring_fraction": 0.0},  # m = max(1, 0) = 1: one member per ring
        {"ring_fraction": 1.0},  # a single ring: order by distance to the core
        {"removal_fraction": 0.0},  # only the n_j mod m unreached members are removed
        {"n_neighbors": 1},
        {"opponent_penalty": 1.0},
    ],
)
def test_parameter_bounds(params):
    F, cores = random_pool(19, n_range=(60, 120))
    check_pool(F, cores, **params)


def test_input_not_modified():
    F, cores = random_pool(20)
    F_copy = F.copy()
    cores_copy = cores.copy()
    BiLAFSelector(core_indices=cores).select(F, 30)
    assert_array_equal(F, F_copy)
    assert_array_equal(cores, cores_copy)


def test_scores_are_boundary_scores_of_the_selection():
    F, cores = random_pool(9)
    sel = BiLAFSelector(core_indices=cores)
    idx, scores = sel(None, F, 15)
    assert scores.dtype == np.float64 and scores.shape == (15,)
    assert_array_equal(scores, np.asarray(sel.boundary_scores_)[idx])
    assert_array_equal(idx, BiLAFSelector(core_indices=cores).select(F, 15))


def test_fitted_attributes_and_timings():
    F, cores = random_pool(10)
    sel = BiLAFSelector(core_indices=cores)
    sel.select(F, 20)
    n = len(F)
    assert np.asarray(sel.labels_).shape == (n,)
    assert np.asarray(sel.removed_).shape == (n,)
    assert np.asarray(sel.boundary_scores_).shape == (n,)
    assert np.asarray(sel.boundary_scores_).dtype == np.float64
    assert np.asarray(sel.opponents_).shape == (n,)
    assert isinstance(sel.timings_, dict)
    assert {"cores", "assign", "denoise", "boundary"} <= set(sel.timings_)
    assert all(float(t) >= 0 for t in sel.timings_.values())


# -- reference sanity (hand-computed) ----------------------------------------------------
def test_reference_allocation_by_hand():
    assert allocate([10, 5, 1], 8) == [4, 3, 1]
    assert allocate([2, 20], 12) == [2, 10]
    assert allocate([3, 3, 30], 30) == [3, 3, 24]
    assert allocate([2, 2, 10], 14) == [2, 2, 10]  # a second round after capping
    assert allocate([2, 2, 10], 20) == [2, 2, 10]


def test_reference_by_hand():
    F = np.array([[0.0], [1.0], [10.0], [11.0]])
    idx, info = bilaf_reference(F, 2, [0, 2])
    assert_allclose(info["boundary_scores"], [9.5 / 10, 8.5 / 9, 9.5 / 10, 10.5 / 11])
    assert_array_equal(idx, [0, 2])
    F = np.arange(10.0)[:, None]
    F[9] = 100.0  # the outlier is the last of the expansion order and is removed
    idx, info = bilaf_reference(F, 3, [0])
    assert_array_equal(np.flatnonzero(info["removed"]), [9])
    assert_array_equal(idx, [0, 3, 6])  # r = 3: drop node and its 2 nearest, then index


# -- (c) modAL form ----------------------------------------------------------------------
def test_function_form_equals_select():
    from peal_sk.selection import bilaf, bilaf_sampling

    assert bilaf is bilaf_sampling
    F, cores = random_pool(11)
    for B in (3, 25):
        idx, scores = bilaf_sampling(None, F, B, core_indices=cores)
        sel = BiLAFSelector(core_indices=cores)
        assert_array_equal(idx, sel.select(F, B))
        assert idx.dtype == np.intp
        assert_array_equal(scores, np.asarray(sel.boundary_scores_)[idx])
    idx, _ = bilaf_sampling(
        None, F, 12, core_indices=cores, n_neighbors=3, ring_fraction=0.2, opponent_penalty=2.0
    )
    ref, _ = bilaf_reference(F, 12, cores, n_neighbors=3, ring_fraction=0.2, opponent_penalty=2.0)
    assert_array_equal(idx, ref)


def test_active_learner_without_labels():
    from peal_sk.selection import bilaf

    rng = np.random.default_rng(12)
    X_pool = make_features(rng, "blobs", 60, 4)
    results = []
    for _ in range(2):
        learner = ActiveLearner(
            estimator=LogisticRegression(), query_strategy=bilaf, random_state=0
        )
        idx, X_query = learner.query(X_pool, n_instances=8, n_cores=3)
        assert idx.dtype == np.intp and idx.shape == (8,) and np.unique(idx).size == 8
        assert_array_equal(X_query, X_pool[idx])
        assert learner.history_[-1].scores.shape == (8,)
        results.append(idx)
    assert_array_equal(results[0], results[1])


# -- (d) bad input -----------------------------------------------------------------------
@pytest.fixture
def pool():
    return np.random.default_rng(13).normal(size=(50, 3))


@pytest.mark.parametrize(
    "kwargs, B, name",
    [
        ({"n_cores": 51}, 5, "n_cores"),
        ({"n_cores": 0}, 5, "n_cores"),
        ({"n_cores": -0.1}, 5, "n_cores"),
        ({"n_cores": 1.5}, 5, "n_cores"),
        ({"n_cores": 3}, 51, "n_instances"),
        ({"n_cores": 3}, 0, "n_instances"),
        ({"n_cores": 3, "ring_fraction": -0.1}, 5, "ring_fraction"),
        ({"n_cores": 3, "ring_fraction": 1.5}, 5, "ring_fraction"),
        ({"n_cores": 3, "removal_fraction": -0.1}, 5, "removal_fraction"),
        ({"n_cores": 3, "removal_fraction": 1.5}, 5, "removal_fraction"),
        ({"n_cores": 3, "n_neighbors": 0}, 5, "n_neighbors"),
        ({"core_indices": [0, 50]}, 5, "core_indices"),
        ({"core_indices": [-1, 3]}, 5, "core_indices"),
        ({"core_indices": [1, 1, 2]}, 5, "core_indices"),
        ({"core_indices": [0.5, 2]}, 5, "core_indices"),
        ({"core_indices": []}, 5, "core_indices"),
    ],
)
def test_bad_parameters(pool, kwargs, B, name):
    with pytest.raises((ValueError, TypeError), match=name):
        BiLAFSelector(**kwargs).select(pool, B)
    from peal_sk.selection import bilaf_sampling

    with pytest.raises((ValueError, TypeError), match=name):
        bilaf_sampling(None, pool, B, **kwargs)


@pytest.mark.parametrize("bad", ["nan", "inf", "1d"])
def test_bad_features(pool, bad):
    X = pool.copy()
    if bad == "nan":
        X[4, 1] = np.nan
    elif bad == "inf":
        X[7, 0] = -np.inf
    else:
        X = X[:, 0]
    with pytest.raises(ValueError, match="X_pool"):
        BiLAFSelector(core_indices=[0, 1, 2]).select(X, 5)
    with pytest.raises(ValueError, match="X_pool"):
        BiLAFSelector(n_cores=3).select(X, 5)


# -- (e) determinism with the ActiveFT core selector -------------------------------------
def test_deterministic_with_activeft_cores():
    from peal_sk.selection import ActiveFTSelector

    rng = np.random.default_rng(14)
    F = make_features(rng, "blobs", 120, 5)

    def run(seed):
        sel = BiLAFSelector(
            n_cores=4,
            core_selector=ActiveFTSelector(max_iter=20, random_state=0),
            random_state=seed,
        )
        return sel, sel.select(F, 20)

    sel_a, a = run(0)
    sel_b, b = run(0)
    assert_array_equal(a, b)
    assert_array_equal(sel_a.cores_, sel_b.cores_)
    assert len(sel_a.cores_) == 4
    check_invariants(sel_a, a, 20)
    # given the cores it chose, the rest is the reference's deterministic algorithm
    ref, _ = bilaf_reference(F, 20, sel_a.cores_)
    assert_array_equal(a, ref)


def test_deterministic_with_default_core_selector():
    rng = np.random.default_rng(15)
    F = make_features(rng, "uniform", 80, 3)
    a = BiLAFSelector(n_cores=3, random_state=1).select(F, 10)
    sel = BiLAFSelector(n_cores=3, random_state=1)
    b = sel.select(F, 10)
    assert_array_equal(a, b)
    ref, _ = bilaf_reference(F, 10, sel.cores_)
    assert_array_equal(b, ref)


def test_fraction_of_cores():
    rng = np.random.default_rng(16)
    F = make_features(rng, "blobs", 100, 3)
    from peal_sk.selection import ActiveFTSelector

    sel = BiLAFSelector(
        n_cores=0.04,
        core_selector=ActiveFTSelector(max_iter=20, random_state=0),
        random_state=0,
    )
    idx = sel.select(F, 12)
    assert len(sel.cores_) == 4  # 0.04 * 100
    check_invariants(sel, idx, 12)


# -- (f) k-means baseline ----------------------------------------------------------------
def expected_kmeans(F, B, random_state):
    from sklearn.cluster import KMeans

    seed = int(np.random.default_rng(random_state).integers(np.iinfo(np.int32).max))
    centres = KMeans(n_clusters=B, random_state=seed).fit(F).cluster_centers_
    D = cdist(centres, F)
    taken = []
    for j in range(B):
        order = sorted(range(len(F)), key=lambda i: (D[j, i], i))
        taken.append(next(i for i in order if i not in taken))
    return np.asarray(taken)


def test_kmeans_selector():
    from peal_sk.selection import KMeansSelector, kmeans_sampling

    rng = np.random.default_rng(17)
    F = make_features(rng, "blobs", 70, 3)
    for B in (1, 5, 12):
        idx = KMeansSelector(backend="sklearn", random_state=0).select(F, B)
        assert idx.dtype == np.intp and idx.shape == (B,) and np.unique(idx).size == B
        assert_array_equal(idx, expected_kmeans(F, B, 0))
        assert_array_equal(idx, KMeansSelector(backend="sklearn", random_state=0).select(F, B))
        fn_idx, scores = kmeans_sampling(None, F, B, backend="sklearn", random_state=0)
        assert_array_equal(fn_idx, idx)
        assert scores.shape == (B,)


def test_kmeans_selector_duplicates_take_distinct_samples():
    from peal_sk.selection import KMeansSelector

    F = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 5, axis=0)
    idx = KMeansSelector(random_state=0).select(F, 2)
    assert np.unique(idx).size == 2
    assert set(F[idx, 0].tolist()) == {0.0, 5.0}
    # more centres than distinct points: still B distinct samples (KMeans warns)
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="distinct clusters"):
        idx = KMeansSelector(backend="sklearn", random_state=0).select(F, 4)
    assert np.unique(idx).size == 4
    idx = KMeansSelector(backend="faiss", random_state=0).select(F, 4)
    assert np.unique(idx).size == 4


def test_far_from_origin_matches_reference():
    """Features offset far from the origin take the shifted float64 path."""
    rng = np.random.default_rng(21)
    F = make_features(rng, "blobs", 150, 6) + 1e4
    cores = rng.choice(150, size=5, replace=False)
    check_pool(F, cores)
    check_pool(F.astype(np.float32), cores)


@pytest.mark.parametrize("n, d", [(2, 1), (10, 3), (37, 16), (300, 64), (513, 384)])
def test_cluster_distance_matrix(n, d):
    """Distances equal cdist's to rounding; duplicated rows get identical ones."""
    from peal_sk.selection._bilaf import _ClusterDistances

    X = np.random.default_rng(n).normal(size=(n, d)).astype(np.float32).astype(np.float64)
    dist = _ClusterDistances(X.copy(), 0)
    assert_allclose(dist.D, cdist(X, X), rtol=1e-9, atol=1e-9)
    X[n // 2] = X[0]  # with a duplicate: expanded from the distinct rows
    dist = _ClusterDistances(X.copy(), 0)
    assert_array_equal(dist.D[:, 0], dist.D[:, n // 2])
    assert dist.D[0, n // 2] == 0.0
    assert_allclose(dist.D, cdist(X, X), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dense", [True, False])
def test_k_smallest_merge_is_bit_identical(monkeypatch, dense):
    """The denoising k-buffer (a large cluster: merged by picking out only the distances
    below each row's k-th; a dense one: partitioned), with ties, duplicated members and
    rows that gain nothing, equals sorting the concatenation of the old buffer and the
    new distances, bit for bit."""
    import peal_sk.selection._bilaf as bilaf_module
    from peal_sk.selection._bilaf import _ClusterDistances, _k_smallest

    rng = np.random.default_rng(26)
    X = np.round(rng.normal(size=(200, 3)), 1)  # coarse values: many tied distances
    X[rng.choice(200, size=30)] = X[rng.choice(200, size=30)]
    if not dense:
        monkeypatch.setattr(bilaf_module, "_DENSE_MAX", 10)
    dist = _ClusterDistances(X.copy(), 0)
    assert (dist.D is not None) == dense
    order = rng.permutation(200)
    rows, first, later = np.sort(order[:120]), order[120:185], order[185:]
    k = 10
    prev = _k_smallest(dist, rows, first, k)  # the first ring fills the buffer
    full = dist.block(rows, np.arange(200))
    assert_array_equal(prev, np.sort(full[:, np.isin(np.arange(200), first)], axis=1)[:, :k])
    with config_context(working_memory=0.01):  # several blocks of rows
        got = _k_smallest(dist, rows, later, k, prev)
    want = np.sort(np.concatenate([prev, full[:, later]], axis=1), axis=1)[:, :k]
    assert_array_equal(got, want)
    assert (got != prev).any(axis=1).any() and (got == prev).all(axis=1).any()


@pytest.mark.parametrize("duplicates", [False, True])
def test_blockwise_mean_to_equals_dense(monkeypatch, duplicates):
    """A large cluster's d_in (kept x kept blocks of the upper triangle, each giving its
    row and column sums, then the removed rows) equals the dense matrix's row means to
    rounding, and duplicated members get identical values."""
    import peal_sk.selection._bilaf as bilaf_module
    from peal_sk.selection._bilaf import _ClusterDistances

    rng = np.random.default_rng(25)
    X = rng.normal(size=(301, 7))
    if duplicates:
        X[rng.choice(301, size=60)] = X[rng.choice(301, size=60)]
    kept = np.sort(rng.choice(301, size=260, replace=False))
    dense = _ClusterDistances(X.copy(), 0)
    assert dense.D is not None
    expected = cdist(X, X[kept]).mean(axis=1)
    assert_allclose(dense.mean_to(kept), expected, rtol=1e-12)
    monkeypatch.setattr(bilaf_module, "_DENSE_MAX", 10)
    blocked = _ClusterDistances(X.copy(), 0)
    assert blocked.D is None
    with config_context(working_memory=0.01):  # blocks of a few dozen rows
        got = blocked.mean_to(kept)
    assert_allclose(got, expected, rtol=1e-12)
    _, inv = np.unique(X, axis=0, return_inverse=True)
    for group in np.unique(inv.ravel()):  # members with the same features: same d_in
        same = np.flatnonzero(inv.ravel() == group)
        assert (got[same] == got[same[0]]).all()


def test_giant_cluster_path_matches_reference(monkeypatch):
    """Clusters above _DENSE_MAX distinct rows compute their distances block by block."""
    import peal_sk.selection._bilaf as bilaf_module

    monkeypatch.setattr(bilaf_module, "_DENSE_MAX", 20)
    F, cores = random_pool(5)
    check_pool(F, cores)
    rng = np.random.default_rng(22)
    base = rng.normal(size=(40, 3))
    F = base[rng.permutation(np.repeat(np.arange(40), 3))]
    _, first = np.unique(F, axis=0, return_index=True)
    check_pool(F, rng.choice(first, size=2, replace=False))


def test_score_samples_are_the_boundary_scores():
    F, cores = random_pool(23)
    sel = BiLAFSelector(core_indices=cores)
    scores = sel.score_samples(F)
    assert scores.shape == (len(F),) and scores.dtype == np.float64
    _, info = bilaf_reference(F, 5, cores)
    assert_allclose(scores, info["boundary_scores"], rtol=1e-9, atol=1e-12)
    assert sel._greater_is_better is False  # lower = nearer a boundary


def test_pipeline_embeddings_are_used():
    """With a fitted Pipeline, BiLAF runs on the output of the steps before the model."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(24)
    F = make_features(rng, "blobs", 90, 4) * np.array([1.0, 100.0, 0.01, 5.0])
    y = (F[:, 0] > np.median(F[:, 0])).astype(int)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(F, y)
    cores = [3, 40, 77]
    idx = BiLAFSelector(core_indices=cores).select(F, 12, classifier=pipe)
    ref, _ = bilaf_reference(pipe[:-1].transform(F), 12, cores)
    assert_array_equal(idx, ref)
