"""Stream decoding: the generated client's SSE decoder vs httpx-sse's vs the one in the `openai` package.

All three read the same recorded bytes (a long llama.cpp `/completion` stream) through the same kind of
`httpx.Response`, chunked two ways: one chunk per event (a live token stream) and 1448-byte segments (a TCP
segment's payload, a backlog). "frames" is bytes -> (event, data) strings, the comparable part; "json" adds
`json.loads` per event for the peers and the generated client's typed, validated items (what each hands to
its caller).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import httpx_sse
from llama_orch_gen.engines.llamacpp.api.native.completion import STREAM_FORMAT
from openai._streaming import SSEDecoder as OpenAISSEDecoder

from llama_orch_devtools.bench.harness import say
from llama_orch_runtime.streaming import SSEDecoder, SyncStream

# Token texts as a real tiny-model stream has them: multi-byte, leading spaces, all different neighbours.
_WORDS = [
    "Europe",
    "General",
    " histor",
    " dinast",
    " node",
    " SQLite",
    " импе",
    "uing",
    " results",
    ">{",
    " 日本",
    "é",
]
SEGMENT = 1448


def recorded_stream(events: int) -> list[bytes]:
    """A llama.cpp native stream in the server's exact framing, one `bytes` per event."""
    out = []
    for i in range(events):
        chunk = {
            "index": 0,
            "content": _WORDS[i % len(_WORDS)] if i < events - 1 else "",
            "tokens": [1000 + i % 30000],
            "stop": i == events - 1,
            "id_slot": -1,
            "tokens_predicted": i + 1,
            "tokens_evaluated": 3,
        }
        out.append(b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")
    return out


def segments(events: list[bytes], size: int = SEGMENT) -> list[bytes]:
    body = b"".join(events)
    return [body[i : i + size] for i in range(0, len(body), size)]


def _response(chunks: list[bytes]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))


def generated_frames(chunks: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    out: list[str] = []
    for chunk in _response(chunks).iter_bytes():
        out += [data for _, data in decoder.feed(chunk)]
    return out + [data for _, data in decoder.close()]


def httpx_sse_frames(chunks: list[bytes]) -> list[str]:
    return [sse.data for sse in httpx_sse.EventSource(_response(chunks)).iter_sse()]


def openai_frames(chunks: list[bytes]) -> list[str]:
    return [sse.data for sse in OpenAISSEDecoder().iter_bytes(_response(chunks).iter_bytes())]


def generated_typed(chunks: list[bytes]) -> list[Any]:
    return list(SyncStream(_response(chunks), STREAM_FORMAT))


def httpx_sse_json(chunks: list[bytes]) -> list[Any]:
    return [json.loads(sse.data) for sse in httpx_sse.EventSource(_response(chunks)).iter_sse()]


def openai_json(chunks: list[bytes]) -> list[Any]:
    return [json.loads(sse.data) for sse in OpenAISSEDecoder().iter_bytes(_response(chunks).iter_bytes())]


LEVELS: dict[str, dict[str, Callable[[list[bytes]], list[Any]]]] = {
    "frames": {"generated": generated_frames, "httpx-sse": httpx_sse_frames, "openai": openai_frames},
    "json": {"generated": generated_typed, "httpx-sse": httpx_sse_json, "openai": openai_json},
}


def _timed(decode: Callable[[list[bytes]], list[Any]], chunks: list[bytes]) -> float:
    started = time.perf_counter()
    decode(chunks)
    return time.perf_counter() - started


def run(events: int, rounds: int) -> dict[str, Any]:
    """Events/s for each decoder, level and chunking (best of `rounds`, decoders interleaved in each round)."""
    per_event = recorded_stream(events)
    chunkings: dict[str, list[bytes]] = {"per-event": per_event, f"{SEGMENT}-byte": segments(per_event)}
    expected = [chunk[6:-2].decode() for chunk in per_event]
    results: dict[str, Any] = {"events": events, "bytes": sum(map(len, per_event)), "rounds": rounds, "levels": {}}
    for level, decoders in LEVELS.items():
        for chunking, chunks in chunkings.items():
            for name, decode in decoders.items():  # same bytes, same answer, or the comparison means nothing
                got = decode(chunks)
                if len(got) != events or (level == "frames" and got != expected):
                    raise AssertionError(f"{name} decoded {len(got)} of {events} events ({level}, {chunking})")
            best = {name: float("inf") for name in decoders}
            for _ in range(rounds):  # interleaved, so a noisy moment hurts every decoder alike
                for name, decode in decoders.items():
                    best[name] = min(best[name], _timed(decode, chunks))
            rates = {name: events / seconds for name, seconds in best.items()}
            results["levels"].setdefault(level, {})[chunking] = {
                "events_per_s": rates,
                "vs_httpx_sse": rates["generated"] / rates["httpx-sse"],
                "vs_openai": rates["generated"] / rates["openai"],
            }
            say(f"decoding {level:6} {chunking:9}: " + ", ".join(f"{n} {r / 1000:.0f}k ev/s" for n, r in rates.items()))
    return results
