"""Helpers shared by the engine-spec tests: loading specs, resolving operations and schemas,
decoding SSE bodies (WHATWG rules) and checking a decoded stream against its `x-stream` extension
(specs/README.md)."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
SPECS_DIR = REPO / "specs" / "engines"
ENGINES = ("llamacpp", "vllm", "tgi", "triton")

Json = Any
Spec = dict[str, Any]


# Where the workplace keeps the shared reference data when the clone is not beside it.
WORKPLACE_SHARED = Path("/work/shared")


def shared_dir() -> Path:
    """The shared reference data: `$LLAMA_ORCH_SHARED`, else the nearest `shared/` with a `reference/` beside
    the repository or one of its parents, else the workplace's copy."""
    if override := os.environ.get("LLAMA_ORCH_SHARED"):
        return Path(override)
    for parent in Path(__file__).resolve().parents[2:]:
        if (parent / "shared" / "reference").is_dir():
            return parent / "shared"
    return WORKPLACE_SHARED


def engines_reference_dir() -> Path:
    return shared_dir() / "reference" / "engines"


def reference_path(*parts: str) -> Path:
    """A file or directory of the engines' reference data, checked when a test needs it (never at import): a
    missing one fails that test, saying where it was looked for and how to point elsewhere."""
    path = engines_reference_dir().joinpath(*parts)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        raise FileNotFoundError(
            f"reference data missing: {path} (the shared reference/ tree beside the clone, or $LLAMA_ORCH_SHARED)"
        )
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)


def spec_path(engine: str) -> Path:
    return SPECS_DIR / f"{engine}.openapi.yaml"


@functools.cache
def load_spec(engine: str) -> Spec:
    """Parse one engine spec; duplicate keys are an error."""
    with spec_path(engine).open(encoding="utf-8") as handle:
        return cast(Spec, yaml.load(handle, Loader=_UniqueKeyLoader))  # noqa: S506 - safe loader subclass


def pointer(*parts: str) -> str:
    """A JSON Pointer built from raw path segments."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def resolve(spec: Spec, node: Json) -> Json:
    """Follow local `$ref`s (`#/...`) until a node without `$ref`."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#/"), f"only local refs are supported: {ref!r}"
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@functools.cache
def _registry(engine: str) -> tuple[str, Registry[Any]]:
    uri = f"urn:llama-orch:spec:{engine}"
    resource: Resource[Any] = Resource.from_contents(load_spec(engine), default_specification=DRAFT202012)
    return uri, Registry().with_resource(uri, resource)


@functools.cache
def validator_at(engine: str, schema_pointer: str) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for the schema at `schema_pointer` inside the engine spec."""
    uri, registry = _registry(engine)
    return Draft202012Validator({"$ref": f"{uri}#{schema_pointer}"}, registry=registry)


def schema_errors(engine: str, schema_pointer: str, instance: Json) -> list[str]:
    """Validation problems of `instance` against the schema at `schema_pointer` (empty when valid)."""
    validator = validator_at(engine, schema_pointer)
    errors = list(validator.iter_errors(instance))
    if not errors:
        return []
    best = best_match(errors)
    where = "/".join(str(part) for part in best.absolute_path) or "<root>"
    return [f"{schema_pointer}: at {where}: {best.message[:300]}"]


def component_pointer(name: str) -> str:
    return pointer("components", "schemas", name)


# --- operations -----------------------------------------------------------------------------------

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Operation:
    path: str  # templated path as written in the spec
    method: str  # lower case
    node: Mapping[str, Any]

    @property
    def pointer(self) -> str:
        return pointer("paths", self.path, self.method)

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"


def operations(spec: Spec) -> Iterator[Operation]:
    for path, item in spec.get("paths", {}).items():
        for method in HTTP_METHODS:
            if method in item:
                yield Operation(path, method, item[method])


def _path_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}/]+\})", template)
    body = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(f"^{body}$")


def find_operation(spec: Spec, method: str, raw_path: str) -> Operation | None:
    """The operation serving `method raw_path`; literal paths win over templated ones."""
    path = raw_path.split("?", 1)[0]
    candidates = [op for op in operations(spec) if op.method == method.lower() and _path_regex(op.path).match(path)]
    candidates.sort(key=lambda op: op.path.count("{"))
    return candidates[0] if candidates else None


def response_for(spec: Spec, op: Operation, status: int) -> tuple[str, Mapping[str, Any]] | None:
    """(pointer, resolved response object) for a status, falling back to `4XX`-style ranges and `default`."""
    responses = op.node.get("responses", {})
    for key in (str(status), f"{str(status)[0]}XX", "default"):
        if key in responses:
            return pointer("paths", op.path, op.method, "responses", key), resolve(spec, responses[key])
    return None


def unknown_route_response(spec: Spec, status: int) -> tuple[str, Mapping[str, Any]] | None:
    """The response the spec declares (root `x-unknown-route`) for a path that matches no operation."""
    unknown = spec.get("x-unknown-route")
    if not isinstance(unknown, dict) or int(unknown["status"]) != status:
        return None
    name = unknown["response"]
    return pointer("components", "responses", name), spec["components"]["responses"][name]


def media_type(content_type: str) -> str:
    """`text/plain; version=0.0.4` → `text/plain`."""
    return content_type.split(";", 1)[0].strip().lower()


def media_schema_pointer(response_pointer: str, spec: Spec, media: str) -> str:
    """Pointer to the schema of one media type of a (possibly `$ref`-ed) response."""
    node = spec
    for part in response_pointer[1:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if isinstance(node, dict) and "$ref" in node:
        response_pointer = node["$ref"][1:]
    return response_pointer + pointer("content", media, "schema")


# --- SSE ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str | None = None


@dataclass
class SseBody:
    events: list[SseEvent] = field(default_factory=list)
    comments: int = 0
    discarded_tail: bool = False  # an event without its closing blank line (WHATWG discards it)


def parse_sse(body: bytes) -> SseBody:
    """Decode an SSE body with the WHATWG event-stream rules (CR, LF or CRLF line ends, `data:` with or
    without a space, multi-line data joined with LF, comments, pending data discarded at EOF)."""
    text = body.decode("utf-8")
    text = text.removeprefix("\ufeff")
    result = SseBody()
    data: list[str] = []
    event: str | None = None
    lines = re.split(r"\r\n|\r|\n", text)
    unterminated = lines.pop()  # text after the last line end is not a complete line
    for line in lines:
        if line == "":
            if data:
                result.events.append(SseEvent(data="\n".join(data), event=event))
            data, event = [], None
            continue
        if line.startswith(":"):
            result.comments += 1
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    result.discarded_tail = bool(data) or unterminated != ""
    return result


def _is_final(item: Json, final: Mapping[str, Any]) -> bool:
    if not isinstance(item, dict) or final["field"] not in item:
        return False
    value = item[final["field"]]
    if "equals" in final:
        return bool(value == final["equals"])
    return bool(final.get("not-null")) and value is not None


def check_stream(engine: str, media_pointer: str, media: Mapping[str, Any], body: bytes) -> list[str]:
    """Problems of an SSE body against the media type's schema and `x-stream` declaration."""
    stream = media.get("x-stream")
    if not isinstance(stream, dict):
        return [f"{media_pointer}: streaming media type without x-stream"]
    if stream.get("framing") != "sse":
        return [f"{media_pointer}: x-stream framing {stream.get('framing')!r} is not sse"]
    parsed = parse_sse(body)
    problems: list[str] = []
    if parsed.discarded_tail:
        problems.append("the body ends inside an event (no closing blank line)")
    if parsed.comments and not stream.get("comments"):
        problems.append("comment lines sent but x-stream.comments is not true")
    if not parsed.events:
        return [*problems, "no events in the stream"]

    done = stream.get("done")
    final = stream.get("final")
    error_key = stream.get("error-key")
    item_pointer = component_pointer(stream["item"])
    error_pointer = component_pointer(stream["error"]) if "error" in stream else None
    # With a `done` sentinel the data schema is anyOf [sentinel, JSON payload] (specs/README.md).
    data_path = ("properties", "data", "anyOf", "1") if done is not None else ("properties", "data")
    content_pointer = media_pointer + "/schema" + pointer(*data_path, "contentSchema")
    ended_by: str | None = None
    for index, sse in enumerate(parsed.events):
        where = f"event {index}"
        if ended_by == "done" or (ended_by == "error" and sse.data != done):
            problems.append(f"{where}: sent after the stream ended ({ended_by})")
        if done is not None and sse.data == done:
            ended_by = "done"
            continue
        try:
            payload = json.loads(sse.data)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: data is not JSON ({exc}): {sse.data[:80]!r}")
            continue
        problems += [f"{where}: {p}" for p in schema_errors(engine, content_pointer, payload)]
        if error_key is not None and isinstance(payload, dict) and error_key in payload:
            if error_pointer is None:
                problems.append(f"{where}: in-stream error but x-stream declares no error component")
            else:
                problems += [f"{where}: {p}" for p in schema_errors(engine, error_pointer, payload)]
            ended_by = "error"
            continue
        item = {"event": sse.event, "data": payload} if stream.get("envelope") else payload
        problems += [f"{where}: {p}" for p in schema_errors(engine, item_pointer, item)]
        # Several final items may come (llama.cpp sends one per prompt index); the last one counts.
        ended_by = "final" if final is not None and _is_final(item, final) else None
    if done is not None and ended_by not in ("done", "error"):
        problems.append(f"stream ends without the done sentinel {done!r}")
    elif done is None and final is not None and ended_by not in ("final", "error"):
        problems.append(f"stream ends without a final item ({final})")
    return problems


def check_body(
    engine: str, spec: Spec, response_pointer: str, response: Mapping[str, Any], content_type: str, body: bytes
) -> list[str]:
    """Problems of a recorded response body against the declared response."""
    content = response.get("content") or {}
    if not content:
        return [] if not body else [f"{response_pointer}: declares no body but {len(body)} bytes came"]
    media = media_type(content_type) if content_type else ""
    if media not in content:
        return [f"{response_pointer}: media type {media!r} not declared (declared: {sorted(content)})"]
    schema_pointer = media_schema_pointer(response_pointer, spec, media)
    media_pointer = schema_pointer.rsplit("/", 1)[0]
    if media == "text/event-stream":
        return check_stream(engine, media_pointer, content[media], body)
    if media == "application/json" or media.endswith("+json"):
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as exc:
            return [f"body is not JSON: {exc}"]
        return schema_errors(engine, schema_pointer, payload)
    return []


def check_exchange(engine: str, method: str, path: str, status: int, content_type: str, body: bytes) -> list[str]:
    """Problems of one HTTP exchange against the engine spec: the operation is found from the method and
    path (a path matching no operation uses the root `x-unknown-route`), then the body is checked against
    the response declared for the status and content type."""
    spec = load_spec(engine)
    op = find_operation(spec, method, path)
    found = unknown_route_response(spec, status) if op is None else response_for(spec, op, status)
    if found is None:
        where = f"{method} {path}" if op is None else op.label
        return [f"{where}: no response declared for status {status}"]
    response_pointer, response = found
    return check_body(engine, spec, response_pointer, response, content_type, body)
