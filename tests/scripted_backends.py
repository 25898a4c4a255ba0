"""A real OpenAI-compatible HTTP server (FastAPI + uvicorn, its own process, 127.0.0.1) that
plays several backends at once, ``/NAME/v1/...``, each misbehaving on demand. The faults the
gateway must survive (a trickling body, a stream cut after two chunks, a 200 that is not an
OpenAI response, a 4xx for one request) cannot be asked of llama.cpp, so this server does them
for real, over real sockets.

A request's text chooses the behaviour: ``[[NAME:MODE]]`` (or ``[[all:MODE]]``) anywhere in the
last message or prompt, MODE one of:
``ok`` (default: "NAME says: <text>"), ``empty``, ``reject`` (400, context too long),
``unauthorized`` (401), ``crash`` (500), ``badbody`` (200, ``choices: [null]``), ``notjson``
(200, not JSON), ``trickle`` (200, one byte every 0.5 s), ``break`` (a stream cut after two
chunks), ``slowN`` (answer after N tenths of a second), ``const`` (always the same text),
``leak`` (401 whose body echoes a key, as some servers do), ``deep`` (200, a body nested 200,000 deep),
``nousage`` (a stream that never reports usage, as llama.cpp's), ``drip`` (a stream of one word every 0.3 s),
``random`` (eight words drawn by backend and text: backends alike in distribution, a planted tie).

``GET /NAME/stats`` gives the calls it received, the most it had in flight at once and the
``traceparent`` headers of its last 20 calls.

Asked the gateway's pairwise judge prompt (``--judge``), a backend answers with a verdict instead:
``/judge-rank-XYZ/v1`` prefers X to Y to Z, ``/judge-first/v1`` always says [[A]], ``/judge-fail/v1``
fails, ``/judge-hang/v1`` takes 30 s, ``/judge-mute/v1`` gives no verdict, ``/judge-leak/v1`` answers 401
echoing keys, ``/judge-slow/v1`` ranks alphabetically after 1 s, and a..h (``--judge peers``)
rank alphabetically; each records in its stats whose answers it judged.

It also plays an OpenAI-compatible embedding server, ``/emb/v1/embeddings``: a bag-of-words
vector (each word a fixed random direction), whose dimension and "model" (the seed of those
directions) ``POST /emb/config`` changes while it runs, as a redeployment behind the same URL
would; it refuses (400) any input holding ``[[refuse]]``.

    python tests/scripted_backends.py PORT
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

app = FastAPI()
STATS: dict[str, dict] = {}
LEAKED_KEY = "sk-scriptedleak0123456789"  # a key the gateway never saw, echoed in an error body
_DIRECTIVE = re.compile(r"\[\[(\w+):(\w+)\]\]")


def _text(body: dict) -> str:
    if "messages" in body:
        content = body["messages"][-1].get("content")
        return content if isinstance(content, str) else json.dumps(content)
    return str(body.get("prompt", ""))


def _mode(name: str, text: str) -> str:
    found = dict(_DIRECTIVE.findall(text))
    return found.get(name, found.get("all", "ok"))


def _answer(kind: str, name: str, text: str, content: str) -> dict:
    choice = {"index": 0, "finish_reason": "stop"}
    choice.update({"message": {"role": "assistant", "content": content}} if kind == "chat" else {"text": content})
    return {"id": "x", "object": "chat.completion" if kind == "chat" else "text_completion", "created": 0,
            "model": name, "choices": [choice],
            "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(content.split()),
                      "total_tokens": len(text.split()) + len(content.split())}}


def _chunk(kind: str, name: str, content: str, finish=None) -> str:
    if kind == "chat":
        choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": content, "finish_reason": finish}
    return "data: " + json.dumps({"id": "x", "object": "chunk", "created": 0, "model": name, "choices": [choice]}) + "\n\n"


_WORDS = ("river stone light garden paper music window summer bridge forest candle silver market planet "
          "quiet yellow engine winter story ocean").split()


def _random_words(name: str, text: str) -> str:
    """Eight words drawn by (backend, text): every backend alike in distribution, a tie by design."""
    import random

    return " ".join(random.Random(f"{name}|{text}").choices(_WORDS, k=8))


_JUDGE_PROMPT = re.compile(r"\[The request\]\n(.*?)\n\n\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*)\Z", re.S)


def _author(answer: str, request: str) -> str | None:
    """Which scripted backend wrote ``answer`` to ``request`` (they answer deterministically)."""
    for n in "abcdefgh":
        if answer in (_random_words(n, request), f"{n} says: {request}"):
            return n
    return None


async def _judge(name: str, text: str, authorization: str | None = None) -> Response:
    """A judge's reply to the gateway's pairwise prompt. ``judge-rank-XYZ``: prefers X to Y to Z
    (others last); ``judge-first``: always [[A]] (all position bias); ``judge-fail``: HTTP 500;
    ``judge-hang``: answers after 30 s; ``judge-mute``: no verdict; ``judge-leak``: 401 whose body echoes
    the key it was sent and another. A backend a..h asked to judge
    (peers mode) answers by alphabetical order. Each records the authors of what it judged."""
    request, first, second = _JUDGE_PROMPT.match(text).groups()
    authors = [_author(first, request), _author(second, request)]
    stats = STATS.setdefault(name, {"calls": 0, "in_flight": 0, "max_in_flight": 0, "traceparents": []})
    stats.setdefault("judged", []).append(authors)
    if name == "judge-fail":
        return JSONResponse({"error": {"message": "judge down"}}, status_code=500)
    if name == "judge-leak":
        return JSONResponse({"error": {"message": f"rejected {authorization}; try Bearer {LEAKED_KEY}"}},
                            status_code=401)
    if name == "judge-hang":
        await asyncio.sleep(30)
    if name == "judge-slow":  # a judge that takes 1 s per judgement, ranking alphabetically
        await asyncio.sleep(1)
    rank = name.removeprefix("judge-rank-") if name.startswith("judge-rank-") else "abcdefgh"
    place = [rank.index(a) if a in rank else len(rank) for a in authors]
    verdict = "[[A]]" if name == "judge-first" or place[0] < place[1] else "[[B]]" if place[1] < place[0] else "[[C]]"
    if name == "judge-mute":
        verdict = "I cannot decide."
    return JSONResponse(_answer("chat", name, text, f"Compared. {verdict}"))


async def _serve(name: str, kind: str, request: Request):
    body = await request.json()
    text = _text(body)
    if _JUDGE_PROMPT.match(text):
        STATS.setdefault(name, {"calls": 0, "in_flight": 0, "max_in_flight": 0, "traceparents": []})["calls"] += 1
        return await _judge(name, text, request.headers.get("authorization"))
    mode = _mode(name, text)
    stats = STATS.setdefault(name, {"calls": 0, "in_flight": 0, "max_in_flight": 0, "traceparents": []})
    stats["calls"] += 1
    stats["traceparents"] = [*stats["traceparents"][-19:], request.headers.get("traceparent")]
    stats["in_flight"] += 1
    stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
    try:
        if mode.startswith("slow"):
            await asyncio.sleep(int(mode[4:] or 5) / 10)
            mode = "ok"
        if mode == "reject":
            return JSONResponse({"error": {"message": "this request exceeds the context window", "type":
                                           "invalid_request_error", "param": None, "code": None}}, status_code=400)
        if mode == "unauthorized":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        if mode == "leak":
            return JSONResponse({"error": {"message": f"rejected key Bearer {LEAKED_KEY}"}}, status_code=401)
        if mode == "deep":
            return Response('{"choices": ' + "[" * 200_000 + "]" * 200_000 + "}", media_type="application/json")
        if mode == "crash":
            return JSONResponse({"error": {"message": "internal"}}, status_code=500)
        if mode == "badbody":
            return JSONResponse({"id": "x", "choices": [None]})
        if mode == "notjson":
            return Response("hello, not json", media_type="application/json")
        content = {"empty": "", "const": "I always say this.", "random": _random_words(name, text)}.get(
            mode, f"{name} says: {text}")
        if mode == "trickle":
            async def trickle():
                for ch in json.dumps(_answer(kind, name, text, content)):
                    yield ch.encode()
                    await asyncio.sleep(0.5)
            return StreamingResponse(trickle(), media_type="application/json")
        if body.get("stream"):
            async def events():
                words = content.split(" ")
                for w in words[:2] if mode == "break" else words:
                    yield _chunk(kind, name, w + " ")
                    await asyncio.sleep(0.3 if mode == "drip" else 0.01)
                if mode == "break":
                    raise ConnectionResetError("cut")  # uvicorn drops the connection mid-body
                yield _chunk(kind, name, "", "stop")
                if (body.get("stream_options") or {}).get("include_usage") and mode != "nousage":
                    usage = _answer(kind, name, text, content)["usage"]
                    yield "data: " + json.dumps({"id": "x", "object": "chunk", "created": 0, "model": name,
                                                 "choices": [], "usage": usage}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(_answer(kind, name, text, content))
    finally:
        stats["in_flight"] -= 1


@app.post("/{name}/v1/chat/completions")
async def chat(name: str, request: Request):
    return await _serve(name, "chat", request)


@app.post("/{name}/v1/completions")
async def completions(name: str, request: Request):
    return await _serve(name, "completion", request)


@app.get("/{name}/v1/models")
async def models(name: str):
    return {"object": "list", "data": [{"id": name, "object": "model"}]}


EMB = {"dim": 16, "seed": 0, "calls": 0}


def _vector(text: str) -> list[float]:
    import zlib

    import numpy as np

    total = np.zeros(EMB["dim"])
    for word in text.lower().split():
        total += np.random.default_rng([EMB["seed"], zlib.crc32(word.encode())]).standard_normal(EMB["dim"])
    norm = np.linalg.norm(total)
    return (total / norm if norm else total).tolist()


@app.post("/emb/v1/embeddings")
async def embeddings(request: Request):
    body = await request.json()
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    EMB["calls"] += 1
    if any("[[refuse]]" in t for t in texts):
        return JSONResponse({"error": {"message": "input rejected by the embedding model"}}, status_code=400)
    return {"object": "list", "model": body.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(texts)]}


@app.post("/emb/config")
async def emb_config(request: Request):
    EMB.update(await request.json())
    return EMB


@app.get("/emb/v1/models")
async def emb_models():
    return {"object": "list", "data": [{"id": "bag-of-words", "object": "model"}]}


@app.get("/{name}/stats")
async def stats(name: str):
    return STATS.get(name, {"calls": 0, "in_flight": 0, "max_in_flight": 0})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
