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


def row(i: int, vecs, inputs, names=NAMES) -> Fanout:
    return Fanout(i, f"r{i}", f"input {i}", inputs[i], {b: b for b in names},
                  {b: vecs[i, NAMES.index(b)] for b in names})


def fill(router: Router, vecs, inputs, store: FanoutStore | None = None) -> None:
    for i in range(len(vecs)):
        r = row(i, vecs, inputs)
        if store is not None:
            router.drop(store.add(r))
        router.add(r)


def test_global_weights_equal_the_batch_estimator_and_pick_the_least_noisy():
    vecs, inputs = planted(200)
    router = Router(NAMES, policy="select", window=150)
    fill(router, vecs, inputs)
    expected = smoothie_weights(vecs[-150:], on_invalid="argmin")[0]  # src.smoothie on the same rows, computed its own way
    np.testing.assert_allclose(router.global_estimate().weights, expected, rtol=1e-9)
    assert router.rank(seq=10**6)[0][0] == "a"


def test_local_weights_equal_the_batch_estimator_over_the_same_neighbours():
    vecs, inputs = planted(60, seed=1)
    router = Router(NAMES, policy="local", k=7)
    fill(router, vecs, inputs)
    query = inputs[13]
    nearest = np.argsort(((inputs - query) ** 2).sum(1), kind="stable")[:7]
    np.testing.assert_allclose(router.local_estimate(None, query).weights,
                               smoothie_weights(vecs[nearest], on_invalid="argmin")[0], rtol=1e-9)


def test_fewer_than_three_answers_follow_the_stored_global_ranking():
    vecs, inputs = planted(50, seed=2)
    router = Router(NAMES, k=5)
    fill(router, vecs, inputs)
    est = router.global_estimate()
    assert est.deltas[0] < 0 < est.deltas[1] < est.deltas[2] < est.deltas[3]  # a's error estimate went negative
    chosen, _ = router.choose(None, {"c": vecs[0, 2], "b": vecs[0, 1]}, inputs[0])
    assert chosen == "b"  # b is noisier than a but less than c; a did not answer
    # with three answering, the weights come from those three only
    chosen, est = router.choose(None, {b: vecs[1, j] for j, b in enumerate(NAMES) if b != "a"}, inputs[1])
    assert set(est.names) == {"b", "c", "d"} and chosen == "b"


def test_the_store_drops_its_oldest_tenth_and_a_reloaded_router_matches_the_live_one(tmp_path):
    vecs, inputs = planted(57, seed=3)
    path = str(tmp_path / "s.sqlite")
    live = Router(NAMES, policy="local", k=4)
    fill(live, vecs, inputs, FanoutStore(path, "e", max_rows=20))
    store = FanoutStore(path, "e", max_rows=20)
    ids = [r.request_id for r in store.rows()]
    # 57 rows with at most 20 kept, 2 dropped each time 21 are held: 19 or 20 remain, the newest
    assert ids == [f"r{i}" for i in range(57 - len(ids), 57)] and 18 <= len(ids) <= 20
    reloaded = Router(NAMES, policy="local", k=4)
    for r in store.rows():
        reloaded.add(r)
    assert reloaded.ids == live.ids
    for q in inputs[:5]:
        np.testing.assert_array_equal(reloaded.local_estimate(None, q).weights, live.local_estimate(None, q).weights)
    np.testing.assert_array_equal(reloaded.global_estimate().weights, live.global_estimate().weights)
    assert FanoutStore(path, "another-embedder", max_rows=20).rows() == []  # another embedder's vectors never mix in


def test_rows_with_fewer_than_three_answers_are_kept_but_not_fitted():
    vecs, inputs = planted(10, seed=4)
    router = Router(NAMES, policy="select", warmup=5)
    fill(router, vecs[:4], inputs[:4])
    router.add(row(4, vecs, inputs, names=["a", "b"]))
    assert router.n_rows == 5 and router.n_usable() == 4
    assert router.mode(100) == "warmup"


def test_a_backend_down_from_the_start_does_not_keep_select_in_warmup():
    """Old code: only rows where every backend answered counted, so with one of four backends
    dead every request was a warm-up fan-out. Rows with three answers count, and the estimate
    covers the three that answered."""
    vecs, inputs = planted(40, seed=8)
    router = Router(NAMES, policy="select", warmup=20, explore=0.0)
    for i in range(25):
        router.add(row(i, vecs, inputs, names=["a", "b", "c"]))  # d never answers
    assert router.mode(1000) == "select"
    order, est = router.rank(1000)
    assert est.names == ["a", "b", "c"] and order == ["a", "b", "c", "d"]  # uncovered d goes last
    three = smoothie_weights(vecs[:25, :3], on_invalid="argmin")[0]  # the batch estimator on those three
    np.testing.assert_allclose(est.weights, three, rtol=1e-9)


def test_pairs_are_averaged_over_the_rows_where_both_answered():
    vecs, inputs = planted(60, seed=9)
    router = Router(NAMES)
    for i in range(60):  # every backend misses a quarter of the rows, in turn
        router.add(row(i, vecs, inputs, names=[b for j, b in enumerate(NAMES) if j != i % 4]))
    est = router.global_estimate()
    assert est.names == NAMES and est.deltas.argmin() == 0 and np.all(np.diff(est.deltas) > 0)


def test_a_request_sees_only_fanouts_numbered_below_it_minus_the_lag():
    vecs, inputs = planted(30, seed=10)
    router = Router(NAMES, policy="select", warmup=10, lag=5, explore=0.0)
    for i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22]:  # 20-22 finished early (out of order)
        router.add(row(i, vecs, inputs))
    assert router.n_usable(14) == 9 and router.mode(14) == "warmup"  # rows 0..8 only
    assert router.n_usable(15) == 10 and router.mode(15) == "select"
    np.testing.assert_allclose(router.global_estimate(15).weights, pooled_reference(vecs[:10]),
                               rtol=1e-9)  # rows 20-22 are not seen yet
    assert router.n_usable(28) == 13


def pooled_reference(v):
    return smoothie_weights(v, on_invalid="argmin")[0]


def test_health_reports_how_settled_the_global_ranking_is():
    """/health's global_ranking: the order single calls follow, its weights as the estimator gives
    them, and the share of resampled windows that keep the same best backend: 1 where one backend
    is clearly the least noisy, far from 1 where two are equally good."""
    empty = Router(NAMES, policy="select").global_ranking()
    assert empty["order"] == NAMES and empty["agreement"] is None and empty["fanouts"] == 0
    vecs, inputs = planted(200)
    router = Router(NAMES, policy="select", window=150)
    fill(router, vecs, inputs)
    settled = router.global_ranking()
    assert settled["order"][0] == "a" and settled["fanouts"] == 150 and settled["agreement"] == 1.0
    expected = pooled_reference(vecs[-150:])
    assert [settled["weights"][b] for b in NAMES] == pytest.approx(expected, abs=1e-4)
    assert settled["order"] == [NAMES[i] for i in np.argsort(-expected, kind="stable")]
    agreement = []
    for seed in range(8):  # a and b equally good: which one leads is the sample's luck
        vecs, inputs = planted(40, seed=seed, noise=(0.5, 0.5, 1.0, 1.2))
        tied = Router(NAMES, policy="select")
        fill(tied, vecs, inputs)
        report = tied.global_ranking()
        assert set(report["order"][:2]) == {"a", "b"} and report["fanouts"] == 40, report
        agreement.append(report["agreement"])
    assert np.mean(agreement) <= 0.85 and min(agreement) <= 0.7, agreement
    more, inputs_more = planted(41, seed=7, noise=(0.5, 0.5, 1.0, 1.2))
    tied.add(row(40, more, inputs_more))  # kept until a fan-out arrives, then computed again
    assert tied.global_ranking()["fanouts"] == 41


def test_explore_draws_depend_on_seed_and_sequence_only():
    draws = [explore_draw(3, s) for s in range(2000)]
    assert draws == [explore_draw(3, s) for s in range(2000)] and draws != [explore_draw(4, s) for s in range(2000)]
    assert abs(np.mean(np.array(draws) < 0.1) - 0.1) < 0.03
    vecs, inputs = planted(30, seed=5)
    router = Router(NAMES, policy="select", explore=0.25, warmup=10)
    fill(router, vecs, inputs)
    share = np.mean([router.mode(s) == "explore" for s in range(2000)])
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




THREE = ["--backend", "a=http://127.0.0.1:1/v1", "--backend", "b=http://127.0.0.1:2/v1",
         "--backend", "c=http://127.0.0.1:3/v1"]


@pytest.mark.parametrize("yaml_text, needle", [
    ("k: 2.5\n", "k 2.5: must be a whole number"),
    ("window: 1.5\n", "window 1.5: must be a whole number"),
    ("explore: '0.1'\n", "explore '0.1': must be a number"),
    ("clean: 1\n", "clean 1: must be true or false"),
    ("embedding_precision: fp16\n", "choose one of auto, fp32, bf16"),
    ("lag: -1\n", "lag -1: must be at least 0"),
])
def test_yaml_values_are_checked_like_flags(tmp_path, capsys, yaml_text, needle):
    """Old code: YAML took k: 2.5 and window: 1.5 (crashing the first request) and refused
    embedding_precision. One definition now types and checks both."""
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml_text)
    code, _, err = run_cli(serve.main, ["--config", cfg, *THREE], capsys)
    assert code == 2 and needle in err and str(cfg) in err and len(err.strip().splitlines()) == 1


def test_every_setting_is_a_flag_and_a_yaml_key_with_the_same_default(tmp_path):
    defaults = config.Settings()
    cfg = tmp_path / "g.yaml"
    cfg.write_text("embedding_precision: fp32\nexplore_answer: smoothie\nlag: 0\nalias: [gpt-4o]\n")
    s = serve.settings_from_args(serve.build_parser().parse_args(["--config", str(cfg), *THREE]))
    assert (s.embedding_precision, s.explore_answer, s.lag, s.alias) == ("fp32", "smoothie", 0, ["gpt-4o"])
    flags = serve.build_parser().parse_args(THREE)
    plain = serve.settings_from_args(flags)
    for f in config.setting_fields():
        assert f"--{f.name}" in serve.build_parser().format_help()
        assert getattr(plain, f.name) == getattr(defaults, f.name), f.name
    from src import replay

    replay_help = replay.build_parser().format_help()
    for f in config.setting_fields(replay_only=True):
        assert f"--{f.name}" in replay_help
    assert "--port" not in replay_help and "--store " not in replay_help


def test_replay_needs_no_web_framework():
    import subprocess
    import sys

    code = ("import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None; "
            "import src.replay; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-500:]


def test_a_port_in_use_is_one_line_before_the_embedder_loads(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = run_cli(serve.main, [*THREE, "--port", port, "--embedding_model", "no-such-embedder-xyz"],
                               capsys)
    assert code == 2 and f"--port {port}" in err and "embedd" not in err.lower()
    assert len(err.strip().splitlines()) == 1


def test_a_replay_shorter_than_the_warmup_says_so_in_one_line(tmp_path, capsys):
    import json

    from conftest import minilm

    from src import replay

    minilm()
    files = []
    for b in "abc":
        (tmp_path / f"{b}.json").write_text(json.dumps({"generations": [f"{b} answer {i}" for i in range(5)]}))
        files.append(tmp_path / f"{b}.json")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"embedding_input": f"question {i}"}) + "\n"
                                               for i in range(5)))
    code, out, err = run_cli(replay.main, ["--generations", *files, "--inputs", tmp_path / "in.jsonl", "--output",
                                           tmp_path / "r.json", "--policy", "select",
                                           "--embedding_model", "all-MiniLM-L6-v2"], capsys)
    warning = [line for line in err.splitlines() if "warm-up" in line]
    assert code in (None, 0) and len(warning) == 1 and "5 requests" in warning[0]
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["modes"] == ["warmup"] * 5
    ranking = record["global_ranking"]  # every warm-up fan-out stored, as /health would report them
    assert ranking["fanouts"] == 5 and sorted(ranking["order"]) == ["a", "b", "c"] and 0 <= ranking["agreement"] <= 1
    assert f"Smoothie-Global at the end: {', '.join(ranking['order'])}" in out


def _degenerate_rows(names, vecs_of, text_of, n=60, d=8, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        truth = rng.normal(size=d) * spread
        vecs = vecs_of(truth, rng)
        rows.append(Fanout(i, f"r{i}", f"q{i}", truth, {b: text_of(b, i) for b in names}, vecs))
    return rows


def test_a_backend_that_repeats_one_answer_never_ranks_above_one_that_answers():
    """A fixed answer sitting near the centre of the answers (a refusal, an empty-ish reply) agrees
    with everyone a little: before this check it ranked first."""
    names = ["a", "b", "c", "e"]

    def vecs_of(truth, rng):
        out = {b: truth + rng.normal(size=len(truth)) * s for b, s in zip("abc", (0.3, 0.6, 0.9))}
        return {**out, "e": np.zeros(len(truth))}

    rows = _degenerate_rows(names, vecs_of, lambda b, i: "I cannot help with that." if b == "e" else f"{b} {i}",
                            spread=0.1)
    router = Router(names, policy="select")
    for r in rows:
        router.add(r)
    assert router.degenerate().constant == {"e": 1.0}
    order, est = router.rank(10**6)
    assert order[-1] == "e" and "e" not in est.names
    chosen, _ = router.choose(10**6, rows[-1].vecs, None)
    assert chosen != "e"
    # a task whose answers are few (yes / no): everyone repeats, no one is flagged
    yes_no = _degenerate_rows(names, vecs_of, lambda b, i: "yes" if (i + "abce".index(b)) % 3 else "no")
    router = Router(names, policy="select")
    for r in yes_no:
        router.add(r)
    assert router.degenerate().constant == {}


def test_the_same_model_behind_two_urls_is_not_counted_twice():
    """Two copies of the weakest backend agree perfectly: counted twice, they outranked a better one."""
    names = ["a", "b", "c", "d", "d2"]

    def vecs_of(truth, rng):
        out = {b: truth + rng.normal(size=len(truth)) * s for b, s in zip("abcd", (0.3, 0.6, 0.9, 1.2))}
        return {**out, "d2": out["d"].copy()}

    rows = _degenerate_rows(names, vecs_of, lambda b, i: f"{b.rstrip('2')} {i}")
    router = Router(names, policy="select")
    for r in rows:
        router.add(r)
    assert router.degenerate().duplicates == [["d", "d2"]]
    order, est = router.rank(10**6)
    assert order[:3] == ["a", "b", "c"], order
    weights = est.named_weights()
    assert weights["d"] == weights["d2"] < weights["c"]
    # its twin gave no answer this time: the copy is the pair's only voice, so it takes part.
    # Old: d2 stayed out whenever d was missing, as if d's answer were still counted.
    answered = {b: v for b, v in rows[-1].vecs.items() if b != "d"}
    _, est = router.choose(10**6, answered, None)
    assert sorted(est.names) == ["a", "b", "c", "d2"]


# -- the fan-out's estimator, chosen from the data (--fanout_rule) ------------------------------------
def clustered(n: int, seed: int = 0, d: int = 8):
    """Two kinds of input far apart; the backends' noise levels are reversed between them, so
    which backend is best depends on the input: Global's average ranking is wrong on both."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n)
    noise = np.where(kind[:, None] == 0, [0.1, 0.3, 0.6, 1.2], [1.2, 0.6, 0.3, 0.1])
    truth = rng.normal(size=(n, d))
    vecs = truth[:, None, :] + rng.normal(size=(n, 4, d)) * noise[:, :, None]
    inputs = rng.normal(size=(n, d)) * 0.05 + np.where(kind[:, None] == 0, 5.0, -5.0)
    return vecs.astype(np.float32), inputs.astype(np.float32), kind


def test_auto_takes_local_where_the_best_backend_depends_on_the_input_and_global_where_it_does_not():
    vecs, inputs, kind = clustered(300)
    router = Router(NAMES, k=20)
    fill(router, vecs, inputs)
    rule = router.rule()
    assert rule.kind == "local", rule.why
    assert rule.why["error"][rule.label] < (1 - 1 / 3) * rule.why["error"]["global"]
    # the answer it picks on a new input of each kind is that kind's least noisy backend
    new_vecs, new_inputs, new_kind = clustered(40, seed=9)
    picks = [router.choose(10**6, dict(zip(NAMES, new_vecs[i])), new_inputs[i])[0] for i in range(40)]
    best = np.where(new_kind == 0, "a", "d")
    assert np.mean(np.array(picks) == best) >= 0.9
    # Global, forced, picks by the average ranking and is wrong on one kind of input at least half the time
    forced = Router(NAMES, k=20, fanout_rule="global")
    fill(forced, vecs, inputs)
    global_picks = [forced.choose(10**6, dict(zip(NAMES, new_vecs[i])), new_inputs[i])[0] for i in range(40)]
    assert np.mean(np.array(global_picks) == best) < 0.8

    same, same_inputs = planted(300, seed=4)  # one ranking everywhere: Local only adds noise
    homogeneous = Router(NAMES, k=20)
    fill(homogeneous, same, same_inputs)
    assert homogeneous.rule().kind == "global", homogeneous.rule().why
    assert Router(NAMES, k=20, fanout_rule="local").rule().label == "local k=20"


def test_auto_waits_for_enough_rows_and_decides_on_the_rows_a_request_sees():
    vecs, inputs, _ = clustered(300, seed=2)
    router = Router(NAMES, k=20, lag=10)
    fill(router, vecs[:90], inputs[:90])
    assert router.rule(seq=10**6).kind == "global"  # fewer than 100 stored
    fill_more = [row(i, vecs, inputs) for i in range(90, 300)]
    for r in fill_more:
        router.add(r)
    assert router.rule(seq=105).kind == "global"  # request 105 sees 95 rows
    assert router.rule(seq=10**6).kind == "local"
    replayed = Router(NAMES, k=20, lag=10)
    fill(replayed, vecs, inputs)
    assert replayed.rule(seq=260).label == router.rule(seq=260).label
    assert replayed.rule(seq=260).why == router.rule(seq=260).why


# -- the adaptive policy ----------------------------------------------------------------------------
def adaptive_run(vecs, inputs, budget: float, seed: int = 0, lag: int = 4, warmup: int = 20, window: int = 1000):
    """Requests served in order by an adaptive router: fan-outs are stored (as the core does).
    Returns which requests fanned out and the uncertainty each decision reported."""
    router = Router(NAMES, policy="adaptive", k=20, warmup=warmup, lag=lag, seed=seed, budget=budget, window=window)
    fanned, detail = [], []
    for i in range(len(vecs)):
        if router.mode(i) == "warmup":
            out, info = True, None
        else:
            out, _, _, info = router.adapt(i, inputs[i])
        fanned.append(out)
        detail.append(info)
        if out:
            router.add(row(i, vecs, inputs))
    return np.array(fanned), detail


@pytest.mark.parametrize("budget", [1.3, 2.0])
def test_adaptive_keeps_its_budget_and_fans_out_where_it_is_unsure(budget):
    """Backends' noise levels reverse at request 400 (a model update behind a URL): resampling
    the stored rows then disagrees on the best backend, which the policy reports; it spends
    about its budget, and the fan-outs it does not draw at random go to the least sure requests."""
    before, inputs = planted(400, seed=3)
    after, more_inputs = planted(400, seed=4, noise=(1.2, 0.6, 0.3, 0.1))
    vecs, inputs = np.concatenate([before, after]), np.concatenate([inputs, more_inputs])
    fanned, detail = adaptive_run(vecs, inputs, budget, window=100)
    after_warmup = fanned[[d is not None for d in detail]]  # the warm-up's fan-outs are a fixed cost, as in select
    calls = (len(after_warmup) + 3 * after_warmup.sum()) / len(after_warmup)  # a fan-out calls all four backends
    assert abs(calls - budget) < 0.05
    spread = [d["global"] for d in detail[250:]]
    assert max(spread[:150]) < max(spread[150:])  # settled, then unsure after the reversal
    chosen = [i for i, d in enumerate(detail) if d is not None]
    scores = np.array([detail[i]["score"] for i in chosen])
    out = fanned[chosen]
    assert 0 < out.sum() < len(out)
    assert scores[out].mean() > 1.2 * scores[~out].mean()  # the less sure, the likelier to fan out
    assert all(0 <= detail[i]["global"] <= 1 and 0 <= detail[i]["local"] <= 1 for i in chosen)


def test_adaptive_decisions_are_reproducible_from_the_seed():
    vecs, inputs = planted(300, seed=5)
    first, _ = adaptive_run(vecs, inputs, 1.5, seed=1)
    again, _ = adaptive_run(vecs, inputs, 1.5, seed=1)
    other, _ = adaptive_run(vecs, inputs, 1.5, seed=2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)  # its draws follow the seed


def test_a_budget_above_the_number_of_backends_is_refused_in_one_line():
    settings = config.Settings(backends=[config.Backend(n, "http://127.0.0.1:1/v1") for n in NAMES],
                               policy="adaptive", budget=5)
    with pytest.raises(UserError, match="--budget 5: more calls per request than there are backends"):
        settings.check()


def test_contenders_hold_a_planted_tie_and_shrink_to_one_where_the_data_has_settled():
    """Planted: a and b equally noisy, c and d far noisier. Over 40 rows neither of a and b can
    be told from the other: both are contenders, each best in a fair share of the resamples, and
    c, d never. Settled: a far less noisy than the rest, over 300 rows: a alone."""
    vecs, inputs = planted(40, seed=3, noise=(0.5, 0.5, 1.5, 2.0))
    tie = Router(NAMES, policy="select")
    fill(tie, vecs, inputs)
    shares = tie.contenders(None, 0.9)
    assert set(shares) == {"a", "b"}, shares
    assert all(0.1 <= v <= 0.9 for v in shares.values()) and sum(shares.values()) >= 0.9
    assert next(iter(shares)) == tie.rank(seq=10**6)[0][0]  # the set starts with today's single call
    assert tie.contenders(None, 0.0) == {}  # 0: no set, select calls its single best

    vecs, inputs = planted(300, seed=4, noise=(0.1, 0.6, 0.9, 1.2))
    settled = Router(NAMES, policy="select")
    fill(settled, vecs, inputs)
    assert settled.contenders(None, 0.9) == {"a": 1.0}


def test_a_draw_among_contenders_follows_the_shares_and_depends_only_on_seed_and_request():
    from src.gateway.policy import spread_draw

    shares = {"a": 0.75, "b": 0.25}
    picks = [spread_draw(0, seq, ["a", "b"], shares) for seq in range(4000)]
    assert abs(picks.count("a") / 4000 - 0.75) < 0.03
    assert picks == [spread_draw(0, seq, ["a", "b"], shares) for seq in range(4000)]
    assert picks != [spread_draw(1, seq, ["a", "b"], shares) for seq in range(4000)]
    assert {spread_draw(0, seq, ["b"], shares) for seq in range(50)} == {"b"}  # only b had a free slot


def test_the_judges_verdict_is_read_from_the_last_marker_of_its_reply():
    from src.gateway.judge import judge_messages, parse_verdict

    assert parse_verdict("A is terse; B explains. [[B]]") == "B"
    assert parse_verdict("Compared to [[A]] earlier text, final: [[ C ]]") == "C"
    assert parse_verdict("no verdict here, [A] is not one") is None
    system, user = judge_messages("What is 2+2?", "four", "5" * 5000)
    assert user["content"].index("[Answer A]\nfour") < user["content"].index("[Answer B]")  # A's text first
    assert "[[A]]" in system["content"] and "[[C]]" in system["content"] and len(user["content"]) < 4200


def test_bradley_terry_recovers_a_planted_order_and_its_position_term_absorbs_a_judge_that_favours_A():
    from src.gateway.judge import Verdict, judge_contenders

    rng = np.random.default_rng(0)
    true = {"a": 1.0, "b": 0.0, "c": -1.0}
    verdicts = []
    for i in range(600):
        x, y = rng.choice(list(true), 2, replace=False)
        p = 1 / (1 + np.exp(-(true[x] - true[y])))
        verdicts.append(Verdict(i, "j", x, y, "A" if rng.random() < p else "B"))
    judged = judge_contenders(["b", "a", "c"], verdicts, anchor="b")
    assert judged.best == "a" and judged.separated and judged.overrules
    assert judged.strengths["a"] > judged.strengths["b"] > judged.strengths["c"]
    assert abs(judged.strengths["a"] - judged.strengths["c"] - 2.0) < 0.4  # the planted gap, within noise
    # always "A", and b shown first twice as often as a: a position advantage, not b's strength
    biased = [Verdict(i, "j", *(("b", "a") if i % 3 else ("a", "b")), "A") for i in range(300)]
    judged = judge_contenders(["a", "b"], biased, anchor="a")
    assert not judged.separated and not judged.overrules, judged.to_json()
    assert abs(judged.strengths["a"] - judged.strengths["b"]) < 0.5  # without the position term: log 2, separated


def test_peers_weights_count_a_judge_that_contradicts_the_others_for_nothing():
    from src.gateway.judge import Verdict, judge_contenders

    verdicts = []
    for i in range(100):
        first, second = ("a", "b") if i % 2 else ("b", "a")
        right = "A" if first == "a" else "B"  # a is better
        verdicts += [Verdict(i, judge, first, second, right) for judge in ("h1", "h2", "h3")]
        verdicts.append(Verdict(i, "contrarian", first, second, "B" if right == "A" else "A"))
    judged = judge_contenders(["a", "b"], verdicts, peers=True, anchor="b")
    assert judged.weights["contrarian"] == 0.0 and min(judged.weights[h] for h in ("h1", "h2", "h3")) > 0.9
    assert judged.best == "a" and judged.overrules
    unweighted = judge_contenders(["a", "b"], verdicts, anchor="b")
    assert judged.leads["b"][0] > 1.5 * unweighted.leads["b"][0]  # the contrarian no longer pulls a back
