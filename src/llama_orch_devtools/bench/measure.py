"""Ways to drive flows and the figures drawn from their results, shared by every section."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_orch_devtools.bench.client import Connection, StreamResult
from llama_orch_devtools.bench.flows import Flow, guarded
from llama_orch_devtools.bench.harness import peak_rss_mib, percentile
from llama_orch_devtools.bench.machine_load import process_cpu_s

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Side:
    """One side of a comparison: where to connect, how to read a stream there, and (for a relay) the process
    whose CPU time per stream is recorded."""

    port: int
    flow: Flow
    pid: int | None = None


async def side_by_side(sides: dict[str, Side], n: int, rounds: int, seed: int = 1) -> dict[str, list[StreamResult]]:
    """`rounds` streams per side, one at a time, each side on its own persistent connection, alternating sides
    every round (so a slow moment of the machine hits both sides, not one)."""
    conns = {name: Connection(HOST, side.port) for name, side in sides.items()}
    results: dict[str, list[StreamResult]] = {name: [] for name in sides}
    try:
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                side = sides[name]
                cpu = process_cpu_s(side.pid) if side.pid else 0.0
                result = await guarded(side.flow, conns[name], n, seed + r)
                if side.pid:
                    result.server_cpu_s = process_cpu_s(side.pid) - cpu
                results[name].append(result)
    finally:
        for conn in conns.values():
            await conn.close()
    return results


async def concurrent(side: Side, n: int, streams: int, seed: int = 1) -> tuple[list[StreamResult], float]:
    """`streams` simultaneous streams, each on its own connection; returns the results and the wall time."""
    conns = [Connection(HOST, side.port) for _ in range(streams)]
    started = time.perf_counter()
    try:
        results = await asyncio.gather(*(guarded(side.flow, conn, n, seed + i) for i, conn in enumerate(conns)))
    finally:
        for conn in conns:
            await conn.close()
    return list(results), time.perf_counter() - started


def reset_peak_rss(pid: int) -> None:
    """Reset the process's VmHWM (Linux `clear_refs` 5), so each load level reports its own peak."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # then the peak is since process start: still an upper bound


def complete(result: StreamResult, n: int, terminal: str) -> bool:
    """All `n` tokens, then exactly one terminal event, the expected one."""
    return result.error is None and len(result.token_times) == n and result.terminals == [terminal]


def single_stream(results: Sequence[StreamResult]) -> dict[str, Any]:
    rates = [r.tokens_per_s for r in results if r.error is None]
    figures: dict[str, Any] = {
        "tokens_per_s": statistics.median(rates) if rates else 0.0,
        "tokens_per_s_best": max(rates, default=0.0),
        "streams": len(results),
    }
    costs = [r.server_cpu_s / len(r.token_times) * 1e6 for r in results if r.server_cpu_s and r.token_times]
    if costs:  # the relay's own CPU per token: what a profile splits into stages
        figures["cpu_us_per_token"] = statistics.median(costs)
    return figures


def pair_ratios(direct: Sequence[StreamResult], relayed: Sequence[StreamResult]) -> dict[str, Any]:
    """Relayed / direct tokens/s of each alternating pair (the same round, back to back): the median and the
    spread, so one noisy moment of a shared machine shows as spread instead of moving the figure."""
    ratios = sorted(
        r.tokens_per_s / d.tokens_per_s
        for d, r in zip(direct, relayed, strict=True)
        if d.error is None and r.error is None and d.tokens_per_s > 0
    )
    if not ratios:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "q1": 0.0, "q3": 0.0, "pairs": 0}
    return {
        "median": statistics.median(ratios),
        "min": ratios[0],
        "max": ratios[-1],
        "q1": percentile(ratios, 25),
        "q3": percentile(ratios, 75),
        "pairs": len(ratios),
    }


def first_token(results: Sequence[StreamResult]) -> dict[str, Any]:
    latencies = [r.first_token_s * 1000 for r in results if r.first_token_s is not None]
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "samples": len(latencies)}


def load_figures(results: Sequence[StreamResult], wall: float, n: int, terminal: str, pid: int) -> dict[str, Any]:
    """Aggregate figures of one concurrent run. `lost`: admitted (or, for peers, answered) streams that did not end
    with exactly one terminal event; `errors`: streams that did not deliver all tokens and their terminal event."""
    gaps = [gap * 1000 for r in results for gap in r.gaps]
    tokens = sum(len(r.token_times) for r in results)
    return {
        "streams": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "aggregate_tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "p50_gap_ms": percentile(gaps, 50),
        "p99_gap_ms": percentile(gaps, 99),
        # The relay writes what it has buffered in one send, so many gaps are 0: the longest stall matters too.
        "max_gap_ms": max(gaps, default=math.nan),
        "first_token_p99_ms": first_token(results)["p99_ms"],
        "peak_rss_mib": peak_rss_mib(pid),
        "errors": sum(not complete(r, n, terminal) for r in results),
        "lost": sum(r.accepted and len(r.terminals) != 1 for r in results),
        "first_error": next((r.error for r in results if r.error), None),
    }
