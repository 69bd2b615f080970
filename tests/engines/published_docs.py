"""Structural comparison of our engine specs with the engines' own published API documents:
operations, status codes, media types, and request/response field names, JSON types and defaults."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .spec_support import Json, Spec, engines_reference_dir, operations, resolve

MAX_DEPTH = 6
_MISSING = object()


def load_published(name: str) -> Spec:
    path = engines_reference_dir() / name
    text = path.read_text(encoding="utf-8")
    return dict(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text))


@dataclass(frozen=True)
class Field:
    types: frozenset[str]
    default: Any


def _schema_types(doc: Spec, node: Json) -> set[str]:
    node = resolve(doc, node)
    if not isinstance(node, dict):
        return {"any"}
    found: set[str] = set()
    declared = node.get("type")
    if isinstance(declared, str):
        found.add(declared)
    elif isinstance(declared, list):
        found.update(declared)
    if node.get("nullable") is True:
        found.add("null")
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(key, []):
            found |= _schema_types(doc, branch) - {"any"}
    if "const" in node:
        found.add(_json_type(node["const"]))
    if not found and "enum" in node:
        found.update(_json_type(v) for v in node["enum"])
    return found or {"any"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _branches(doc: Spec, node: Json) -> Iterator[Mapping[str, Any]]:
    """The node and, recursively, its allOf/anyOf/oneOf branches (all resolved)."""
    node = resolve(doc, node)
    if not isinstance(node, dict):
        return
    yield node
    for key in ("allOf", "anyOf", "oneOf"):
        for branch in node.get(key, []):
            yield from _branches(doc, branch)


def _default(doc: Spec, node: Json, types: frozenset[str]) -> Any:
    """The declared default; OpenAPI 3.0 string-typed defaults ("null", "1024", "true") are parsed
    unless the field is a string, and a null default counts as no default."""
    value: Any = _MISSING
    for branch in _branches(doc, node):
        if "default" in branch:
            value = branch["default"]
            break
    if value == "null":
        value = None
    elif isinstance(value, str) and "string" not in types:
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    return _MISSING if value is None else value


def flatten(doc: Spec, schema: Json, prefix: str = "", depth: int = 0) -> dict[str, Field]:
    """Every field reachable from `schema`: "" is the root, `a.b` a nested property, `a[]` array items."""
    types = frozenset(_schema_types(doc, schema))
    fields = {prefix: Field(types, _default(doc, schema, types))}
    if depth >= MAX_DEPTH:
        return fields
    properties: dict[str, Json] = {}
    items: list[Json] = []
    for branch in _branches(doc, schema):
        for name, sub in branch.get("properties", {}).items():
            properties.setdefault(name, sub)
        if isinstance(branch.get("items"), dict):
            items.append(branch["items"])
    for name, sub in properties.items():
        fields.update(flatten(doc, sub, f"{prefix}.{name}" if prefix else name, depth + 1))
    for sub in items[:1]:
        fields.update(flatten(doc, sub, f"{prefix}[]", depth + 1))
    return fields


def _show(field: Field) -> str:
    default = "" if field.default is _MISSING else f" default={json.dumps(field.default)}"
    return f"[{', '.join(sorted(field.types))}]{default}"


def compare_schemas(where: str, ours: tuple[Spec, Json], theirs: tuple[Spec, Json]) -> list[str]:
    """Field differences: one line per side listing the fields only that side has (nothing below such
    a field is reported), then one line per field whose types or default differ."""
    mine, published = flatten(*ours), flatten(*theirs)
    only: dict[str, list[str]] = {"ours": [], "published": []}
    mismatches: list[str] = []
    for path in sorted(mine.keys() | published.keys()):
        if any(path.startswith((p + ".", p + "[]")) for side in only.values() for p in side):
            continue
        if path not in published:
            only["ours"].append(path)
        elif path not in mine:
            only["published"].append(path)
        elif _show(mine[path]) != _show(published[path]):
            mismatches.append(
                f"{where} {path or '<root>'}: ours {_show(mine[path])} vs published {_show(published[path])}"
            )
    lines = [f"{where}: only in {side}: {', '.join(paths)}" for side, paths in only.items() if paths]
    return lines + mismatches


@dataclass(frozen=True)
class Endpoint:
    path: str
    method: str
    node: Mapping[str, Any]


def published_endpoints(doc: Spec, normalize: Callable[[str], str]) -> dict[tuple[str, str], Endpoint]:
    return {(normalize(op.path), op.method): Endpoint(op.path, op.method, op.node) for op in operations(doc)}


def _request_schema(doc: Spec, node: Mapping[str, Any]) -> Json | None:
    body = resolve(doc, node.get("requestBody", {}))
    media = body.get("content", {}).get("application/json")
    return None if media is None else media.get("schema")


def _response_media(doc: Spec, node: Mapping[str, Any]) -> dict[str, dict[str, Json]]:
    """status → media type → item schema. For our streams the item is the x-stream item component."""
    result: dict[str, dict[str, Json]] = {}
    for status, response in node.get("responses", {}).items():
        content = resolve(doc, response).get("content") or {}
        result[str(status)] = {}
        for media, media_object in content.items():
            stream = media_object.get("x-stream")
            schema = (
                {"$ref": f"#/components/schemas/{stream['item']}"}
                if isinstance(stream, dict)
                else media_object.get("schema")
            )
            result[str(status)][media] = schema
    return result


def compare_operation(
    label: str, ours: tuple[Spec, Mapping[str, Any]], theirs: tuple[Spec, Mapping[str, Any]]
) -> list[str]:
    """Status codes, media types and fields of one operation in both documents."""
    our_doc, our_op = ours
    their_doc, their_op = theirs
    differences: list[str] = []
    our_request, their_request = _request_schema(our_doc, our_op), _request_schema(their_doc, their_op)
    if (our_request is None) != (their_request is None):
        differences.append(f"{label} request body: only in {'ours' if their_request is None else 'published'}")
    elif our_request is not None:
        differences += compare_schemas(f"{label} request", (our_doc, our_request), (their_doc, their_request))
    our_responses, their_responses = _response_media(our_doc, our_op), _response_media(their_doc, their_op)
    for status in sorted(our_responses.keys() | their_responses.keys()):
        if status not in their_responses or status not in our_responses:
            side = "ours" if status not in their_responses else "published"
            differences.append(f"{label} {status}: only in {side}")
            continue
        mine, published = our_responses[status], their_responses[status]
        for media in sorted(mine.keys() | published.keys()):
            if media not in published or media not in mine:
                side = "ours" if media not in published else "published"
                differences.append(f"{label} {status} {media}: only in {side}")
            elif mine[media] is not None and published[media] is not None:
                differences += compare_schemas(
                    f"{label} {status} {media}", (our_doc, mine[media]), (their_doc, published[media])
                )
    return differences


def compare_documents(
    ours: Spec,
    theirs: Spec,
    *,
    normalize: Callable[[str], str] = lambda path: path,
    include: Callable[[str], bool] = lambda path: True,
) -> list[str]:
    """Differences for every operation we declare (filtered by `include`); a published path that
    differs from ours only by normalization is reported too."""
    published = published_endpoints(theirs, normalize)
    differences: list[str] = []
    for op in operations(ours):
        if not include(op.path):
            continue
        label = f"{op.method.upper()} {op.path}"
        endpoint = published.get((op.path, op.method))
        if endpoint is None:
            differences.append(f"{label}: not in the published document")
            continue
        if endpoint.path != op.path:
            differences.append(f"{label}: published path is {endpoint.path}")
        differences += compare_operation(label, (ours, op.node), (theirs, endpoint.node))
    return differences


def kserve_path(path: str) -> str:
    """`/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}/ready` → `/v2/models/{model}/ready`; `/v2/` → `/v2`."""
    path = path.replace("/versions/${MODEL_VERSION}", "").replace("${MODEL_NAME}", "{model}")
    return re.sub(r"(?<=.)/$", "", path)
