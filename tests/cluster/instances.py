"""Real `llama-orch serve --state-url` processes over one pool config and a real llama.cpp simulator process:
what the issue's black-box check starts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.engine_process import EngineProcess

READY_TIMEOUT_S = 30.0
GUARD_S = 30.0  # hang guard of every HTTP call
LONG = {"prompt": "Once upon a time", "max_tokens": 5000, "seed": 1}  # runs ~50 s unless stopped


class Process(EngineProcess):
    """A child process of the cluster tests (an engine simulator or a `llama-orch serve` instance), its command line
    made for its port."""

    ready_timeout_s = READY_TIMEOUT_S

    def __init__(self, name: str, args: Callable[[int], list[str]], ready_path: str) -> None:
        self.name, self.ready_path = name, ready_path
        super().__init__()
        self._args = args

    def command(self) -> list[str]:
        return self._args(self.port)

    @property
    def url(self) -> str:
        return self.base_url


def simulator(tokens: int = 100_000, delay_ms: int = 10) -> Process:
    def args(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "llama_orch.simulators", "llamacpp", "--port", str(port), "--tokens", str(tokens)),
            *("--delay-ms", str(delay_ms), "--slots", "4", "--log-level", "warning"),
        ]

    return Process("llamacpp-sim", args, "/health").start()


def pool_config(directory: Path, engine_url: str, queue: dict[str, Any] | None = None, **settings: Any) -> Path:
    """One pool, one replica with room for 1 running task and (unless `queue` says otherwise) 1 queued one."""
    config = {
        "health_interval_ms": 200,
        "stream_hold_ms": 2000,
        "sse_heartbeat_ms": 60_000,  # over GUARD_S: a stream that hangs fails the test instead of pinging forever
        **settings,
        "pools": [
            {
                "id": "p",
                "engine": "llamacpp",
                "queue": queue or {"capacity": 1, "policy": "reject"},
                "replicas": [{"id": "r0", "base_url": engine_url, "api": "native", "max_inflight": 1}],
            }
        ],
    }
    path = directory / "pools.json"
    path.write_text(json.dumps(config))
    return path


def instance(name: str, config: Path, state_url: str, *extra: str) -> Process:
    def args(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "llama_orch.cli", "serve", "--config", str(config), "--port", str(port)),
            *("--state-url", state_url, "--log-level", "warning", *extra),
        ]

    return Process(name, args, "/v1/pools/p/health").start()


class Frame:
    """One SSE frame as read: its id, event name and parsed data."""

    def __init__(self, frame_id: str | None, event: str, data: Any) -> None:
        self.id, self.event, self.data = frame_id, event, data

    def __repr__(self) -> str:
        return f"Frame({self.id}, {self.event}, {self.data})"


def frames(response: httpx.Response) -> Any:
    """The frames of a streaming SSE response, as they arrive (heartbeat comments skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if fields:
            yield Frame(fields.get("id"), fields["event"], json.loads(fields["data"]))
            fields = {}


def engine_idle(engine: Process, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while any(slot["is_processing"] for slot in httpx.get(f"{engine.url}/slots", timeout=5).json()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def one_terminal(events: list[Frame]) -> Frame:
    kinds = [f.event for f in events]
    assert sum(k in ("end", "error") for k in kinds) == 1 and kinds[-1] in ("end", "error"), kinds
    return events[-1]
