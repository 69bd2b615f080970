"""Pure ASGI middleware: the correlation id on every response (streams included), and optional bearer auth."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llama_orch.errors import ApiError

__all__ = ["BearerAuth", "CorrelationId"]

_ACCEPTED_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")  # echoed verbatim, so nothing that could split a header


class CorrelationId:
    """Echo a well-formed `X-Correlation-Id`, or generate a UUIDv4; it is on the response and in `scope["state"]`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-correlation-id", b"")
        value = given if _ACCEPTED_ID.match(given) else str(uuid.uuid4()).encode()
        scope.setdefault("state", {})["correlation_id"] = value.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", value)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BearerAuth:
    """Require `Authorization: Bearer <token>` (compared in constant time) except on the public paths."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        public: Callable[[str], bool],
        refuse: Callable[[Scope, ApiError], ASGIApp],
    ) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._public = public
        self._refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        reason = "missing bearer token" if not given else "wrong bearer token"
        await self._refuse(scope, ApiError("UNAUTHENTICATED", reason))(scope, receive, send)
