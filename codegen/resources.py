"""The resource API of a spec that declares `x-client` on its operations (the orchestrator's), for the templates in
templates/resources/.

Why our own templates instead of openapi-python-client here: that tool makes a second model family (attrs classes
beside the pydantic contracts of the same schemas), returns errors instead of raising them and ignores
discriminators. The orchestrator's schemas already have exactly one class each in `llama_orch_gen.contracts`, so
the resource client is rendered straight from the operations and imports those classes; what every operation shares
(auth, timeouts, the retry loop, streams) is the hand-written runtime in src/llama_orch_runtime. The engine clients
still come from openapi-python-client (their models are the engines' own, with no contract twin).

`x-client` on an operation: `{resource: <name>, method: <name>}` (`resource` absent: a method of the client
itself), optionally `idempotency-key: <body field>` (filled with a fresh id when the caller leaves it out, so a
retried request names the same resource) and `resume-header: <header>` (a stream reconnects after its last event
with that header instead of replaying).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundle import load, resolve_pointer, stream_ref
from .layout import PACKAGE, SCHEMAS, ApiSpec, module_name

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class ContractClass:
    """A pydantic class of llama_orch_gen.contracts, or a discriminated union of several."""

    module: str  # "task_request"
    name: str  # "TaskRequest"
    members: tuple[str, ...] = ()  # a oneOf root: its member classes, exposed instead of a RootModel
    discriminator: str | None = None

    @property
    def is_union(self) -> bool:
        return bool(self.members)


@dataclass(frozen=True)
class Param:
    wire: str  # the name on the wire: "task_id", "Last-Event-ID"
    python: str  # the argument: "task_id", "last_event_id"
    location: str  # path | query | header
    required: bool
    annotation: str


@dataclass(frozen=True)
class Stream:
    framing: str
    item: ContractClass
    error: ContractClass | None
    error_key: str | None
    envelope: bool
    done: str | None
    final: tuple[str, tuple[Any, ...], bool] | None  # (field, values, not_null)
    eof_is_end: bool


@dataclass(frozen=True)
class Operation:
    operation_id: str
    resource: str | None
    method: str
    http_method: str
    path: str
    summary: str
    params: tuple[Param, ...]
    body: ContractClass | None
    result: str  # model | none | text | stream
    model: ContractClass | None = None
    stream: Stream | None = None
    idempotency_key: str | None = None
    resume_header: str | None = None
    statuses: tuple[int, ...] = field(default_factory=tuple)

    @property
    def path_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "path")

    def located(self, location: str) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == location)


def declares_resources(spec: ApiSpec) -> bool:
    return any("x-client" in op for op in _operations(load(spec.path)))


def operations(spec: ApiSpec) -> list[Operation]:
    doc = load(spec.path)
    return [_operation(spec.path, doc, path, method, op) for path, method, op in _located_operations(doc)]


def resources(ops: list[Operation]) -> dict[str, list[Operation]]:
    grouped: dict[str, list[Operation]] = {}
    for op in ops:
        if op.resource is not None:
            grouped.setdefault(op.resource, []).append(op)
    return grouped


def contract_classes(ops: list[Operation]) -> dict[str, list[str]]:
    """module -> class names the client imports (members of unions rather than their RootModel)."""
    found: dict[str, set[str]] = {}
    for op in ops:
        for cls in (op.body, op.model, op.stream.item if op.stream else None, op.stream.error if op.stream else None):
            if cls is not None:
                found.setdefault(cls.module, set()).update(cls.members or (cls.name,))
    return {module: sorted(names) for module, names in sorted(found.items())}


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for _, _, op in _located_operations(doc)]


def _located_operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in doc.get("paths", {}).items()
        for method, op in item.items()
        if method in HTTP_METHODS and "x-client" in op
    ]


def _operation(spec_path: Path, doc: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> Operation:
    client = op["x-client"]
    params = [_param(doc, raw) for raw in [*doc["paths"][path].get("parameters", []), *op.get("parameters", [])]]
    body_ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    ok = sorted((int(status), response) for status, response in op["responses"].items() if status.startswith("2"))
    status, response = ok[0]
    content = response.get("content", {})
    common: dict[str, Any] = {
        "operation_id": op["operationId"],
        "resource": client.get("resource"),
        "method": client["method"],
        "http_method": method.upper(),
        "path": path,
        "summary": op.get("summary") or response.get("description", ""),
        "params": tuple(params),
        "body": contract_class(spec_path, body_ref) if body_ref else None,
        "idempotency_key": client.get("idempotency-key"),
        "resume_header": client.get("resume-header"),
        "statuses": tuple(s for s, _ in ok),
    }
    if not content:
        return Operation(**common, result="none")
    media_type, media = next(iter(content.items()))
    if "x-stream" in media:
        return Operation(**common, result="stream", stream=_stream(spec_path, media["x-stream"]))
    ref = media.get("schema", {}).get("$ref")
    if ref is not None:
        return Operation(**common, result="model", model=contract_class(spec_path, ref))
    if media_type.startswith("text/"):
        return Operation(**common, result="text")
    raise ValueError(f"{spec_path.name} {op['operationId']}: x-client cannot type a {media_type} answer")


def _param(doc: dict[str, Any], raw: dict[str, Any]) -> Param:
    if "$ref" in raw:
        raw = resolve_pointer(doc, raw["$ref"].partition("#")[2])
    python = re.sub(r"\W", "_", raw["name"]).lower()
    if keyword.iskeyword(python):
        python += "_"
    schema = raw.get("schema", {})
    annotation = {"integer": "int", "string": "str", "boolean": "bool", "number": "float"}[schema.get("type", "string")]
    if raw["in"] == "header" and schema.get("pattern", "").startswith("^[0-9]"):
        annotation = "int | str"  # a number sent as a header (Last-Event-ID: 7)
    return Param(raw["name"], python, raw["in"], bool(raw.get("required")), annotation)


def _stream(spec_path: Path, raw: dict[str, Any]) -> Stream:
    final = raw.get("final")
    rule = None
    if final is not None:
        values = tuple(final["in"]) if "in" in final else ((final["equals"],) if "equals" in final else ())
        rule = (final["field"], values, bool(final.get("not-null")))
    return Stream(
        framing=raw["framing"],
        item=contract_class(spec_path, raw["item"]),
        error=contract_class(spec_path, raw["error"]) if "error" in raw else None,
        error_key=raw.get("error-key"),
        envelope=bool(raw.get("envelope")),
        done=raw.get("done"),
        final=rule,
        eof_is_end=bool(raw.get("eof-is-end")),
    )


def contract_class(spec_path: Path, ref: str) -> ContractClass:
    """`schemas/events.json` -> events:TaskEvent (members StartedEvent, ...); `…#/$defs/X` -> its module's X."""
    file_part, _, pointer = stream_ref(ref).partition("#")
    file = (spec_path.parent / file_part).resolve()
    if file.parent != SCHEMAS.resolve():
        raise ValueError(f"{ref!r} must point into specs/schemas/ (the contracts have the one class of a schema)")
    document = load(file)
    target = resolve_pointer(document, pointer)
    name = target.get("title") or pointer.rsplit("/", 1)[-1]
    members = tuple(_title(document, member["$ref"]) for member in target.get("oneOf", []))
    discriminator = target.get("discriminator", {}).get("propertyName")
    return ContractClass(module_name(file), name, members, discriminator)


def _title(document: dict[str, Any], ref: str) -> str:
    pointer = ref.partition("#")[2]
    return str(resolve_pointer(document, pointer).get("title") or pointer.rsplit("/", 1)[-1])


def contracts_module(cls: ContractClass) -> str:
    return f"{PACKAGE}.contracts.{cls.module}"


# -- rendering ---------------------------------------------------------------------------------------------------

TEMPLATES = ("client.py.jinja", "_client.py"), ("errors.py.jinja", "errors.py"), ("models.py.jinja", "models.py")


def type_name(cls: ContractClass) -> str:
    """A union is exposed under `Any<title>` (its RootModel stays in contracts, unused by the client)."""
    return f"Any{cls.name}" if cls.is_union else cls.name


def fpath(op: Operation) -> str:
    """An operation's path as a Python string literal: each parameter quoted as one path segment."""
    if not op.path_params:
        return repr(op.path)
    return "f" + repr(re.sub(r"\{(\w+)\}", lambda m: "{quote(" + m.group(1) + ', safe="")}', op.path))


def status_errors(error_schema: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The status classes of the taxonomy (`x-status-errors`), each with the codes it carries, and the 5XX one."""
    codes = error_schema["$defs"]["ErrorCode"]
    by_status: dict[int, list[str]] = {}
    for code, facts in codes["x-error-codes"].items():
        by_status.setdefault(facts["status"], []).append(code)
    statuses, server = [], None
    for key, facts in codes["x-status-errors"].items():
        entry = {"cls": facts["class"], "description": facts["description"]}
        if key == "5XX":
            server = {**entry, "key": "5XX", "codes": by_status.get(500, [])}
        else:
            status = int(key)
            statuses.append({**entry, "key": status, "server": status >= 500, "codes": by_status.get(status, [])})
    unnamed = sorted(s for s in by_status if s < 500 and s not in {e["key"] for e in statuses})
    if server is None or unnamed:
        raise ValueError(f"error-envelope.json: x-status-errors needs a 5XX class and one for {unnamed}")
    return sorted(statuses, key=lambda e: e["key"]), server


def render_resources(spec: ApiSpec, target: Path, env: Any, header: str) -> None:
    ops = operations(spec)
    classes = contract_classes(ops) | {"error_envelope": ["ErrorEnvelope"]}  # what `APIStatusError.envelope` is
    unions = sorted({cls for op in ops for cls in _stream_items(op) if cls.is_union}, key=lambda c: c.name)
    statuses, server = status_errors(load(SCHEMAS / "error-envelope.json"))
    model_names = sorted({name for names in classes.values() for name in names} | {type_name(u) for u in unions})
    error_names = sorted(
        ["APIConnectionError", "APIError", "APIResponseValidationError", "APIStatusError", "APITimeoutError"]
        + [s["cls"] for s in [*statuses, server]]
        + ["StreamError"]
    )
    variants = [
        {"prefix": p, "suffix": "WithRawResponse" if raw else "", "raw": raw, "is_async": p == "Async"}
        | {"runtime": f"{p or 'Sync'}APIClient", "stream": f"{p}EventStream"}
        for raw in (False, True)
        for p in ("", "Async")
    ]
    doc = load(spec.path)
    context = {
        "ops": ops,
        "resources": resources(ops),
        "contract_classes": classes,
        "unions": unions,
        "model_names": model_names,
        "error_names": error_names,
        "statuses": statuses,
        "server": server,
        "error_codes": load(SCHEMAS / "error-envelope.json")["$defs"]["ErrorCode"]["x-error-codes"],
        "variants": variants,
        "title": doc["info"]["title"],
        "source": spec.path.relative_to(SCHEMAS.parent.parent).as_posix(),
        "package": f"{PACKAGE}.{spec.package}",
        "package_path": f"{PACKAGE}.{spec.package}",
    }
    env.filters.update(type_name=type_name, fpath=fpath, py=repr)
    target.mkdir(parents=True, exist_ok=True)
    for template, dest in (*TEMPLATES, ("package_init.py.jinja", "__init__.py")):
        text = env.get_template(f"resources/{template}").render(**context)
        (target / dest).write_text(header.format(source=f"templates/resources/{template}") + "\n" + text, "utf-8")


def _stream_items(op: Operation) -> tuple[ContractClass, ...]:
    return (op.stream.item,) if op.stream else ()
