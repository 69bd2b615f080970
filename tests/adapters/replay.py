"""Serve recorded engine responses through `httpx.MockTransport`, so adapters read exactly the recorded bytes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.engines.spec_support import engines_reference_dir, reference_path

TRANSCRIPTS = engines_reference_dir() / "llamacpp-transcripts"
TGI_SNAPSHOTS = engines_reference_dir() / "tgi-snapshots"


@dataclass(frozen=True)
class Recording:
    name: str
    request: dict[str, Any]
    status: int
    content_type: str
    body: bytes

    @property
    def path(self) -> str:
        return str(self.request["path"])


def llamacpp_recordings() -> list[Recording]:
    found = []
    for meta_path in sorted(reference_path("llamacpp-transcripts").glob("*.json")):
        meta = json.loads(meta_path.read_text())
        response = meta["response"]
        found.append(
            Recording(
                name=meta_path.stem,
                request=meta["request"],
                status=response["status"],
                content_type=response["headers"].get("content-type", "application/json"),
                body=meta_path.with_suffix(".body").read_bytes(),
            )
        )
    return found


def chunked(body: bytes, size: int) -> Iterator[bytes]:
    """Split anywhere (inside lines and UTF-8 characters), as a network would."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


Route = Callable[[httpx.Request], httpx.Response]


def transport(routes: dict[str, Route]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        route = routes.get(request.url.path)
        if route is None:
            return httpx.Response(
                404, json={"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}
            )
        return route(request)

    return httpx.MockTransport(handle)


def respond(
    status: int, body: bytes, content_type: str, chunk: int = 7, headers: dict[str, str] | None = None
) -> Route:
    def route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, headers={"content-type": content_type, **(headers or {})}, stream=_Body(list(chunked(body, chunk)))
        )

    return route


class _Body(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> Any:
        for part in self._parts:
            yield part


def sse_payloads(body: bytes) -> list[Any]:
    """Independent oracle: the JSON payloads of an SSE body (`data:` lines), `[DONE]` left out."""
    found = []
    for line in body.decode("utf-8").splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data != "[DONE]":
                found.append(json.loads(data))
    return found
