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
``nousage`` (a stream that never reports usage, as llama.cpp's), ``drip`` (a stream of one word every 0.3 s).

``GET /NAME/stats`` gives the calls it received, the most it had in flight at once and the
``traceparent`` headers of its last 20 calls.

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


async def _serve(name: str, kind: str, request: Request):
    body = await request.json()
    text = _text(body)
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
        content = {"empty": "", "const": "I always say this."}.get(mode, f"{name} says: {text}")
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
