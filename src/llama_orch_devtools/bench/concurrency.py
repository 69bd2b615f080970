"""Many simultaneous streams through the orchestrator: throughput, gaps, memory, and nothing lost."""

from __future__ import annotations

from typing import Any

from llama_orch_devtools.bench import flows
from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.bench.measure import Side, concurrent, load_figures, reset_peak_rss


async def run(orch_port: int, orch_pid: int, *, levels: list[int], tokens: int) -> dict[str, Any]:
    side = Side(orch_port, flows.orchestrator)
    out: dict[str, Any] = {"tokens_per_stream": tokens, "levels": []}
    for streams in levels:
        reset_peak_rss(orch_pid)
        results, wall = await concurrent(side, tokens, streams)
        figures = load_figures(results, wall, tokens, "end", orch_pid)
        out["levels"].append(figures)
        say(
            f"concurrency {streams:4d}: {figures['aggregate_tokens_per_s']:.0f} tok/s, p99 gap "
            f"{figures['p99_gap_ms']:.2f} ms, peak RSS {figures['peak_rss_mib']:.0f} MiB, "
            f"errors {figures['errors']}, lost {figures['lost']}"
            + (f" (first error: {figures['first_error']})" if figures["first_error"] else "")
        )
    return out
