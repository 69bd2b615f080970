"""The peer: LiteLLM's proxy relaying the same simulator as the orchestrator, under the same load.

LiteLLM relays the engine's OpenAI surface (`/v1/chat/completions`), the orchestrator its native `/completion`;
each side's direct baseline is read too, and LiteLLM's relayed text is checked against the engine's own.
"""

from __future__ import annotations

from typing import Any

from llama_orch_devtools.bench import flows
from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.bench.measure import (
    Side,
    complete,
    concurrent,
    first_token,
    load_figures,
    reset_peak_rss,
    side_by_side,
    single_stream,
)
from llama_orch_devtools.bench.relay import LATENCY_TOKENS


async def run(
    engine_port: int,
    orch: tuple[int, int],
    litellm: tuple[int, int],
    *,
    version: str,
    tokens: int,
    rounds: int,
    latency_samples: int,
    streams: int,
) -> dict[str, Any]:
    """`orch` and `litellm` are (port, pid)."""
    relays = {"orchestrator": Side(orch[0], flows.orchestrator), "litellm": Side(litellm[0], flows.litellm)}
    sides = {"direct_openai": Side(engine_port, flows.engine_openai), **relays}
    await side_by_side(sides, LATENCY_TOKENS, 3)  # warm-up: LiteLLM builds its router on the first request

    results = await side_by_side(sides, tokens, rounds)
    single = {name: single_stream(rs) for name, rs in results.items()}
    litellm_rate = single["litellm"]["tokens_per_s"]
    text_ok = [
        complete(relayed, tokens, "done") and relayed.text == direct.text
        for direct, relayed in zip(results["direct_openai"], results["litellm"], strict=True)
    ]
    say(
        "peer 1 stream: "
        + ", ".join(f"{name} {figures['tokens_per_s']:.0f} tok/s" for name, figures in single.items())
        + f"; LiteLLM text complete in {sum(text_ok)}/{len(text_ok)}"
    )

    samples = await side_by_side(sides, LATENCY_TOKENS, latency_samples, seed=20_000)
    latency = {name: first_token(rs) for name, rs in samples.items()}
    say("peer first token p50: " + ", ".join(f"{n} {f['p50_ms']:.2f} ms" for n, f in latency.items()))

    load: dict[str, Any] = {}
    for name, (side, pid, terminal) in {
        "orchestrator": (relays["orchestrator"], orch[1], "end"),
        "litellm": (relays["litellm"], litellm[1], "done"),
    }.items():
        reset_peak_rss(pid)
        batch, wall = await concurrent(side, tokens, streams, seed=30_000)
        load[name] = load_figures(batch, wall, tokens, terminal, pid)
        say(f"peer {streams} streams via {name}: {load[name]['aggregate_tokens_per_s']:.0f} tok/s")
    return {
        "litellm_version": version,
        "tokens": tokens,
        "single_stream": single,
        "litellm_text_complete": {"complete": sum(text_ok), "streams": len(text_ok)},
        "orchestrator_vs_litellm": single["orchestrator"]["tokens_per_s"] / litellm_rate if litellm_rate else 0.0,
        "first_token": latency,
        "concurrent": {"streams": streams, **load},
        "concurrent_ratio": load["orchestrator"]["aggregate_tokens_per_s"]
        / max(load["litellm"]["aggregate_tokens_per_s"], 1e-9),
    }
