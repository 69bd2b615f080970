"""Run real `llama-server` processes for tests: free port, readiness wait, logs kept for failures."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from llama_orch.devtools.llamacpp_build import ensure_llama_server
from llama_orch.spawn import free_port

READY_TIMEOUT_S = 60.0


class LlamaServer:
    """One llama-server process; `start()` returns once `/health` answers 200 (unless `wait=False`)."""

    def __init__(
        self,
        model: Path,
        *,
        api_key: str | None = None,
        ctx_size: int = 512,
        parallel: int = 2,
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.api_key = api_key
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = [
            str(ensure_llama_server()),
            *("--model", str(model), "--host", "127.0.0.1", "--port", str(self.port)),
            *("--ctx-size", str(ctx_size * parallel), "--parallel", str(parallel), "--threads", "1"),
            *("--metrics", "--slots", "--no-webui"),
            *(("--api-key", api_key) if api_key else ()),
            *extra_args,
        ]
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return Path(self._log.name)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self, *, wait: bool = True) -> LlamaServer:
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited before it was ready:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"llama-server not ready within {timeout_s}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the engine dies mid-whatever, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        self.stop()
        self._log.close()
        os.unlink(self._log.name)

    def __enter__(self) -> LlamaServer:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def start_llama_server(
    model: Path,
    *,
    api_key: str | None = None,
    ctx_size: int = 512,
    parallel: int = 2,
    extra_args: Sequence[str] = (),
) -> Iterator[LlamaServer]:
    """A running server for the duration of the block."""
    with LlamaServer(model, api_key=api_key, ctx_size=ctx_size, parallel=parallel, extra_args=extra_args) as server:
        yield server
