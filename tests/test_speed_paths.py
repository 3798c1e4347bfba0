"""The fast paths of issue 13 return what the previous implementations returned.

``tests/_activeft_reference.py`` and ``tests/_kcenter_reference.py`` are frozen copies of
the algorithms before the change; BiLAF is checked against ``tests/_bilaf_reference.py``
in ``test_bilaf.py`` and here against its own dense path. Seeded data include exact
duplicates and integer-valued features (exact arithmetic, so ties are real ties).
"""

import numpy as np
import pytest
from _activeft_reference import activeft_select_reference
from _kcenter_reference import kcenter_greedy_reference
from _kmeans_reference import nearest_untaken_reference
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import config_context
from sklearn.utils._param_validation import InvalidParameterError

from peal_sk.selection import KMeansSelector, activeft_select
from peal_sk.selection import _bilaf as bilaf_module
from peal_sk.selection._activeft import _BoundedForward
from peal_sk.utils import _neighbors, kcenter_greedy
from peal_sk.utils._blocks import block_rows, sq_distances


def _features(kind, seed, n=400, d=24):
    rng = np.random.default_rng(seed)
    if kind == "blobs":
        centres = rng.normal(scale=3.0, size=(8, d))
        return centres[rng.integers(8, size=n)] + rng.normal(size=(n, d))
    if kind == "duplicates":  # every row three times
        base = rng.normal(size=(n // 3, d))
        return base[rng.permutation(np.repeat(np.arange(n // 3), 3))]
    if kind == "integers":  # a small grid: many exact ties, exact arithmetic
        return rng.integers(-3, 4, size=(n, d)).astype(np.float64)
    if kind == "nonneg32":  # like pooled CNN features: non-negative, float32
        centres = rng.gamma(1.0, 1.0, size=(6, d))
        return (centres[rng.integers(6, size=n)] * rng.gamma(4, 0.25, size=(n, d))).astype(
            np.float32
        )
    raise ValueError(kind)


# -- k-centre ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["blobs", "duplicates", "integers", "nonneg32"])
@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("dense_fraction", [0.0, 0.125, 1.1])
def test_kcenter_same_picks_as_before(kind, labelled, dense_fraction, monkeypatch):
    """Dense GEMV (fraction 0), the default switch, and gathers only (fraction > 1)."""
    monkeypatch.setattr(_neighbors, "_DENSE_FRACTION", dense_fraction)
    X = _features(kind, 3)
    X_lab = X[:7] + 0.5 if labelled else None
    for seed in range(3):
        new = kcenter_greedy(X, 60, np.random.default_rng(seed), X_labeled=X_lab)
        old = kcenter_greedy_reference(X, 60, np.random.default_rng(seed), X_labeled=X_lab)
        assert_array_equal(new[0], old[0])
        # a matrix-vector product over the whole pool may round a row's distance one ulp
        # differently from the product over gathered rows; the picks are the same
        assert_allclose(new[1], old[1], rtol=1e-12)


def test_kcenter_validates_parameters():
    X = _features("blobs", 0, n=20)
    with pytest.raises(InvalidParameterError, match="'backend' parameter"):
        kcenter_greedy(X, 3, 0, backend="gpu")
    with pytest.raises(InvalidParameterError, match="'n_instances' parameter"):
        kcenter_greedy(X, 0, 0)
    with pytest.raises(ValueError, match="n_instances=21 is larger"):
        kcenter_greedy(X, 21, 0)
    with pytest.raises(ValueError, match="X_labeled has 3 features"):
        kcenter_greedy(X, 2, 0, X_labeled=np.zeros((1, 3)))
    # an int seed is accepted and equals the Generator it seeds
    assert_array_equal(
        kcenter_greedy(X, 4, 5)[0], kcenter_greedy(X, 4, np.random.default_rng(5))[0]
    )
    with config_context(skip_parameter_validation=True):
        kcenter_greedy(X, 3, 0)


# -- ActiveFT ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["blobs", "duplicates", "integers", "nonneg32"])
def test_activeft_same_selection_as_before(kind):
    """Same picks as the previous plain (dense) pass, and as its grouped pass.

    The previous grouped and dense passes themselves differ in the last bits of the
    centroids (1e-16); on the duplicated data at K = 7 that flips one near-tie of the
    final mapping between them. The new pass must equal the dense one (the textbook
    algorithm) always, and the grouped one wherever the two old passes agree.
    """
    X = _features(kind, 5)
    for seed, K in [(0, 7), (1, 20)]:
        kw = dict(max_iter=60, learning_rate=1e-2)
        new, info = activeft_select(X, K, np.random.default_rng(seed), **kw)
        dense, info_d = activeft_select_reference(
            X, K, np.random.default_rng(seed), _grouped=False, **kw
        )
        grouped = activeft_select_reference(X, K, np.random.default_rng(seed), **kw)[0]
        assert_array_equal(new, dense)
        assert_array_equal(info["order"], info_d["order"])
        assert_allclose(info["loss"], info_d["loss"], rtol=1e-5)
        if np.array_equal(grouped, dense):
            assert_array_equal(new, grouped)


@pytest.mark.parametrize("kind", ["blobs", "nonneg32"])
@pytest.mark.parametrize("max_snapshots", [16, 2])
def test_activeft_bounds_skip_work_and_stay_exact(kind, max_snapshots, monkeypatch):
    """Most rows are proven by the bounds (not recomputed); the argmax matches dense.

    ``blobs`` has negative features (the Cauchy-Schwarz bound), ``nonneg32`` none (the
    bound on the positive part of each centroid's displacement). With two snapshots
    the rows of the oldest are carried to the newest by the bound (rebased).
    """
    from peal_sk.selection import _activeft

    monkeypatch.setattr(_activeft, "_MAX_SNAPSHOTS", max_snapshots)
    X = _features(kind, 8, n=600, d=16)
    seen = []
    original = _BoundedForward.step

    def checked_step(self, c_hat, *args):
        out = original(self, c_hat, *args)
        dense = np.argmax(self.f @ c_hat.astype(self.f.dtype).T, axis=1)
        seen.append(np.array_equal(dense, self.b))
        return out

    _BoundedForward.step = checked_step
    try:
        _, info = activeft_select(X, 6, np.random.default_rng(0), max_iter=80)
    finally:
        _BoundedForward.step = original
    assert all(seen) and len(seen) == 80
    assert info["n_recomputed"] < 0.5 * 600 * 80
    if max_snapshots == 2:
        assert info["n_rebased"] > 0


def test_activeft_snapshot_cap_keeps_selection(monkeypatch):
    """With only two centroid snapshots kept, the rows of the older one are rebased onto
    the newest (looser bounds, more rows recomputed): the same result, bit for bit."""
    X = _features("nonneg32", 2)
    ref, info = activeft_select(X, 9, np.random.default_rng(3), max_iter=50)
    from peal_sk.selection import _activeft

    monkeypatch.setattr(_activeft, "_MAX_SNAPSHOTS", 2)
    idx, capped = activeft_select(X, 9, np.random.default_rng(3), max_iter=50)
    assert_array_equal(idx, ref)
    assert_array_equal(capped["loss"], info["loss"])  # bit for bit
    assert capped["n_recomputed"] > info["n_recomputed"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_activeft_bound_decides_work_not_values(seed, monkeypatch):
    """Which bound lets rows through changes how many are recomputed, never a value.

    On non-negative features the bound on the positive part of the displacement proves
    more rows than Cauchy-Schwarz; the loss curve, centroids and picks are the same bit
    for bit, since ``s_i`` comes from the same kernels whichever rows are recomputed.
    """
    from peal_sk.selection import _activeft

    X = _features("nonneg32", 10 + seed, n=900, d=32)
    kw = dict(max_iter=120, learning_rate=3e-3)
    idx, info = activeft_select(X, 12, np.random.default_rng(seed), **kw)
    assert _BoundedForward(X.copy(), 12).nonneg  # the data has no negative feature
    monkeypatch.setattr(_activeft, "_POSITIVE_PART_BOUND", False)
    assert not _BoundedForward(X.copy(), 12).nonneg
    idx_cs, info_cs = activeft_select(X, 12, np.random.default_rng(seed), **kw)
    assert_array_equal(idx_cs, idx)
    assert_array_equal(info_cs["order"], info["order"])
    assert_array_equal(info_cs["loss"], info["loss"])
    assert_array_equal(info_cs["centroids"], info["centroids"])
    assert info["n_recomputed"] < info_cs["n_recomputed"]


def test_activeft_resorts_reuse_two_buffers(monkeypatch):
    """Re-sorting writes into a second buffer kept for it (a fresh array of the pool's
    size costs page faults every time): the same selection, no new feature arrays."""
    from peal_sk.selection import _activeft

    X = _features("nonneg32", 4)
    ref = activeft_select(X, 9, np.random.default_rng(1), max_iter=40)[0]
    monkeypatch.setattr(_activeft, "_RESORT_FRACTION", 0.0)  # re-sort at every move
    seen, calls, original = set(), [], _BoundedForward._resort

    def tracked(self):
        original(self)
        calls.append(1)
        seen.update({id(self.f), id(self._spare)})

    monkeypatch.setattr(_BoundedForward, "_resort", tracked)
    assert_array_equal(activeft_select(X, 9, np.random.default_rng(1), max_iter=40)[0], ref)
    assert len(calls) > 5 and len(seen) == 2  # many re-sorts, always the same two arrays


@pytest.mark.parametrize(
    "params, name",
    [
        ({"init": "bogus"}, "init"),
        ({"temperature": 0.0}, "temperature"),
        ({"max_iter": -1}, "max_iter"),
        ({"batch_size": "all"}, "batch_size"),
        ({"beta": -1.0}, "beta"),
    ],
)
def test_activeft_select_validates_parameters(params, name):
    X = _features("blobs", 0, n=30)
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        activeft_select(X, 3, 0, **params)


def test_activeft_select_checks_data_before_work():
    X = _features("blobs", 0, n=30)
    with pytest.raises(ValueError, match="n_cores=31 is larger"):
        activeft_select(X, 31, 0)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        activeft_select(X, 3, 0)


# -- k-means ----------------------------------------------------------------------------
def test_kmeans_faiss_inertia_close_to_sklearn():
    X = _features("blobs", 4, n=600, d=16)
    fa = KMeansSelector(random_state=0)
    sk = KMeansSelector(backend="sklearn", random_state=0)
    idx_f, idx_s = fa.select(X, 20), sk.select(X, 20)
    assert np.unique(idx_f).size == 20 and np.unique(idx_s).size == 20
    assert fa.inertia_ <= 1.05 * sk.inertia_
    assert_array_equal(idx_f, KMeansSelector(random_state=0).select(X, 20))  # seeded


@pytest.mark.parametrize("kind", ["blobs", "duplicates", "integers", "nonneg32"])
@pytest.mark.parametrize("dtype", [None, np.float32])
def test_kmeans_nearest_untaken_same_as_before(kind, dtype):
    """The float32 screen picks what the float64 screen picked, ties included; a float32
    pool is screened as it is (not centred), with its larger rounding bound."""
    from peal_sk.utils._neighbors import nearest_untaken as _nearest_untaken

    X = _features(kind, 9, n=500)
    if kind == "blobs":  # far from the origin: rounding grows with the offset
        X = X + 1e5
    if dtype is not None:
        X = X.astype(dtype)
    rng = np.random.default_rng(1)
    for centres in (
        X[rng.choice(len(X), 60, replace=False)],  # exactly on samples (and duplicates)
        X[rng.choice(len(X), 60, replace=False)] + rng.normal(scale=0.3, size=(60, 24)),
        np.repeat(X[:3], 20, axis=0),  # the same centre again and again
    ):
        new, d_new = _nearest_untaken(X, centres)
        old, d_old = nearest_untaken_reference(X, centres)
        assert_array_equal(new, old)
        assert_array_equal(d_new, d_old)


@pytest.mark.parametrize("kind", ["blobs", "duplicates", "integers", "nonneg32"])
def test_kmeans_distinct_rows_exact(kind):
    from peal_sk.selection._lowbudget_common import distinct_rows

    X = _features(kind, 10, n=300)
    X[5][X[5] == 0] = -0.0  # -0.0 equals 0.0
    rows = np.ascontiguousarray(X + 0.0).view(np.dtype((np.void, X[0].nbytes))).ravel()
    assert_array_equal(distinct_rows(X), np.sort(np.unique(rows, return_index=True)[1]))


@pytest.mark.parametrize("kind", ["blobs", "duplicates"])
def test_kmeans_auto_stops_at_convergence(kind, monkeypatch):
    """``max_iter="auto"`` runs one faiss iteration per call until the objective stops
    falling: the same centres as one faiss call of that many iterations."""
    from peal_sk.selection import _kmeans

    X = _features(kind, 6, n=900, d=16)
    auto = KMeansSelector(random_state=1)
    idx = auto.select(X, 40)
    assert 2 <= auto.n_iter_ < _kmeans.FAISS_ITER  # blobs converge well before the cap
    fixed = KMeansSelector(max_iter=auto.n_iter_, random_state=1)
    assert_array_equal(fixed.select(X, 40), idx)
    assert_array_equal(fixed.cluster_centers_, auto.cluster_centers_)
    assert fixed.inertia_ == auto.inertia_ and fixed.n_iter_ == auto.n_iter_
    # a stricter tolerance iterates longer and never ends worse
    monkeypatch.setattr(_kmeans, "FAISS_TOL", 0.0)
    strict = KMeansSelector(random_state=1)
    strict.select(X, 40)
    assert strict.n_iter_ == _kmeans.FAISS_ITER and strict.inertia_ <= auto.inertia_


def test_kmeans_restarts_keep_the_best_run(monkeypatch):
    """Each restart starts from its own centres (faiss's ``nredo`` would reuse the given
    ones), the first as the single run does, and the lowest objective is kept."""
    import faiss

    runs = []

    class Recording(faiss.Kmeans):
        def train(self, x, weights=None, init_centroids=None):
            out = super().train(x, weights=weights, init_centroids=init_centroids)
            runs.append((init_centroids.copy(), float(self.obj[-1]), self.centroids.copy()))
            return out

    monkeypatch.setattr(faiss, "Kmeans", Recording)
    X = _features("blobs", 7, n=600, d=8)
    one = KMeansSelector(max_iter=3, random_state=2)
    one.select(X, 30)
    runs_one, runs[:] = list(runs), []
    many = KMeansSelector(max_iter=3, n_init=4, random_state=2)
    many.select(X, 30)
    assert len(runs) == 4 and len(runs_one) == 1
    assert_array_equal(runs[0][0], runs_one[0][0])  # the first restart is the single run
    inits = {r[0].tobytes() for r in runs}
    assert len(inits) == 4  # every restart from different centres
    best = min(runs, key=lambda r: r[1])
    assert many.inertia_ == best[1] <= one.inertia_
    assert_allclose(many.cluster_centers_, best[2].astype(np.float64))


def test_kmeans_subspace_start(monkeypatch):
    """``init="subspace"``: Lloyd in the top principal axes first, then in full space from
    those clusters' means; seeded, at least as good as scikit-learn's within 5 %."""
    from peal_sk.selection import _kmeans

    monkeypatch.setattr(_kmeans, "SUBSPACE_COMPONENTS", 4)
    X = _features("blobs", 4, n=600, d=16)
    sub = KMeansSelector(random_state=0)  # "auto": 16 > 2 x 4 features
    idx = sub.select(X, 20)
    assert sub.n_iter_subspace_ >= 1 and sub.n_iter_ >= 1
    assert np.unique(idx).size == 20
    assert_array_equal(idx, KMeansSelector(init="subspace", random_state=0).select(X, 20))
    sk = KMeansSelector(backend="sklearn", random_state=0)
    sk.select(X, 20)
    assert sub.inertia_ <= 1.05 * sk.inertia_
    # "random" is the previous start: no subspace stage, the rows drawn as before
    rnd = KMeansSelector(init="random", random_state=0)
    rnd.select(X, 20)
    assert rnd.n_iter_subspace_ == 0
    monkeypatch.setattr(_kmeans, "SUBSPACE_COMPONENTS", 8)  # 16 is not > 2 x 8: random
    auto = KMeansSelector(random_state=0)
    assert_array_equal(auto.select(X, 20), rnd.select(X, 20))
    assert auto.n_iter_subspace_ == 0 and auto.inertia_ == rnd.inertia_


def test_kmeans_subspace_pieces(monkeypatch):
    """The principal axes are the sample covariance's top eigenvectors; the cluster means
    are plain means, an empty cluster keeping its fallback row."""
    from peal_sk.selection import _kmeans

    monkeypatch.setattr(_kmeans, "SUBSPACE_COMPONENTS", 3)
    X = _features("nonneg32", 3, n=300, d=10)  # 300 rows: the sample is the whole pool
    mu, V = _kmeans._principal_axes(X, seed=0)
    assert_allclose(mu, X.astype(np.float64).mean(axis=0))
    assert_allclose(V.T @ V, np.eye(3), atol=1e-12)
    from sklearn.decomposition import PCA

    W = PCA(n_components=3).fit(X.astype(np.float64)).components_.T
    assert_allclose(V @ V.T, W @ W.T, atol=1e-8)  # the same subspace (signs may differ)
    # wide features: a seeded randomized SVD instead of the eigendecomposition
    monkeypatch.setattr(_kmeans, "SUBSPACE_EXACT_MAX", 4)
    mu_r, V_r = _kmeans._principal_axes(X, seed=0)
    assert_allclose(mu_r, mu)
    assert_allclose(V_r.T @ V_r, np.eye(3), atol=1e-10)
    assert_allclose(V_r @ V_r.T, W @ W.T, atol=1e-6)
    assert_array_equal(V_r, _kmeans._principal_axes(X, seed=0)[1])  # deterministic
    labels = np.repeat([0, 2], 150)  # label 1 has no rows
    fallback = np.arange(30.0).reshape(3, 10)
    means = _kmeans._cluster_means(X, labels, fallback)
    assert_allclose(means[0], X[:150].astype(np.float64).mean(axis=0))
    assert_allclose(means[2], X[150:].astype(np.float64).mean(axis=0))
    assert_array_equal(means[1], fallback[1])


def test_kmeans_validates_parameters():
    X = _features("blobs", 0, n=30)
    with pytest.raises(InvalidParameterError, match="'backend' parameter"):
        KMeansSelector(backend="cuml").select(X, 3)
    with pytest.raises(InvalidParameterError, match="'max_iter' parameter"):
        KMeansSelector(max_iter="all").select(X, 3)
    with pytest.raises(InvalidParameterError, match="'init' parameter"):
        KMeansSelector(init="k-means++").select(X, 3)
    with pytest.raises(ValueError, match="init='subspace' needs backend='faiss'"):
        KMeansSelector(backend="sklearn", init="subspace").select(X, 3)


# -- BiLAF and the blocking layer -------------------------------------------------------
def test_bilaf_blockwise_clusters_equal_dense(monkeypatch):
    """Clusters computed in row blocks (tiny working memory) give the same selection."""
    from peal_sk.selection import BiLAFSelector

    X = _features("duplicates", 1, n=600, d=8)
    cores = np.random.default_rng(0).choice(600, size=4, replace=False)
    ref = BiLAFSelector(core_indices=cores).select(X, 40)
    monkeypatch.setattr(bilaf_module, "_DENSE_MAX", 10)
    with config_context(working_memory=0.01):  # blocks of a few rows
        assert_array_equal(BiLAFSelector(core_indices=cores).select(X, 40), ref)


@pytest.mark.filterwarnings("ignore:Could not adhere to working_memory")
def test_block_rows_follows_working_memory():
    assert block_rows(1024, 10**9) == 64 * 2**20 // 1024  # capped at 64 MiB
    with config_context(working_memory=1):
        assert block_rows(1024, 10**9) == 2**20 // 1024
    assert block_rows(10**12, 5) == 1  # never below one row
    assert block_rows(8, 5) == 5  # never more than the rows there are


def test_sq_distances_kernel():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    expected = ((A[:, None] - B[None]) ** 2).sum(-1)
    assert_allclose(sq_distances(A, B), expected, atol=1e-12)
    assert (sq_distances(A, A) >= 0).all()
