"""`--profile`: the orchestrator's time per token split by stage, for each of its two streaming surfaces.

Each surface gets an orchestrator of its own under cProfile (the figures of the other sections come from
unprofiled processes), streams the relay section's load through it alone, and is stopped so that it writes its
stats; `stages.split` then says where the time went.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from llama_orch_devtools.bench import flows, stack, stages
from llama_orch_devtools.bench.harness import say
from llama_orch_devtools.bench.measure import Side, side_by_side
from llama_orch_devtools.bench.relay import LATENCY_TOKENS

SURFACES = {"orchestrator": flows.orchestrator, "infer": flows.orchestrator_infer}


def run(engine_url: str, *, tokens: int, rounds: int, unprofiled: dict[str, float]) -> dict[str, Any]:
    """`unprofiled`: the relay section's CPU µs per token by surface (empty when it did not run)."""
    out: dict[str, Any] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    for surface, flow in SURFACES.items():
        stats = scratch / f"{surface}.prof"
        with stack.orchestrator(engine_url, streams=4, profile=stats) as orch:
            side = {surface: Side(orch.port, flow)}
            asyncio.run(side_by_side(side, LATENCY_TOKENS, 3))
            results = asyncio.run(side_by_side(side, tokens, rounds))[surface]
        delivered = sum(len(r.token_times) for r in results) + 3 * LATENCY_TOKENS
        out[surface] = stages.per_token(stages.split(stats), delivered, unprofiled.get(surface))
        say(
            f"profile {surface} (stats in {stats}): "
            + ", ".join(
                f"{stage} {us:.1f}"
                for stage, us in (
                    out[surface]["scaled_us_per_token"]
                    if unprofiled.get(surface)
                    else out[surface]["profiled_us_per_token"]
                ).items()
                if us
            )
            + " µs/token"
        )
    return out
