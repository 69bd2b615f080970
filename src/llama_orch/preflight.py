"""`llama-orch preflight`: check every configured replica before serving — reachable within the connect timeout,
ready with our credentials, its version, the configured model listed by the engine, and a one-token dry run."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
from llama_orch_gen.contracts.config import OrchestratorConfig, PoolConfig, ReplicaConfig
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.base import WorkerAdapter
from llama_orch.adapters.factory import build_adapter
from llama_orch.adapters.http_policy import bearer_token
from llama_orch.errors import ConfigError, EngineError, redact

__all__ = ["Check", "run_preflight"]


@dataclass(frozen=True)
class Check:
    pool_id: str
    replica_id: str
    name: str
    ok: bool
    detail: str


async def run_preflight(config: OrchestratorConfig) -> list[Check]:
    jobs = [_check_replica(pool, replica) for pool in config.pools for replica in pool.replicas]
    return [check for checks in await asyncio.gather(*jobs) for check in checks]


async def _check_replica(pool: PoolConfig, replica: ReplicaConfig) -> list[Check]:
    checks: list[Check] = []

    def record(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(pool.id, replica.id, name, ok, detail))

    try:
        adapter = build_adapter(pool, replica)
    except ConfigError as exc:
        record("config", False, str(exc))
        return checks
    try:
        health = await adapter.health()
        record("reachable", health.live, "answers" if health.live else health.detail or "no answer")
        record("ready", health.ready, health.state.value if health.ready else health.detail or health.state.value)
        if not health.ready:
            return checks
        version = await adapter.engine_version()
        record(
            "version",
            True,
            f"{version.engine} {version.version}" + (f" ({version.model_digest})" if version.model_digest else ""),
        )
        listing = getattr(adapter, "model_list_path", None)
        if listing and (model := replica.model or pool.model):
            record("model listed", *await _model_listed(replica, listing, model))
        record("dry run", *await _dry_run(adapter))
    except EngineError as exc:
        record("engine", False, f"{exc.code}: {exc.message}")
    finally:
        await adapter.aclose()
    return checks


async def _model_listed(replica: ReplicaConfig, listing: str, model: str) -> tuple[bool, str]:
    token = bearer_token(replica)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = replica.base_url.rstrip("/") + listing
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            answer = await http.get(url, headers=headers)
        ids = [m.get("id") for m in answer.json().get("data", [])] if answer.status_code == 200 else []
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return False, redact(f"cannot list models: {exc}", [token] if token else [])
    if model in ids:
        return True, model
    return False, f"{model!r} not in {ids or f'the answer (HTTP {answer.status_code})'}"


async def _dry_run(adapter: WorkerAdapter) -> tuple[bool, str]:
    """One greedy token: proves the completion route, the sampler mapping and our credentials end to end."""
    task = TaskRequest(task_id="preflight", prompt="Hello", max_tokens=1, seed=1)
    events = [event.root async for event in adapter.submit(task)]
    terminal = events[-1]
    if terminal.event == "error":
        return False, f"{terminal.data.code}: {terminal.data.message}"
    return True, f"{sum(e.event == 'token' for e in events)} token(s)"


def format_table(checks: list[Check]) -> str:
    rows = [("POOL", "REPLICA", "CHECK", "RESULT", "DETAIL")]
    rows += [(c.pool_id, c.replica_id, c.name, "ok" if c.ok else "FAIL", c.detail) for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in rows
    )
