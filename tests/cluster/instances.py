"""Real `llama-orch serve --state-url` processes over one pool config and a real llama.cpp simulator process:
what the issue's black-box check starts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from llama_orch.spawn import free_port

READY_TIMEOUT_S = 30.0
GUARD_S = 30.0  # hang guard of every HTTP call
LONG = {"prompt": "Once upon a time", "max_tokens": 5000, "seed": 1}  # runs ~50 s unless stopped


class Process:
    """A child process with its log kept for failures."""

    def __init__(self, name: str, args: list[str], url: str, ready_path: str) -> None:
        self.name = name
        self.args = args
        self.url = url
        self.ready_url = url + ready_path
        self.log = Path(tempfile.mkstemp(prefix=f"llama-orch-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9: no drain, no cleanup."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def simulator(tokens: int = 100_000, delay_ms: int = 10) -> Process:
    port = free_port()
    args = [sys.executable, "-m", "llama_orch.simulators", "llamacpp", "--port", str(port)]
    args += ["--tokens", str(tokens), "--delay-ms", str(delay_ms), "--slots", "4", "--log-level", "warning"]
    return Process("llamacpp-sim", args, f"http://127.0.0.1:{port}", "/health").start()


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
    port = free_port()
    args = [sys.executable, "-m", "llama_orch.cli", "serve", "--config", str(config), "--port", str(port)]
    args += ["--state-url", state_url, "--log-level", "warning", *extra]
    return Process(name, args, f"http://127.0.0.1:{port}", "/v1/pools/p/health").start()


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
