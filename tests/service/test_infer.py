"""/infer: the NDJSON daemon surface (token lines, one done line with snake_case usage, `{error, code}` errors)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from llama_orch.adapters.mock import Fault, mock_text
from tests.service.helpers import Service, mock_pool, parse_ndjson, scrape, service, total, validate

INFER_ERROR = "infer-line.json#/$defs/InferError"


@pytest.fixture(scope="module")
def svc() -> Iterator[Service]:
    deployment = service(mock_pool(model="tiny"), max_body_bytes=2048)
    with deployment.running():
        yield deployment


@pytest.fixture
def http(svc: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=svc.url, timeout=30.0) as client:
        yield client


def check_infer_error(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    validate(body, INFER_ERROR)
    assert body["code"] == status
    assert answer.headers["x-correlation-id"]
    return str(body["error"])


def test_tokens_then_one_done_line(http: httpx.Client) -> None:
    answer = http.post("/infer", json={"prompt": "Hello", "max_tokens": 6, "seed": 42, "model": "tiny"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    lines = parse_ndjson(answer.content)
    *token_lines, done = lines
    assert [set(line) for line in token_lines] == [{"token"}] * 6
    assert [line["token"] for line in token_lines] == mock_text("Hello", 42, 6)
    assert done["done"] is True and done["finish_reason"] == "length"
    assert done["content"] == "".join(line["token"] for line in token_lines)
    usage = done["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_defaults_when_model_and_max_tokens_are_absent_or_zero(http: httpx.Client) -> None:
    for body in ({"prompt": "x"}, {"prompt": "x", "model": "", "max_tokens": 0, "seed": 0, "stream": False}):
        lines = parse_ndjson(http.post("/infer", json=body).content)
        assert lines[-1]["done"] is True and lines[-1]["usage"]["completion_tokens"] == len(lines) - 1 > 0


@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_only_json_bodies(http: httpx.Client, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    check_infer_error(http.post("/infer", content=b'{"prompt": "x"}', headers=headers), 415)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"max_tokens": 4}', b'{"prompt": ""}', b'{"prompt": "x", "max_tokens": -1}', b'{"prompt": 1}'],
)
def test_bad_bodies_are_400(http: httpx.Client, content: bytes) -> None:
    check_infer_error(http.post("/infer", content=content, headers={"content-type": "application/json"}), 400)


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    check_infer_error(http.post("/infer", json={"prompt": "x" * 4096}), 413)


def test_unknown_model_is_404_when_pools_declare_models(http: httpx.Client) -> None:
    error = check_infer_error(http.post("/infer", json={"prompt": "x", "model": "gpt-17"}), 404)
    assert "gpt-17" in error


def test_wrong_method_keeps_the_infer_shape(http: httpx.Client) -> None:
    check_infer_error(http.get("/infer"), 405)


def test_failure_after_tokens_appends_an_error_line() -> None:
    svc = service()
    svc.mock().inject(Fault("reset_mid", after_tokens=3))
    with svc.running() as http:
        answer = http.post("/infer", json={"prompt": "x", "max_tokens": 10})
    assert answer.status_code == 200
    lines = parse_ndjson(answer.content)
    assert [next(iter(line)) for line in lines] == ["token"] * 3 + ["error"], lines
    validate(lines[-1], INFER_ERROR)
    assert lines[-1]["code"] == 500 and "WORKER_RESET" in lines[-1]["error"]


def test_failure_before_any_token_is_still_one_error_line() -> None:
    svc = service(mock_pool(replica={"retry": {"max_attempts": 1}}), health_interval_ms=3_600_000)
    with svc.running() as http:
        svc.mock().inject(Fault("bad_request"))
        answer = http.post("/infer", json={"prompt": "x"})
    lines = parse_ndjson(answer.content)
    assert len(lines) == 1 and lines[0]["code"] == 400, lines
    validate(lines[0], INFER_ERROR)


def test_unready_pool_is_refused_before_streaming() -> None:
    svc = service()
    svc.mock().inject(Fault("loading"))
    with svc.running() as http:
        check_infer_error(http.post("/infer", json={"prompt": "x"}), 503)


def test_refusals_are_counted_as_rejected_tasks(http: httpx.Client) -> None:
    def rejected(reason: str) -> float:
        return total(scrape(http), "tasks_rejected_total", reason=reason)

    before = {reason: rejected(reason) for reason in ("INVALID_PARAMS", "MODEL_NOT_SERVED")}
    check_infer_error(http.post("/infer", json={"prompt": 7}), 400)
    check_infer_error(http.post("/infer", json={"prompt": "x", "model": "absent"}), 404)
    assert {reason: rejected(reason) - before[reason] for reason in before} == {
        "INVALID_PARAMS": 1,
        "MODEL_NOT_SERVED": 1,
    }
