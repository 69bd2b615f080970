"""Render every spec into a fresh `llama_orch_gen` package tree (deterministically)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jinja2
import yaml
from datamodel_code_generator import Formatter, InputFileType, LiteralType, PythonVersion, generate
from datamodel_code_generator.enums import DataModelType

from . import layout
from .bundle import bundle, load, stream_ref
from .layout import HEADER, HEADER_RE, PACKAGE, ApiSpec


class GenerationError(Exception):
    """A generator refused a spec; the message carries its own output."""


TOOLS = ("datamodel-code-generator", "openapi-python-client", "ruff", "jinja2", "pydantic")
CACHE_DIRS = {".ruff_cache", "__pycache__"}


def _datamodel(input_: Path, output: Path, file_type: InputFileType, source: str) -> None:
    generate(
        input_,
        input_file_type=file_type,
        output=output,
        output_model_type=DataModelType.PydanticV2BaseModel,
        target_python_version=PythonVersion.PY_311,
        disable_timestamp=True,
        use_annotated=True,
        field_constraints=True,
        use_standard_collections=True,
        use_union_operator=True,
        use_schema_description=True,
        use_field_description=True,
        use_title_as_name=file_type is InputFileType.JsonSchema,
        enum_field_as_literal=LiteralType.All,
        collapse_root_models=True,
        use_double_quotes=True,
        formatters=[Formatter.RUFF_FORMAT],
        custom_file_header=HEADER.format(source=source),
    )


def _contracts(out: Path) -> None:
    _datamodel(layout.SCHEMAS, out / "contracts", InputFileType.JsonSchema, "specs/schemas")


def _stream_refs(doc: dict[str, Any]) -> list[str]:
    refs = []
    for item in doc.get("paths", {}).values():
        for op in item.values():
            for response in op.get("responses", {}).values() if isinstance(op, dict) else ():
                for media in response.get("content", {}).values():
                    stream = media.get("x-stream", {})
                    refs += [stream[k] for k in ("item", "error") if k in stream]
    return refs


def _client(spec: ApiSpec, out: Path, work: Path) -> None:
    rel = spec.path.relative_to(layout.ROOT).as_posix()
    bundled = bundle(spec)
    # Shipped beside the client: the self-contained document servers serve and fuzzers read.
    document = json.dumps(bundled, indent=1, ensure_ascii=False) + "\n"
    for item in bundled["paths"].values():
        for op in item.values():
            for response in op.get("responses", {}).values() if isinstance(op, dict) else ():
                for media in response.get("content", {}).values():
                    if "x-stream" in media:
                        # The tool would buffer and mis-parse a stream; `stream()` from our template decodes it.
                        media["schema"] = {"type": "string", "description": "Raw stream body; use stream()/astream()."}
    bundled_path = work / f"{spec.package}.yaml"
    bundled_path.write_text(yaml.safe_dump(bundled, sort_keys=False), encoding="utf-8")
    target = out / spec.rel_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).with_name("openapi-python-client")
    cmd = [
        str(cli),
        "generate",
        "--path",
        str(bundled_path),
        "--meta",
        "none",
        "--output-path",
        str(target),
        "--config",
        str(layout.ROOT / "codegen" / "opc-config.yaml"),
        "--custom-template-path",
        str(layout.TEMPLATES / "openapi-python-client"),
        "--fail-on-warning",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    if result.returncode != 0:
        raise GenerationError(f"openapi-python-client failed on {rel}:\n{result.stdout}\n{result.stderr}")
    (target / "openapi.json").write_text(document, encoding="utf-8")
    if any(stream_ref(ref).startswith("#") for ref in _stream_refs(load(spec.path))):
        wire = work / f"{spec.package}.wire"
        _datamodel(spec.path, wire, InputFileType.OpenAPI, rel)
        shutil.move(wire, target / "wire.py")
    for parent in target.relative_to(out).parents:
        init = out / parent / "__init__.py"
        if parent != Path(".") and not init.exists():
            init.write_text(f'"""Generated clients: {parent.name}."""\n', encoding="utf-8")


def _render_templates(out: Path) -> None:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(layout.TEMPLATES), keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    error_schema = load(layout.SCHEMAS / "error-envelope.json")
    context = {
        "error_codes": error_schema["$defs"]["ErrorCode"]["x-error-codes"],
        "metric_families": load(layout.SCHEMAS / "metrics.json")["x-metrics"],
        "api_specs": layout.api_specs(),
    }
    renders = {
        "streaming.py.jinja": "_streaming.py",
        "package_init.py.jinja": "__init__.py",
        "contract_tables.py.jinja": "contracts/tables.py",
    }
    for template, dest in renders.items():
        text = env.get_template(template).render(**context)
        (out / dest).write_text(HEADER.format(source=f"templates/{template}") + "\n" + text, encoding="utf-8")
    (out / "py.typed").write_text("", encoding="utf-8")


def _add_headers(out: Path) -> None:
    for path in sorted(out.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if not HEADER_RE.match(text.split("\n", 1)[0]):
            source = "templates/openapi-python-client"
            path.write_text(HEADER.format(source=source) + "\n" + text, encoding="utf-8")


def _format(out: Path) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    for cmd in (
        ["check", "--isolated", "--select", "I,F401", "--fix", "--quiet", "--exit-zero"],
        ["format", "--isolated", "--line-length", "120", "--quiet"],
    ):
        subprocess.run([str(ruff), *cmd, str(out)], check=True, cwd=out)
    for cache in [p for p in out.rglob("*") if p.name in CACHE_DIRS]:
        shutil.rmtree(cache, ignore_errors=True)


def _stamp(out: Path) -> None:
    inputs = layout.all_spec_files() + sorted(p for p in layout.TEMPLATES.rglob("*") if p.is_file())
    inputs += sorted((layout.ROOT / "codegen").glob("*.py")) + [layout.ROOT / "codegen" / "opc-config.yaml"]
    stamp = {
        "inputs": {p.relative_to(layout.ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs},
        "tools": {name: version(name) for name in TOOLS},
    }
    (out / layout.STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def render(dest: Path) -> Path:
    """Generate the whole package into `dest/llama_orch_gen` (dest must not contain it yet)."""
    out = dest / PACKAGE
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="llama-orch-codegen-") as tmp:
        _contracts(out)
        for spec in layout.api_specs():
            _client(spec, out, Path(tmp))
        _render_templates(out)
        _add_headers(out)
        _format(out)
    _stamp(out)
    return out
