"""Bytes on the wire: request bodies in (size, media type, JSON, schema → typed error), SSE frames and `/infer`
NDJSON lines out. Token frames are the hot path: they are formatted directly, without a model round trip."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring
from typing import Any, TypeVar

from llama_orch_gen.contracts.events import TaskEvent
from llama_orch_gen.contracts.infer_line import InferUsage
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope

from llama_orch.errors import ApiError
from llama_orch.events import TokenRun

__all__ = ["infer_done", "infer_line", "infer_tokens", "read_model", "sse_frames"]

M = TypeVar("M", bound=BaseModel)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_string: Callable[[str], str] = encode_basestring  # the C routine json.dumps uses for a str


async def read_model(scope: Scope, receive: Receive, model: type[M], max_bytes: int) -> M:
    """The request body as `model`, or `ApiError`: 415 unless application/json, 413 over `max_bytes` (checked as it
    arrives, not after buffering it all), 400 for malformed JSON or a schema violation (with the field's path)."""
    headers = dict(scope["headers"])
    media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if media != b"application/json":
        raise ApiError(
            "UNSUPPORTED_MEDIA_TYPE", f"send the body as application/json, not {media.decode() or 'nothing'}"
        )
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError("PAYLOAD_TOO_LARGE", f"body of {int(declared)} bytes exceeds the {max_bytes}-byte limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError("INVALID_PARAMS", "the client disconnected before sending its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise ApiError("PAYLOAD_TOO_LARGE", f"body exceeds the {max_bytes}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        data = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ApiError("INVALID_PARAMS", f"malformed JSON: {exc}") from None
    if (where := _first_null(data, "")) is not None:
        # No field of the request schemas is nullable: an explicit null is a type error, not "use the default".
        raise ApiError("INVALID_PARAMS", f"{where}: null is not allowed (omit the field instead)", field=where)
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        raise ApiError("INVALID_PARAMS", f"{where or 'body'}: {first['msg']}", field=where) from None


def _first_null(data: Any, path: str) -> str | None:
    if data is None:
        return path or "body"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = _first_null(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def sse_frames(first: int, items: Iterable[TaskEvent | TokenRun]) -> bytes:
    """`id: <n>\\nevent: <name>\\ndata: <json>\\n\\n` per event, numbered from `first`, joined for one write. (An
    engine's JSON can decode to a lone surrogate, which UTF-8 cannot carry: it becomes "?" rather than breaking the
    stream.)"""
    parts: list[str] = []
    number = first
    for item in items:
        if isinstance(item, TokenRun):
            parts += [
                f'id: {number + k}\nevent: token\ndata: {{"t":{_json_string(text)},"i":{item.first + k}}}\n\n'
                for k, text in enumerate(item.texts)
            ]
            number += len(item.texts)
        else:
            parts.append(f"id: {number}\nevent: {item.root.event}\ndata: {_payload(item.root.data)}\n\n")
            number += 1
    return "".join(parts).encode("utf-8", "replace")


def _payload(data: BaseModel) -> str:
    return data.model_dump_json(exclude_none=True)


def infer_line(payload: dict[str, Any]) -> bytes:
    return (_dumps(payload) + "\n").encode("utf-8", "replace")


def infer_tokens(run: TokenRun) -> bytes:
    """`{"token": text}` lines formatted directly (the hot path, as for SSE token frames)."""
    return "".join([f'{{"token":{_json_string(text)}}}\n' for text in run.texts]).encode("utf-8", "replace")


def infer_done(content: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    usage = InferUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    return infer_line({"done": True, "content": content, "finish_reason": finish_reason, "usage": usage.model_dump()})
