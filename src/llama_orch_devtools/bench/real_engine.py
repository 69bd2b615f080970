"""The real engine: llama-server with the tiny model, read directly vs through the orchestrator.

Here the engine, not the relay, sets the pace (~1k tokens/s on one core), so the ratio shows what the relay costs
when the engine is real: it should be ~1.
"""

from __future__ import annotations

from typing import Any

from llama_orch_devtools.bench import flows
from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.bench.measure import Side, complete, first_token, pair_ratios, side_by_side, single_stream
from llama_orch_devtools.bench.relay import LATENCY_TOKENS


async def run(engine_port: int, orch_port: int, *, tokens: int, rounds: int, version: str) -> dict[str, Any]:
    sides = {"direct": Side(engine_port, flows.engine_native), "orchestrator": Side(orch_port, flows.orchestrator)}
    await side_by_side(sides, LATENCY_TOKENS, 2)
    results = await side_by_side(sides, tokens, rounds)
    direct, relayed = single_stream(results["direct"]), single_stream(results["orchestrator"])
    pairs = pair_ratios(results["direct"], results["orchestrator"])
    say(f"real engine: direct {direct['tokens_per_s']:.0f} tok/s, orchestrator {relayed['tokens_per_s']:.0f} tok/s")
    return {
        "engine_version": version,
        "tokens": tokens,
        "direct": direct,
        "orchestrator": relayed,
        "ratio": pairs["median"],
        "pairs": pairs,
        "first_token": {name: first_token(rs) for name, rs in results.items()},
        "complete": {
            "direct": sum(complete(r, tokens, "stop") for r in results["direct"]),
            "orchestrator": sum(complete(r, tokens, "end") for r in results["orchestrator"]),
        },
        # Greedy on both sides: the same text, or the two sides did different work.
        "same_text": all(d.text == o.text for d, o in zip(results["direct"], results["orchestrator"], strict=True)),
    }
