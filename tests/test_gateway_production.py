"""The gateway in production (issue: no request waits for another's backends; prompts and
secrets kept private; every backend answer bounded and checked). A real ``src.serve`` process
against the real scripted OpenAI server (``scripted_backends.py``); each test names what the
release before did wrong."""

from __future__ import annotations

import concurrent.futures
import json
import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT
from gateway_servers import Gateway
from scripted_backends import LEAKED_KEY

NAMES = ["a", "b", "c"]


def urls(scripted, path: str = "v1") -> list[str]:
    return [f"{b}=http://127.0.0.1:{scripted.port}/{b}/{path}" for b in NAMES]


def chat(gw: Gateway, text: str, timeout: float = 60, headers=None, **body) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", timeout=timeout, headers=headers,
                      json={"messages": [{"role": "user", "content": text}], **body})


def log_lines(gw: Gateway) -> list[dict]:
    time.sleep(0.3)
    return [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith('{"id"')]


# -- 1. no request waits for another request's backends ---------------------------------------------------
SLOW_CASES = {  # policy: (flags, the lag after which the slow request's fan-out was waited for)
    "fanout": (("--lag", "4"), 4),  # lag 4 rather than the default 16: fewer quick requests, so a slow CI still fits
    "select-explore": (("--policy", "select", "--warmup", "2", "--lag", "0", "--explore", "1", "--explore_lag", "2"), 0),
}


@pytest.mark.parametrize("case", list(SLOW_CASES))
def test_a_slow_request_delays_no_other_request(scripted, tmp_path, case):
    """Old: request s waited for every fan-out numbered below s - lag (16 by default); one 8 s
    request held every request numbered 17 or more after it for about 7.5 s while its
    neighbours took 0.02 s. Now each is decided by what is stored when it is numbered, and its
    log line names the fan-out it did not see (``unseen``)."""
    extra, lag = SLOW_CASES[case]
    gw = Gateway(tmp_path, f"slow-{case}", urls(scripted), "--store", str(tmp_path / "s.sqlite"), *extra,
                 env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        for i in range(3):
            assert chat(gw, f"warm-up question {i}").status_code == 200
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(chat, gw, "[[all:slow150]] a long one")  # 15 s: margin for a slow machine
            time.sleep(0.5)
            took = []
            for i in range(lag + 12):
                began = time.perf_counter()
                r = chat(gw, f"quick question {i}")
                took.append(time.perf_counter() - began)
                assert r.status_code == 200, r.text
            assert not slow.done()  # every quick one was answered while the slow one was still running
            slow_reply = slow.result()
        assert slow_reply.status_code == 200
        assert max(took) < 2.0, f"a quick request waited: {max(took):.1f} s"
        lines = {line["seq"]: line for line in log_lines(gw) if line.get("seq") is not None}
        slow_seq = slow_reply.json()["smoothie"]["seq"]
        after = [q for q in lines if slow_seq + lag < q <= slow_seq + lag + 10]
        assert len(after) == 10 and all(slow_seq in lines[q]["unseen"] for q in after)
        assert all(slow_seq not in lines[q]["unseen"] for q in lines if q <= slow_seq + lag)
        assert "waited_ms" not in slow_reply.json()["smoothie"]
    finally:
        gw.stop()


# -- 4. secrets and prompts stay private ------------------------------------------------------------------
def test_work_after_a_response_queues_behind_the_calls_clients_wait_for(scripted):
    """Old: one first-come queue per backend, so on a one-slot backend (llama.cpp) that was also
    the judge, a user's request waited behind judge calls, and behind other requests' late
    explore fan-outs. Now background calls wait while any foreground call waits; and a
    background call that gives up waiting (queued out) leaves no slot taken."""
    import asyncio

    from src.gateway.backends import BackendError, BackendPool
    from src.gateway.config import parse_backend

    def body(text: str) -> dict:
        return {"messages": [{"role": "user", "content": text}]}

    async def main() -> tuple[list[str], str, int, float]:
        pool = BackendPool([parse_backend(f"a=http://127.0.0.1:{scripted.port}/a/v1,max_concurrency=1")],
                           timeout=30, max_failures=3, cooldown=1, max_queue_wait=2)
        done: list[str] = []

        async def one(tag: str, background: bool, text: str) -> None:
            await pool.call("a", "chat", body(text), background=background)
            done.append(tag)

        try:
            first = asyncio.create_task(one("first", False, "[[a:slow5]] holds the slot"))
            await asyncio.sleep(0.1)
            judge = asyncio.create_task(one("judge", True, "[[a:slow2]] a judge call"))
            await asyncio.sleep(0.1)
            user = asyncio.create_task(one("user", False, "[[a:slow2]] a user's request, later"))
            await asyncio.gather(first, judge, user)
            # a background call that queues out while the slot is held: nothing is left taken
            pool.max_queue_wait = 0.2
            hold = asyncio.create_task(pool.call("a", "chat", body("[[a:slow5]] holds it again")))
            await asyncio.sleep(0.05)
            try:
                await pool.call("a", "chat", body("late work"), background=True)
                why = "answered"
            except BackendError as exc:
                why = str(exc)
            await hold
            busy = pool.in_flight("a")
            start = time.perf_counter()
            await pool.call("a", "chat", body("next"))
            return done, why, busy, time.perf_counter() - start
        finally:
            await pool.aclose()

    done, why, busy, took = asyncio.run(main())
    assert done == ["first", "user", "judge"]
    assert why.startswith("queued out") and busy == 0 and took < 1.0


def test_the_repository_tracks_no_database_or_stray_output():
    """Old: the repository tracked smoothie_gateway.sqlite (11 users' requests) and two stray
    outputs holding a machine path, and ignored none of a SQLite store's files."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    bad = [f for f in tracked if f.endswith((".sqlite", ".sqlite-wal", ".sqlite-shm", ".db", ".log"))
           or ("/" not in f and f.endswith(".txt") and not f.startswith("requirements"))]
    assert bad == []
    for name in ("gateway.sqlite", "x.sqlite-wal", "x.sqlite-shm", "smoothie_gateway.sqlite"):
        assert subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT).returncode == 0, name


def test_the_default_store_is_private_and_no_embedding_cache_is_written(scripted, tmp_path):
    """Old: with no --store the gateway wrote ./smoothie_gateway.sqlite in the working folder
    (the repository root, for the README's command), -rw-r--r--, and its embedder cached the
    vectors of every prompt and answer without limit."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    gw = Gateway(tmp_path, "default-store", urls(scripted),
                 env={"PYTHONUNBUFFERED": "1", "SMOOTHIE_DATA_DIR": str(data), "SMOOTHIE_CACHE_DIR": str(cache)}).start()
    try:
        for i in range(3):
            assert chat(gw, f"private question {i}").status_code == 200
    finally:
        gw.stop()
    store = data / "gateway.sqlite"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for side in data.glob("gateway.sqlite-*"):
        assert stat.S_IMODE(side.stat().st_mode) == 0o600, side
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM fanouts").fetchone()[0] == 3
    assert str(store) in gw.log.read_text()  # the banner says where
    assert not (ROOT / "smoothie_gateway.sqlite").exists()
    assert not list((cache / "embeddings").glob("*.sqlite")) if (cache / "embeddings").exists() else True


def test_store_text_off_keeps_no_text_and_still_routes(scripted, tmp_path):
    """Old: every prompt and answer was stored as text, with no way to keep only embeddings."""
    store = tmp_path / "notext.sqlite"
    gw = Gateway(tmp_path, "notext", urls(scripted), "--store", str(store), "--store_text", "off", "--policy",
                 "select", "--warmup", "3", "--lag", "0", "--explore", "0", env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        modes = [chat(gw, f"zebracode{i} what is {i} plus {i}?").json()["smoothie"]["mode"] for i in range(6)]
    finally:
        gw.stop()
    assert modes[:3] == ["warmup"] * 3 and modes[3:] == ["select"] * 3
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("notext.sqlite*"))
    assert b"zebracode" not in raw
    con = sqlite3.connect(store)
    texts = [t for (t,) in con.execute("SELECT input_text FROM fanouts")] + \
            [t for (t,) in con.execute("SELECT text FROM answers")]
    assert len(texts) == 3 + 9 and all(t.startswith("sha256:") for t in texts)
    assert con.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 0


def test_no_secret_reaches_a_client_a_log_line_or_a_report(scripted, tmp_path):
    """Old: an error body echoing a key ('rejected key Bearer sk-...') reached the client and the
    log, and so did a password in a backend's URL."""
    secrets = {"KEY_B": "backendkey-b-94c1e2", "GW_KEY": "gatewaykey-5d7e8f"}
    url_password = "urlpass-3b9a71"
    backends = [f"a=http://127.0.0.1:{scripted.port}/a/v1",
                f"b=http://127.0.0.1:{scripted.port}/b/v1,key_env=KEY_B",
                f"c=http://user:{url_password}@127.0.0.1:{scripted.port}/c/v1"]
    gw = Gateway(tmp_path, "secrets", backends, "--store", str(tmp_path / "k.sqlite"), "--api_key_env", "GW_KEY",
                 "--protect_reports", env={"PYTHONUNBUFFERED": "1", **secrets})
    gw.headers = {"Authorization": f"Bearer {secrets['GW_KEY']}"}
    gw.start()
    auth = gw.headers
    emitted = []
    try:
        for text in ("[[all:leak]] hello", "[[a:leak]] hello", "[[c:crash]] [[b:leak]] hi"):
            r = chat(gw, text, headers=auth)
            emitted.append(r.text)
        r = chat(gw, "direct", headers=auth, model="a")
        emitted.append(chat(gw, "[[a:leak]] x", headers=auth, model="a").text)
        assert httpx.get(gw.url + "/health").status_code == 401  # --protect_reports
        assert httpx.get(gw.url + "/metrics").status_code == 401
        emitted += [httpx.get(gw.url + "/health", headers=auth).text, httpx.get(gw.url + "/metrics", headers=auth).text]
        assert '"status"' in emitted[-2] and "smoothie_requests_total" in emitted[-1]
    finally:
        gw.stop()
    emitted.append(gw.log.read_text())
    assert any("[redacted]" in e for e in emitted)  # the leaked key was there to be redacted
    for e in emitted:
        for secret in [*secrets.values(), url_password, LEAKED_KEY]:
            assert secret not in e


# -- 5. every backend answer is bounded and checked --------------------------------------------------------
def test_a_deeply_nested_backend_body_fails_that_backend_only(scripted, tmp_path):
    """Old: a 200 body nested 200,000 deep made the fan-out and the direct request 500
    (RecursionError), and the backend was not marked failed."""
    gw = Gateway(tmp_path, "deep", urls(scripted), "--store", str(tmp_path / "d.sqlite"),
                 env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        r = chat(gw, "[[a:deep]] hello there")
        assert r.status_code == 200, r.text
        assert "a" in r.json()["smoothie"]["failed"] and r.json()["model"] in ("b", "c")
        direct = chat(gw, "[[a:deep]] hello", model="a")
        assert direct.status_code == 502 and "nested" in direct.json()["error"]["message"]
        fanned = [x for x in log_lines(gw) if x["policy"] == "fanout"][-1]  # the log line gives the reason
        assert "nested" in fanned["failed"]["a"] and fanned["seq"] == 0 and fanned["usage"]["total_tokens"] > 0
        # a request body nested just under Python's recursion limit: old, 400 check passed, then 500
        nested = '{"messages": [{"role": "user", "content": "hi"}], "metadata": {"x": ' + "[" * 956 + "]" * 956 + "}}"
        r = httpx.post(gw.url + "/v1/chat/completions", content=nested, timeout=30,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    finally:
        gw.stop()


def test_a_wrong_base_path_is_named_at_start_and_in_health(scripted, tmp_path):
    """Old: a backend at a wrong path (/api/v1: every call 404) was reported ok at start and in /health."""
    backends = [*urls(scripted)[:2], f"c=http://127.0.0.1:{scripted.port}/c/api/v1"]
    gw = Gateway(tmp_path, "path", backends, "--store", str(tmp_path / "p.sqlite"), env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        health = httpx.get(gw.url + "/health").json()
    finally:
        gw.stop()
    assert health["backends"]["a"] == "ok" and health["backends"]["c"].startswith("unreachable")
    assert "404" in health["backends"]["c"]
    text = gw.log.read_text()
    assert "backend c is unreachable at start" in text and "answering GET /v1/models: a, b" in text


def test_private_file_narrows_an_existing_store(tmp_path):
    from src.io import private_file

    path = tmp_path / "new" / "store.sqlite"
    private_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    private_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.access(path, os.R_OK) and Path(path).read_bytes() == b""


# -- 3. the embedder's identity holds for every vector ---------------------------------------------------
def _emb(scripted, **config) -> None:
    httpx.post(f"http://127.0.0.1:{scripted.port}/emb/config", json=config).raise_for_status()


def test_a_changed_embedding_model_starts_its_own_rows_and_never_500s(scripted, tmp_path):
    """Old: the embedding server's identity was checked once, at start. Another dimension behind
    the URL made every routed request 500 ('could not broadcast input array from shape (32,)
    into shape (16,)') while /health said ok; both dimensions were stored under one identity and
    the gateway then failed to start; a model of the same dimension was stored silently under
    the old identity. Now the probe rides along in every call: the call that sees another model
    answers 503 embedding_changed (retryable), the new model's vectors start rows of their own,
    and a restart loads only those."""
    _emb(scripted, dim=16, seed=0)
    store = tmp_path / "emb.sqlite"
    flags = ["--store", str(store), "--embedding_url", f"http://127.0.0.1:{scripted.port}/emb/v1",
             "--embedding_model", "bag-of-words"]
    gw = Gateway(tmp_path, "emb", urls(scripted), *flags, env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        for i in range(3):
            assert chat(gw, f"first model question {i}").status_code == 200
        first = httpx.get(gw.url + "/health").json()["embedder"]["identity"]
        for config, label in (({"dim": 32}, "another dimension"), ({"seed": 7}, "same dimension, another model")):
            _emb(scripted, **config)
            statuses = [chat(gw, f"after the change ({label}) {i}") for i in range(4)]
            codes = [r.status_code for r in statuses]
            assert 500 not in codes and codes[0] == 503 and codes[1:] == [200] * 3, (label, codes)
            assert statuses[0].json()["error"]["code"] == "embedding_changed"
            assert statuses[0].headers.get("retry-after")
            health = httpx.get(gw.url + "/health").json()
            assert health["store_rows"] == 3 and health["embedder"]["identity"] != first
            assert health["embedder"]["changes"][-1]["from"] != health["embedder"]["identity"]
            first = health["embedder"]["identity"]
    finally:
        gw.stop()
    by_identity = dict(sqlite3.connect(store).execute("SELECT embedder, COUNT(*) FROM fanouts GROUP BY embedder"))
    assert sorted(by_identity.values()) == [3, 3, 3] and "-d16-" in next(iter(by_identity))
    for identity in by_identity:  # one dimension per identity
        lengths = {len(v) for (v,) in sqlite3.connect(store).execute(
            "SELECT input_vec FROM fanouts WHERE embedder = ?", (identity,))}
        assert len(lengths) == 1
    gw = Gateway(tmp_path, "emb-restart", urls(scripted), *flags, env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        assert httpx.get(gw.url + "/health").json()["store_rows"] == 3
        assert chat(gw, "after the restart").status_code == 200
    finally:
        gw.stop()
        _emb(scripted, dim=16, seed=0)


def test_a_text_the_embedding_server_refuses_fails_only_its_own_request(scripted, tmp_path):
    """Old: in a batch of 8 concurrent requests one refused text failed three innocent requests
    with it, and the client's own bad text came back as a retryable 503."""
    _emb(scripted, dim=16, seed=0)
    gw = Gateway(tmp_path, "refuse", urls(scripted), "--store", str(tmp_path / "r.sqlite"), "--embedding_url",
                 f"http://127.0.0.1:{scripted.port}/emb/v1", "--embedding_model", "bag-of-words",
                 "--embedding_batch_wait_ms", "50", env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        texts = [f"an innocent question {i}" for i in range(7)] + ["a bad one [[refuse]]"]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda t: chat(gw, t), texts))
    finally:
        gw.stop()
    assert [r.status_code for r in replies[:7]] == [200] * 7
    bad = replies[7]
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "embedding_refused"
    assert "refused" in bad.json()["error"]["message"]


# -- 6. what users see is true -------------------------------------------------------------------------------
def test_a_relayed_stream_without_usage_reports_counted_tokens(scripted, tmp_path):
    """Old: a relayed stream (direct, select, local, adaptive) asked for include_usage got no
    usage chunk when the backend sent none, as llama.cpp's server does not."""
    gw = Gateway(tmp_path, "usage", urls(scripted), "--store", str(tmp_path / "u.sqlite"),
                 env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        text = "[[a:nousage]] count these words please"
        with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=60, json={
                "model": "a", "messages": [{"role": "user", "content": text}], "stream": True,
                "stream_options": {"include_usage": True}}) as r:
            events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data: {")]
    finally:
        gw.stop()
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert streamed.strip() == f"a says: {text}"
    last = events[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(streamed.split())
    assert last["usage"]["prompt_tokens"] is None and "prompt_tokens is unknown" in last["smoothie"]["usage_counted"]
    assert last["smoothie"]["latency_ms"]["a"] > 0  # the first event's was still empty
    line = [x for x in log_lines(gw) if x["chosen"] == "a"][-1]
    assert line["usage"]["completion_tokens"] == len(streamed.split()) and line["latency_by_backend"]["a"] > 0


def test_an_abandoned_stream_is_logged_as_client_closed(scripted, tmp_path):
    """Old: a stream the client abandoned was logged 'status 200, failed []' at the moment it was cut."""
    gw = Gateway(tmp_path, "closed", urls(scripted), "--store", str(tmp_path / "c.sqlite"),
                 env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=60, json={
                "model": "b", "stream": True,
                "messages": [{"role": "user", "content": "[[b:drip]] " + "word " * 30}]}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(3)]
        assert any(g.startswith("data: {") for g in got)
        time.sleep(1.5)
        line = [x for x in log_lines(gw) if x["path"] == "/v1/chat/completions"][-1]
    finally:
        gw.stop()
    assert line["status"] == 499 and line["error"].startswith("client_closed")
    assert 0 < line["usage"]["completion_tokens"] < 30


def test_health_reports_the_ranking_the_next_request_uses(scripted, tmp_path):
    """Old: /health's 'order select's single calls follow' was estimated over every stored row,
    while the next request sees only those numbered below it minus --lag: it named smol while
    select kept calling gemmaalpaca."""
    gw = Gateway(tmp_path, "next", urls(scripted), "--store", str(tmp_path / "n.sqlite"), "--policy", "select",
                 "--warmup", "6", "--lag", "3", "--explore", "0", env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        for i in range(6):
            assert chat(gw, f"question {i} about {i * 7}").json()["smoothie"]["mode"] == "warmup"
        health = httpx.get(gw.url + "/health").json()
        assert health["store_rows"] == 6 and health["next_seq"] == 6
        assert health["global_ranking"]["fanouts"] == 3  # rows 0, 1, 2: below 6 - 3
        nxt = chat(gw, "the next one").json()["smoothie"]
        assert nxt["seq"] == 6 and nxt["mode"] == "warmup"  # 3 usable fan-outs seen, fewer than 6
    finally:
        gw.stop()


def test_adaptive_routes_after_a_restart_as_if_it_never_stopped(scripted, tmp_path, capsys):
    """Old: the adaptive policy's history of uncertainties lived in memory; a restarted gateway
    routed 8 of 200 requests differently from one that never stopped. Now it is in the store:
    the server, restarted halfway, equals a replay of the same answers that never stopped."""
    from conftest import run_cli

    from src import replay

    flags = ["--policy", "adaptive", "--budget", "2", "--warmup", "3", "--lag", "1", "--k", "3", "--seed", "4"]
    store = tmp_path / "adaptive.sqlite"
    questions = [f"what is {i} times {i % 7} plus {i % 3}, and why is it {'odd' if i % 2 else 'even'}?"
                 for i in range(70)]
    gw = Gateway(tmp_path, "adaptive", urls(scripted), "--store", str(store), *flags,
                 env={"PYTHONUNBUFFERED": "1"})
    smoothies = []
    for half in (questions[:30], questions[30:]):
        gw.start()
        try:
            smoothies += [chat(gw, q).json()["smoothie"] for q in half]
        finally:
            gw.stop()
    assert [s["seq"] for s in smoothies] == list(range(70))
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "inputs.jsonl").write_text("".join(json.dumps({"embedding_input": q}) + "\n" for q in questions))
    files = []
    for b in NAMES:  # the scripted backends' answers, as they gave them
        (folder / f"{b}.json").write_text(json.dumps({"generations": [f"{b} says: {q}" for q in questions]}))
        files.append(folder / f"{b}.json")
    code, _, err = run_cli(replay.main, ["--generations", *files, "--inputs", folder / "inputs.jsonl", "--output",
                                         folder / "replay.json", "--embedding_model", "all-minilm-l6-v2",
                                         "--embedding_precision", "fp32", *flags], capsys)
    assert code in (None, 0), err
    out = json.loads((folder / "replay.json").read_text())
    assert out["modes"] == [s["mode"] for s in smoothies]
    assert out["called"] == [s["called"] for s in smoothies]
    assert sum(m == "unsure" for m in out["modes"][30:]) >= 3  # the second half did decide things


# -- decision headers (issue 40, part 1) ---------------------------------------------------------------------
def test_every_response_carries_its_decision_in_headers(scripted, tmp_path):
    """Old: a client that reads only headers, or a relayed stream's SSE chunks, learnt nothing
    about the routing: the decision was only in the JSON body's smoothie object."""
    gw = Gateway(tmp_path, "headers", urls(scripted), "--store", str(tmp_path / "h.sqlite"), "--lag", "0",
                 env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        for i in range(4):
            r = chat(gw, f"header question {i}")
            body, h = r.json(), r.headers
            assert h["x-smoothie-request-id"] == body["id"] and h["x-smoothie-seq"] == str(body["smoothie"]["seq"])
            assert h["x-smoothie-mode"] == "fanout" and h["x-smoothie-chosen"] == body["model"]
            assert h["x-smoothie-calls"] == "3"
        agreement = httpx.get(gw.url + "/health").json()["global_ranking"]["agreement"]
        assert agreement is not None
        r = chat(gw, "after the health check")
        assert r.headers["x-smoothie-agreement"] == f"{agreement:.4f}"
        line = [x for x in log_lines(gw) if x["id"] == r.json()["id"]][0]  # the log line says the same
        assert line["calls"] == 3 and line["agreement"] == agreement and line["seq"] == int(r.headers["x-smoothie-seq"])
        with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=60, json={
                "model": "b", "stream": True, "messages": [{"role": "user", "content": "[[b:drip]] a b c"}]}) as s:
            assert s.headers["x-smoothie-mode"] == "direct" and s.headers["x-smoothie-chosen"] == "b"
            assert "x-smoothie-agreement" not in s.headers  # a direct request is not routed
            first = next(line for line in s.iter_lines() if line.startswith("data: {"))
        assert json.loads(first[5:])["id"] == s.headers["x-smoothie-request-id"]
        failed = chat(gw, "[[all:crash]] nobody answers")
        assert failed.status_code == 502 and failed.headers["x-smoothie-calls"] == "3"
        assert "x-smoothie-chosen" not in failed.headers
    finally:
        gw.stop()
