"""The peer on the same route: LiteLLM's proxy and the orchestrator each relaying the engine's OpenAI-compatible
`/v1/completions`, beside that route read directly and through the byte proxy, in the same alternating rounds.

Both relays do the same engine work here (the orchestrator's llama.cpp adapter with `api: openai`); the native
route is the `relay` section's, a row of its own. Then each relay under the same concurrent load.
"""

from __future__ import annotations

from typing import Any

from llama_orch_devtools.bench import flows
from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.bench.measure import Side, concurrent, load_figures, reset_peak_rss
from llama_orch_devtools.bench.relay import compare


async def run(
    engine_port: int,
    proxy: tuple[int, int],
    orch: tuple[int, int],
    litellm: tuple[int, int],
    *,
    version: str,
    tokens: int,
    rounds: int,
    latency_samples: int,
    streams: int,
) -> dict[str, Any]:
    """`proxy`, `orch` (an orchestrator whose replica uses the OpenAI route) and `litellm` are (port, pid)."""
    relays = {
        "byte_proxy": (Side(proxy[0], flows.engine_openai, proxy[1]), "done"),
        "orchestrator": (Side(orch[0], flows.orchestrator, orch[1]), "end"),
        "infer": (Side(orch[0], flows.orchestrator_infer, orch[1]), "done"),
        "litellm": (Side(litellm[0], flows.litellm, litellm[1]), "done"),
    }
    # Warm-up of 3: LiteLLM builds its router on the first request.
    out = await compare(
        ("direct_openai", Side(engine_port, flows.engine_openai), "done"),
        relays,
        tokens=tokens,
        rounds=rounds,
        latency_samples=latency_samples,
    )
    single, ft = out["throughput"], out["first_token"]
    litellm_rate = single["litellm"]["tokens_per_s"]
    ours_added, theirs_added = ft["added_p50_ms"]["orchestrator"], ft["added_p50_ms"]["litellm"]
    load: dict[str, Any] = {}
    for name in ("orchestrator", "litellm"):
        side, terminal = relays[name]
        assert side.pid is not None
        reset_peak_rss(side.pid)
        batch, wall = await concurrent(side, tokens, streams, seed=30_000)
        load[name] = load_figures(batch, wall, tokens, terminal, side.pid)
        say(f"peer {streams} streams via {name}: {load[name]['aggregate_tokens_per_s']:.0f} tok/s")
    return {
        **out,
        "litellm_version": version,
        "orchestrator_vs_litellm": single["orchestrator"]["tokens_per_s"] / litellm_rate if litellm_rate else 0.0,
        # How many times further from direct LiteLLM's first token is than ours (added latency over added latency);
        # ours at or below direct's (within noise) is floored at 0.01 ms so the figure stays finite and honest.
        "first_token_closeness": theirs_added / max(ours_added, 0.01),
        "concurrent": {"streams": streams, **load},
        "concurrent_ratio": load["orchestrator"]["aggregate_tokens_per_s"]
        / max(load["litellm"]["aggregate_tokens_per_s"], 1e-9),
    }
