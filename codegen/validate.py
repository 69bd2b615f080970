"""Spec validation: OpenAPI documents, JSON Schemas against their meta-schema, examples, and our extensions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.validators import validator_for
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from . import layout
from .bundle import load, resolve_pointer, stream_ref
from .resources import status_errors

STREAM_KEYS = {
    "framing",
    "item",
    "envelope",
    "error",
    "error-key",
    "done",
    "final",
    "data-prefix",
    "comments",
    "eof-is-end",
    "relay-item",
}


def schema_registry() -> Registry:
    """Every file in specs/schemas/, addressable by its `$id` (its file name)."""
    resources = [
        (p.name, Resource.from_contents(load(p), default_specification=DRAFT202012)) for p in layout.schema_files()
    ]
    return Registry().with_resources(resources)


def _validate_schema_file(path: Path, registry: Registry) -> list[str]:
    doc = load(path)
    name = path.relative_to(layout.ROOT).as_posix()
    cls = validator_for(doc)
    try:
        cls.check_schema(doc)
    except jsonschema.SchemaError as exc:
        return [f"{name}: not a valid JSON Schema: {exc.message}"]
    problems = []
    if doc.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
        problems.append(f"{name}: must declare JSON Schema 2020-12")
    if not doc.get("examples"):
        problems.append(f"{name}: has no examples")
    validator = cls(doc, registry=registry)
    for n, example in enumerate(doc.get("examples", [])):
        for err in validator.iter_errors(example):
            problems.append(f"{name}: examples[{n}] at {err.json_path}: {err.message}")
    family = cls({"$ref": f"{path.name}#/$defs/MetricFamily"}, registry=registry)
    for n, metric in enumerate(doc.get("x-metrics", [])):
        problems += [f"{name}: x-metrics[{n}] at {e.json_path}: {e.message}" for e in family.iter_errors(metric)]
    codes = doc.get("$defs", {}).get("ErrorCode")
    if codes and set(codes["enum"]) != set(codes.get("x-error-codes", {})):
        problems.append(f"{name}: ErrorCode enum and x-error-codes must list the same codes")
    if codes and "x-status-errors" in codes:
        try:
            status_errors(doc)
        except (KeyError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
    return problems


def _stream_problems(path: Path, doc: Mapping[str, Any]) -> list[str]:
    problems = []
    for route, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict):
                continue
            for status, response in op.get("responses", {}).items():
                for media_type, media in response.get("content", {}).items():
                    stream = media.get("x-stream")
                    if stream is None:
                        continue
                    where = f"{path.name} {method.upper()} {route} {status} {media_type} x-stream"
                    problems += [f"{where}: unknown key {k!r}" for k in sorted(set(stream) - STREAM_KEYS)]
                    if stream.get("framing") not in ("sse", "ndjson"):
                        problems.append(f"{where}: framing must be sse or ndjson")
                    for key in ("item", "error", "relay-item"):
                        ref = stream.get(key)
                        if key == "item" and ref is None:
                            problems.append(f"{where}: item is required")
                        if ref is None:
                            continue
                        file_part, _, pointer = stream_ref(ref).partition("#")
                        try:
                            resolve_pointer(load(path.parent / file_part) if file_part else doc, pointer)
                        except (KeyError, OSError) as exc:
                            problems.append(f"{where}: {key} {ref!r} does not resolve ({exc})")
    return problems


def engine_registry() -> dict[str, dict[str, str]]:
    """The engine registry: EngineKind's `x-engines` in task-request.json (name -> title, adapter, simulator)."""
    engines: dict[str, dict[str, str]] = load(layout.SCHEMAS / "task-request.json")["properties"]["engine"]["x-engines"]
    return engines


def _engine_problems() -> list[str]:
    """Adding an engine is one spec, one adapter, one simulator and one registry entry: the entry must name an engine
    that has its spec, and the EngineKind enum (what configs and tasks accept) must be the registry plus `mock`."""
    registry = engine_registry()
    where = "specs/schemas/task-request.json EngineKind"
    problems = []
    enum = load(layout.SCHEMAS / "task-request.json")["properties"]["engine"]["enum"]
    if enum != [*registry, "mock"]:
        problems.append(f"{where}: enum must be the x-engines names, then mock: {[*registry, 'mock']}")
    specs = {s.package.removeprefix("engines."): s for s in layout.api_specs() if s.package.startswith("engines.")}
    problems += [
        f"{where}: x-engines {name!r} has no specs/engines/{name}.openapi.yaml"
        for name in registry.keys() - specs.keys()
    ]
    problems += [
        f"specs/engines/{name}.openapi.yaml: no x-engines entry in {where}" for name in specs.keys() - registry.keys()
    ]
    for name, entry in registry.items():
        missing = {"title", "adapter", "simulator"} - entry.keys()
        if missing:
            problems.append(f"{where}: x-engines {name!r} lacks {sorted(missing)}")
    return problems


def validate_specs() -> list[str]:
    """All problems found in specs/, as readable lines; empty when everything is valid."""
    registry = schema_registry()
    problems: list[str] = []
    for path in layout.schema_files():
        problems += _validate_schema_file(path, registry)
    for spec in layout.api_specs():
        name = spec.path.relative_to(layout.ROOT).as_posix()
        doc, base_uri = read_from_filename(str(spec.path))
        if not str(doc.get("openapi", "")).startswith("3.1."):
            problems.append(f"{name}: must be OpenAPI 3.1")
        try:
            validate(doc, base_uri=spec.path.resolve().as_uri())
        except Exception as exc:  # the validator raises several unrelated exception types
            problems.append(f"{name}: invalid OpenAPI: {getattr(exc, 'message', exc)}")
        problems += _stream_problems(spec.path, doc)
    return problems + _engine_problems()
