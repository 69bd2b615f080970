"""Engine simulators: one small ASGI app per engine serving that engine's exact wire format, with deterministic
tokens from (prompt, seed), a configurable token count and per-token delay, and injectable faults (core.py).
`python -m llama_orch.simulators ENGINE --help` serves one."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp

from llama_orch.simulators import llamacpp, tgi, triton, vllm
from llama_orch.simulators.core import Fault, FaultKind, SimulatorConfig, generate

__all__ = ["ENGINES", "Fault", "FaultKind", "SimulatorConfig", "create_app", "generate"]

ENGINES: dict[str, Callable[[SimulatorConfig], ASGIApp]] = {
    "llamacpp": llamacpp.create_app,
    "vllm": vllm.create_app,
    "tgi": tgi.create_app,
    "triton": triton.create_app,
}


def create_app(engine: str, config: SimulatorConfig | None = None) -> ASGIApp:
    return ENGINES[engine](config or SimulatorConfig())
