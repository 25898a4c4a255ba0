"""One conformance suite for both stores behind ``src.gateway.ports.Store``: SQLite (one
process) and PostgreSQL (replicas; a real throwaway cluster). Numbering, eviction, pending jobs,
a restart, two writers. Then the PostgreSQL gateway against a database that restarts and one
whose tables another session has locked."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import numpy as np
import pytest
from gateway_servers import Gateway

from src.gateway.ports import Store
from src.gateway.store import Fanout, FanoutStore

NAMES = ["a", "b", "c"]


def _pg():
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is installed by make install (requirements.txt)")
    pg_cluster = pytest.importorskip("pg_cluster")
    if pg_cluster.binaries() is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    return psycopg, pg_cluster


@pytest.fixture(scope="module")
def cluster():
    _, pg_cluster = _pg()
    c = pg_cluster.Cluster().start()
    yield c
    c.stop()


_DB = iter(range(1000))


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request, tmp_path):
    """A function opening the store under test (the same database each call), and its kind."""
    if request.param == "sqlite":
        path = str(tmp_path / "conformance.sqlite")
        return lambda embedder="e", max_rows=100: FanoutStore(path, embedder, max_rows)
    from src.gateway.pgstore import PostgresFanoutStore

    dsn = request.getfixturevalue("cluster").create_database(f"conformance_{next(_DB)}")
    return lambda embedder="e", max_rows=100: PostgresFanoutStore(dsn, embedder, max_rows, timeout=5)


def row(seq: int, d: int = 4) -> Fanout:
    rng = np.random.default_rng(seq)
    return Fanout(seq, f"req-{seq}", f"question {seq}", rng.standard_normal(d).astype(np.float32),
                  {b: f"{b} answers {seq}" for b in NAMES},
                  {b: rng.standard_normal(d).astype(np.float32) for b in NAMES})


def test_both_stores_implement_the_interface(opener):
    store = opener()
    try:
        assert isinstance(store, Store) and store.threads >= 1
        assert store.shared is (type(store).__name__ == "PostgresFanoutStore")
    finally:
        store.close()


def test_numbers_are_unique_increasing_and_survive_a_restart(opener):
    store = opener()
    first = [store.next_sequence() for _ in range(5)]
    store.close()
    store = opener()
    try:
        later = [store.next_sequence() for _ in range(5)]
    finally:
        store.close()
    assert first == sorted(first) and len(set(first + later)) == 10 and min(later) > max(first)


def test_rows_come_back_exactly_after_a_restart_and_per_embedder(opener):
    store = opener()
    for seq in range(6):
        assert store.add(row(seq)) == []
    other = opener("another-embedder")
    other.add(row(100, d=8))
    other.close()
    store.close()
    store = opener()
    try:
        back = store.rows()
    finally:
        store.close()
    assert [r.seq for r in back] == list(range(6))
    for got, want in zip(back, (row(s) for s in range(6))):
        assert got.request_id == want.request_id and got.answers == want.answers
        np.testing.assert_array_equal(got.input_vec, want.input_vec)
        for b in NAMES:
            np.testing.assert_array_equal(got.vecs[b], want.vecs[b])


def test_eviction_drops_the_oldest_tenth_and_says_which(opener):
    store = opener(max_rows=20)
    try:
        dropped = []
        for seq in range(21):
            dropped += store.add(row(seq))
        assert dropped == [f"req-{s}" for s in range(3)]  # 21 > 20: keep 18
        assert [r.seq for r in store.rows()] == list(range(3, 21))
    finally:
        store.close()


def test_pending_jobs_are_kept_until_their_row_is_stored(opener):
    store = opener()
    try:
        store.add_pending(7, "req-7", {"text": "q", "others": ["b"]})
        store.add_pending(8, "req-8", {"text": "r", "others": ["c"]})
        assert store.pending_count() == 2
        store.add(row(7))  # storing the row clears its job
        store.drop_pending(9)  # dropping an unknown job is harmless
    finally:
        store.close()
    store = opener()  # a restart (for PostgreSQL: a new replica takes over the dead one's jobs)
    try:
        assert store.pending() == [(8, "req-8", {"text": "r", "others": ["c"]})]
        store.drop_pending(8)
        assert store.pending_count() == 0
    finally:
        store.close()


def test_two_writers_number_and_store_without_collisions(opener):
    one, two = opener(), opener()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a = pool.submit(lambda: [one.next_sequence() for _ in range(20)])
            b = pool.submit(lambda: [two.next_sequence() for _ in range(20)])
            numbers = a.result() + b.result()
        assert len(set(numbers)) == 40
        for seq in a.result()[:5]:
            one.add(row(seq))
        for seq in b.result()[:5]:
            two.add(row(seq))
        assert sorted(r.seq for r in one.rows()) == sorted(a.result()[:5] + b.result()[:5])
        verdict = {"judge": "j", "first": "a", "second": "b", "outcome": "A"}
        one.add_verdicts(a.result()[0], [verdict])
        two.add_verdicts(b.result()[0], [{**verdict, "outcome": "B"}])
        if two.shared:  # a replica learns the other's rows and verdicts by polling, and only those
            got, _ = two.poll()
            assert {r.seq for r in got} == set(a.result()[:5])
            assert two.new_verdicts() == [{"seq": a.result()[0], **verdict}]
            assert two.new_verdicts() == [] and one.new_verdicts() == [{"seq": b.result()[0], **verdict,
                                                                        "outcome": "B"}]
        else:
            assert two.poll() == ([], []) and two.new_verdicts() == []
    finally:
        one.close()
        two.close()


# -- the PostgreSQL gateway when the database restarts or is locked ---------------------------------------
def _gateway(scripted, tmp_path, name, dsn, *extra) -> Gateway:
    backends = [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1" for b in NAMES]
    return Gateway(tmp_path, name, backends, "--store", dsn, "--store_timeout", "2", *extra,
                   env={"PYTHONUNBUFFERED": "1"}).start()


def _chat(gw, text, timeout=30, **body):
    return httpx.post(gw.url + "/v1/chat/completions", timeout=timeout,
                      json={"messages": [{"role": "user", "content": text}], **body})


def test_a_postgresql_restart_costs_seconds_not_the_replica(cluster, scripted, tmp_path):
    """Old: after a PostgreSQL restart every routed request and /health answered 500
    ('OperationalError: the connection is closed') for good, and the poller failed forever."""
    dsn = cluster.create_database("restart_me")
    gw = _gateway(scripted, tmp_path, "pg-restart", dsn)
    try:
        assert _chat(gw, "before the restart").status_code == 200
        cluster.restart(down_seconds=2)
        began, codes = time.monotonic(), []
        while time.monotonic() - began < 15:
            r = _chat(gw, f"after the restart {len(codes)}")
            codes.append(r.status_code)
            assert r.status_code in (200, 503), r.text  # never a 500
            if r.status_code == 200:
                break
            time.sleep(0.5)
        assert codes[-1] == 200, codes
        assert time.monotonic() - began < 15
        assert httpx.get(gw.url + "/health", timeout=5).status_code == 200
        assert _chat(gw, "and once more").status_code == 200
    finally:
        gw.stop()
    assert "Traceback" not in gw.log.read_text()


def test_locked_tables_leave_health_and_direct_requests_alone(cluster, scripted, tmp_path):
    """Old: with a table lock held by another session (a migration, a VACUUM FULL) every
    database call blocked the event loop: /health took 6.5 s, and so did everything else."""
    psycopg, _ = _pg()
    dsn = cluster.create_database("locked")
    gw = _gateway(scripted, tmp_path, "pg-locked", dsn)
    try:
        assert _chat(gw, "before the lock").status_code == 200
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE smoothie_fanouts, smoothie_answers, smoothie_pending IN ACCESS EXCLUSIVE MODE")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                routed = pool.submit(_chat, gw, "while locked")
                time.sleep(0.3)
                began = time.monotonic()
                health = httpx.get(gw.url + "/health", timeout=5)
                health_s = time.monotonic() - began
                began = time.monotonic()
                direct = _chat(gw, "direct while locked", model="a")
                direct_s = time.monotonic() - began
                began = time.monotonic()
                r = routed.result()
                routed_s = time.monotonic() - began + 0.3 + health_s + direct_s
            locker.rollback()
        assert health.status_code == 200 and health_s < 1.0, health_s
        assert direct.status_code == 200 and direct_s < 1.0, direct_s
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
        assert routed_s < 6, routed_s
        assert _chat(gw, "after the lock").status_code == 200
    finally:
        gw.stop()


def test_adaptive_scores_survive_a_restart(opener):
    store = opener()
    for seq in range(5):
        store.add_score(seq, seq / 7)
    store.close()
    store = opener()
    try:
        assert store.scores() == {seq: seq / 7 for seq in range(5)}
    finally:
        store.close()


def test_verdicts_survive_a_restart_and_are_evicted_with_the_rows_of_their_age(opener):
    store = opener(max_rows=20)
    for seq in range(21):
        if seq != 10:  # request 10 was a duel: verdicts on its answers, no stored fan-out
            store.add(row(seq))
        if seq in (1, 2, 10):  # rows 0 to 2 are evicted at the 21st row, with the verdicts as old
            store.add_verdicts(seq, [{"judge": "j", "first": "a", "second": "b", "outcome": "A"},
                                     {"judge": "j", "first": "b", "second": "a", "outcome": "C"}])
    store.add(row(21))
    store.close()
    store = opener(max_rows=20)
    try:
        assert store.verdicts() == [{"seq": 10, "judge": "j", "first": "a", "second": "b", "outcome": "A"},
                                    {"seq": 10, "judge": "j", "first": "b", "second": "a", "outcome": "C"}]
    finally:
        store.close()
