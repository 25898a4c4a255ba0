"""Several gateway processes (``src.serve``, real) on one PostgreSQL store (a real, throwaway
cluster started here): they learn from each other's fan-outs, survive one being killed, and
continue after both restart. The backends are the scripted OpenAI server of test_gateway_faults."""

from __future__ import annotations

import concurrent.futures
import sys
import time

import httpx
import pytest
from conftest import ROOT
from gateway_servers import Gateway, free_port

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is installed by make install (requirements.txt)")
pg_cluster = pytest.importorskip("pg_cluster")
if pg_cluster.binaries() is None:
    pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine", allow_module_level=True)

NAMES = ["a", "b", "c"]
FLAGS = ["--policy", "local", "--warmup", "6", "--k", "4", "--lag", "2", "--explore", "0", "--store_poll_interval", "0.2"]


@pytest.fixture(scope="module")
def cluster():
    c = pg_cluster.Cluster().start()
    yield c
    c.stop()



def gateway(scripted, tmp_path, name: str, dsn: str, *extra: str, port: int | None = None) -> Gateway:
    backends = [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1" for b in NAMES]
    return Gateway(tmp_path, name, backends, "--store", dsn, *FLAGS, *extra, port=port,
                   env={"PYTHONUNBUFFERED": "1"}).start()


def ask(gw: Gateway, i: int) -> dict:
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=60,
                   json={"messages": [{"role": "user", "content": f"question number {i}: what is {i} plus {i}?"}]})
    assert r.status_code == 200, r.text
    return r.json()["smoothie"]


def stored(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as con:
        return con.execute("SELECT seq, request_id FROM smoothie_fanouts ORDER BY seq").fetchall()


def rows_seen(gw: Gateway) -> int:
    return httpx.get(gw.url + "/health").json()["store_rows"]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


PG_PASSWORD = "pgpass-8c1d2e"  # trust auth ignores it; it must never be printed


def test_two_replicas_share_fan_outs_survive_a_kill_and_restart(cluster, scripted, tmp_path):
    """Also: old, the banner printed the DSN's password although pgstore could redact it."""
    dsn = cluster.create_database("replicas").replace("postgres@", f"postgres:{PG_PASSWORD}@")
    a = gateway(scripted, tmp_path, "a", dsn)
    b = gateway(scripted, tmp_path, "b", dsn)
    try:
        # requests alternate between the two; the warm-up fan-outs land in one table
        modes = [ask(a if i % 2 == 0 else b, i) for i in range(12)]
        seqs = [m["seq"] for m in modes]
        assert sorted(seqs) == list(range(12)), "request numbers come from one sequence, never repeated"
        fanned = [m for m in modes if m["mode"] == "warmup"]
        assert len(stored(dsn)) == len(fanned) >= 6
        # each replica's mirror holds the other's rows within about a second
        assert wait_for(lambda: rows_seen(a) == rows_seen(b) == len(fanned), 2.0), (rows_seen(a), rows_seen(b))
        # B routes by fan-outs A stored: it is past its warm-up though it stored only some itself
        by_a = sum(1 for i, m in enumerate(modes) if m["mode"] == "warmup" and i % 2 == 0)
        assert 0 < by_a < len(fanned)
        routed = ask(b, 100)
        assert routed["mode"] == "local" and len(routed["called"]) == 1, routed

        # SIGKILL A while requests are in flight: B answers every later one, nothing is lost or doubled
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            in_flight = [pool.submit(lambda i=i: httpx.post(
                a.url + "/v1/chat/completions", timeout=30,
                json={"messages": [{"role": "user", "content": f"[[all:slow5]] in flight {i}"}]})) for i in range(8)]
            time.sleep(0.2)
            a.kill()
            for f in in_flight:
                try:
                    f.result()
                except httpx.HTTPError:
                    pass  # cut off by the kill
        later = [ask(b, 200 + i) for i in range(10)]
        assert all(m["chosen"] for m in later)
        rows = stored(dsn)
        assert len({seq for seq, _ in rows}) == len(rows) == len({rid for _, rid in rows}), "a fan-out stored twice"
        assert {m["seq"] for m in modes if m["mode"] == "warmup"} <= {seq for seq, _ in rows}, "a stored fan-out lost"
        before = rows_seen(b)
        last_seq = max(m["seq"] for m in later)
    finally:
        a.stop()
        b.stop()

    # both restart: they load every stored row and continue the sequence
    a2 = gateway(scripted, tmp_path, "a2", dsn)
    b2 = gateway(scripted, tmp_path, "b2", dsn)
    try:
        assert rows_seen(a2) == rows_seen(b2) == before == len(stored(dsn))
        after = [ask(a2, 300), ask(b2, 301)]
        assert all(m["seq"] > last_seq for m in after) and all(m["mode"] == "local" for m in after), after
    finally:
        a2.stop()
        b2.stop()
    for gw in (a, b, a2, b2):
        text = gw.log.read_text()
        assert "postgresql://[redacted]@" in text and PG_PASSWORD not in text


def test_a_store_that_cannot_be_reached_is_one_line(tmp_path):
    import subprocess

    port = free_port()
    backends = [a for b in NAMES for a in ("--backend", f"{b}=http://127.0.0.1:9/v1")]
    r = subprocess.run([sys.executable, "-m", "src.serve", *backends,
                        "--store", f"postgresql://postgres:secret@127.0.0.1:{port}/none", "--port", str(free_port())],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--store" in lines[0] and "secret" not in lines[0], r.stderr


def test_a_judges_verdicts_reach_the_other_replicas(cluster, scripted, tmp_path):
    """Old: a replica read the other replicas' verdicts only at start, so a judge's evidence
    decided the ties of the replica that asked it and no other until a restart; and a replica that
    had served nothing reported in /health what request 0 would see (no rows), not its next request."""
    dsn = cluster.create_database("judged_replicas")
    backends = [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1,max_concurrency=4" for b in NAMES]
    flags = ["--store", dsn, "--policy", "select", "--warmup", "12", "--lag", "0", "--explore", "0.3",
             "--judge", f"http://127.0.0.1:{scripted.port}/judge-rank-abc/v1", "--store_poll_interval", "0.2"]
    one = Gateway(tmp_path, "judged_one", backends, *flags, env={"PYTHONUNBUFFERED": "1"}).start()
    two = Gateway(tmp_path, "judged_two", backends, *flags, env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        before = httpx.get(two.url + "/health").json()["contenders"]
        for i in range(30):  # every request to the first replica: only its judge is asked
            assert httpx.post(one.url + "/v1/chat/completions", timeout=60, json={"messages": [
                {"role": "user", "content": f"[[all:random]] question {i}"}]}).status_code == 200

        def decided(gw: Gateway) -> dict:
            return httpx.get(gw.url + "/health").json()["contenders"]

        assert wait_for(lambda: decided(one).get("decided_by") == "judge", 20), decided(one)
        assert wait_for(lambda: decided(two).get("decided_by") == "judge", 10), decided(two)
        assert wait_for(lambda: not httpx.get(one.url + "/health").json()["pending_fanouts"], 20)
        time.sleep(1.0)  # the last judging, after the last fan-out

        def stored() -> int:
            with psycopg.connect(dsn) as con:
                return con.execute("SELECT COUNT(*) FROM smoothie_verdicts").fetchone()[0]

        # every verdict, each once: none lost, none counted twice (the replica's own are never handed back)
        assert wait_for(lambda: decided(two)["judge"]["verdicts"] == decided(one)["judge"]["verdicts"] == stored(),
                        10), (decided(two)["judge"], decided(one)["judge"], stored())
        theirs, mine = decided(two), decided(one)
    finally:
        one.stop()
        two.stop()
    assert before.get("decided_by") != "judge"
    assert len(theirs["shares"]) >= 2, theirs  # a tie by agreement, which the verdicts decide
    assert theirs["judge"]["best"] == mine["judge"]["best"] == "a", (theirs, mine)  # the judge ranks a > b > c
