"""Schemathesis against the committed spec, on the app served over mock engines: positive and negative data for
every operation, and stateful sequences through the spec's links (submit → stream → cancel). Seeded and bounded."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from llama_orch.service.app import openapi_document
from tests.service.helpers import UUID4, mock_pool, service

SEED = 20240601
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CASES: Counter[str] = Counter()  # calls made per mode, reported at the end of the module


def load(mode: str, max_examples: int) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {"seed": SEED, "generation": {"mode": mode, "max-examples": max_examples, "database": "none"}}
    )
    return schemathesis.openapi.from_dict(json.loads(openapi_document()), config=config)


POSITIVE = load("positive", 12)
NEGATIVE = load("negative", 12)
# The coverage phase alone: boundary values, and every undeclared method on every path (`unsupported_method`).
COVERAGE = schemathesis.openapi.from_dict(
    json.loads(openapi_document()),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"database": "none"},
            "phases": {"examples": {"enabled": False}, "fuzzing": {"enabled": False}, "coverage": {"enabled": True}},
        }
    ),
)
BOUNDED = settings(
    max_examples=12,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    svc = service(
        mock_pool(queue={"capacity": 64}),
        mock_pool("other", replicas=("o0",), model="tiny"),
        mock={"tokens": 4},
        max_body_bytes=65536,
    )
    with svc.running():
        yield svc.url


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print(f"\nschemathesis calls: {dict(CASES)}")


# The contract's own 503s: the task asks for an engine or placement no ready pool serves (POOL_UNAVAILABLE), or
# its pool has no ready replica. Every other 5xx is a server error.
CONTRACT_503 = {"POOL_UNAVAILABLE", "POOL_UNREADY"}


def check_extra(response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No server error beyond the documented 503 envelopes; a correlation id (UUIDv4 unless sent) on every answer."""
    if response.status_code >= 500:
        body = json.loads(response.content)
        assert response.status_code == 503 and body.get("code") in CONTRACT_503, (response.status_code, body)
    value = response.headers.get("x-correlation-id")
    assert value, "no X-Correlation-Id"
    if (case.headers or {}).get("X-Correlation-Id") is None:
        assert UUID4.match(value[0]), value


@POSITIVE.parametrize()
@BOUNDED
def test_positive(case: schemathesis.Case, base_url: str) -> None:
    CASES["positive"] += 1
    response = case.call(base_url=base_url, timeout=30)
    case.validate_response(response, checks=CONFORMANCE)
    check_extra(response, case)


@NEGATIVE.parametrize()
@BOUNDED
def test_negative(case: schemathesis.Case, base_url: str) -> None:
    CASES["negative"] += 1
    response = case.call(base_url=base_url, timeout=30)
    case.validate_response(response, checks=CONFORMANCE)
    check_extra(response, case)
    case.validate_response(response, checks=[negative_data_rejection])


@COVERAGE.parametrize()
@BOUNDED
def test_coverage(case: schemathesis.Case, base_url: str) -> None:
    CASES["coverage"] += 1
    response = case.call(base_url=base_url, timeout=30)
    case.validate_response(response, checks=[*CONFORMANCE, unsupported_method])
    check_extra(response, case)


def test_stateful_links(base_url: str) -> None:
    links = POSITIVE.as_state_machine()

    class Machine(links):  # type: ignore[valid-type,misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            CASES["stateful"] += 1
            return {"base_url": base_url, "timeout": 30}

        def validate_response(  # type: ignore[override]
            self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: object
        ) -> None:
            case.validate_response(response, checks=CONFORMANCE)
            check_extra(response, case)

    Machine.run(
        settings=settings(
            max_examples=15,
            stateful_step_count=4,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert CASES["stateful"] > 0
