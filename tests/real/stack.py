"""The whole stack for real-engine tests: generated orchestrator client → orchestrator (real socket) →
adapters → real llama-server processes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from llama_orch_gen.contracts.config import OrchestratorConfig
from llama_orch_gen.orchestrator import APIStatusError, Client
from llama_orch_gen.orchestrator.models import ErrorEnvelope

from llama_orch.adapters.factory import build_registry
from llama_orch.service.app import create_app
from tests.support.asgi_server import serve_asgi
from tests.support.llama_server import LlamaServer


def pool(pool_id: str, servers: Sequence[LlamaServer], **extra: Any) -> dict[str, Any]:
    """A llama.cpp pool config over running servers (native API: raw prompts, no chat template)."""
    replicas = [
        {"id": f"{pool_id}-r{i}", "base_url": s.base_url, "api": "native", "model_path": str(s.model)}
        for i, s in enumerate(servers)
    ]
    return {"id": pool_id, "engine": "llamacpp", "replicas": replicas, **extra}


@contextmanager
def orchestrator(pools: list[dict[str, Any]], **settings: Any) -> Iterator[Client]:
    config = OrchestratorConfig.model_validate({"health_interval_ms": 100, **settings, "pools": pools})
    app = create_app(config, build_registry(config))
    # No retries: these tests assert what each answer was.
    with serve_asgi(app) as url, Client(url, timeout=httpx.Timeout(60.0), max_retries=0) as client:
        yield client


@dataclass
class Run:
    """What one task produced, event by event."""

    status: int
    events: list[Any] = field(default_factory=list)
    refusal: ErrorEnvelope | None = None

    @property
    def tokens(self) -> list[str]:
        return [e.data.t for e in self.events if e.event == "token"]

    @property
    def started(self) -> Any:
        return next(e.data for e in self.events if e.event == "started")

    @property
    def terminal(self) -> Any:
        ends = [e for e in self.events if e.event in ("end", "error")]
        assert len(ends) == 1 and self.events[-1] is ends[0], f"not exactly one terminal event: {self.events}"
        return ends[0]

    @property
    def code(self) -> str:
        """The error code of a refused or failed task ('' when it ended normally)."""
        if self.refusal is not None:
            return str(self.refusal.code)
        terminal = self.terminal
        return str(terminal.data.code) if terminal.event == "error" else ""


def submit(client: Client, body: dict[str, Any]) -> tuple[int, str | None, ErrorEnvelope | None]:
    try:
        answer = client.with_raw_response.tasks.create(body)
    except APIStatusError as refused:
        assert refused.envelope is not None, f"undocumented answer {refused.status_code}: {refused.body!r}"
        return refused.status_code, None, refused.envelope
    return answer.status_code, answer.parse().task_id, None


def run_task(client: Client, body: dict[str, Any]) -> Run:
    status, task_id, refusal = submit(client, body)
    if task_id is None:
        return Run(status=status, refusal=refusal)
    with client.tasks.stream(task_id) as events:
        return Run(status=status, events=list(events))
