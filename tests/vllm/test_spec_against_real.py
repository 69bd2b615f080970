"""Our vLLM spec against the real server: schemathesis generates valid and invalid requests for every operation we
declare and checks every answer (status, content type, body, headers, that valid requests are accepted and invalid
ones refused). 0 failures means the spec says what vLLM does. `LLAMA_ORCH_FUZZ_SEED` picks another seed.

Facts of the deployment, outside any engine spec, shape the valid cases: `max_tokens` is bounded by the server's
`--max-model-len` minus the prompt, so they ask for at most 256 tokens (chat too, whose default is the whole
context: 8192 tokens here); token ids are below the model's vocabulary size (`x-below` in the spec). A negative
case that pydantic's lax reading turns valid is no negative case (see `lax_reading`), and one vLLM defect is
kept out of the negative cases (`_crashes_vllm`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, reject, settings
from schemathesis.specs.openapi.checks import unsupported_method

from tests.engines.spec_support import load_spec
from tests.support.vllm_server import VllmServer
from tests.vllm.lax_reading import lax_valid, request_validator

pytestmark = pytest.mark.real_vllm

SEED = int(os.environ.get("LLAMA_ORCH_FUZZ_SEED", "20261206"))
EXAMPLES = 30
MAX_TOKENS = 256
U64_MAX = 2**64 - 1


def _crashes_vllm(body: Any) -> bool:
    """A defect of vLLM 0.32.0, not of the spec: a top_k beyond u64 is a 500 (an overflow), not a 400."""
    top_k = body.get("top_k") if isinstance(body, dict) else None
    return isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > U64_MAX


def _within_the_deployment(body: Any, vocabulary: int) -> None:
    if not isinstance(body, dict):
        return
    if "messages" in body and not any(_number(body.get(f)) for f in ("max_tokens", "max_completion_tokens")):
        body["max_tokens"] = MAX_TOKENS  # chat's default is the whole context (8192 tokens here)
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if _number(value) and value > MAX_TOKENS:
            body[field] = MAX_TOKENS
    for field in ("prompt", "stop_token_ids"):
        if isinstance(body.get(field), list):
            body[field] = _token_ids(body[field], vocabulary)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _token_ids(item: Any, vocabulary: int) -> Any:
    if isinstance(item, list):
        return [_token_ids(i, vocabulary) for i in item]
    if not _number(item):
        return item
    return int(item) % vocabulary  # schemathesis writes some integers as whole floats (4002.0)


SPEC = load_spec("vllm")
schema = schemathesis.openapi.from_dict(
    SPEC,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"mode": "all", "max-examples": EXAMPLES},
            "output": {"sanitization": {"enabled": False}},
        }
    ),
)


def _request_schema(case: schemathesis.Case) -> dict[str, Any] | None:
    body = SPEC["paths"][case.path].get(case.method.lower(), {}).get("requestBody")
    return None if body is None else body["content"]["application/json"]["schema"]


# The Prometheus app answers every method, QUERY too, which OpenAPI 3.1 cannot declare (see the spec's /metrics).
@schema.exclude(path="/metrics").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES, database=None)
def test_the_real_vllm_does_what_our_spec_says(case: schemathesis.Case, vllm_server: VllmServer) -> None:
    request = _request_schema(case)
    negative = case._meta is not None and case._meta.generation.mode.is_negative
    if negative and request is not None and lax_valid(request_validator(SPEC, request), case.body):
        reject()
    if negative and _crashes_vllm(case.body):
        reject()
    if not negative:
        vocabulary = json.loads((vllm_server.model / "config.json").read_text())["vocab_size"]
        _within_the_deployment(case.body, vocabulary)
    case.call_and_validate(base_url=vllm_server.base_url)


@schema.include(path="/metrics").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES, database=None)
def test_the_real_vllm_metrics_route_does_what_our_spec_says(case: schemathesis.Case, vllm_server: VllmServer) -> None:
    case.call_and_validate(base_url=vllm_server.base_url, excluded_checks=[unsupported_method])
