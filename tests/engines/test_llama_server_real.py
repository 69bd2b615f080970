"""The generated llama.cpp client against a real llama-server running the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_orch_gen.engines.llamacpp import wire
from llama_orch_gen.engines.llamacpp.api.native import completion, health, props, slots, tokenize
from llama_orch_gen.engines.llamacpp.api.openai import v1_completions, v1_models
from llama_orch_gen.engines.llamacpp.client import AuthenticatedClient, Client
from llama_orch_gen.engines.llamacpp.models import (
    CompletionRequest,
    ErrorResponse,
    HealthResponse,
    ModelList,
    PropsResponse,
    Slot,
    TextCompletionRequest,
    TokenizeRequest,
    TokenizeResponse,
)

from llama_orch_runtime.streaming import StreamStatusError
from tests.support.llama_server import LlamaServer

pytestmark = pytest.mark.real_engine


@pytest.fixture
def client(llama_server: LlamaServer) -> Iterator[Client]:
    with Client(base_url=llama_server.base_url) as client:
        yield client


def test_health_props_and_models_parse_into_typed_objects(client: Client) -> None:
    assert isinstance(health.sync(client=client), HealthResponse)
    info = props.sync(client=client)
    assert isinstance(info, PropsResponse)
    assert info.build_info  # the engine version we capture, e.g. "b0-unknown"
    assert info.total_slots == 2
    models = v1_models.sync(client=client)
    assert isinstance(models, ModelList)
    assert models.data[0].id.endswith("tiny.gguf")
    slot_list = slots.sync(client=client)
    assert isinstance(slot_list, list) and all(isinstance(s, Slot) for s in slot_list)
    assert len(slot_list) == 2


def test_native_stream_yields_tokens_then_one_final_chunk_with_timings(client: Client) -> None:
    body = CompletionRequest.from_dict({"prompt": "Hello", "n_predict": 12, "stream": True, "seed": 7})
    with completion.stream(client=client, body=body) as chunks:
        items = list(chunks)
    assert all(isinstance(i, wire.CompletionChunk) for i in items)
    final = items[-1]
    assert isinstance(final, wire.CompletionChunk)
    assert final.stop and [i.stop for i in items[:-1]] == [False] * (len(items) - 1)
    assert final.timings is not None and final.timings.predicted_n == 12
    assert final.stop_type == "limit" and final.tokens_predicted == 12
    text = "".join(i.content for i in items if isinstance(i, wire.CompletionChunk))
    # The same request without streaming gives the same text: the stream lost nothing.
    whole = completion.sync(client=client, body=CompletionRequest.from_dict({**body.to_dict(), "stream": False}))
    assert not isinstance(whole, ErrorResponse | list | None)
    assert whole.content == text


async def test_openai_stream_ends_with_usage_and_done(llama_server: LlamaServer) -> None:
    body = TextCompletionRequest.from_dict(
        {"prompt": "Hello", "max_tokens": 5, "stream": True, "seed": 1, "stream_options": {"include_usage": True}}
    )
    async with Client(base_url=llama_server.base_url) as client:
        items = [item async for item in await v1_completions.astream(client=client, body=body)]
    assert all(isinstance(i, wire.TextCompletionChunk) for i in items)
    last = items[-1]
    assert isinstance(last, wire.TextCompletionChunk)
    assert last.usage is not None and last.usage.completion_tokens == 5
    assert last.usage.total_tokens == last.usage.prompt_tokens + 5
    assert [c.finish_reason for i in items if isinstance(i, wire.TextCompletionChunk) for c in i.choices][
        -1
    ] == "length"


def test_prompt_longer_than_the_context_is_rejected_before_any_token(client: Client) -> None:
    body = CompletionRequest.from_dict({"prompt": "word " * 700, "n_predict": 4, "stream": True})
    with pytest.raises(StreamStatusError) as caught:
        completion.stream(client=client, body=body)
    assert caught.value.status_code == 400
    error = caught.value.parsed
    assert isinstance(error, ErrorResponse)
    assert error.error.type_ == "exceed_context_size_error"
    assert isinstance(error.error.n_ctx, int) and error.error.n_ctx == 512


def test_tokenize_counts_prompt_tokens(client: Client) -> None:
    tokens = tokenize.sync(client=client, body=TokenizeRequest.from_dict({"content": "Hello world"}))
    assert isinstance(tokens, TokenizeResponse)
    assert len(tokens.tokens) >= 2


def test_api_key_server_refuses_a_client_without_the_key(tiny_model: Path) -> None:
    with LlamaServer(tiny_model, api_key="s3cret-key", parallel=1) as server:
        anonymous = Client(base_url=server.base_url)
        keyed = AuthenticatedClient(base_url=server.base_url, token="s3cret-key")
        with anonymous, keyed:
            _check_refused_without_key(anonymous, keyed)


def _check_refused_without_key(anonymous: Client, keyed: AuthenticatedClient) -> None:
    refused = props.sync_detailed(client=anonymous)
    assert refused.status_code == 401
    assert isinstance(refused.parsed, ErrorResponse)
    assert refused.parsed.error.type_ == "authentication_error"
    body = CompletionRequest.from_dict({"prompt": "x", "n_predict": 1, "stream": True})
    with pytest.raises(StreamStatusError) as caught:
        completion.stream(client=anonymous, body=body)
    assert caught.value.status_code == 401
    # /health stays public; with the key, the same calls succeed.
    assert isinstance(health.sync(client=anonymous), HealthResponse)
    assert isinstance(props.sync(client=keyed), PropsResponse)
