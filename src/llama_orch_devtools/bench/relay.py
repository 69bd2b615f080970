"""Relay throughput and added first-token latency: one fast simulator read directly vs through the orchestrator,
on both of its surfaces: `/v1/tasks` (POST, then GET the SSE stream: two requests) and `/infer` (one request,
as direct is)."""

from __future__ import annotations

from typing import Any

from llama_orch_devtools.bench import flows
from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.bench.measure import Side, complete, first_token, side_by_side, single_stream

# A first-token sample streams only this many tokens: the latency is the point, not the stream.
LATENCY_TOKENS = 4
# Relayed sides and the terminal each one ends with when complete.
RELAYED = {"orchestrator": "end", "infer": "done"}


async def run(engine_port: int, orch_port: int, *, tokens: int, rounds: int, latency_samples: int) -> dict[str, Any]:
    sides = {
        "direct": Side(engine_port, flows.engine_native),
        "orchestrator": Side(orch_port, flows.orchestrator),
        "infer": Side(orch_port, flows.orchestrator_infer),
    }
    await side_by_side(sides, LATENCY_TOKENS, 3)  # warm every path: imports, first connections, caches

    streams = await side_by_side(sides, tokens, rounds)
    rates = {name: single_stream(results) for name, results in streams.items()}
    direct = rates["direct"]["tokens_per_s"]
    ratio = {name: rates[name]["tokens_per_s"] / direct if direct else 0.0 for name in RELAYED}
    throughput: dict[str, Any] = {
        "tokens": tokens,
        **rates,
        "ratio": ratio,
        "complete": {
            "direct": sum(complete(r, tokens, "stop") for r in streams["direct"]),
            **{name: sum(complete(r, tokens, end) for r in streams[name]) for name, end in RELAYED.items()},
        },
        # Same seed, same engine: the relay must hand over exactly the engine's text.
        "same_text": all(
            d.text == r.text for name in RELAYED for d, r in zip(streams["direct"], streams[name], strict=True)
        ),
    }
    say(
        f"relay 1 stream: direct {direct:.0f} tok/s, /v1/tasks {rates['orchestrator']['tokens_per_s']:.0f} tok/s "
        f"({ratio['orchestrator']:.2f}x), /infer {rates['infer']['tokens_per_s']:.0f} tok/s ({ratio['infer']:.2f}x)"
    )

    samples = await side_by_side(sides, LATENCY_TOKENS, latency_samples, seed=10_000)
    firsts = {name: first_token(results) for name, results in samples.items()}
    added_p50 = {name: firsts[name]["p50_ms"] - firsts["direct"]["p50_ms"] for name in RELAYED}
    added_p99 = {name: firsts[name]["p99_ms"] - firsts["direct"]["p99_ms"] for name in RELAYED}
    latency = {**firsts, "added_p50_ms": added_p50, "added_p99_ms": added_p99}
    say(
        f"first token p50: direct {firsts['direct']['p50_ms']:.2f} ms, /v1/tasks +{added_p50['orchestrator']:.2f} ms, "
        f"/infer +{added_p50['infer']:.2f} ms"
    )
    return {"throughput": throughput, "first_token": latency}
