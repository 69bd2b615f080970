"""Tolerant reader for the control answers health and dispatch depend on (version, props, slots, model metadata):
with only the members their schemas require, and with unknown members, every adapter is still ready, versioned
and reports its props. A replica whose engine left out an informational field (an older llama-server's `/props`
has no `build_info`, `/slots` changes shape between releases) must not become unready, or every task fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from llama_orch_gen.engines.llamacpp import Client
from llama_orch_gen.engines.llamacpp.api.native import slots

from llama_orch.adapters.base import HealthState
from llama_orch.adapters.http_adapter import HttpAdapter
from llama_orch.adapters.http_policy import HttpPolicy, error_for_exception
from llama_orch_runtime.bodies import MalformedBody
from tests.adapters.replay import TRANSCRIPTS
from tests.adapters.test_tolerant_reader import _strip
from tests.adapters.wire_fakes import DIALECTS, TGI_INFO, Dialect

SPECS = Path(__file__).resolve().parents[2] / "specs" / "engines"
Answer = tuple[str | None, Any]  # (schema of the body, the body); None: not a JSON object (sent as is)


def _recorded(name: str) -> Any:
    path = TRANSCRIPTS / name
    assert path.is_file(), f"missing recording {path}: set LLAMA_ORCH_SHARED to the shared reference directory"
    return json.loads(path.read_bytes())


def control_answers(engine: str) -> dict[str, Answer]:
    """Each control route an adapter reads for health, version and props, with its full answer."""
    if engine == "llamacpp":
        return {
            "/health": (None, {"status": "ok"}),
            "/props": ("PropsResponse", _recorded("props.body")),
            "/slots": ("Slot[]", _recorded("slots.body")),
            "/v1/models": (None, None),  # native only
        }
    if engine == "vllm":
        models = {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "vllm"}]}
        return {
            "/health": (None, ""),
            "/version": ("VersionResponse", {"version": "0.33.0"}),
            "/v1/models": ("ModelList", models),
        }
    if engine == "tgi":
        return {"/health": (None, ""), "/info": ("Info", TGI_INFO)}
    server = {"name": "triton", "version": "2.73.0", "extensions": ["generate"]}
    model = {"name": "ensemble", "versions": ["1"], "platform": "ensemble", "inputs": [], "outputs": []}
    return {
        "/v2/models/ensemble/ready": (None, ""),
        "/v2/health/ready": (None, ""),
        "/v2": ("ServerMetadata", server),
        "/v2/models/ensemble": ("ModelMetadata", model),
    }


def _shaped(engine: str, change: str) -> dict[str, bytes | None]:
    components = yaml.safe_load((SPECS / f"{engine}.openapi.yaml").read_text())["components"]["schemas"]
    routes: dict[str, bytes | None] = {}
    for path, (schema, body) in control_answers(engine).items():
        if schema is not None and change == "required-only":
            item = {"items": {"$ref": schema[:-2]}} if schema.endswith("[]") else {"$ref": schema}
            stripped = _strip(body, item, components)
            body = stripped
        elif schema is not None and change == "unknown-members":
            body = [{**b, "x_new": {"n": 1}} for b in body] if isinstance(body, list) else {**body, "x_new": [1]}
        routes[path] = None if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    return routes


def _adapter(dialect: Dialect, routes: dict[str, bytes | None]) -> HttpAdapter:
    def handle(request: httpx.Request) -> httpx.Response:
        body = routes.get(request.url.path)
        if body is None:
            return httpx.Response(404, json={"error": "not found"})
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return dialect.make(base_url="http://engine", policy=HttpPolicy(), transport=httpx.MockTransport(handle))


@pytest.mark.parametrize("change", ["required-only", "unknown-members"])
@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_control_answers_with_only_required_or_unknown_members_keep_the_replica_ready(
    dialect: Dialect, change: str
) -> None:
    adapter = _adapter(dialect, _shaped(dialect.engine, change))
    try:
        health = await adapter.health()
        assert health.ready and health.state in (HealthState.HEALTHY, HealthState.DEGRADED), health.detail
        assert health.state is HealthState.HEALTHY or health.detail == "no free slot", health.detail
        assert (await adapter.engine_version()).version
        await adapter.props()
    finally:
        await adapter.aclose()


def test_the_recorded_answers_do_carry_optional_members() -> None:
    for dialect in DIALECTS:
        full, stripped = _shaped(dialect.engine, "none"), _shaped(dialect.engine, "required-only")
        assert full != stripped, dialect.engine  # otherwise the test above proves nothing for this engine


async def test_an_older_llama_server_props_and_slots_keep_the_replica_ready() -> None:
    """Builds before `build_info` and `model_path` in `/props`, with slots that carry only their state."""
    (llamacpp,) = [d for d in DIALECTS if d.engine == "llamacpp"]
    routes = {
        "/health": b'{"status":"ok"}',
        "/props": json.dumps(
            {"total_slots": 2, "chat_template": "", "default_generation_settings": {"n_ctx": 512}}
        ).encode(),
        "/slots": json.dumps([{"is_processing": False}, {"is_processing": True, "state": 1}]).encode(),
    }
    adapter = _adapter(llamacpp, routes)
    try:
        health = await adapter.health()
        assert (health.ready, health.state) == (True, HealthState.HEALTHY), health.detail
        assert (await adapter.engine_version()).version == "unknown"
        found = await adapter.props()
        assert (found.slots_total, found.slots_free, found.ctx_size) == (2, 1, 512)
    finally:
        await adapter.aclose()


async def test_slots_the_reader_cannot_read_leave_the_free_count_unknown_not_the_replica_down() -> None:
    """`/slots` is informational: items without `is_processing` (a release that renamed it) give slots_free None."""
    (llamacpp,) = [d for d in DIALECTS if d.engine == "llamacpp"]
    routes = {
        "/health": b'{"status":"ok"}',
        "/props": json.dumps({"total_slots": 2, "default_generation_settings": {"n_ctx": 512}}).encode(),
        "/slots": json.dumps([{"id": 0}, {"id": 1}]).encode(),
    }
    adapter = _adapter(llamacpp, routes)
    try:
        found = await adapter.props()
        assert (found.slots_total, found.slots_free, found.ctx_size) == (2, None, 512)
    finally:
        await adapter.aclose()


def test_an_answer_that_breaks_its_schema_is_a_typed_error_naming_the_member() -> None:
    request = httpx.Request("GET", "http://engine/slots")
    malformed = httpx.Response(200, json=[{"id": 0}], request=request)
    client = Client(base_url="http://engine", httpx_args={"transport": httpx.MockTransport(lambda r: malformed)})
    with pytest.raises(MalformedBody, match="missing member 'is_processing'") as info:
        slots.sync_detailed(client=client)
    error = error_for_exception(info.value)
    assert error.code == "INTERNAL" and "does not match its spec" in error.message
    refused = error_for_exception(MalformedBody(503, b"<html>busy</html>", ValueError("not JSON")))
    assert (refused.code, refused.status) == ("POOL_UNREADY", 503)  # a proxy's page is still its status
