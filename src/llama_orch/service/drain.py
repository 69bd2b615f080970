"""Graceful shutdown for `llama-orch serve`: the first SIGTERM or SIGINT drains the orchestrator before uvicorn
stops (new submits get 503 meanwhile, since the listener stays open); a second signal stops at once."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

import uvicorn

from llama_orch.service.orchestrator import Orchestrator

__all__ = ["DrainingServer"]


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, orchestrator: Orchestrator) -> None:
        super().__init__(config)
        self.orchestrator = orchestrator
        grace_ms = orchestrator.config.drain_grace_ms
        self.grace_s = (grace_ms if grace_ms is not None else 30_000) / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain is not None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)  # not serving yet, or the second signal: stop now
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.orchestrator.drain(self.grace_s)
        finally:
            # Not `handle_exit`: uvicorn re-raises the signals it recorded there, and a drained exit is a clean 0.
            self.should_exit = True
