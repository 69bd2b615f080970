"""The cost of scale-out mode (`--state-url`): the same relay, one fast simulator stream on `/v1/tasks`, through
one in-memory instance, one instance on Redis, and two instances on Redis (submitted on one, read from the other),
alternating; tokens/s and first-token latency against the in-memory instance."""

from __future__ import annotations

from typing import Any

from llama_orch_devtools.bench import flows
from llama_orch_devtools.bench.client import Connection
from llama_orch_devtools.bench.measure import HOST, Side
from llama_orch_devtools.bench.relay import compare

# Side names, as results.json and results.md carry them.
SIDES = {"redis": "one instance on Redis", "redis_across": "two instances on Redis (submit on A, read from B)"}


async def run(
    memory: tuple[int, int],
    redis: tuple[tuple[int, int], tuple[int, int]],
    *,
    tokens: int,
    rounds: int,
    latency_samples: int,
) -> dict[str, Any]:
    """`memory` and each of the two Redis instances `redis` are (port, pid). Across instances the relaying is
    shared by two processes, so no one process's CPU per token is reported for it."""
    (a, a_pid), (b, _) = redis
    submit = Connection(HOST, a)
    try:
        return await compare(
            ("memory", Side(memory[0], flows.orchestrator, memory[1]), "end"),
            {
                "redis": (Side(a, flows.orchestrator, a_pid), "end"),
                "redis_across": (Side(b, flows.across(submit)), "end"),
            },
            tokens=tokens,
            rounds=rounds,
            latency_samples=latency_samples,
        )
    finally:
        await submit.close()
