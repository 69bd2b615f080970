"""The whole fault list against every engine adapter (wire-exact fakes over `httpx.MockTransport`): each fault
yields exactly one terminal event with the right code, and never hangs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from llama_orch_gen.contracts.events import EndEvent, ErrorEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.http_policy import HttpPolicy
from tests.adapters.helpers import GUARD_S, check_invariants, run_task
from tests.adapters.wire_fakes import DIALECTS, TOKENS, Dialect, Fake, refused

FAST = HttpPolicy(
    first_token_s=0.3,
    inter_token_s=0.3,
    max_attempts=3,
    backoff_base_s=0.001,
    backoff_cap_s=0.005,
    max_retry_after_s=0.5,
)
STALL = 3600.0
Script = Callable[[Fake], list[Callable[[], httpx.Response]]]

# fault → (the engine's behaviour, the expected terminal code, the stream calls the adapter must make)
FAULTS: dict[str, tuple[Script, str, int]] = {
    "refused": (lambda f: [refused()], "POOL_UNAVAILABLE", 3),
    "loading": (lambda f: [f.status(503)], "POOL_UNREADY", 3),
    "429": (lambda f: [f.status(429, {"Retry-After": "2"})], "ADMISSION_REJECT", 1),
    "5xx_then_success": (lambda f: [f.status(500), f.status(502), f.ok()], "end:stop", 3),
    "429_then_success": (lambda f: [f.status(429, {"Retry-After": "0"}), f.ok()], "end:stop", 2),
    "4xx_not_retried": (lambda f: [f.status(400), f.ok()], "INVALID_PARAMS", 1),
    "401": (lambda f: [f.status(401), f.ok()], "UPSTREAM_AUTH", 1),
    "stall_before_first_token": (lambda f: [f.stream([STALL])], "DECODE_TIMEOUT", 1),
    "stall_mid_stream": (lambda f: [f.stream([*f.tokens(2), STALL])], "DECODE_TIMEOUT", 1),
    "reset_mid_stream": (
        lambda f: [f.stream([*f.tokens(2), httpx.RemoteProtocolError("peer closed connection")])],
        "WORKER_RESET",
        1,
    ),
    "malformed_chunk": (lambda f: [f.stream([*f.tokens(2), b'data: {"index":\n\n'])], "WORKER_RESET", 1),
    "in_stream_error": (lambda f: [f.stream([*f.tokens(2), f.dialect.in_stream_error])], "INTERNAL", 1),
    "missing_terminal_chunk": (lambda f: [f.stream(f.tokens(3))], "WORKER_RESET", 1),
    # The engine sends its final chunk and keeps the body open: the task ends at the final chunk.
    "final_chunk_then_held_open": (
        lambda f: [f.stream([*f.tokens(len(TOKENS)), f.dialect.final(len(TOKENS)), STALL])],
        "end:stop",
        1,
    ),
    "5xx_every_attempt": (lambda f: [f.status(500)], "WORKER_RESET", 3),
    "413_not_retried": (lambda f: [f.status(413), f.ok()], "INVALID_PARAMS", 1),
    "422_not_retried": (lambda f: [f.status(422), f.ok()], "INVALID_PARAMS", 1),
    # An OpenAI-style engine sends `finish_reason` but neither the usage chunk nor `[DONE]`.
    "finish_reason_then_held_open": (
        lambda f: [f.stream([*f.tokens(len(TOKENS)), f.dialect.final(len(TOKENS)).split(b"\n\n")[0] + b"\n\n", STALL])],
        "end:stop",
        1,
    ),
}


def _with_unknown_members(part: bytes) -> bytes:
    """Every JSON object payload of `part` with members no engine release has sent (yet)."""
    lines = []
    for line in part.split(b"\n"):
        prefix, _, payload = line.partition(b":")
        if prefix == b"data" and payload.strip().startswith(b"{"):
            data = json.loads(payload)
            data.update(x_future_field={"nested": [1, 2]}, x_future_flag=True)
            line = prefix + b": " + json.dumps(data).encode()
        lines.append(line)
    return b"\n".join(lines)


def _whole(f: Fake) -> bytes:
    return b"".join(f.tokens(len(TOKENS))) + f.dialect.final(len(TOKENS))


# Engine behaviour within the protocols: every one of these is a normal `end`.
FAULTS.update(
    {
        "unknown_members": (lambda f: [f.stream([_with_unknown_members(_whole(f))])], "end:stop", 1),
        "engine_comments": (
            lambda f: [f.stream([b": ping\n\n" + t for t in f.tokens(len(TOKENS))] + [f.dialect.final(len(TOKENS))])],
            "end:stop",
            1,
        ),
        "crlf_line_ends": (lambda f: [f.stream([_whole(f).replace(b"\n", b"\r\n")])], "end:stop", 1),
        "one_byte_reads": (lambda f: [f.stream([bytes([b]) for b in _whole(f)])], "end:stop", 1),
        "slow_tokens": (
            lambda f: [
                f.stream([x for t in f.tokens(len(TOKENS)) for x in (0.05, t)] + [f.dialect.final(len(TOKENS))])
            ],
            "end:stop",
            1,
        ),
    }
)
# Triton's stream has no end marker (EOF is its normal end), so a stream cut cleanly cannot be told from a
# finished one; a connection cut mid-body is still WORKER_RESET (reset_mid_stream).
EXCEPTIONS = {
    ("triton", "missing_terminal_chunk"): "end:stop",
    ("triton", "final_chunk_then_held_open"): "DECODE_TIMEOUT",  # no final chunk: a held body is a stall
    ("triton", "finish_reason_then_held_open"): "DECODE_TIMEOUT",
}


def task() -> TaskRequest:
    return TaskRequest(task_id="t-1", prompt="Hello", max_tokens=64)


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_fault(dialect: Dialect, fault: str) -> None:
    script, code, calls = FAULTS[fault]
    fake = Fake(dialect, [])
    fake.script = script(fake)
    adapter = fake.adapter(FAST)
    outcome = await run_task(adapter, task())
    await adapter.aclose()
    assert outcome.code == EXCEPTIONS.get((dialect.engine, fault), code)
    assert fake.calls == calls
    assert all(fake.closed), "an engine response was left open"
    if isinstance(outcome.terminal, ErrorEvent):
        assert outcome.terminal.data.engine == dialect.engine
    if fault == "429":
        assert outcome.terminal.data.retry_after_ms == 2000  # type: ignore[union-attr]
    if outcome.code == "end:stop":
        assert outcome.text == "".join(TOKENS) or dialect.engine == "triton"


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_happy_stream_maps_the_engine_numbers(dialect: Dialect) -> None:
    fake = Fake(dialect, [])
    fake.script = [fake.ok()]
    adapter = fake.adapter(FAST)
    outcome = await run_task(adapter, task())
    await adapter.aclose()
    assert outcome.text == "".join(TOKENS)
    end = outcome.terminal
    assert isinstance(end, EndEvent) and end.data.finish_reason == "stop"
    if dialect.engine != "triton":
        assert end.data.tokens_in == 3
    started = outcome.events[0].root
    assert started.event == "started" and started.data.engine_version != "unknown"


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_consumer_cancel_closes_the_engine_response(dialect: Dialect) -> None:
    fake = Fake(dialect, [])
    fake.script = [fake.stream([*fake.tokens(2), STALL])]
    adapter = fake.adapter(HttpPolicy())
    events = []

    async def consume() -> None:
        async for event in adapter.submit(task()):
            events.append(event)

    runner = asyncio.create_task(consume())
    async with asyncio.timeout(GUARD_S):
        while len(events) < 3:  # started + 2 tokens, then the engine stalls
            await asyncio.sleep(0.01)
        assert await adapter.cancel("t-1")
        await runner
    check_invariants(events)
    assert [e.root.event for e in events] == ["started", "token", "token", "end"]
    assert events[-1].root.data.finish_reason == "canceled"  # type: ignore[union-attr]
    assert fake.closed == [True]
    await adapter.aclose()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_consumer_abandoning_the_stream_closes_the_engine_response(dialect: Dialect) -> None:
    fake = Fake(dialect, [])
    fake.script = [fake.stream([*fake.tokens(2), STALL])]
    adapter = fake.adapter(HttpPolicy())
    stream = adapter.submit(task())
    async with asyncio.timeout(GUARD_S):
        async for event in stream:
            if event.root.event == "token":
                break
        await stream.aclose()  # type: ignore[attr-defined]
    assert fake.closed == [True]
    await adapter.aclose()
