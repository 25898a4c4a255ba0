"""The vectorised estimator against the definition, and against known truth in simulation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference_smoothie import fit_theta, global_weights, local_weights

from src.smoothie import Smoothie, SmoothieWarning, smoothie_weights, weights_from_deltas


def _data(seed, n=60, m=5, d=12, e=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, 1, d))
    scales = rng.uniform(0.3, 1.5, size=(1, m, 1))
    emb = (y + scales * rng.normal(size=(n, m, d))).astype(dtype)
    inputs = rng.normal(size=(n, e)).astype(dtype)
    return emb, inputs


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-9), (np.float32, 1e-5)])
def test_global_matches_definition(dtype, rtol):
    emb, _ = _data(0, dtype=dtype)
    np.testing.assert_allclose(smoothie_weights(emb), global_weights(emb), rtol=rtol)


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-9), (np.float32, 1e-5)])
def test_local_matches_definition(k, dtype, rtol):
    emb, inputs = _data(k, dtype=dtype)
    np.testing.assert_allclose(smoothie_weights(emb, inputs, k=k), local_weights(emb, inputs, k), rtol=rtol)


@pytest.mark.parametrize("k", [None, 1, 5, 20])
def test_train_time_matches_definition(k):
    train, train_in = _data(10, n=80)
    test, test_in = _data(11, n=30)
    got = smoothie_weights(test, test_in, k=k, train_embeddings=train, train_input_embeddings=train_in)
    if k is None:
        want = np.tile(fit_theta(train), (len(test), 1))
    else:
        from sklearn.neighbors import NearestNeighbors

        idx = NearestNeighbors(n_neighbors=k).fit(train_in).kneighbors(test_in, return_distance=False)
        want = np.stack([fit_theta(train[i]) for i in idx])
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_n_generations_matches_definition():
    rng = np.random.default_rng(3)
    n, ngen, m, d = 25, 4, 6, 9
    emb = rng.normal(size=(n, ngen, m, d)) * rng.uniform(0.2, 2, size=(1, 1, m, 1))
    local = smoothie_weights(emb, rng.normal(size=(n, 3)), k=1)
    np.testing.assert_allclose(local, np.stack([fit_theta(emb[i]) for i in range(n)]), rtol=1e-9)
    glob = smoothie_weights(emb)
    np.testing.assert_allclose(glob[0], fit_theta(emb.reshape(-1, m, d)), rtol=1e-9)


@pytest.mark.parametrize("m", [3, 7])
def test_recovers_true_theta_in_simulation(m):
    """The paper's model: generators are y + N(0, s_i^2 I); theta_i is proportional to 1/s_i^2."""
    rng = np.random.default_rng(42)
    n, d = 5000, 10
    sigma = np.linspace(0.4, 1.6, m)[rng.permutation(m)]
    y = rng.normal(size=(n, 1, d))
    emb = y + sigma[None, :, None] * rng.normal(size=(n, m, d))
    est = Smoothie().fit(emb).theta_
    true = (1 / sigma**2) / (1 / sigma**2).sum()
    np.testing.assert_allclose(est, true, rtol=0.05)
    assert list(np.argsort(est)) == list(np.argsort(true))


def test_estimator_api_and_predict():
    emb, inputs = _data(5)
    model = Smoothie(k=5).fit(emb, inputs)
    assert model is not None and model.n_generators_ == 5 and model.dim_ == 12
    w = model.predict_weights()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert (model.predict() == w.argmax(axis=1)).all()
    assert Smoothie().fit(emb).theta_.shape == (5,)


def test_fewer_than_three_generators_is_an_error():
    with pytest.raises(ValueError, match="at least 3 generators"):
        smoothie_weights(np.zeros((4, 2, 3)))


def test_local_includes_each_sample_even_with_duplicate_inputs():
    emb, _ = _data(7, n=10)
    inputs = np.zeros((10, 3))  # every input identical: neighbours are arbitrary ties
    nbrs = Smoothie(k=2).fit(emb, inputs).neighbours()
    assert all(i in row for i, row in enumerate(nbrs))


def test_nonpositive_deltas_follow_the_paper_and_warn_once():
    deltas = np.array([[1.0, 2.0, 4.0], [-1.0, 2.0, 4.0], [0.0, 1.0, 2.0], [np.nan, 1.0, 1.0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = weights_from_deltas(deltas, dim=8)
    assert len([c for c in caught if issubclass(c.category, SmoothieWarning)]) == 1
    assert "3 of 4 rows" in str(caught[0].message)
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w[0], [4 / 7, 2 / 7, 1 / 7])
    theta = 8 / (2 * deltas[1])  # the paper's formula, negative weight kept
    np.testing.assert_allclose(w[1], theta / theta.sum())
    np.testing.assert_allclose(w[2], [1, 0, 0])  # delta exactly 0: all weight there
    np.testing.assert_allclose(w[3], [1 / 3] * 3)  # not finite: uniform


def test_argmin_rule_picks_smallest_delta():
    w = weights_from_deltas(np.array([[3.0, -0.5, 1.0]]), dim=4, on_invalid="argmin")
    np.testing.assert_allclose(w, [[0, 1, 0]])


def test_local_k1_needs_no_inputs_but_larger_k_does():
    emb, inputs = _data(8)
    np.testing.assert_allclose(smoothie_weights(emb, None, k=1), smoothie_weights(emb, inputs, k=1))
    with pytest.raises(ValueError, match="needs input_embeddings"):
        smoothie_weights(emb, None, k=3)


def test_argmin_rule_is_not_overridden_by_the_zero_rule():
    w = weights_from_deltas(np.array([[-0.1, 0.0, 0.5], [0.0, 0.0, 0.5]]), dim=4, on_invalid="argmin")
    np.testing.assert_allclose(w, [[1, 0, 0], [0.5, 0.5, 0]])


def test_identical_generations_give_exactly_zero_deltas():
    from src.smoothie import deltas_from_row_sums, row_distance_sums

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 384)).astype(np.float32)
    a /= np.linalg.norm(a)
    b /= np.linalg.norm(b)
    two_agree = np.stack([a, a, b])[None]  # m = 3, generators 0 and 1 identical
    all_agree = np.stack([a, a, a, a])[None]
    assert deltas_from_row_sums(row_distance_sums(two_agree))[0, :2].tolist() == [0.0, 0.0]
    assert (deltas_from_row_sums(row_distance_sums(all_agree)) == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmoothieWarning)
        np.testing.assert_array_equal(smoothie_weights(all_agree, k=1), [[0.25] * 4])
        np.testing.assert_array_equal(smoothie_weights(two_agree, k=1), [[0.5, 0.5, 0]])


def test_row_sums_do_not_depend_on_blocks_or_threads():
    """The row sums run in blocks on one thread per core: every row must come out as it does
    alone, and duplicated generations must stay exactly 0 apart in every block."""
    from src.smoothie import _CHUNK, _exact_row_sums, row_distance_sums

    rng = np.random.default_rng(11)
    n = 3 * _CHUNK + 17  # several blocks and tasks, the last one short
    emb = rng.normal(size=(n, 5, 64)).astype(np.float32)
    emb[::7, 3] = emb[::7, 1]  # duplicates in every block
    sums = row_distance_sums(emb)
    one_by_one = np.concatenate([row_distance_sums(emb[i : i + 1]) for i in range(n)])
    np.testing.assert_array_equal(sums, one_by_one)
    np.testing.assert_allclose(sums, _exact_row_sums(emb.astype(np.float64)), rtol=1e-12)
    # rows with a duplicate are the exact pairwise sums, bit for bit, wherever their block falls
    np.testing.assert_array_equal(sums[::7], _exact_row_sums(emb[::7].astype(np.float64)))


def test_sampled_generations_local_uses_each_samples_own_sets():
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(12, 3, 4, 6))
    with pytest.raises(ValueError, match="k must be 1"):
        smoothie_weights(emb, rng.normal(size=(12, 2)), k=3)
    # train_time: the neighbours are train samples, whose sampled sets are pooled
    train = rng.normal(size=(20, 3, 4, 6))
    train_in, test_in = rng.normal(size=(20, 2)), rng.normal(size=(12, 2))
    got = smoothie_weights(emb, test_in, k=3, train_embeddings=train, train_input_embeddings=train_in)
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=3).fit(train_in).kneighbors(test_in, return_distance=False)
    np.testing.assert_allclose(got, np.stack([fit_theta(train[i].reshape(-1, 4, 6)) for i in idx]), rtol=1e-9)
