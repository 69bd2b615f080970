"""The orchestrator's HTTP surface (specs/orchestrator.openapi.yaml), served by Starlette.

Every refusal is the error envelope with its code's status (`/infer` keeps its own `{error, code}` shape); every
response carries `X-Correlation-Id`. The two streaming routes are plain ASGI apps: they write each batch of
buffered events in one send and cancel the task when the client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from llama_orch_gen.contracts.config import OrchestratorConfig
from llama_orch_gen.contracts.infer_request import InferRequest
from llama_orch_gen.contracts.tables import ERROR_CODES
from llama_orch_gen.contracts.task_request import TaskRequest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llama_orch.adapters.base import AdapterRegistry
from llama_orch.errors import ApiError
from llama_orch.events import TokenRun
from llama_orch.secrets import token_from_env
from llama_orch.service.cluster import Cluster
from llama_orch.service.middleware import BearerAuth, CorrelationId
from llama_orch.service.orchestrator import Orchestrator
from llama_orch.service.runs import TaskRun
from llama_orch.service.state.batch import Batch
from llama_orch.service.state.redis_state import RedisState
from llama_orch.service.state.shared_pool import SharedPool
from llama_orch.service.wire import infer_done, infer_line, infer_tokens, read_model, sse_frames

__all__ = ["create_app", "openapi_document"]

logger = logging.getLogger("llama_orch.service")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_PING = b": ping\n\n"
_NDJSON_HEADERS = [(b"content-type", b"application/x-ndjson"), (b"cache-control", b"no-cache")]


def openapi_document() -> bytes:
    """The committed spec, bundled into one document by `python xtask.py regen`."""
    return resources.files("llama_orch_gen.orchestrator").joinpath("openapi.json").read_bytes()


def create_app(config: OrchestratorConfig, registry: AdapterRegistry) -> Starlette:
    cluster: Cluster | None = None
    if config.state_url:  # scale-out mode: the queue, slots, streams and cancels are shared in Redis
        orch = Orchestrator(config, registry, SharedPool)
        cluster = Cluster(orch, RedisState(config.state_url, config.state_password_env))
    else:
        orch = Orchestrator(config, registry)
    max_body = config.max_body_bytes or 1_048_576
    heartbeat_s = (config.sse_heartbeat_ms or 15_000) / 1000.0

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await orch.start()
        if cluster is not None:
            await cluster.start()
        try:
            yield
        finally:
            if cluster is not None:
                await cluster.stop()
            await orch.stop()

    async def submit(task: TaskRequest) -> TaskRun:
        if (repeated := orch.resubmitted(task)) is not None:
            return repeated
        if cluster is not None:
            return await cluster.submit(task)
        run = orch.submit(task)
        await asyncio.sleep(0)  # let the dispatched task send its engine request before the answer is written
        return run

    async def create_task(request: Request) -> Response:
        try:
            task = await read_model(request.scope, request.receive, TaskRequest, max_body)
        except ApiError as error:
            orch.count_rejection(error, None)
            raise
        run = await submit(task)
        admission = {
            "task_id": run.task_id,
            "queue_position": run.queue_position,
            "predicted_start_ms": run.predicted_start_ms,
            "backoff_ms": 0,
            "pool_id": run.pool_id,
            "streams": {"sse": f"/v1/tasks/{run.task_id}/stream"},
        }
        return JSONResponse(admission, status_code=202)

    async def cancel_task(request: Request) -> Response:
        task_id = _path_id(request, "task_id", "task")
        if not (await cluster.cancel(task_id) if cluster is not None else orch.cancel(task_id)):
            raise ApiError("NOT_FOUND", f"no task {task_id!r}", task_id=task_id)
        return Response(status_code=204)

    async def get_session(request: Request) -> Response:
        session_id = _path_id(request, "session_id", "session")
        if cluster is not None:
            await cluster.sessions.load(session_id)
        session = orch.sessions.get(session_id)
        if session is None:
            raise ApiError("NOT_FOUND", f"no session {session_id!r}")
        return _model(orch.sessions.info(session))

    async def delete_session(request: Request) -> Response:
        session_id = _path_id(request, "session_id", "session")
        if not (await cluster.sessions.forget(session_id) if cluster is not None else orch.sessions.delete(session_id)):
            raise ApiError("NOT_FOUND", f"no session {session_id!r}")
        return Response(status_code=204)

    async def capabilities(_: Request) -> Response:
        return _model(orch.capabilities())

    async def pool_health(request: Request) -> Response:
        return _model(orch.pool_health(request.path_params["pool_id"]))

    async def metrics(_: Request) -> Response:
        orch.refresh_gauges()
        if cluster is not None:
            await cluster.refresh_gauges()
        return Response(orch.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(_: Request) -> Response:
        return Response(openapi_document(), media_type="application/json")

    async def stream_task(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        seen = _last_seen(request)
        task_id = _path_id(request, "task_id", "task")
        if cluster is not None:
            await _shared_stream(cluster, task_id, seen, receive, send)
            return
        run = orch.attach(task_id, seen)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            writer = _SseWriter(send, heartbeat_s)
            batches = run.batches(seen)
            await _until_disconnect(receive, writer.write(batches, lambda: orch.delivered(run)), writer.heartbeats())
        finally:
            orch.detach(run, resumable=True)

    async def infer(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            request = await read_model(scope, receive, InferRequest, max_body)
        except ApiError as error:
            orch.count_rejection(error, None)
            raise
        task_id = (await submit(_infer_task(request))).task_id
        if cluster is not None:
            await _shared_infer(cluster, task_id, receive, send)
            return
        run = orch.attach(task_id)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _NDJSON_HEADERS})
            await _until_disconnect(receive, _write_ndjson(run.batches(), send, lambda: orch.delivered(run)))
        finally:
            orch.detach(run, resumable=False)  # /infer has no resume: a client that leaves cancels at once

    routes = [
        Route("/v1/tasks", create_task, methods=["POST"]),
        Route("/v1/tasks/{task_id}/stream", _Asgi(stream_task), methods=["GET"]),
        Route("/v1/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
        Route("/v1/sessions/{session_id}", get_session, methods=["GET"]),
        Route("/v1/sessions/{session_id}", delete_session, methods=["DELETE"]),
        Route("/v1/capabilities", capabilities, methods=["GET"]),
        Route("/v1/pools/{pool_id}/health", pool_health, methods=["GET"]),
        Route("/infer", _Asgi(infer), methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    middleware = [Middleware(CorrelationId)]
    token = token_from_env(config.auth_token_env, "auth_token_env")
    if token is not None:
        middleware.append(Middleware(BearerAuth, token=token, public=_public_paths(config), refuse=_error_response))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={ApiError: _handle, HTTPException: _handle, Exception: _handle},
    )
    app.state.orchestrator = orch
    return app


class _Asgi:
    """A plain ASGI endpoint for `Route` (Starlette wraps functions as request/response handlers)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


# -- streams ---------------------------------------------------------------------------------------------------


async def _shared_stream(cluster: Cluster, task_id: str, seen: int, receive: Receive, send: Send) -> None:
    """Scale-out mode: the task's Redis stream, from whichever instance runs it; leaving holds it for a resume."""
    batches = await cluster.open_stream(task_id, seen)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        writer = _SseWriter(send, cluster.heartbeat_s)
        await _until_disconnect(
            receive, writer.write(batches, _nothing), writer.heartbeats(), cluster.keep_reading(task_id)
        )
    finally:
        await cluster.reader_left(task_id)


async def _shared_infer(cluster: Cluster, task_id: str, receive: Receive, send: Send) -> None:
    """Scale-out mode `/infer`: as `_shared_stream`, but a client that leaves cancels at once (no resume)."""
    batches = await cluster.open_stream(task_id, -1)
    ended = False

    def delivered() -> None:
        nonlocal ended
        ended = True

    try:
        await send({"type": "http.response.start", "status": 200, "headers": _NDJSON_HEADERS})
        await _until_disconnect(receive, _write_ndjson(batches, send, delivered), cluster.keep_reading(task_id))
    finally:
        if not ended:
            await cluster.cancel(task_id, "disconnect")


def _nothing() -> None:
    """Scale-out mode forgets a finished task by its stream's expiry, not when a reader got the end."""


async def _until_disconnect(receive: Receive, writer: Awaitable[None], *helpers: Awaitable[None]) -> None:
    """Run `writer` (and its `helpers`, e.g. heartbeats) until it ends or the client disconnects (then it is
    canceled, which cancels the task)."""
    write = asyncio.ensure_future(writer)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    jobs = [write, asyncio.ensure_future(watch()), *map(asyncio.ensure_future, helpers)]
    try:
        await asyncio.wait({write, jobs[1]}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    if write.done() and not write.cancelled() and write.exception() is not None:
        raise write.exception()  # type: ignore[misc]


class _SseWriter:
    """Writes a task's SSE frames, and a heartbeat comment whenever nothing was written for `heartbeat_s`. Both
    run on one event loop and each `send` writes whole frames, so a heartbeat never splits a frame."""

    def __init__(self, send: Send, heartbeat_s: float) -> None:
        self._send = send
        self._heartbeat_s = heartbeat_s
        self._last = asyncio.get_running_loop().time()
        self._done = False

    async def write(self, batches: AsyncIterator[Batch], delivered: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        async for batch in batches:
            self._done = batch.final
            await _send_batch(batch, sse_frames(batch.first, batch.items), self._send, delivered)
            self._last = loop.time()

    async def heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._done:
            idle = loop.time() - self._last
            if idle < self._heartbeat_s:
                await asyncio.sleep(self._heartbeat_s - idle)
                continue
            self._last = loop.time()
            await self._send({"type": "http.response.body", "body": _PING, "more_body": True})


async def _write_ndjson(batches: AsyncIterator[Batch], send: Send, delivered: Callable[[], None]) -> None:
    text: list[str] = []
    async for batch in batches:
        lines: list[bytes] = []
        for item in batch.items:
            if isinstance(item, TokenRun):
                text += item.texts
                lines.append(infer_tokens(item))
                continue
            root = item.root
            if root.event == "end":
                end = root.data
                reason = end.finish_reason or "stop"
                lines.append(infer_done("".join(text), reason, end.tokens_in or 0, end.tokens_out))
            elif root.event == "error":
                status = ERROR_CODES[root.data.code].status
                lines.append(infer_line({"error": f"{root.data.code}: {root.data.message}", "code": status}))
        await _send_batch(batch, b"".join(lines), send, delivered)


async def _send_batch(batch: Batch, body: bytes, send: Send, delivered: Callable[[], None]) -> None:
    """One write per batch; the batch with the terminal event also ends the response (one write, not two)."""
    if batch.final:
        delivered()  # forget the task before the client can see the stream end and ask about it again
    await send({"type": "http.response.body", "body": body, "more_body": not batch.final})


def _last_seen(request: Request) -> int:
    """The number of the last event a resuming reader saw (`Last-Event-ID` wins over `?after=`); -1: none."""
    text = request.headers.get("last-event-id") or request.query_params.get("after")
    if text is None:
        return -1
    if not text.isdigit() or len(text) > 10:
        raise ApiError("INVALID_PARAMS", f"not an event id: {text[:32]!r}", field="after")
    return int(text)


def _infer_task(request: InferRequest) -> TaskRequest:
    """The `/infer` body as a task: 0 or absent `max_tokens`/`seed` mean the orchestrator's defaults."""
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "model_ref": request.model or None,
        "max_tokens": request.max_tokens or None,
        "seed": request.seed or None,
        "temperature": request.temperature,
        "top_p": request.top_p or None,
        "top_k": request.top_k,
        "stop": request.stop,
        "repeat_penalty": request.repeat_penalty or None,
    }
    return TaskRequest.model_validate({k: v for k, v in fields.items() if v is not None})


# -- errors ----------------------------------------------------------------------------------------------------


def _path_id(request: Request, name: str, what: str) -> str:
    value = str(request.path_params[name])
    if not _ID.match(value):
        raise ApiError("NOT_FOUND", f"no {what} {value[:64]!r}")
    return value


def _model(model: BaseModel) -> Response:
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


def _error_response(scope: Scope, error: ApiError) -> ASGIApp:
    """The envelope, or `{error, code}` on `/infer`."""
    headers = error.headers()
    if error.code == "UNAUTHENTICATED":
        headers["WWW-Authenticate"] = "Bearer"
    if scope["path"] == "/infer":
        return JSONResponse({"error": error.message, "code": error.status}, error.status, headers)
    return JSONResponse(error.envelope(), error.status, headers)


async def _handle(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, HTTPException) and exc.status_code == 405:
        allowed = _allowed_methods(request)
        error = ApiError("METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.url.path}")
        response = _error_response(request.scope, error)
        assert isinstance(response, Response)
        response.headers["Allow"] = ", ".join(allowed)  # RFC 9110 §15.5.6: a 405 lists what the resource allows
        return response
    elif isinstance(exc, HTTPException) and exc.status_code == 404:
        error = ApiError("NOT_FOUND", f"no route {request.url.path}")
    else:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        error = ApiError("INTERNAL", "internal error; see the orchestrator's log")
    response = _error_response(request.scope, error)
    assert isinstance(response, Response)
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method the routes of this path accept (a path may have one route per method)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE and isinstance(route, Route) and route.methods:
            methods |= route.methods
    return sorted(methods)


# -- configuration ---------------------------------------------------------------------------------------------


def _public_paths(config: OrchestratorConfig) -> Callable[[str], bool]:
    public_health = config.auth_public_health is not False
    public_metrics = config.auth_public_metrics is not False

    def public(path: str) -> bool:
        if path == "/openapi.json":
            return True
        if path == "/metrics":
            return public_metrics
        return public_health and path.startswith("/v1/pools/") and path.endswith("/health")

    return public
