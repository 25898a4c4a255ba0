"""The gateway (``src.serve``, a real process) against faults no client can cause and load it
must queue: a real HTTP server (``scripted_backends.py``) plays three backends that misbehave
on demand. Each test names what the code before the request core did wrong."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import httpx
import pytest
from gateway_servers import Gateway, free_port

openai = pytest.importorskip("openai", reason="the openai SDK is installed by make install (requirements.txt)")
NAMES = ["a", "b", "c"]



def flags(scripted, **limits) -> list[str]:
    return [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1" + (f",max_concurrency={limits[b]}" if b in limits else "")
            for b in NAMES]


def start(scripted, tmp_path, name: str, *extra: str, limits: dict | None = None, store=None) -> Gateway:
    store = store or tmp_path / f"{name}.sqlite"
    return Gateway(tmp_path, name, flags(scripted, **(limits or {})), "--store", str(store), *extra,
                   env={"PYTHONUNBUFFERED": "1"}).start()


def stats(scripted, name: str) -> dict:
    return httpx.get(f"http://127.0.0.1:{scripted.port}/{name}/stats").json()


def calls(scripted) -> dict[str, int]:
    return {b: stats(scripted, b)["calls"] for b in NAMES}


def chat(gw: Gateway, text: str, timeout: float = 60, **body) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", timeout=timeout,
                      json={"messages": [{"role": "user", "content": text}], **body})


def log_lines(gw: Gateway) -> list[dict]:
    time.sleep(0.3)
    return [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith('{"id"')]


def metric(gw: Gateway, needle: str) -> float:
    for line in httpx.get(gw.url + "/metrics").text.splitlines():
        if line.startswith(needle + " ") or line.startswith(needle + "{") and line.split(" ")[0] == needle:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def gw(scripted, tmp_path_factory):
    g = start(scripted, tmp_path_factory.mktemp("gw"), "faults", "--max_failures", "3", "--cooldown", "30",
              "--timeout", "2", "--alias", "gpt-4o")
    yield g
    g.stop()


def test_text_that_cannot_be_sent_is_a_400_and_cools_nothing(gw, scripted):
    """Old: a lone surrogate passed validation, failed to encode when forwarded, counted as every
    backend's failure (502), and three such requests cooled every backend."""
    before = calls(scripted)
    raw = b'{"messages": [{"role": "user", "content": "x \\ud800 y"}]}'
    for _ in range(3):
        r = httpx.post(gw.url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text"
    assert calls(scripted) == before
    assert httpx.get(gw.url + "/health").json()["backends"] == dict.fromkeys(NAMES, "ok")


def test_a_backends_4xx_is_the_requests_fault(gw, scripted):
    """Old: a backend's 4xx counted toward its cool-down like a crash, and when all rejected the
    client got 502."""
    for i in range(3):  # max_failures is 3 here: counted as failures, these would cool a
        r = chat(gw, f"[[a:reject]] question {i}")
        s = r.json()["smoothie"]
        assert r.status_code == 200 and r.json()["model"] in ("b", "c") and "HTTP 400" in s["failed"]["a"]
    assert httpx.get(gw.url + "/health").json()["backends"]["a"] == "ok"
    r = chat(gw, "[[all:reject]] too long for everyone")
    assert r.status_code == 400 and r.json()["error"]["code"] == "rejected_by_backends"
    assert set(r.json()["smoothie"]["failed"]) == set(NAMES)
    assert httpx.get(gw.url + "/health").json()["status"] == "ok"


def test_malformed_input_and_bad_backend_bodies_never_give_500(gw):
    """Old: JSON nested 2,000 deep gave 500 with a traceback, no log line and no metric; a
    backend's 200 that was not an OpenAI response gave 500."""
    deep = ("[" * 2000 + "]" * 2000).encode()
    before = metric(gw, 'smoothie_requests_total{policy="rejected",status="400"}')
    r = httpx.post(gw.url + "/v1/chat/completions", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert metric(gw, 'smoothie_requests_total{policy="rejected",status="400"}') == before + 1
    assert any(line["status"] == 400 and "nested" in line.get("error", "") for line in log_lines(gw))
    r = chat(gw, "[[a:badbody]] [[b:notjson]] hello")
    s = r.json()["smoothie"]
    assert r.status_code == 200 and r.json()["model"] == "c"
    assert "not an OpenAI response" in s["failed"]["a"] and "not an OpenAI response" in s["failed"]["b"]
    assert "Traceback" not in gw.log.read_text()


def test_the_timeout_bounds_the_whole_call(gw):
    """Old: --timeout bounded each read, so a backend trickling a byte every 0.5 s ran past it."""
    start = time.monotonic()
    r = chat(gw, "[[b:trickle]] slow please")
    took = time.monotonic() - start
    assert r.status_code == 200 and "timed out after 2 s" in r.json()["smoothie"]["failed"]["b"]
    assert took < 3.5  # --timeout 2, plus the embedder


def test_unknown_model_names_are_404_and_aliases_are_routed(gw, scripted):
    """Old: a typo in ``model`` fanned out to every backend, tripling the cost."""
    before = calls(scripted)
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="gtp-4o", messages=[{"role": "user", "content": "hi"}])
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "gtp-4o", "messages": [{"role": "user",
                                                                                           "content": "hi"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert calls(scripted) == before
    r = chat(gw, "routed by its alias", model="gpt-4o")
    assert r.status_code == 200 and r.json()["smoothie"]["policy"] == "fanout"
    assert "gpt-4o" in [m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]]


def test_usage_adds_up_every_backend_called_and_tokens_are_counted(gw):
    r = chat(gw, "count my tokens please").json()
    by = r["smoothie"]["usage_by_backend"]
    assert set(by) == set(NAMES)
    assert r["usage"] == {k: sum(u[k] for u in by.values()) for k in ("prompt_tokens", "completion_tokens",
                                                                      "total_tokens")}
    assert metric(gw, 'smoothie_backend_tokens_total{backend="a",kind="completion"}') > 0


def test_empty_answers_are_failed_answers_and_never_stored(gw):
    """Old: an empty answer entered the estimate as a vector; an always-empty backend got the
    highest weight (0.371) on the README's example."""
    for i in range(4):
        r = chat(gw, f"[[c:empty]] question number {i}").json()
        assert r["model"] in ("a", "b") and r["smoothie"]["failed"]["c"] == "empty answer (no text)"
        assert set(r["smoothie"]["weights"] or {}) <= {"a", "b"}
    store = gw.argv[gw.argv.index("--store") + 1]
    texts = [t for (t,) in sqlite3.connect(store).execute("SELECT text FROM answers")]
    assert texts and all(t.strip() for t in texts)
    assert httpx.get(gw.url + "/health").json()["backends"]["c"] == "ok"  # the backend is well; its answer was not


def test_a_stream_that_breaks_off_raises_in_the_sdk_and_counts_as_failed(gw):
    """Old: HTTP 200, two chunks, no error (the SDK raised nothing), counted ok, logged 200."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="b", stream=True, messages=[
                {"role": "user", "content": "[[b:break]] one two three four five"}]):
            got.append(chunk.choices[0].delta.content if chunk.choices else "")
    assert got == ["b ", "says: "]
    assert metric(gw, 'smoothie_backend_calls_total{backend="b",outcome="broken"}') == 1
    assert metric(gw, 'smoothie_requests_total{policy="direct",status="502"}') == 1
    line = [entry for entry in log_lines(gw) if entry["policy"] == "direct" and entry["status"] == 502]
    assert len(line) == 1 and "broke off mid-stream" in line[0]["error"]


def test_fanout_streams_honour_include_usage(gw):
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "stream with usage"}], "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] > 0
    by = events[0]["smoothie"]["usage_by_backend"]
    assert events[-1]["usage"]["total_tokens"] == sum(u["total_tokens"] for u in by.values())


def test_health_reports_cooling_and_chosen_separates_routed_from_direct(gw):
    """Old: /health said ok for a backend in cool-down, and chosen_total mixed routed and direct."""
    r = chat(gw, "hello", model="a")
    assert r.status_code == 200 and r.json()["model"] == "a"
    assert metric(gw, 'smoothie_chosen_total{backend="a",route="direct"}') >= 1
    assert metric(gw, 'smoothie_chosen_total{backend="a",route="routed"}') + \
        metric(gw, 'smoothie_chosen_total{backend="b",route="routed"}') >= 1
    for i in range(3):  # max_failures 3: a cools for 30 s
        chat(gw, f"[[a:crash]] this one fails at a ({i})")
    health = httpx.get(gw.url + "/health").json()
    assert health["status"] == "degraded" and health["backends"]["a"].startswith("cooling down")


def test_a_dead_backend_is_named_at_start_and_in_health(scripted, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    g = Gateway(tmp_path, "probe", [*flags(scripted)[:2], f"c={dead}"], "--store", str(tmp_path / "p.sqlite"),
                env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        health = httpx.get(g.url + "/health").json()
    finally:
        g.stop()
    assert health["backends"]["c"].startswith("unreachable") and health["status"] == "degraded"
    warnings = [line for line in g.log.read_text().splitlines() if "unreachable at start" in line]
    assert len(warnings) == 1 and "backend c" in warnings[0]


def test_queued_requests_wait_in_the_gateway_and_the_timeout_counts_from_dispatch(scripted, tmp_path):
    """Old: no limit per backend, and the timeout counted the time queued inside the backend, so
    under load the good backends timed out and were cooled. Here each backend takes 0.5 s, one
    at a time (max_concurrency=1), the timeout is 1.5 s and 12 requests arrive at once: every one
    is answered by all three, none cools a backend."""
    g = start(scripted, tmp_path, "queue", "--timeout", "1.5", "--max_failures", "1", "--max_queue_wait", "60",
              limits=dict.fromkeys(NAMES, 1))
    try:
        async def burst():
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*(client.post(g.url + "/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": f"[[all:slow5]] burst {i}"}]}) for i in range(12)))

        replies = asyncio.run(burst())
        assert [r.status_code for r in replies] == [200] * 12
        assert all(r.json()["smoothie"]["failed"] == {} for r in replies)
        assert all(stats(scripted, b)["max_in_flight"] == 1 for b in NAMES)
        assert httpx.get(g.url + "/health").json()["status"] == "ok"
    finally:
        g.stop()


def test_a_full_queue_is_a_503_with_retry_after(scripted, tmp_path):
    g = start(scripted, tmp_path, "busy", "--max_queue_wait", "0.3", "--timeout", "30",
              limits=dict.fromkeys(NAMES, 1))
    try:
        async def burst():
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*(client.post(g.url + "/v1/chat/completions", json={
                    "model": "a", "messages": [{"role": "user", "content": f"[[a:slow20]] busy {i}"}]})
                    for i in range(3)))

        replies = asyncio.run(burst())
        codes = sorted(r.status_code for r in replies)
        assert codes == [200, 503, 503]
        busy = [r for r in replies if r.status_code == 503]
        assert all(int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "backends_busy" for r in busy)
        assert httpx.get(g.url + "/health").json()["backends"]["a"] == "ok"
    finally:
        g.stop()


def test_explore_answers_at_once_and_fans_out_after_the_response(scripted, tmp_path):
    """Old: an explore request waited for every backend and the embedding. Now the policy's pick
    answers; the other calls, the embedding and the store write follow, and a gateway killed in
    between finishes them when it starts again."""
    store = tmp_path / "explore.sqlite"
    common = ["--policy", "select", "--warmup", "2", "--lag", "0", "--explore", "1", "--seed", "1"]
    g = start(scripted, tmp_path, "explore", *common, store=store)
    try:
        for i in range(2):
            assert chat(g, f"warm up {i}").json()["smoothie"]["mode"] == "warmup"
        weights = {b: metric(g, f'smoothie_global_weight{{backend="{b}"}}') for b in NAMES}
        pick = max(NAMES, key=lambda b: (weights[b], -NAMES.index(b)))
        slow = " ".join(f"[[{b}:slow30]]" for b in NAMES if b != pick)
        start_t = time.monotonic()
        r = chat(g, f"{slow} explore me").json()
        took = time.monotonic() - start_t
        s = r["smoothie"]
        assert s["mode"] == "explore" and s["called"] == [pick] and took < 2.5  # the others take 3 s each
        g.kill()  # before b and c have answered
    finally:
        g.stop()
    con = sqlite3.connect(store)
    assert con.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 1
    assert con.execute("SELECT COUNT(*) FROM fanouts").fetchone()[0] == 2
    con.close()
    g = start(scripted, tmp_path, "explore2", *common, store=store)
    try:
        deadline = time.monotonic() + 30
        while httpx.get(g.url + "/health").json()["pending_fanouts"] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert httpx.get(g.url + "/health").json()["store_rows"] == 3
    finally:
        g.stop()
    rows = sqlite3.connect(store).execute("SELECT a.backend FROM answers a JOIN fanouts f ON f.seq = a.seq "
                                          "WHERE f.request_id = ?", (r["id"],)).fetchall()
    assert sorted(b for (b,) in rows) == NAMES


def test_a_poorly_ranked_answer_is_flagged(scripted, tmp_path):
    """When every backend Smoothie ranks above the one that answered gave no answer, the
    response says so (``degraded``), with why in ``passed_over``."""
    g = start(scripted, tmp_path, "flag", "--policy", "select", "--warmup", "4", "--lag", "0", "--explore", "0",
              "--max_failures", "5")
    try:
        for i in range(4):  # c agrees with nobody: always the same text
            chat(g, f"[[c:const]] teach me about topic {i}")
        r = chat(g, "[[c:const]] which one answers?").json()
        ranking = sorted(r["smoothie"]["weights"], key=lambda b: -r["smoothie"]["weights"][b])
        assert ranking[-1] == "c" and r["smoothie"]["degraded"] is None
        top = ",".join(f"[[{b}:crash]]" for b in ranking[:2])
        r = chat(g, f"{top} [[c:const]] and now?").json()
        s = r["smoothie"]
        assert r["model"] == "c" and set(s["passed_over"]) == set(ranking[:2]) and "ranked 3 of 3" in s["degraded"]
    finally:
        g.stop()


class _BrokenEmbedder:
    """Stands in for a bug of ours on the response path: no real part fails on demand."""

    identity = "broken"

    def embed(self, texts):
        raise RuntimeError("a bug in the gateway")


def test_a_500_still_gets_an_openai_body_a_log_line_and_a_metric(scripted, tmp_path, caplog):
    from fastapi.testclient import TestClient

    from src.gateway import config
    from src.gateway.app import create_app

    settings = config.load(None, {"store": str(tmp_path / "s.sqlite")}, flags(scripted))
    with TestClient(create_app(settings, _BrokenEmbedder())) as client, caplog.at_level("INFO", "src.serve"):
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello"}]})
        metrics = client.get("/metrics").text
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "Traceback" not in r.text and "a bug in the gateway" not in r.text
    assert 'smoothie_requests_total{policy="error",status="500"} 1.0' in metrics
    lines = [json.loads(rec.message) for rec in caplog.records if rec.message.startswith("{")]
    assert any(line["status"] == 500 and "a bug in the gateway" in line["error"] for line in lines)


def test_health_names_a_repeating_backend_and_two_urls_of_one_model(scripted, tmp_path):
    """c repeats one answer whatever it is asked; a2 is backend a again behind a second URL. After
    a dozen fan-outs /health names both, and c's fixed answer is never the one returned."""
    backends = [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1" for b in NAMES]
    backends.append(f"a2=http://127.0.0.1:{scripted.port}/a/v1")
    gw = Gateway(tmp_path, "degenerate", backends, "--policy", "fanout", "--store", str(tmp_path / "d.sqlite"),
                 "--lag", "0", env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        chosen = []
        for i in range(14):
            r = chat(gw, f"[[c:const]] question {i}: name a number above {i}")
            assert r.status_code == 200, r.text
            chosen.append(r.json()["smoothie"]["chosen"])
        health = httpx.get(gw.url + "/health").json()["degenerate"]
        assert health["constant"] == {"c": 1.0} and health["duplicates"] == [["a", "a2"]], health
        assert "c" not in chosen[10:], chosen
    finally:
        gw.stop()
