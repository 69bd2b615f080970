"""Recorded exchanges with real engines (`NAME.json`: the request, status and content type; `NAME.body`: the bytes
as sent), and the shape of a body, which is what a simulator must reproduce (values differ, keys do not)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.engines.spec_support import parse_sse


@dataclass(frozen=True)
class Recording:
    name: str
    method: str
    path: str
    request_json: Any
    status: int
    content_type: str
    body: bytes

    @classmethod
    def load(cls, meta_path: Path) -> Recording:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        request, response = meta["request"], meta["response"]
        headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
        return cls(
            name=meta_path.stem,
            method=request["method"],
            path=request["path"],
            request_json=request.get("json"),
            status=int(response["status"]),
            content_type=headers.get("content-type", ""),
            body=meta_path.with_suffix(".body").read_bytes(),
        )


def sse_events(body: bytes) -> list[Any]:
    """The data of each SSE event: JSON decoded, the `[DONE]` sentinel as the string."""
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in parse_sse(body).events]


def shape(value: object) -> object:
    """Key order and nesting, not values."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items() if k not in ("generation_settings",)]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None
