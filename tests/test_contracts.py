"""The JSON Schemas in specs/schemas and the pydantic models generated from them agree, and reject bad input clearly."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import validator_for
from llama_orch_gen.contracts.events import (
    EndEvent,
    ErrorEvent,
    MetricsEvent,
    StartedEvent,
    TaskEvent,
    TokenEvent,
)
from llama_orch_gen.contracts.tables import ERROR_CODES, METRIC_FAMILIES
from llama_orch_gen.contracts.task_request import TaskRequest
from pydantic import BaseModel, ValidationError

from codegen.layout import SCHEMAS, module_name
from codegen.validate import schema_registry

SCHEMA_FILES = sorted(SCHEMAS.glob("*.json"))


def _model_for(path: Path) -> type[BaseModel]:
    schema = json.loads(path.read_text())
    module = importlib.import_module(f"llama_orch_gen.contracts.{module_name(path)}")
    model: type[BaseModel] = getattr(module, schema["title"])
    return model


def _examples() -> list[tuple[Path, int, Any]]:
    return [(p, n, ex) for p in SCHEMA_FILES for n, ex in enumerate(json.loads(p.read_text())["examples"])]


@pytest.mark.parametrize(("path", "n", "example"), _examples(), ids=lambda v: v.name if isinstance(v, Path) else None)
def test_every_example_validates_against_schema_and_model(path: Path, n: int, example: Any) -> None:
    schema = json.loads(path.read_text())
    validator = validator_for(schema)(schema, registry=schema_registry())
    assert [e.message for e in validator.iter_errors(example)] == []
    parsed = _model_for(path).model_validate(example)
    assert parsed.model_dump(mode="json", exclude_unset=True, by_alias=True) == example


@pytest.mark.parametrize(
    ("event", "model"),
    [
        (
            {
                "event": "started",
                "data": {
                    "task_id": "t",
                    "queue_position": 0,
                    "predicted_start_ms": 0,
                    "engine": "vllm",
                    "engine_version": "0.33.0",
                    "pool_id": "p",
                    "replica_id": "r",
                },
            },
            StartedEvent,
        ),
        ({"event": "token", "data": {"t": "Hi", "i": 0}}, TokenEvent),
        ({"event": "metrics", "data": {"queue_depth": 3, "custom": 1}}, MetricsEvent),
        ({"event": "end", "data": {"tokens_out": 2, "decode_time_ms": 1.5}}, EndEvent),
        ({"event": "error", "data": {"code": "DECODE_TIMEOUT", "message": "idle", "retriable": True}}, ErrorEvent),
    ],
)
def test_union_picks_the_model_named_by_event(event: dict[str, Any], model: type[BaseModel]) -> None:
    assert type(TaskEvent.model_validate(event).root) is model


def _error_locations(payload: Any) -> list[tuple[str | int, ...]]:
    with pytest.raises(ValidationError) as info:
        TaskEvent.model_validate(payload)
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_unknown_event_name_is_rejected_naming_the_discriminator() -> None:
    with pytest.raises(ValidationError) as info:
        TaskEvent.model_validate({"event": "tok", "data": {"t": "x", "i": 0}})
    (error,) = info.value.errors()
    assert error["type"] == "union_tag_invalid"
    assert "'tok'" in str(info.value) and "event" in str(info.value)


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"i": 0}, ("token", "data", "t")),
        ({"t": "x", "i": -1}, ("token", "data", "i")),
        ({"t": 5, "i": 0}, ("token", "data", "t")),
        ({"t": "x", "i": "zero"}, ("token", "data", "i")),
        ({"t": "x", "i": 0, "extra": 1}, ("token", "data", "extra")),
    ],
)
def test_invalid_token_events_name_the_field(data: dict[str, Any], loc: tuple[str, ...]) -> None:
    assert _error_locations({"event": "token", "data": data}) == [loc]


def test_task_request_with_every_field_is_accepted_and_minimal_one_gets_defaults() -> None:
    full = json.loads((SCHEMAS / "task-request.json").read_text())["examples"][1]
    # `inputs` is the alternative to `prompt`: every other field is in the full example.
    assert set(full) | {"inputs"} == set(TaskRequest.model_fields), "the full example must exercise every field"
    assert TaskRequest.model_validate(full).max_tokens == 32
    minimal = TaskRequest.model_validate({"prompt": "Hi"})
    assert (minimal.max_tokens, minimal.priority, minimal.temperature) == (128, "interactive", 0)


def test_task_request_rejects_unknown_fields_by_name() -> None:
    with pytest.raises(ValidationError, match="promtp"):
        TaskRequest.model_validate({"prompt": "x", "promtp": "typo"})


def test_every_error_code_has_an_http_status() -> None:
    schema = json.loads((SCHEMAS / "error-envelope.json").read_text())
    assert set(ERROR_CODES) == set(schema["$defs"]["ErrorCode"]["enum"])
    assert ERROR_CODES["ADMISSION_REJECT"].status == 429
    assert ERROR_CODES["INVALID_PARAMS"].status == 400
    assert ERROR_CODES["POOL_UNREADY"].status == 503
    assert all(400 <= info.status <= 599 for info in ERROR_CODES.values())


def test_metrics_catalog_has_the_contract_label_sets() -> None:
    by_name = {m.name: m for m in METRIC_FAMILIES}
    assert by_name["tasks_enqueued_total"].labels == ("engine", "engine_version", "pool_id", "replica_id", "priority")
    assert by_name["tasks_rejected_total"].labels == ("engine", "reason")
    assert by_name["latency_first_token_ms"].type == "histogram"
    assert by_name["latency_first_token_ms"].buckets is not None
