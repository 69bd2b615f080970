"""Relay throughput and added first-token latency: one fast simulator read directly vs through the orchestrator,
on both of its surfaces: `/v1/tasks` (POST, then GET the SSE stream: two requests) and `/infer` (one request,
as direct is). `compare` is the measurement itself, also used by the cluster section with another baseline."""

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
    return await compare(
        sides, ("direct", "stop"), RELAYED, tokens=tokens, rounds=rounds, latency_samples=latency_samples
    )


async def compare(
    sides: dict[str, Side],
    baseline: tuple[str, str],
    compared: dict[str, str],
    *,
    tokens: int,
    rounds: int,
    latency_samples: int,
) -> dict[str, Any]:
    """Throughput and first-token latency of every side, alternating, with ratios and added latency against the
    `baseline` side; each side named with the terminal event its complete streams end with."""
    base, base_terminal = baseline
    await side_by_side(sides, LATENCY_TOKENS, 3)  # warm every path: imports, first connections, caches

    streams = await side_by_side(sides, tokens, rounds)
    rates = {name: single_stream(results) for name, results in streams.items()}
    reference = rates[base]["tokens_per_s"]
    ratio = {name: rates[name]["tokens_per_s"] / reference if reference else 0.0 for name in compared}
    throughput: dict[str, Any] = {
        "tokens": tokens,
        **rates,
        "ratio": ratio,
        "complete": {
            base: sum(complete(r, tokens, base_terminal) for r in streams[base]),
            **{name: sum(complete(r, tokens, end) for r in streams[name]) for name, end in compared.items()},
        },
        # Same seed, same engine: every side must hand over exactly the baseline's text.
        "same_text": all(
            b.text == r.text for name in compared for b, r in zip(streams[base], streams[name], strict=True)
        ),
    }
    say(
        f"1 stream: {base} {reference:.0f} tok/s, "
        + ", ".join(f"{name} {rates[name]['tokens_per_s']:.0f} tok/s ({ratio[name]:.2f}x)" for name in compared)
    )

    samples = await side_by_side(sides, LATENCY_TOKENS, latency_samples, seed=10_000)
    firsts = {name: first_token(results) for name, results in samples.items()}
    added_p50 = {name: firsts[name]["p50_ms"] - firsts[base]["p50_ms"] for name in compared}
    added_p99 = {name: firsts[name]["p99_ms"] - firsts[base]["p99_ms"] for name in compared}
    latency = {**firsts, "added_p50_ms": added_p50, "added_p99_ms": added_p99}
    say(
        f"first token p50: {base} {firsts[base]['p50_ms']:.2f} ms, "
        + ", ".join(f"{name} +{added_p50[name]:.2f} ms" for name in compared)
    )
    return {"throughput": throughput, "first_token": latency}
