"""`llama-orch serve --workers N` at N = 1 and N = 2, both in scale-out mode (each on its own database of one
throwaway Redis), under the same concurrent load, in alternating rounds.

On this 2-core machine the engine, the load generator and the workers share the same cores, so a second worker
can only take what the others leave idle; the figures say how much that is here. The cores each group used
(its processes' CPU time over the round) show where the limit is.
"""

from __future__ import annotations

import statistics
from typing import Any

from llama_orch_devtools.bench import flows
from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.bench.machine_load import descendants, process_cpu_s
from llama_orch_devtools.bench.measure import Side, concurrent, load_figures


async def run(groups: dict[int, tuple[int, int]], *, streams: int, tokens: int, rounds: int) -> dict[str, Any]:
    """`groups` maps N to the (port, pid) of `serve --workers N`."""
    per: dict[int, list[dict[str, Any]]] = {n: [] for n in groups}
    for r in range(rounds):
        order = list(groups) if r % 2 == 0 else list(reversed(groups))
        for n in order:
            port, pid = groups[n]
            processes = descendants(pid)
            cpu = sum(process_cpu_s(p) for p in processes)
            results, wall = await concurrent(Side(port, flows.orchestrator), tokens, streams, seed=40_000 + r)
            figures = load_figures(results, wall, tokens, "end", pid)
            figures["cores"] = (sum(process_cpu_s(p) for p in processes) - cpu) / wall if wall > 0 else 0.0
            del figures["peak_rss_mib"]  # the supervising parent's alone: not the group's
            per[n].append(figures)
    summary = {
        str(n): {
            "aggregate_tokens_per_s": statistics.median(f["aggregate_tokens_per_s"] for f in runs),
            "first_token_p99_ms": statistics.median(f["first_token_p99_ms"] for f in runs),
            "cores": statistics.median(f["cores"] for f in runs),
            "errors": sum(f["errors"] for f in runs),
            "lost": sum(f["lost"] for f in runs),
            "rounds": runs,
        }
        for n, runs in per.items()
    }
    one, two = per[1], per[2]
    ratios = sorted(b["aggregate_tokens_per_s"] / a["aggregate_tokens_per_s"] for a, b in zip(one, two, strict=True))
    out: dict[str, Any] = {"streams": streams, "tokens_per_stream": tokens, "workers": summary}
    out["ratio_2_vs_1"] = {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]}
    say(
        f"workers at {streams} streams: "
        + ", ".join(
            f"N={n} {s['aggregate_tokens_per_s']:.0f} tok/s on {s['cores']:.2f} cores" for n, s in summary.items()
        )
        + f"; N=2/N=1 {out['ratio_2_vs_1']['median']:.2f}x"
    )
    return out
