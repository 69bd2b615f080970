"""`llama-orch serve --spawn-llama --model FILE.gguf` / `--spawn-vllm --model DIR`: run a real engine beside the
orchestrator and keep it running (restarted with backoff when it exits), stopped with the orchestrator."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

__all__ = ["SupervisedEngine", "free_port"]

logger = logging.getLogger("llama_orch.spawn")
_MAX_BACKOFF_S = 30.0
_STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SupervisedEngine:
    """One engine process on a free local port; `command(port)` builds its command line."""

    def __init__(
        self, name: str, command: Callable[[int], Sequence[str]], *, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = [str(part) for part in command(self.port)]
        self.env = dict(env) if env is not None else None
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name=f"{name}-supervisor", daemon=True)

    def start(self) -> SupervisedEngine:
        self._thread.start()
        return self

    def _supervise(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            logger.info("starting %s on %s", self.name, self.base_url, extra={"command": self.args})
            # Its own process group, so stopping it reaches the engine's workers too (vLLM runs several).
            self._process = subprocess.Popen(
                self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env, start_new_session=True
            )
            _, stderr = self._process.communicate()
            if self._stop.is_set():
                return
            tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
            logger.warning(
                "%s exited with %s; restarting in %.1fs",
                self.name,
                self._process.returncode,
                backoff,
                extra={"tail": tail},
            )
            self._stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def stop(self) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self._thread.join(timeout=_STOP_TIMEOUT_S)
