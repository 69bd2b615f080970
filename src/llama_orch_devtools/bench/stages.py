"""Where the orchestrator's time goes per token: a cProfile of the relay split into the stages of the hot path.

Every function's own time (cProfile's tottime) goes to one stage, found by where the function lives; a function
that belongs to no stage by itself (a builtin such as `json.loads` or `bytes.split`, or a library helper) gives
its time to its callers' stages, in proportion to the time each caller spent in it, up the call graph. So the
stages add up to the profile's total, and a builtin is charged to the stage that called it.

Under the profiler every Python call costs more, so the absolute figures are inflated; the report scales the
shares to the relay's unprofiled CPU per token, measured in the same run (the relay section).
"""

from __future__ import annotations

import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (file, line, function name), as pstats keys them; builtins have file "~".
Func = tuple[str, int, str]

STAGES = (
    "engine read",
    "decode",
    "validate",
    "event build",
    "frame write",
    "request handling",
    "event loop and socket I/O",
)

# The stream runtime's functions that validate (the rest of it frames bytes into events: decode).
_VALIDATE_FUNCS = {"parse", "is_error"}


def _own_stage(func: Func) -> str | None:
    """The stage a function belongs to by itself, or None when it should inherit its callers'."""
    path, _, name = func
    path = path.replace("\\", "/")
    if path == "~":  # builtins: pydantic-core's validators are the one kind that is a stage by itself
        return "validate" if "pydantic_core" in name or "SchemaValidator" in name else None
    if "/pydantic/" in path or "/pydantic_core/" in path:
        return "validate"
    if path.endswith("llama_orch_runtime/streaming.py"):
        return "validate" if name in _VALIDATE_FUNCS else "decode"
    if path.endswith("adapters/http_transport.py") or any(f"/{lib}/" in path for lib in ("httpx", "httptools")):
        return "engine read"
    if path.endswith("service/wire.py") or (path.endswith("service/app.py") and ("write" in name or "send" in name)):
        return "frame write"
    if "/uvicorn/" in path:
        return "frame write" if name in {"send", "write"} else "request handling"
    if "/starlette/" in path or path.endswith(("service/app.py", "service/middleware.py")):
        return "request handling"
    if "/llama_orch/" in path or "/llama_orch_gen/" in path:
        return "event build"  # adapters' mapping, the relay, runs and events: the rest of our own code
    if "/asyncio/" in path or "uvloop" in path:
        return "event loop and socket I/O"
    return None


def split(stats_path: Path) -> dict[str, float]:
    """Seconds of the profile per stage (plus "other": time no stage claims, e.g. threads the profile cannot place)."""
    stats: dict[Func, Any] = pstats.Stats(str(stats_path)).stats  # type: ignore[attr-defined]
    memo: dict[Func, dict[str, float]] = {}

    def shares(func: Func, seen: frozenset[Func]) -> dict[str, float]:
        """The fractions of `func`'s own time that go to each stage."""
        if func in memo:
            return memo[func]
        if (own := _own_stage(func)) is not None:
            result = {own: 1.0}
        else:
            callers: dict[Func, tuple[int, int, float, float]] = stats[func][4] if func in stats else {}
            weights = {caller: edge[2] for caller, edge in callers.items() if caller not in seen and edge[2] > 0}
            total = sum(weights.values())
            result = {}
            for caller, weight in weights.items():
                for stage, share in shares(caller, seen | {func}).items():
                    result[stage] = result.get(stage, 0.0) + share * weight / total
            result = result or {"other": 1.0}
        memo[func] = result
        return result

    seconds: dict[str, float] = dict.fromkeys((*STAGES, "other"), 0.0)
    for func, (_, _, own_time, _, _) in stats.items():
        for stage, share in shares(func, frozenset()).items():
            seconds[stage] += own_time * share
    return seconds


def per_token(seconds: dict[str, float], tokens: int, unprofiled_us: float | None) -> dict[str, Any]:
    """Microseconds per token by stage: as profiled, and scaled to the unprofiled CPU per token when known."""
    total = sum(seconds.values())
    scale: Callable[[float], float | None] = (
        (lambda s: s / total * unprofiled_us) if unprofiled_us and total > 0 else (lambda s: None)
    )
    return {
        "tokens": tokens,
        "profiled_us_per_token": {stage: s / tokens * 1e6 for stage, s in seconds.items()},
        "unprofiled_us_per_token": unprofiled_us,
        "scaled_us_per_token": {stage: scale(s) for stage, s in seconds.items()},
        "share": {stage: s / total if total else 0.0 for stage, s in seconds.items()},
    }
