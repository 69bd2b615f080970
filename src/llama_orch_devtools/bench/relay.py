"""Relays side by side with the engine they relay, one stream at a time, in alternating pairs.

`compare` is every single-stream comparison of the bench: the direct reading and each relay of the same engine
route, in the same rounds, read by the same client. It reports per relay the median and spread of the pair ratios
(tokens/s relayed / direct, pair by pair), the relay's CPU per token, and the added first-token latency.

The `relay` section is the native route: llama.cpp `/completion` read directly, through the byte proxy (the
physical reference: bytes forwarded, nothing understood), and through the orchestrator on both of its surfaces:
`/v1/tasks` (POST, then GET the SSE stream: two requests) and `/infer` (one request, as direct is).
"""

from __future__ import annotations

from typing import Any

from llama_orch_devtools.bench import flows
from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.bench.measure import Side, complete, first_token, pair_ratios, side_by_side, single_stream

# A first-token sample streams only this many tokens: the latency is the point, not the stream.
LATENCY_TOKENS = 4


async def compare(
    direct: tuple[str, Side, str],
    relays: dict[str, tuple[Side, str]],
    *,
    tokens: int,
    rounds: int,
    latency_samples: int,
    warmup: int = 3,
) -> dict[str, Any]:
    """`direct` is (name, side, terminal); `relays` maps a name to (side, terminal), the terminal each side's
    complete stream ends with."""
    direct_name, direct_side, direct_end = direct
    sides = {direct_name: direct_side, **{name: side for name, (side, _) in relays.items()}}
    ends = {direct_name: direct_end, **{name: end for name, (_, end) in relays.items()}}
    await side_by_side(sides, LATENCY_TOKENS, warmup)  # warm every path: imports, first connections, caches

    streams = await side_by_side(sides, tokens, rounds)
    rates = {name: single_stream(results) for name, results in streams.items()}
    pairs = {name: pair_ratios(streams[direct_name], streams[name]) for name in relays}
    throughput: dict[str, Any] = {
        "tokens": tokens,
        **rates,
        "ratio": {name: figures["median"] for name, figures in pairs.items()},
        "pairs": pairs,
        "complete": {name: sum(complete(r, tokens, ends[name]) for r in results) for name, results in streams.items()},
        # Same seed, same engine: each relay must hand over exactly the engine's text.
        "same_text": {
            name: all(d.text == r.text for d, r in zip(streams[direct_name], streams[name], strict=True))
            for name in relays
        },
    }
    say(
        f"1 stream: {direct_name} {rates[direct_name]['tokens_per_s']:.0f} tok/s; "
        + ", ".join(
            f"{name} {rates[name]['tokens_per_s']:.0f} ({pairs[name]['median']:.2f}x, "
            f"{pairs[name]['min']:.2f}-{pairs[name]['max']:.2f})"
            for name in relays
        )
    )

    samples = await side_by_side(sides, LATENCY_TOKENS, latency_samples, seed=10_000)
    firsts = {name: first_token(results) for name, results in samples.items()}
    added_p50 = {name: firsts[name]["p50_ms"] - firsts[direct_name]["p50_ms"] for name in relays}
    added_p99 = {name: firsts[name]["p99_ms"] - firsts[direct_name]["p99_ms"] for name in relays}
    say(
        f"first token p50: {direct_name} {firsts[direct_name]['p50_ms']:.2f} ms; "
        + ", ".join(f"{name} +{added:.2f} ms" for name, added in added_p50.items())
    )
    return {
        "direct": direct_name,
        "throughput": throughput,
        "first_token": {**firsts, "added_p50_ms": added_p50, "added_p99_ms": added_p99},
    }


async def run(
    engine_port: int,
    proxy: tuple[int, int],
    orch: tuple[int, int],
    *,
    tokens: int,
    rounds: int,
    latency_samples: int,
) -> dict[str, Any]:
    """`proxy` and `orch` (the orchestrator relaying the engine's native route) are (port, pid)."""
    port, pid = orch
    return await compare(
        ("direct", Side(engine_port, flows.engine_native), "stop"),
        {
            "byte_proxy": (Side(proxy[0], flows.engine_native, proxy[1]), "stop"),
            "orchestrator": (Side(port, flows.orchestrator, pid), "end"),
            "infer": (Side(port, flows.orchestrator_infer, pid), "done"),
        },
        tokens=tokens,
        rounds=rounds,
        latency_samples=latency_samples,
    )
