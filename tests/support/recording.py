"""Record what an ASGI app answers, and replay those exact bytes to another client: how a test shows that an
official engine client and our generated client parse the same response the same way."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Exchange:
    """One answer as it went over the wire (the body as sent, chunk by chunk, joined)."""

    path: str
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


class Recorder:
    """ASGI middleware that keeps every exchange of the wrapped app, in order."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["path"])
        self.exchanges.append(exchange)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status, exchange.headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                exchange.body += message.get("body", b"")
            await send(message)

        await self.app(scope, receive, recording_send)

    def last(self, path: str) -> Exchange:
        return next(e for e in reversed(self.exchanges) if e.path == path)


def replaying(exchange: Exchange) -> httpx.MockTransport:
    """A transport that answers any request with the recorded exchange's status, headers and body."""
    headers = [(k.decode(), v.decode()) for k, v in exchange.headers if k.lower() != b"content-length"]
    return httpx.MockTransport(lambda request: httpx.Response(exchange.status, headers=headers, content=exchange.body))
