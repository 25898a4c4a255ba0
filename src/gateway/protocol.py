"""The OpenAI wire format, as far as the gateway needs it: checking a request before anything is
sent to a backend, the text a request is routed by, reading an answer, and error bodies.

Error bodies follow OpenAI's (and vLLM's and llama.cpp's servers'):
``{"error": {"message", "type", "param", "code"}}``, so SDKs raise their usual exceptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CHAT, COMPLETION = "chat", "completion"
ROLES = {"system", "user", "assistant", "tool", "developer", "function"}


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.extra = extra or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code},
                **self.extra}


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value" if param else "invalid_json")


@dataclass
class Request:
    """A checked request: its kind, the body as sent, the routed-by text and its flags."""

    kind: str  # CHAT or COMPLETION
    body: dict
    text: str
    model: str | None
    stream: bool


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad(f"{where}[{j}] must be an object with a 'type'", where)
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise _bad(f"{where}[{j}].text must be a string", where)
                parts.append(part["text"])
        return "\n".join(parts)
    raise _bad(f"{where} must be a string or a list of content parts", where)


def _check_number(body: dict, name: str, low: float, high: float, integer: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise _bad(f"'{name}' must be {kind} between {low:g} and {high:g}, got {value!r}", name)


def parse(raw: bytes, kind: str) -> Request:
    """Check a chat or completion request body; raises ApiError(400) naming the field at fault."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON ({exc.__class__.__name__}: {exc})",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    if body.get("n", 1) != 1:
        raise _bad("'n' must be 1: the router returns one chosen answer", "n")
    _check_number(body, "max_tokens", 1, 1_000_000, integer=True)
    _check_number(body, "max_completion_tokens", 1, 1_000_000, integer=True)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("'stop' must be a string or a list of strings", "stop")
    if kind == CHAT:
        messages = body.get("messages")
        if messages is None:
            raise ApiError(400, "'messages' is required", param="messages", code="missing_required_parameter")
        if not isinstance(messages, list) or not messages:
            raise _bad("'messages' must be a non-empty list", "messages")
        texts = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise _bad(f"messages[{i}] must be an object", "messages")
            if msg.get("role") not in ROLES:
                raise _bad(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}", "messages")
            texts.append(_content_text(msg.get("content"), f"messages[{i}].content"))
        text = "\n".join(texts)
    else:
        prompt = body.get("prompt")
        if prompt is None:
            raise ApiError(400, "'prompt' is required", param="prompt", code="missing_required_parameter")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _bad("'prompt' must be a string (or a list of one string)", "prompt")
        text = prompt
    return Request(kind=kind, body=body, text=text, model=model, stream=stream)


def answer_text(kind: str, response: dict) -> str:
    """The first choice's text of a backend's (non-streamed) response."""
    choice = (response.get("choices") or [{}])[0]
    if kind == CHAT:
        return (choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""


def stream_chunks(kind: str, response: dict, smoothie: dict) -> list[dict]:
    """A whole (already chosen) answer as the chunks a streamed response would have carried:
    the role, the text, then the finish reason. The first carries the ``smoothie`` object."""
    choice = (response.get("choices") or [{}])[0]
    base = {"id": response.get("id"), "created": response.get("created"), "model": response.get("model")}
    text = answer_text(kind, response)
    finish = choice.get("finish_reason") or "stop"
    if kind == CHAT:
        base["object"] = "chat.completion.chunk"
        deltas = [({"role": "assistant", "content": ""}, None), ({"content": text}, None), ({}, finish)]
        chunks = [{**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": f}]}
                  for d, f in deltas]
    else:
        base["object"] = "text_completion"
        chunks = [{**base, "choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": f}]}
                  for t, f in ((text, None), ("", finish))]
    chunks[0]["smoothie"] = smoothie
    return chunks


def sse(obj: dict | str) -> bytes:
    """One server-sent event."""
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
