from __future__ import annotations

import random

import pytest
from llama_orch_gen.contracts.config import OrchestratorConfig, RetryPolicy, Timeouts
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.factory import build_registry
from llama_orch.adapters.http_policy import HttpPolicy, code_for_status, parse_retry_after_ms
from llama_orch.adapters.llamacpp import LlamaCppAdapter
from llama_orch.adapters.mock import MockAdapter
from llama_orch.adapters.vllm import VllmAdapter
from llama_orch.determinism import SEED_LIMIT, derive_seed
from llama_orch.errors import ConfigError, EngineError, fingerprint, redact
from tests.adapters.helpers import run_task


@pytest.mark.parametrize(
    ("value", "ms"), [("120", 120_000), (" 5 ", 5_000), ("0", 0), (None, None), ("soon", None), ("-1", None)]
)
def test_retry_after(value: str | None, ms: int | None) -> None:
    assert parse_retry_after_ms(value) == ms


def test_retry_after_http_date() -> None:
    assert parse_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10_000


def test_backoff_is_full_jitter_within_the_cap() -> None:
    policy = HttpPolicy(backoff_base_s=0.1, backoff_cap_s=2.0)
    rng = random.Random(7)
    for n in range(1, 8):
        bound = min(2.0, 0.1 * 2**n)
        assert all(0.0 <= policy.backoff_s(n, rng) <= bound for _ in range(200))


def test_policy_from_config() -> None:
    policy = HttpPolicy.from_config(Timeouts(first_token_ms=600_000), RetryPolicy(max_attempts=2))
    assert policy.first_token_s == 600 and policy.connect_s == 5 and policy.max_attempts == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INVALID_PARAMS"),
        (422, "INVALID_PARAMS"),
        (401, "UPSTREAM_AUTH"),
        (403, "UPSTREAM_AUTH"),
        (429, "ADMISSION_REJECT"),
        (503, "POOL_UNREADY"),
        (500, "WORKER_RESET"),
        (404, "INTERNAL"),
        (501, "INTERNAL"),
    ],
)
def test_status_codes(status: int, code: str) -> None:
    assert code_for_status(status) == code


def test_redaction_masks_headers_assignments_and_known_secrets() -> None:
    text = redact(
        'Authorization: Bearer abc.def-123 X-Api-Key: k3y-value api_key="0123456789" raw s3cr3t!', ["s3cr3t!"]
    )
    for secret in ("abc.def-123", "k3y-value", "0123456789", "s3cr3t!"):
        assert secret not in text
    assert f"****{fingerprint('abc.def-123')}" in text


def test_engine_errors_are_redacted_bounded_and_default_retriable() -> None:
    error = EngineError("WORKER_RESET", "lost; Authorization: Bearer topsecret-token " + "x" * 2000)
    assert "topsecret-token" not in error.message and len(error.message) <= 512
    assert error.retriable and not EngineError("INVALID_PARAMS", "bad").retriable


def test_derived_seeds_are_stable_and_in_range() -> None:
    assert derive_seed("task-1") == derive_seed("task-1") != derive_seed("task-2")
    assert all(0 <= derive_seed(f"t{i}") < SEED_LIMIT for i in range(500))


def test_registry_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    config = OrchestratorConfig.model_validate(
        {
            "pools": [
                {
                    "id": "llama",
                    "engine": "llamacpp",
                    "replicas": [
                        {
                            "id": "r0",
                            "base_url": "http://127.0.0.1:1",
                            "api": "native",
                            "id_slot": 1,
                            "bearer_token_env": "LLAMA_KEY",
                        }
                    ],
                },
                {
                    "id": "v",
                    "engine": "vllm",
                    "model": "m",
                    "replicas": [{"id": "v0", "base_url": "http://127.0.0.1:2"}],
                },
                {"id": "mock", "engine": "mock", "replicas": [{"id": "m0", "base_url": "http://unused"}]},
            ]
        }
    )
    with pytest.raises(ConfigError, match="LLAMA_KEY"):
        build_registry(config)
    monkeypatch.setenv("LLAMA_KEY", "k")
    registry = build_registry(config)
    llama = registry.get("llama", "r0")
    assert isinstance(llama, LlamaCppAdapter) and llama.id_slot == 1 and llama.api == "native"
    assert llama.http.headers["authorization"] == "Bearer k"
    assert isinstance(registry.get("v", "v0"), VllmAdapter)
    assert isinstance(registry.get("mock", "m0"), MockAdapter)


async def test_unreachable_engine_reports_unhealthy_and_refused_task() -> None:
    adapter = LlamaCppAdapter(
        "p", "r0", base_url="http://127.0.0.1:9", policy=HttpPolicy(max_attempts=2, backoff_base_s=0.001)
    )
    health = await adapter.health()
    outcome = await run_task(adapter, TaskRequest(task_id="t", prompt="x"))
    await adapter.aclose()
    assert not health.live and health.state.value == "unhealthy"
    assert outcome.code == "POOL_UNAVAILABLE"
