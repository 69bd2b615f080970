"""Relay throughput and added first-token latency: one fast simulator read directly vs through the orchestrator."""

from __future__ import annotations

from typing import Any

from llama_orch.devtools.bench import flows
from llama_orch.devtools.bench.harness import say
from llama_orch.devtools.bench.measure import Side, complete, first_token, side_by_side, single_stream

# A first-token sample streams only this many tokens: the latency is the point, not the stream.
LATENCY_TOKENS = 4


async def run(engine_port: int, orch_port: int, *, tokens: int, rounds: int, latency_samples: int) -> dict[str, Any]:
    sides = {"direct": Side(engine_port, flows.engine_native), "orchestrator": Side(orch_port, flows.orchestrator)}
    await side_by_side(sides, LATENCY_TOKENS, 3)  # warm both paths: imports, first connections, JIT-free caches

    streams = await side_by_side(sides, tokens, rounds)
    direct, relayed = single_stream(streams["direct"]), single_stream(streams["orchestrator"])
    throughput = {
        "tokens": tokens,
        "direct": direct,
        "orchestrator": relayed,
        "ratio": relayed["tokens_per_s"] / direct["tokens_per_s"] if direct["tokens_per_s"] else 0.0,
        "complete": {
            "direct": sum(complete(r, tokens, "stop") for r in streams["direct"]),
            "orchestrator": sum(complete(r, tokens, "end") for r in streams["orchestrator"]),
        },
        # Same seed, same engine: the relay must hand over exactly the engine's text.
        "same_text": all(d.text == o.text for d, o in zip(streams["direct"], streams["orchestrator"], strict=True)),
    }
    say(
        f"relay 1 stream: direct {direct['tokens_per_s']:.0f} tok/s, orchestrator {relayed['tokens_per_s']:.0f} "
        f"tok/s ({throughput['ratio']:.2f}x)"
    )

    samples = await side_by_side(sides, LATENCY_TOKENS, latency_samples, seed=10_000)
    direct_ft, relayed_ft = first_token(samples["direct"]), first_token(samples["orchestrator"])
    latency = {
        "direct": direct_ft,
        "orchestrator": relayed_ft,
        "added_p50_ms": relayed_ft["p50_ms"] - direct_ft["p50_ms"],
        "added_p99_ms": relayed_ft["p99_ms"] - direct_ft["p99_ms"],
    }
    say(
        f"first token: direct p50 {direct_ft['p50_ms']:.2f} ms, orchestrator p50 {relayed_ft['p50_ms']:.2f} ms "
        f"(+{latency['added_p50_ms']:.2f} ms p50, +{latency['added_p99_ms']:.2f} ms p99)"
    )
    return {"throughput": throughput, "first_token": latency}
