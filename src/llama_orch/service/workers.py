"""`llama-orch serve --workers N`: N worker processes accept on one listening socket, each a full orchestrator
instance of scale-out mode (so together they are one orchestrator over the shared state).

The parent only supervises: it binds the socket, starts the workers (spawned, each in its own process group so a
terminal's Ctrl-C reaches the parent alone), forwards every SIGTERM/SIGINT to them (the first drains, a second stops
at once, as for one process), and replaces a worker that exits while serving, with backoff when they keep dying."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

from llama_orch.service.metrics import mark_worker_dead

__all__ = ["Serve", "run_workers"]

logger = logging.getLogger("llama_orch.service")

Serve = Callable[[list[socket.socket]], None]  # one instance serving on the given sockets; picklable
_STABLE_S = 10.0  # a worker that lived this long died of something else than its start: replaced at once
_MAX_BACKOFF_S = 10.0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(serve: Serve, sock: socket.socket) -> None:
    os.setpgrp()  # signals come from the parent, once each, not also from the terminal
    serve([sock])


class _Supervisor:
    def __init__(self, count: int, sock: socket.socket, serve: Serve) -> None:
        self.count, self.sock, self.serve = count, sock, serve
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[BaseProcess, float] = {}  # worker -> when it started
        self.stopping = False
        self.backoff_s = 0.5

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for _ in range(self.count):
            self._start()
        while self.workers:
            sentinels = {worker.sentinel: worker for worker in self.workers}
            for sentinel in multiprocessing.connection.wait(list(sentinels), timeout=1.0):
                self._exited(sentinels[sentinel])  # type: ignore[index]

    def _start(self) -> None:
        worker = self.context.Process(target=_worker, args=(self.serve, self.sock), name="llama-orch-worker")
        worker.start()
        self.workers[worker] = time.monotonic()

    def _exited(self, worker: BaseProcess) -> None:
        lived_s = time.monotonic() - self.workers.pop(worker)
        worker.join()
        assert worker.pid is not None
        mark_worker_dead(worker.pid)
        if self.stopping:
            return
        self.backoff_s = 0.5 if lived_s >= _STABLE_S else min(self.backoff_s * 2, _MAX_BACKOFF_S)
        logger.warning("worker %d exited (code %s); starting another", worker.pid, worker.exitcode)
        time.sleep(0 if lived_s >= _STABLE_S else self.backoff_s)
        if not self.stopping:
            self._start()

    def _forward(self, sig: int, _: FrameType | None) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)


def run_workers(count: int, host: str, port: int, serve: Serve) -> None:
    """Serve with `count` workers until a signal stops them; returns when every worker has exited."""
    sock = _listen(host, port)
    metrics_dir = tempfile.mkdtemp(prefix="llama-orch-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by every worker: one merged /metrics
    try:
        _Supervisor(count, sock, serve).run()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
