"""Adding an engine is adding files: its spec (specs/engines/<name>.openapi.yaml), its adapter module, its simulator
module and one registry entry (task-request.json EngineKind `x-engines`). Every place that lists engines finds it
there: the generator (codegen validates the entry against the specs and the EngineKind enum that configs and tasks
accept), the adapter factory, the simulators, the CLI's choices, the fault matrix and the README."""

from __future__ import annotations

import importlib
import typing
from pathlib import Path

import pytest
from llama_orch_gen.contracts.config import PoolConfig
from llama_orch_gen.contracts.tables import ENGINES

from llama_orch import cli, simulators
from llama_orch.adapters.factory import adapter_class
from tests.adapters.wire_fakes import DIALECTS

ROOT = Path(__file__).resolve().parent.parent


def test_the_registry_lists_the_engines_the_specs_describe() -> None:
    specs = {p.name.removesuffix(".openapi.yaml") for p in (ROOT / "specs" / "engines").glob("*.openapi.yaml")}
    assert set(ENGINES) == specs


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_place_that_lists_engines_finds_a_registered_one(engine: str) -> None:
    assert adapter_class(engine).engine == engine
    assert engine in simulators.ENGINES
    assert cli.build_parser().parse_args(["serve", "--engine", engine]).engine == engine
    assert engine in typing.get_args(PoolConfig.model_fields["engine"].annotation)
    assert engine in {dialect.engine for dialect in DIALECTS}, "the fault matrix needs this engine's wire dialect"
    importlib.import_module(f"llama_orch_gen.engines.{engine}")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    engines_table = readme[readme.index("## Real engines and simulators") :]
    assert f"\n| {ENGINES[engine].title} |" in engines_table
