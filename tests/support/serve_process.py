"""`llama-orch serve` as a user runs it: a real process on a free port."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support.engine_process import EngineProcess, processes


class Serve(EngineProcess):
    """Ready once the default pool answers its health route."""

    name = "llama-orch-serve"
    ready_path = "/v1/pools/default/health"

    def __init__(self, args: Sequence[str]) -> None:
        super().__init__()
        self.args = args

    def command(self) -> Sequence[str]:
        script = Path(sys.executable).with_name("llama-orch")
        return [str(script), "serve", "--port", str(self.port), *self.args]


def processes_naming(text: str, besides: Serve) -> list[int]:
    """Pids, other than the orchestrator's own, whose command line contains `text` (its engine processes)."""
    own = besides.process.pid if besides.process is not None else None
    return [pid for pid, _, command in processes() if pid != own and text.encode() in command]
