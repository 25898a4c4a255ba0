"""The gateway's routing code and settings without servers: the estimator it applies, what it
keeps, and how it fails. (``test_gateway.py`` runs it against real backends.)"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from src import serve
from src.cli import UserError
from src.gateway import config
from src.gateway.policy import Router, explore_draw, pairwise_sq_distances
from src.gateway.store import Fanout, FanoutStore
from src.smoothie import smoothie_weights

NAMES = ["a", "b", "c", "d"]


def planted(n: int, seed: int = 0, d: int = 8, noise=(0.1, 0.3, 0.6, 1.2)):
    """n rows: a true vector per row, each backend's answer = truth + its own noise level."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(n, d))
    vecs = truth[:, None, :] + rng.normal(size=(n, len(noise), d)) * np.array(noise)[None, :, None]
    inputs = truth + rng.normal(size=(n, d)) * 0.01
    return vecs.astype(np.float32), inputs.astype(np.float32)


def fill(router: Router, vecs, inputs, start: int = 0) -> None:
    for i in range(len(vecs)):
        router.record(Fanout(f"r{start + i}", f"input {start + i}", inputs[i], {b: b for b in NAMES},
                             {b: vecs[i, j] for j, b in enumerate(NAMES)}))


def test_global_weights_equal_the_batch_estimator_and_pick_the_least_noisy():
    vecs, inputs = planted(200)
    router = Router(NAMES, FanoutStore(":memory:", "e"), policy="select", window=150)
    fill(router, vecs, inputs)
    expected = smoothie_weights(vecs[-150:], on_invalid="argmin")[0]  # src.smoothie on the same rows, computed its own way
    np.testing.assert_allclose(router.global_weights(), expected, rtol=1e-9)
    assert router.decide(seq=10**6, input_vec=None).order[0] == "a"


def test_local_weights_equal_the_batch_estimator_over_the_same_neighbours():
    vecs, inputs = planted(60, seed=1)
    router = Router(NAMES, FanoutStore(":memory:", "e"), policy="local", k=7)
    fill(router, vecs, inputs)
    query = inputs[13]
    nearest = np.argsort(((inputs - query) ** 2).sum(1), kind="stable")[:7]
    np.testing.assert_allclose(router.local_weights(query), smoothie_weights(vecs[nearest], on_invalid="argmin")[0],
                               rtol=1e-9)


def test_fewer_than_three_answers_follow_the_stored_global_ranking():
    vecs, inputs = planted(50, seed=2)
    router = Router(NAMES, FanoutStore(":memory:", "e"), k=5)
    fill(router, vecs, inputs)
    est = router.global_estimate()
    assert est.deltas[0] < 0 < est.deltas[1] < est.deltas[2] < est.deltas[3]  # a's error estimate went negative
    chosen, _ = router.choose({"c": vecs[0, 2], "b": vecs[0, 1]}, inputs[0])
    assert chosen == "b"  # b is noisier than a but less than c; a did not answer
    # with three answering, the weights come from those three only
    chosen, weights = router.choose({b: vecs[1, j] for j, b in enumerate(NAMES) if b != "a"}, inputs[1])
    assert set(weights) == {"b", "c", "d"} and chosen == "b"


def test_the_store_drops_its_oldest_tenth_and_a_reloaded_router_matches_the_live_one(tmp_path):
    vecs, inputs = planted(57, seed=3)
    path = str(tmp_path / "s.sqlite")
    live = Router(NAMES, FanoutStore(path, "e", max_rows=20), policy="local", k=4)
    fill(live, vecs, inputs)
    store = FanoutStore(path, "e", max_rows=20)
    ids = store.request_ids()
    # 57 rows with at most 20 kept, 2 dropped each time 21 are held: 19 or 20 remain, the newest
    assert ids == [f"r{i}" for i in range(57 - len(ids), 57)] and 18 <= len(ids) <= 20
    reloaded = Router(NAMES, store, policy="local", k=4)
    assert reloaded.ids == live.ids
    for q in inputs[:5]:
        np.testing.assert_array_equal(reloaded.local_weights(q), live.local_weights(q))
    np.testing.assert_array_equal(reloaded.global_weights(), live.global_weights())
    other = Router(NAMES, FanoutStore(path, "another-embedder", max_rows=20))
    assert other.n_rows == 0  # vectors of another embedder are never mixed in


def test_rows_missing_a_backend_are_kept_but_not_fitted():
    vecs, inputs = planted(10, seed=4)
    router = Router(NAMES, FanoutStore(":memory:", "e"), policy="select", warmup=5)
    fill(router, vecs[:4], inputs[:4])
    router.record(Fanout("partial", "x", inputs[4], {"a": "", "b": ""}, {"a": vecs[4, 0], "b": vecs[4, 1]}))
    assert router.n_rows == 5 and router.n_complete() == 4
    assert router.decide(0).reason == "warmup"


def test_explore_draws_depend_on_seed_and_sequence_only():
    draws = [explore_draw(3, s) for s in range(2000)]
    assert draws == [explore_draw(3, s) for s in range(2000)] and draws != [explore_draw(4, s) for s in range(2000)]
    assert abs(np.mean(np.array(draws) < 0.1) - 0.1) < 0.03
    vecs, inputs = planted(30, seed=5)
    router = Router(NAMES, FanoutStore(":memory:", "e"), policy="select", explore=0.25, warmup=10)
    fill(router, vecs, inputs)
    share = np.mean([router.decide(s).fanout for s in range(2000)])
    assert abs(share - 0.25) < 0.04


def test_pairwise_distances_are_exactly_zero_between_equal_answers():
    v = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [1.0, 0.0, 0.0]], np.float32)
    d = pairwise_sq_distances(v)
    assert d[0, 1] == 0.0 and d[0, 2] > 0 and np.allclose(d, d.T)


@pytest.mark.parametrize("spec, needle", [
    ("a", "expected NAME=BASE_URL"),
    ("a=http://x:1/v2", "must be http(s)://HOST[:PORT]/.../v1"),
    ("a=http://x:1/v1,temperature=1", "unknown option"),
    ("a b=http://x:1/v1", "backend name"),
    ("a=http://x:1/v1,key_env=SURELY_NOT_SET_VAR", "SURELY_NOT_SET_VAR"),
])
def test_backend_flags_are_checked(spec, needle):
    with pytest.raises(UserError, match=None) as exc:
        config.parse_backend(spec)
    assert needle in str(exc.value)


def test_serve_refuses_bad_settings_in_one_line(tmp_path, capsys):
    two = ["--backend", "a=http://127.0.0.1:1/v1", "--backend", "b=http://127.0.0.1:2/v1"]
    code, _, err = run_cli(serve.main, two, capsys)
    assert code == 2 and "at least 3 backends" in err and len(err.strip().splitlines()) == 1
    three = [*two, "--backend", "c=http://127.0.0.1:3/v1"]
    code, _, err = run_cli(serve.main, [*three, "--explore", "1.5"], capsys)
    assert code == 2 and "--explore" in err
    code, _, err = run_cli(serve.main, [*three, "--api_key_env", "SURELY_NOT_SET_VAR"], capsys)
    assert code == 2 and "--api_key_env SURELY_NOT_SET_VAR" in err
    bad = tmp_path / "g.yaml"
    bad.write_text("policy: fanout\nbogus: 1\n")
    code, _, err = run_cli(serve.main, ["--config", bad, *three], capsys)
    assert code == 2 and "bogus" in err and str(bad) in err


def test_yaml_config_with_flags_on_top(tmp_path):
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("policy: select\nexplore: 0.2\nk: 5\nbackends:\n  - a=http://127.0.0.1:1/v1\n"
                   "  - {name: b, base_url: 'http://127.0.0.1:2/v1', model: m-b}\n")
    args = serve.build_parser().parse_args(["--config", str(cfg), "--backend", "c=http://127.0.0.1:3/v1,model=m-c",
                                            "--k", "9"])
    s = serve.settings_from_args(args)
    assert [b.name for b in s.backends] == ["a", "b", "c"] and [b.model_id for b in s.backends] == ["a", "m-b", "m-c"]
    assert (s.policy, s.explore, s.k, s.warmup_rows, s.host) == ("select", 0.2, 9, 9, "127.0.0.1")


def test_an_empty_answer_is_returned_only_when_every_answer_is_empty():
    vecs, inputs = planted(30, seed=6)
    router = Router(NAMES, FanoutStore(":memory:", "e"), k=5)
    fill(router, vecs, inputs)
    answers = {b: vecs[0, j] for j, b in enumerate(NAMES)}
    best, weights = router.choose(answers, inputs[0])
    second = sorted(weights, key=weights.get)[-2]
    assert router.choose(answers, inputs[0], frozenset({best}))[0] == second
    assert router.choose(answers, inputs[0], frozenset(NAMES))[0] == best
    two = {b: answers[b] for b in NAMES[:2]}
    assert router.choose(two, inputs[0], frozenset({"a"}))[0] == "b"
