"""Inline an OpenAPI document's external `$ref`s into `components/schemas`.

openapi-python-client reads one self-contained document, while our orchestrator API `$ref`s the JSON Schemas in
specs/schemas/. Each referenced schema becomes a component named by its `title` (its `$defs` key otherwise), and the
`x-stream` declarations gain an `x-python` entry naming the pydantic classes the stream templates decode into.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from .layout import PACKAGE, ApiSpec

Json = Any


def load(path: Path) -> Json:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def stream_ref(ref: str) -> str:
    """An `x-stream` item/error: a JSON reference, or a bare component name (`Chunk`)."""
    return ref if "#" in ref or ref.endswith((".json", ".yaml")) else f"#/components/schemas/{ref}"


def resolve_pointer(doc: Json, pointer: str) -> Json:
    node = doc
    for part in [p for p in pointer.split("/") if p]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class Bundler:
    def __init__(self, spec: ApiSpec) -> None:
        self.spec = spec
        self.doc: Json = load(spec.path)
        self.components: dict[str, Json] = {}
        self.names: dict[tuple[Path, str], str] = {}  # (file, pointer) -> component name

    def bundle(self) -> Json:
        components = self.doc.setdefault("components", {})
        local = components.pop("schemas", {})
        self.components.update(local)  # local names are taken first, so an imported twin is reported
        self.doc = self._rewrite(self.doc, self.spec.path)
        for name, schema in local.items():
            self.components[name] = self._rewrite(schema, self.spec.path)
        self.doc["components"]["schemas"] = dict(sorted(self.components.items()))
        for media in _stream_media(self.doc):
            media["x-python"] = self._python_names(media["x-stream"])
        return self.doc

    def _component_for(self, file: Path, pointer: str) -> str:
        key = (file, pointer)
        if key in self.names:
            return self.names[key]
        target = resolve_pointer(load(file), pointer)
        name = target.get("title") or pointer.rsplit("/", 1)[-1]
        if name in self.components and key not in self.names:
            raise ValueError(f"{self.spec.path.name}: component name {name!r} is defined twice (from {file.name})")
        self.names[key] = name
        self.components[name] = {}  # reserve first: schemas may refer to themselves
        body = {k: v for k, v in copy.deepcopy(target).items() if k not in ("$schema", "$id", "$defs", "examples")}
        self.components[name] = self._rewrite(body, file)
        return name

    def _rewrite(self, node: Json, base: Path) -> Json:
        if isinstance(node, list):
            return [self._rewrite(item, base) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and not (
            ref.startswith("#/components/") or (ref.startswith("#/") and base == self.spec.path)
        ):
            file_part, _, pointer = ref.partition("#")
            file = (base.parent / file_part).resolve() if file_part else base
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {"$ref": f"#/components/schemas/{self._component_for(file, pointer)}", **self._rewrite(rest, base)}
        return {k: (v if k.startswith("x-") else self._rewrite(v, base)) for k, v in node.items()}

    def _python_names(self, stream: Json) -> dict[str, str]:
        names = {}
        for role in ("item", "error", "relay-item"):
            if role in stream:
                names[role] = self._python_class(stream[role])
        return names

    def _python_class(self, ref: str) -> str:
        """`schemas/events.json` -> `llama_orch_gen.contracts.events:TaskEvent`; `#/components/schemas/X` -> wire."""
        file_part, _, pointer = stream_ref(ref).partition("#")
        if not file_part:
            return f"{PACKAGE}.{self.spec.package}.wire:{pointer.rsplit('/', 1)[-1]}"
        from .resources import contract_class, contracts_module  # resources reads specs with this module's helpers

        cls = contract_class(self.spec.path, ref)
        return f"{contracts_module(cls)}:{cls.name}"


def _stream_media(doc: Json) -> list[Json]:
    found = []
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            for response in op.get("responses", {}).values():
                for media in response.get("content", {}).values():
                    if "x-stream" in media:
                        found.append(media)
    return found


def bundle(spec: ApiSpec) -> Json:
    return Bundler(spec).bundle()
