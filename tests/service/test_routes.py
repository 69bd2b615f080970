"""The app serves exactly the spec's operations, and /openapi.json is the committed spec."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from starlette.routing import Route

from llama_orch.service.app import openapi_document
from tests.service.helpers import check_envelope, service

SPEC = Path(__file__).resolve().parents[2] / "specs" / "orchestrator.openapi.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def spec_operations(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {(path, method.upper()) for path, item in paths.items() for method in item if method in METHODS}


def test_routes_are_exactly_the_spec_operations() -> None:
    app = service().app
    served = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        served |= {(route.path, method) for method in route.methods or () if method != "HEAD"}
    bundled = spec_operations(json.loads(openapi_document()))
    committed = spec_operations(yaml.safe_load(SPEC.read_text()))
    assert bundled == committed
    assert served == bundled, {"not in spec": served - bundled, "not served": bundled - served}


def test_openapi_json_serves_the_bundled_document() -> None:
    svc = service()
    with svc.running() as http:
        answer = http.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.content == openapi_document()
    document = answer.json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == yaml.safe_load(SPEC.read_text())["info"]["title"]
    # Bundled: one self-contained document (no reference into another file).
    assert '"$ref": "schemas/' not in answer.text and '"$ref":"schemas/' not in answer.text


def test_unknown_route_and_wrong_method_are_envelopes() -> None:
    with service().running() as http:
        check_envelope(http.get("/v1/nothing-here"), 404, "NOT_FOUND")
        check_envelope(http.get("/v1/tasks"), 405, "METHOD_NOT_ALLOWED")


def test_every_undeclared_method_is_405_with_an_allow_header() -> None:
    """RFC 9110 §15.5.6: a 405 names the methods the resource supports (schemathesis' unsupported-method check)."""
    document = yaml.safe_load(SPEC.read_text())
    with service().running() as http:
        for path, item in document["paths"].items():
            declared = {m.upper() for m in item if m in METHODS}
            concrete = path.replace("{task_id}", "t-1").replace("{session_id}", "s-1").replace("{pool_id}", "default")
            for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - declared):
                answer = http.request(method, concrete)
                if path == "/infer":
                    assert answer.status_code == 405, (method, path, answer.text)
                else:
                    check_envelope(answer, 405, "METHOD_NOT_ALLOWED")
                allowed = {m.strip() for m in answer.headers.get("allow", "").split(",") if m.strip()}
                assert declared <= allowed <= declared | {"HEAD"}, (method, path, answer.headers)
