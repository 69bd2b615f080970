"""Determinism through the whole stack on real llama-server processes: identical prompt, parameters, seed,
sampler profile, engine version and model give byte-identical streams, on one replica and across replicas."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_orch_gen.orchestrator import Client

from tests.real.stack import Run, orchestrator, pool, run_task
from tests.support.llama_server import LlamaServer

pytestmark = pytest.mark.real_engine

# 64 stable seeds: fixed, spread over the 32-bit range, never drawn at run time.
SEEDS = [(7919 * i * i + 104729 * i + 13) % 4_294_967_291 for i in range(64)]
PROMPT = "The orchestrator relays every token of"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def two_replicas(tiny_model: Path) -> Iterator[tuple[LlamaServer, LlamaServer]]:
    # One slot each: a task never shares a batch, so nothing but the request decides the numbers.
    with LlamaServer(tiny_model, parallel=1) as a, LlamaServer(tiny_model, parallel=1) as b:
        yield a, b


@pytest.fixture(scope="module")
def client(two_replicas: tuple[LlamaServer, LlamaServer]) -> Iterator[Client]:
    a, b = two_replicas
    with orchestrator([pool("a", [a]), pool("b", [b])]) as client:
        yield client


def _body(pool_id: str, seed: int, temperature: float) -> dict[str, Any]:
    return {
        "prompt": PROMPT,
        "max_tokens": MAX_TOKENS,
        "seed": seed,
        "temperature": temperature,
        "top_k": 40,
        "top_p": 0.95,
        "determinism": "strict",
        "sampler_profile_version": "v1",
        "placement": {"mode": "pin", "pin_pool_id": pool_id},
    }


def _run(client: Client, pool_id: str, seed: int, temperature: float) -> Run:
    run = run_task(client, _body(pool_id, seed, temperature))
    assert run.status == 202 and run.code == "", f"seed {seed} on {pool_id}: {run.code} {run.refusal or run.events}"
    # The engine's own count: a sampled token may carry no text of its own (part of a UTF-8 character that the
    # next token completes), and the relay never emits an empty token event.
    assert run.terminal.data.tokens_out == MAX_TOKENS
    return run


def _identity(run: Run) -> dict[str, Any]:
    started = run.started
    return {
        "engine": started.engine,
        "engine_version": started.engine_version,
        "model_digest": started.model_digest,
        "sampler_profile_version": started.sampler_profile_version,
        "seed": started.seed,
    }


def _assert_same(first: Run, second: Run, what: str) -> None:
    if first.tokens != second.tokens:
        diff = "\n".join(
            difflib.unified_diff(
                [json.dumps(t) for t in first.tokens], [json.dumps(t) for t in second.tokens], "first", "second", n=2
            )
        )
        index = next(i for i, (x, y) in enumerate(zip(first.tokens, second.tokens, strict=True)) if x != y)
        pytest.fail(f"{what}: streams diverge at token {index}\n{_identity(first)}\n{diff}")


@pytest.mark.parametrize("temperature", [0.0, 0.9], ids=["greedy", "sampled"])
def test_same_seed_gives_byte_identical_streams_within_and_across_replicas(
    client: Client, two_replicas: tuple[LlamaServer, LlamaServer], temperature: float, tmp_path: Path
) -> None:
    digest = "sha256:" + hashlib.sha256(two_replicas[0].model.read_bytes()).hexdigest()
    record = []
    for seed in SEEDS:
        first, again, other = (_run(client, p, seed, temperature) for p in ("a", "a", "b"))
        for run in (first, again, other):
            identity = _identity(run)
            assert identity["model_digest"] == digest and identity["engine_version"]
            assert identity["seed"] == seed and identity["sampler_profile_version"] == "v1"
        assert _identity(first) == _identity(other)
        _assert_same(first, again, f"seed {seed}, temperature {temperature}, twice on one replica")
        _assert_same(first, other, f"seed {seed}, temperature {temperature}, across two replicas")
        record.append({**_identity(first), "temperature": temperature, "text": "".join(first.tokens)})
    (tmp_path / "determinism.json").write_text(json.dumps(record, ensure_ascii=False, indent=1))


def test_different_seeds_change_the_stream_when_sampling(client: Client) -> None:
    texts = {"".join(_run(client, "a", seed, 0.9).tokens) for seed in SEEDS}
    # Sampling really happens: nearly every seed gives its own text (a collision or two is chance).
    assert len(texts) >= len(SEEDS) - 4, f"only {len(texts)} distinct streams for {len(SEEDS)} seeds"
    greedy = {"".join(_run(client, "a", seed, 0.0).tokens) for seed in SEEDS[:8]}
    assert len(greedy) == 1, "greedy decoding must not depend on the seed"
