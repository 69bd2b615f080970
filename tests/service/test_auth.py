"""Bearer auth: 401 envelopes with WWW-Authenticate, public health/metrics by configuration, and the token never
shows up in a response or a log line."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from llama_orch.errors import ConfigError
from tests.service.helpers import Service, check_envelope, service

TOKEN = "orch-s3cret-7f1e9a2b4c6d"
ENV = "LLORCH_TEST_API_TOKEN"
GOOD = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, TOKEN)


def secured(**settings: Any) -> Service:
    return service(auth_token_env=ENV, **settings)


def check_unauthenticated(answer: httpx.Response) -> None:
    body = check_envelope(answer, 401, "UNAUTHENTICATED")
    assert answer.headers["www-authenticate"].startswith("Bearer"), answer.headers
    assert TOKEN not in answer.text and TOKEN not in str(answer.headers), body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": f"Bearer {TOKEN[:-1]}"},
        {"authorization": f"bearer{TOKEN}"},
        {"authorization": TOKEN},
        {"authorization": f"Basic {TOKEN}"},
    ],
)
def test_missing_or_wrong_token_is_401(headers: dict[str, str]) -> None:
    with secured().running() as http:
        check_unauthenticated(http.post("/v1/tasks", json={"prompt": "x"}, headers=headers))
        check_unauthenticated(http.get("/v1/tasks/t-1/stream", headers=headers))
        check_unauthenticated(http.post("/v1/tasks/t-1/cancel", headers=headers))
        check_unauthenticated(http.get("/v1/sessions/s-1", headers=headers))
        check_unauthenticated(http.get("/v1/capabilities", headers=headers))
        answer = http.post("/infer", json={"prompt": "x"}, headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_right_token_is_admitted() -> None:
    with secured().running() as http:
        answer = http.post("/v1/tasks", json={"prompt": "x", "max_tokens": 2}, headers=GOOD)
        assert answer.status_code == 202, answer.text
        stream = http.get(answer.json()["streams"]["sse"], headers=GOOD)
        assert stream.status_code == 200 and b"event: end" in stream.content
        assert http.get("/v1/capabilities", headers=GOOD).status_code == 200
        assert http.post("/infer", json={"prompt": "x", "max_tokens": 2}, headers=GOOD).status_code == 200


def test_health_metrics_and_openapi_are_public_by_default() -> None:
    with secured().running() as http:
        for path in ("/v1/pools/default/health", "/metrics", "/openapi.json"):
            assert http.get(path).status_code == 200, path
        check_envelope(http.get("/v1/pools/nowhere/health"), 404, "NOT_FOUND")


def test_health_and_metrics_protected_when_configured() -> None:
    with secured(auth_public_health=False, auth_public_metrics=False).running() as http:
        for path in ("/v1/pools/default/health", "/metrics"):
            check_unauthenticated(http.get(path))
            assert http.get(path, headers=GOOD).status_code == 200, path
        assert http.get("/openapi.json").status_code == 200  # the contract itself stays readable


def test_missing_token_variable_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(ConfigError, match=ENV):
        secured()


def test_token_never_in_responses_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with secured().running() as http:
        answers = [
            http.post(
                "/v1/tasks", json={"prompt": "x", "max_tokens": 2}, headers={"authorization": f"Bearer {TOKEN}!"}
            ),
            http.post("/v1/tasks", json={"prompt": "x", "max_tokens": 0}, headers=GOOD),
            http.post("/v1/tasks", json={"prompt": "x", "max_tokens": 2}, headers=GOOD),
            http.get("/v1/capabilities", headers=GOOD),
            http.get("/metrics", headers=GOOD),
            http.get("/v1/pools/default/health", headers=GOOD),
            http.post("/infer", json={"prompt": "x", "max_tokens": 2}, headers=GOOD),
        ]
        task_id = answers[2].json()["task_id"]
        answers.append(http.get(f"/v1/tasks/{task_id}/stream", headers=GOOD))
        assert [a.status_code for a in answers] == [401, 400, 202, 200, 200, 200, 200, 200]
        seen += [a.text + str(a.headers) for a in answers]
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert caplog.records, "expected the service to log something"
    assert TOKEN not in logged
    assert not [text for text in seen if TOKEN in text]
