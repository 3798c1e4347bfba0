"""Random sampling: seeded, uniform, model-free."""

import numpy as np

from peal_sk.selection import RandomSelector, random_sampling


def test_same_seed_same_selection_different_seed_different():
    pool = np.zeros((20, 2))
    a = RandomSelector(random_state=1).select(pool, 5)
    np.testing.assert_array_equal(RandomSelector(random_state=1).select(pool, 5), a)
    others = [RandomSelector(random_state=s).select(pool, 5).tolist() for s in range(2, 12)]
    assert any(o != a.tolist() for o in others)


def test_every_index_reachable_and_roughly_uniform():
    counts = np.zeros(5, dtype=int)
    for seed in range(500):
        counts[RandomSelector(random_state=seed).select(np.zeros((5, 1)), 1)[0]] += 1
    assert counts.min() > 60 and counts.max() < 140  # expected 100 each


def test_scores_are_zeros():
    idx, scores = random_sampling(None, np.zeros((10, 3)), 4, random_state=0)
    assert idx.dtype == np.intp
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, np.zeros(4))


def test_model_free_pools_of_any_kind(tmp_path):
    pools = [
        list("abcdefg"),
        np.array([str(tmp_path / f"img{i}.png") for i in range(7)]),
        np.array([str(tmp_path / f"img{i}.png") for i in range(7)], dtype=object),
        np.zeros((7, 4, 4, 3), dtype=np.uint8),
        np.full((7, 2), np.nan),  # random sampling never looks at the features
    ]
    for pool in pools:
        idx = RandomSelector(random_state=0).select(pool, 7)
        np.testing.assert_array_equal(np.sort(idx), np.arange(7))


def test_does_not_touch_the_global_rng():
    before = np.random.get_state()  # noqa: NPY002 - only read
    RandomSelector().select(np.zeros((10, 1)), 3)
    RandomSelector(random_state=3).select(np.zeros((10, 1)), 3)
    after = np.random.get_state()  # noqa: NPY002
    np.testing.assert_array_equal(after[1], before[1])
    assert after[2:] == before[2:]


def test_legacy_random_state_instance():
    rs = np.random.RandomState(0)
    idx = RandomSelector(random_state=rs).select(np.zeros((10, 1)), 3)
    again = RandomSelector(random_state=np.random.RandomState(0)).select(np.zeros((10, 1)), 3)
    np.testing.assert_array_equal(idx, again)


def test_unseeded_calls_differ():
    pool = np.zeros((1000, 1))
    a, b = RandomSelector().select(pool, 10), RandomSelector().select(pool, 10)
    assert a.tolist() != b.tolist()
