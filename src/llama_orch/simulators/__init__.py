"""Engine simulators: one small ASGI app per engine serving that engine's exact wire format, with deterministic
tokens from (prompt, seed), a configurable token count and per-token delay, and injectable faults (core.py).
`python -m llama_orch.simulators ENGINE --help` serves one."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from llama_orch_gen.contracts import tables
from starlette.types import ASGIApp

from llama_orch.simulators.core import Fault, FaultKind, SimulatorConfig, generate

__all__ = ["ENGINES", "Fault", "FaultKind", "SimulatorConfig", "create_app", "generate"]


def _app_factory(module: str) -> Callable[[SimulatorConfig], ASGIApp]:
    return cast(Callable[[SimulatorConfig], ASGIApp], importlib.import_module(module).create_app)


# One simulator module per registered engine (llama_orch_gen.contracts.tables.ENGINES).
ENGINES: dict[str, Callable[[SimulatorConfig], ASGIApp]] = {
    name: _app_factory(info.simulator) for name, info in tables.ENGINES.items()
}


def create_app(engine: str, config: SimulatorConfig | None = None) -> ASGIApp:
    return ENGINES[engine](config or SimulatorConfig())
