"""The whole stack for real-engine tests: generated orchestrator client → orchestrator (real socket) →
adapters → real llama-server processes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from llama_orch_gen.contracts.config import OrchestratorConfig
from llama_orch_gen.orchestrator import Client
from llama_orch_gen.orchestrator.api.tasks import create_task, stream_task
from llama_orch_gen.orchestrator.models import AdmissionResponse, ErrorEnvelope, TaskRequest

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
    with serve_asgi(app) as url, Client(base_url=url, timeout=httpx.Timeout(60.0)) as client:
        yield client


@dataclass
class Run:
    """What one task produced, event by event."""

    status: int
    events: list[Any] = field(default_factory=list)
    refusal: ErrorEnvelope | None = None

    @property
    def tokens(self) -> list[str]:
        return [e.root.data.t for e in self.events if e.root.event == "token"]

    @property
    def started(self) -> Any:
        return next(e.root.data for e in self.events if e.root.event == "started")

    @property
    def terminal(self) -> Any:
        ends = [e.root for e in self.events if e.root.event in ("end", "error")]
        assert len(ends) == 1 and self.events[-1].root is ends[0], f"not exactly one terminal event: {self.events}"
        return ends[0]

    @property
    def code(self) -> str:
        """The error code of a refused or failed task ('' when it ended normally)."""
        if self.refusal is not None:
            return str(self.refusal.code)
        terminal = self.terminal
        return str(terminal.data.code) if terminal.event == "error" else ""


def submit(client: Client, body: dict[str, Any]) -> tuple[int, str | None, ErrorEnvelope | None]:
    answer = create_task.sync_detailed(client=client, body=TaskRequest.from_dict(body))
    if isinstance(answer.parsed, AdmissionResponse):
        return answer.status_code, answer.parsed.task_id, None
    assert isinstance(answer.parsed, ErrorEnvelope), f"undocumented answer {answer.status_code}: {answer.content!r}"
    return answer.status_code, None, answer.parsed


def run_task(client: Client, body: dict[str, Any]) -> Run:
    status, task_id, refusal = submit(client, body)
    if task_id is None:
        return Run(status=status, refusal=refusal)
    with stream_task.stream(task_id, client=client) as events:
        return Run(status=status, events=list(events))
