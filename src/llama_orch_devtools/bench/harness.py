"""Process management, percentiles and memory for the bench: what every section shares."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx


def say(message: str) -> None:
    """Progress on stderr, so stdout stays free for whoever scripts the bench."""
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values, so an empty run never looks fast."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def peak_rss_mib(pid: int) -> float:
    """The process's high-water resident set (VmHWM), in MiB; NaN once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


class Service:
    """One server subprocess (simulator, orchestrator, LiteLLM, llama-server): started, awaited ready, stopped.

    Its output goes to a log file, shown when it fails to start, so a crash is never silent."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        ready_url: str,
        *,
        env: dict[str, str] | None = None,
        ready: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.ready_url = ready_url
        self.env = env
        self.ready = ready
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        scheme, _, rest = self.ready_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Service:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})}
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.ready(httpx.get(self.ready_url, timeout=2.0)):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready at {self.ready_url} within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT, not SIGTERM: uvicorn re-raises the signal after its graceful shutdown, and only
            # KeyboardInterrupt lets the profiled orchestrator write its stats on the way out.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
