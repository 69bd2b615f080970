"""Every refusal of a request body is the error envelope with the right code and status; correlation ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.helpers import UUID4, check_envelope, mock_pool, read_stream, service, submit

TASK_SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "specs/schemas/task-request.json").read_text())
MAX_BODY = 2048


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    svc = service(mock_pool(), mock_pool("other"), max_body_bytes=MAX_BODY)
    with svc.running() as client:
        yield client


def post(http: httpx.Client, content: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    return http.post("/v1/tasks", content=content, headers=headers)


def test_malformed_json_is_invalid_params(http: httpx.Client) -> None:
    body = check_envelope(post(http, b'{"prompt": "x"'), 400, "INVALID_PARAMS")
    assert body["retriable"] is False
    check_envelope(post(http, b"\xff\xfe not utf-8"), 400, "INVALID_PARAMS")
    check_envelope(post(http, b""), 400, "INVALID_PARAMS")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(http: httpx.Client, content_type: str | None) -> None:
    check_envelope(post(http, b'{"prompt": "x"}', content_type), 415, "UNSUPPORTED_MEDIA_TYPE")


def test_json_with_parameters_is_accepted(http: httpx.Client) -> None:
    assert post(http, b'{"prompt": "x"}', "application/json; charset=utf-8").status_code == 202


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    body = json.dumps({"prompt": "x" * MAX_BODY}).encode()
    check_envelope(post(http, body), 413, "PAYLOAD_TOO_LARGE")

    def chunks() -> Iterator[bytes]:  # no content-length: the limit is enforced while the body arrives
        yield b'{"prompt": "'
        for _ in range(8):
            yield b"y" * 512
        yield b'"}'

    answer = http.post("/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
    check_envelope(answer, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "temperature": 3}, "temperature"),
        ({"prompt": "x", "priority": "urgent"}, "priority"),
        ({"prompt": "x", "unknown_field": 1}, "unknown_field"),
        ({"prompt": "x", "task_id": "has space"}, "task_id"),
        ({"prompt": "x", "stop": ["s"] * 17}, "stop"),
        ({"prompt": 5}, "prompt"),
    ],
)
def test_schema_violation_names_the_field(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    refusal = check_envelope(http.post("/v1/tasks", json=body), 400, "INVALID_PARAMS")
    assert refusal["field"] == field, refusal


@pytest.mark.parametrize("body", [{"prompt": "x", "inputs": ["y"]}, {"max_tokens": 4}, {}])
def test_exactly_one_of_prompt_or_inputs(http: httpx.Client, body: dict[str, Any]) -> None:
    refusal = check_envelope(http.post("/v1/tasks", json=body), 400, "INVALID_PARAMS")
    assert refusal["field"] == "prompt", refusal


@pytest.mark.parametrize("deadline", [0, -1])
def test_deadline_not_positive_is_deadline_unmet(http: httpx.Client, deadline: int) -> None:
    refusal = check_envelope(
        http.post("/v1/tasks", json={"prompt": "x", "deadline_ms": deadline}), 400, "DEADLINE_UNMET"
    )
    assert refusal["field"] == "deadline_ms", refusal


def test_pin_to_unknown_pool_is_refused(http: httpx.Client) -> None:
    body = {"prompt": "x", "placement": {"mode": "pin", "pin_pool_id": "nowhere"}}
    refusal = check_envelope(http.post("/v1/tasks", json=body), 400, "INVALID_PARAMS")
    assert refusal["field"] == "placement.pin_pool_id"
    # ...while a known pool is honoured.
    admission = submit(http, {"prompt": "x", "placement": {"mode": "pin", "pin_pool_id": "other"}})
    assert admission["pool_id"] == "other"


def test_duplicate_task_id_is_refused(http: httpx.Client) -> None:
    """Another request under a used task id (an identical repeat is a retry: test_idempotent_submit.py)."""
    submit(http, {"prompt": "x", "task_id": "dup-1"})
    refusal = check_envelope(http.post("/v1/tasks", json={"prompt": "y", "task_id": "dup-1"}), 400, "INVALID_PARAMS")
    assert refusal["field"] == "task_id"


def full_task_request() -> dict[str, Any]:
    """The schema's own example that sets every field, adapted to this deployment (mock engine, known pool)."""
    example = next(e for e in TASK_SCHEMA["examples"] if "placement" in e)
    body = {**example, "engine": "mock", "task_id": "full-1", "session_id": "full-session", "ctx": 256}
    body.pop("prompt")
    body["inputs"] = ["Hello, ", "world"]  # `inputs` is the only field the example leaves out (it has `prompt`)
    return body


def test_a_request_with_every_field_is_accepted(http: httpx.Client) -> None:
    body = full_task_request()
    body["placement"] = {**body["placement"], "require_device_mask": "0", "avoid_pools": ["other"]}
    missing = set(TASK_SCHEMA["properties"]) - set(body) - {"prompt"}
    assert not missing, missing
    assert set(body["placement"]) == set(TASK_SCHEMA["$defs"]["Placement"]["properties"]) - {"pin_pool_id"}
    admission = submit(http, body)
    assert admission["task_id"] == "full-1" and admission["pool_id"] == "default"
    frames = read_stream(http, "full-1")
    assert frames[0].event == "started" and frames[-1].event == "end", frames
    assert frames[0].data["seed"] == body["seed"]
    with_prompt = {**body, "task_id": "full-2", "inputs": None, "prompt": "Hello"}
    del with_prompt["inputs"]
    assert submit(http, with_prompt)["task_id"] == "full-2"


# -- correlation ids -------------------------------------------------------------------------------------------


def test_correlation_id_is_echoed_everywhere(http: httpx.Client) -> None:
    cid = {"x-correlation-id": "corr-123.abc:9"}
    admitted = http.post("/v1/tasks", json={"prompt": "x"}, headers=cid)
    refused = http.post("/v1/tasks", json={"prompt": "x", "max_tokens": 0}, headers=cid)
    stream = http.get(f"/v1/tasks/{admitted.json()['task_id']}/stream", headers=cid)
    infer = http.post("/infer", json={"prompt": "x", "max_tokens": 2}, headers=cid)
    infer_refused = http.post("/infer", content=b"nope", headers={**cid, "content-type": "text/plain"})
    other = [http.get(path, headers=cid) for path in ("/metrics", "/v1/capabilities", "/openapi.json", "/nope")]
    for answer in (admitted, refused, stream, infer, infer_refused, *other):
        assert answer.headers["x-correlation-id"] == "corr-123.abc:9", (answer.request.url, answer.headers)
    assert (admitted.status_code, refused.status_code, stream.status_code, infer.status_code) == (202, 400, 200, 200)


def test_correlation_id_is_generated_when_absent_or_unsafe(http: httpx.Client) -> None:
    admitted = http.post("/v1/tasks", json={"prompt": "x"})
    answers = [
        admitted,
        http.post("/v1/tasks", content=b"{", headers={"content-type": "application/json"}),
        http.get(f"/v1/tasks/{admitted.json()['task_id']}/stream"),
        http.post("/infer", json={"prompt": "x", "max_tokens": 1}),
        http.post("/v1/tasks/nope/cancel"),
        http.get("/metrics", headers={"x-correlation-id": "bad id with spaces"}),
    ]
    ids = [a.headers["x-correlation-id"] for a in answers]
    assert all(UUID4.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "repeat_penalty": False}, "repeat_penalty"),
        ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ({"prompt": "x", "seed": 1.5}, "seed"),
        ({"prompt": "x", "stop": "one"}, "stop"),
    ],
)
def test_no_lax_coercion(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    """The schema's types are exact: no bool → number or "5" → 5 (found by schemathesis; fixed in wire.read_model)."""
    refusal = check_envelope(http.post("/v1/tasks", json=body), 400, "INVALID_PARAMS")
    assert refusal["field"] == field, refusal
    answer = http.post("/infer", json={"prompt": "x", "repeat_penalty": True})
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize("path", ["/v1/tasks", "/infer"])
def test_explicit_null_is_rejected(http: httpx.Client, path: str) -> None:
    """No schema field allows null (found by schemathesis: `"repeat_penalty": null` was accepted)."""
    answer = http.post(path, json={"prompt": "x", "top_p": None})
    assert answer.status_code == 400, answer.text
