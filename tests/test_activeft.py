"""ActiveFT (docs/user_guide/algorithms.rst): loss, gradient, optimisation and selection."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from peal_sk.selection import ActiveFTSelector, activeft_loss, activeft_sampling
from peal_sk.selection._activeft import activeft_select


def _normalize(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def reference_loss(f, c, c_stop, temperature=0.07, beta=1.0):
    """The spec's loss, written plainly; ``c_stop`` is the stop-gradient copy of c."""
    c_hat = _normalize(c)
    c_sg = _normalize(c_stop)
    sims = f @ c_hat.T / temperature
    k = np.argmax(sims, axis=1)
    log_P = sims[np.arange(len(f)), k]
    log_S = np.log(np.exp(c_sg @ c_hat.T / temperature).sum(axis=0))  # S_k over j
    return float(np.mean(np.log1p(beta * np.exp(log_S[k] - log_P))))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_gradient_matches_finite_differences(seed, temperature):
    rng = np.random.default_rng(seed)
    f = _normalize(rng.normal(size=(40, 6)))
    c = rng.normal(size=(4, 6))
    loss, grad = activeft_loss(f, c, temperature=temperature)
    assert loss == pytest.approx(reference_loss(f, c, c, temperature), rel=1e-12)
    eps = 1e-6
    num = np.zeros_like(c)
    for idx in np.ndindex(c.shape):
        cp, cm = c.copy(), c.copy()
        cp[idx] += eps
        cm[idx] -= eps
        num[idx] = (
            reference_loss(f, cp, c, temperature) - reference_loss(f, cm, c, temperature)
        ) / (2 * eps)
    assert_allclose(grad, num, rtol=1e-4, atol=1e-7)


def test_loss_is_finite_at_low_temperature():
    """Log space: exp(1 / 0.01) overflows float64, the loss must not."""
    rng = np.random.default_rng(0)
    f = _normalize(rng.normal(size=(50, 3)))
    loss, grad = activeft_loss(f, f[:5].copy(), temperature=0.001)
    assert np.isfinite(loss) and np.isfinite(grad).all()


@pytest.fixture
def blobs():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3.0, size=(6, 8))
    return centres[rng.integers(6, size=400)] + rng.normal(size=(400, 8))


def test_loss_decreases_and_selection_is_sorted_unique(blobs):
    sel = ActiveFTSelector(max_iter=100, random_state=0)
    idx = sel.select(blobs, 12)
    assert idx.dtype == np.intp and idx.shape == (12,)
    assert_array_equal(idx, np.unique(idx))  # unique and ascending
    assert sel.loss_curve_.shape == (100,) and sel.n_iter_ == 100
    assert sel.loss_curve_[-1] < sel.loss_curve_[0]
    assert np.all(np.isfinite(sel.loss_curve_))
    assert sel.centroids_.shape == (12, 8)
    assert_allclose(np.linalg.norm(sel.centroids_, axis=1), 1.0)


def test_deterministic(blobs):
    a = ActiveFTSelector(max_iter=50, random_state=3).select(blobs, 10)
    b = ActiveFTSelector(max_iter=50, random_state=3).select(blobs, 10)
    c = ActiveFTSelector(max_iter=50, random_state=4).select(blobs, 10)
    assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pruned_forward_equals_dense(blobs, dtype):
    """The grouped forward pass (argmax proven by bounds) is exact: same run as dense."""
    X = blobs.astype(dtype)
    kw = dict(max_iter=80, temperature=0.07, learning_rate=1e-2)
    idx_g, info_g = activeft_select(X, 15, np.random.default_rng(0), **kw)
    idx_d, info_d = activeft_select(X, 15, np.random.default_rng(0), _grouped=False, **kw)
    assert_array_equal(idx_g, idx_d)
    assert_allclose(info_g["loss"], info_d["loss"], rtol=1e-5)
    assert info_g["n_refresh"] >= 1


def test_minibatch_and_kcenter_init(blobs):
    sel = ActiveFTSelector(max_iter=40, batch_size=64, init="kcenter", random_state=0)
    idx = sel.select(blobs, 8)
    assert np.unique(idx).size == 8
    assert_array_equal(idx, sel.select(blobs, 8))
    assert sel.loss_curve_[-5:].mean() < sel.loss_curve_[:5].mean()


def test_mapping_takes_distinct_samples_even_with_duplicates():
    X = np.repeat(np.eye(3), 4, axis=0)  # 3 distinct directions, 12 samples
    idx = ActiveFTSelector(max_iter=10, random_state=0).select(X, 5)
    assert np.unique(idx).size == 5


def test_whole_pool_and_zero_rows():
    X = np.vstack([np.zeros((2, 3)), np.random.default_rng(0).normal(size=(6, 3))])
    idx = ActiveFTSelector(max_iter=10, random_state=0).select(X, 8)
    assert_array_equal(idx, np.arange(8))


def test_function_form_and_scores(blobs):
    idx, scores = activeft_sampling(None, blobs, 6, max_iter=30, random_state=0)
    assert_array_equal(idx, ActiveFTSelector(max_iter=30, random_state=0).select(blobs, 6))
    # score: cosine similarity of each pick to the centroid it was mapped from
    assert scores.shape == (6,) and np.all(scores <= 1 + 1e-9) and np.all(scores > 0)


@pytest.mark.parametrize(
    "params, name",
    [
        ({"temperature": 0}, "temperature"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"max_iter": -1}, "max_iter"),
        ({"batch_size": 0}, "batch_size"),
        ({"init": "kmeans++"}, "init"),
    ],
)
def test_bad_parameters(blobs, params, name):
    with pytest.raises(ValueError, match=name):
        ActiveFTSelector(**params).select(blobs, 3)
