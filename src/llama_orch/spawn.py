"""`llama-orch serve --spawn-llama --model FILE.gguf`: run a real llama-server beside the orchestrator and keep it
running (restarted with backoff when it exits), stopped with the orchestrator."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SupervisedLlamaServer", "free_port"]

logger = logging.getLogger("llama_orch.spawn")
_MAX_BACKOFF_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SupervisedLlamaServer:
    def __init__(self, binary: Path, model: Path, *, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = [
            str(binary),
            *("--model", str(model), "--host", "127.0.0.1", "--port", str(self.port)),
            *("--metrics", "--slots", "--no-webui"),
            *extra_args,
        ]
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="llama-server-supervisor", daemon=True)

    def start(self) -> SupervisedLlamaServer:
        self._thread.start()
        return self

    def _supervise(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            logger.info("starting llama-server on %s", self.base_url, extra={"args": self.args})
            self._process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, stderr = self._process.communicate()
            if self._stop.is_set():
                return
            tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
            logger.warning(
                "llama-server exited with %s; restarting in %.1fs",
                self._process.returncode,
                backoff,
                extra={"tail": tail},
            )
            self._stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._thread.join(timeout=10)
