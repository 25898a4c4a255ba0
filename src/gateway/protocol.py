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
# JSON nested deeper than this is refused, from a client (400) or a backend (its failure): OpenAI's
# own bodies nest about 6 deep (a tool's JSON schema a few dozen), while a body nested near
# Python's recursion limit parses here and then fails to re-encode deeper in the call stack.
MAX_DEPTH = 128
ROLES = {"system", "user", "assistant", "tool", "developer", "function"}


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, extra: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.extra, self.headers = extra or {}, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code},
                **self.extra}


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests more than ``limit`` arrays and objects deep;
    iterative, so any depth is measured without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def loads_bounded(raw: bytes | str) -> Any:
    """``json.loads`` that raises ValueError, never RecursionError, for JSON nested beyond MAX_DEPTH."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_DEPTH} deep") from None
    if too_deep(data):
        raise ValueError(f"JSON nested more than {MAX_DEPTH} deep")
    return data


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
    include_usage: bool = False


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
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply to be a chat or completion request",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    if too_deep(body):
        raise ApiError(400, f"request body is nested more than {MAX_DEPTH} deep", code="invalid_json")
    try:  # what cannot be encoded cannot be forwarded: the client's fault, found before any backend call
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"request holds text that cannot be encoded as UTF-8 (a lone surrogate at "
                       f"character {exc.start} of a string)", code="invalid_text") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or
                                not isinstance(options.get("include_usage", False), bool)):
        raise _bad("'stream_options' must be an object with a boolean 'include_usage'", "stream_options")
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
    return Request(kind=kind, body=body, text=text, model=model, stream=stream,
                   include_usage=bool(stream and (options or {}).get("include_usage")))


def check_response(kind: str, raw: bytes) -> dict:
    """A backend's 200 body, parsed and checked to be an OpenAI response whose first choice has
    text where it should; raises ValueError saying what is wrong."""
    data = loads_bounded(raw)
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("no 'choices' list of objects")
    choice = choices[0]
    if kind == CHAT:
        message = choice.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), (str, type(None))):
            raise ValueError("choices[0].message.content is not text")
    elif not isinstance(choice.get("text"), str):
        raise ValueError("choices[0].text is not text")
    if not isinstance(data.get("usage"), (dict, type(None))):
        raise ValueError("'usage' is not an object")
    return data


USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def usage_of(response: dict | None) -> dict[str, int]:
    """A response's token counts (zeros where it gave none)."""
    usage = (response or {}).get("usage") or {}
    return {k: int(usage[k]) if isinstance(usage.get(k), int) else 0 for k in USAGE_KEYS}


USAGE_COUNTED = ("the backend's stream carried no usage: completion_tokens counts its events that carried text "
                 "(one token each from llama.cpp's server), prompt_tokens is unknown")


def delta_text(event: dict) -> str:
    """The text a stream event carries (chat delta or completion text), or ""."""
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def counted_usage(pieces: int) -> dict:
    """Usage for a stream that reported none: its text events counted, the prompt unknown (null)."""
    return {"prompt_tokens": None, "completion_tokens": pieces, "total_tokens": None}


def usage_chunk(kind: str, rid: str, model: str, usage: dict, smoothie: dict) -> dict:
    """The last chunk of a stream whose client asked for usage (``stream_options.include_usage``)."""
    return {"id": rid, "object": "chat.completion.chunk" if kind == CHAT else "text_completion", "created": 0,
            "model": model, "choices": [], "usage": usage, "smoothie": smoothie}


def usage_sum(usages) -> dict[str, int]:
    total = dict.fromkeys(USAGE_KEYS, 0)
    for u in usages:
        for k in USAGE_KEYS:
            total[k] += u.get(k) or 0  # None: unknown (a counted stream's prompt)
    return total


def error_event(message: str, code: str = "backend_stream_error") -> dict:
    """The in-stream error OpenAI's API sends, which the SDKs raise as an APIError."""
    return {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}


def answer_text(kind: str, response: dict) -> str:
    """The first choice's text of a backend's (non-streamed) response."""
    choice = (response.get("choices") or [{}])[0]
    if kind == CHAT:
        return (choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""


def stream_chunks(kind: str, response: dict, smoothie: dict, include_usage: bool = False) -> list[dict]:
    """A whole (already chosen) answer as the chunks a streamed response would have carried:
    the role, the text, then the finish reason, and with ``include_usage`` a last chunk with no
    choices and the ``usage`` (as OpenAI sends it). The first carries the ``smoothie`` object."""
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
    if include_usage:
        chunks.append({**base, "choices": [], "usage": response.get("usage")})
    chunks[0]["smoothie"] = smoothie
    return chunks


def sse(obj: dict | str) -> bytes:
    """One server-sent event."""
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
