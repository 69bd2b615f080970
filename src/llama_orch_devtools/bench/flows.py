"""One stream, read the way each side is meant to be used, timed from the first request byte.

A `Flow` reads `n` tokens with a seed on a persistent connection: directly from the engine (native or OpenAI
surface; through the byte proxy it is the same flow on the proxy's port), through the orchestrator (POST /v1/tasks,
then GET its stream; or one POST /infer), or through LiteLLM's proxy.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from llama_orch_devtools.bench.client import (
    Connection,
    HttpError,
    StreamResult,
    infer_stream,
    llamacpp_native,
    openai_stream,
    orchestrator_stream,
)

Flow = Callable[[Connection, int, int], Awaitable[StreamResult]]
PROMPT = "Benchmark the relay"
# The sampling the orchestrator asks llama.cpp for on a default task (temperature 0 = greedy), so that a real
# engine does the same work, and gives the same text, on both sides.
GREEDY = {"temperature": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}


async def engine_native(conn: Connection, n: int, seed: int) -> StreamResult:
    body = {"prompt": PROMPT, "n_predict": n, "seed": seed, "stream": True, **GREEDY}
    return await conn.stream("POST", "/completion", body, llamacpp_native, _now())


async def engine_openai(conn: Connection, n: int, seed: int) -> StreamResult:
    """The engine's own OpenAI-compatible `/v1/completions`: the route both relays take on the OpenAI side (the
    orchestrator's llama.cpp adapter with `api: openai`, LiteLLM's `text-completion-openai` provider), read directly.
    Through the byte proxy too, as the same request."""
    return await conn.stream("POST", "/v1/completions", completion(n, seed), openai_stream, _now())


async def litellm(conn: Connection, n: int, seed: int) -> StreamResult:
    """LiteLLM's proxy `/v1/completions`, routed to the engine's `/v1/completions`."""
    return await conn.stream("POST", "/v1/completions", completion(n, seed), openai_stream, _now())


def completion(n: int, seed: int) -> dict[str, object]:
    # Only what every OpenAI-compatible relay forwards as it is: the simulator's tokens follow (prompt, seed, limit).
    return {"model": "bench", "prompt": PROMPT, "max_tokens": n, "seed": seed, "stream": True}


async def orchestrator_infer(conn: Connection, n: int, seed: int) -> StreamResult:
    """The orchestrator's one-request surface: `POST /infer` answers with the task's tokens as JSON lines."""
    body = {"prompt": PROMPT, "max_tokens": n, "seed": seed}
    result = await conn.stream("POST", "/infer", body, infer_stream, _now(), ndjson=True)
    result.accepted = result.error is None
    return result


async def orchestrator(conn: Connection, n: int, seed: int) -> StreamResult:
    """Submit, then read the task's stream. A refused submission is an error, not a lost task: `accepted`
    tells them apart for the concurrency figures."""
    return await _submit_then_read(conn, conn, n, seed)


def across(submit: Connection) -> Flow:
    """Scale-out mode's cross-instance path: submit on one instance (`submit`), read the stream from another (the
    flow's own connection)."""

    async def flow(conn: Connection, n: int, seed: int) -> StreamResult:
        return await _submit_then_read(submit, conn, n, seed)

    return flow


async def _submit_then_read(submit: Connection, read: Connection, n: int, seed: int) -> StreamResult:
    result = _now()
    status, admission = await submit.json("POST", "/v1/tasks", {"prompt": PROMPT, "max_tokens": n, "seed": seed})
    if status != 202:
        result.error = f"POST /v1/tasks: HTTP {status}: {admission}"
        return result
    result.accepted = True
    return await read.stream("GET", f"/v1/tasks/{admission['task_id']}/stream", None, orchestrator_stream, result)


def _now() -> StreamResult:
    return StreamResult(time.perf_counter())


async def guarded(flow: Flow, conn: Connection, n: int, seed: int) -> StreamResult:
    """Run a flow; a broken connection becomes the stream's error instead of ending the whole run."""
    started = time.perf_counter()
    try:
        return await flow(conn, n, seed)
    except (HttpError, OSError, ValueError, KeyError) as exc:
        await conn.close()
        return StreamResult(started, error=f"{exc.__class__.__name__}: {exc}")
