"""TGI's own Python clients drive the TGI simulator as they drive the real router: `text_generation.Client`
(text-generation 0.7.0) and `huggingface_hub.InferenceClient` call `POST /` and the Messages API, get typed
results, streams that end with their details or usage, and the simulator's faults as the errors each client
raises for them. Where both parse a response, what the official client parsed equals what our generated client
parses from the very same bytes (recorded, then replayed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
import text_generation
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub import errors as hf_errors
from llama_orch_gen.engines.tgi import AuthenticatedClient
from llama_orch_gen.engines.tgi import wire as w
from llama_orch_gen.engines.tgi.api.native import compat_generate
from llama_orch_gen.engines.tgi.api.openai import v1_chat_completions
from llama_orch_gen.engines.tgi.models.chat_completion import ChatCompletion
from llama_orch_gen.engines.tgi.models.chat_request import ChatRequest
from llama_orch_gen.engines.tgi.models.compat_generate_request import CompatGenerateRequest
from llama_orch_gen.engines.tgi.models.generate_response import GenerateResponse
from text_generation import errors as tg_errors
from text_generation.types import FinishReason

from llama_orch.simulators import ENGINES, Fault, FaultKind, SimulatorConfig
from tests.support.asgi_server import serve_asgi
from tests.support.recording import Exchange, Recorder, replaying

# text-generation 0.7.0 serializes its requests with pydantic's deprecated `.dict()`.
pytestmark = pytest.mark.filterwarnings("ignore:The `dict` method is deprecated")

TOKENS = 6
CHAT = [{"role": "user", "content": "Tell me about foxes"}]


@contextmanager
def tgi(*faults: Fault, stall_s: float = 5.0) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(ENGINES["tgi"](SimulatorConfig(tokens=TOKENS, faults=faults, stall_s=stall_s)))
    with serve_asgi(recorder) as url:
        yield url, recorder


def _generated(exchange: Exchange) -> AuthenticatedClient:
    """Our generated TGI client, answered with the recorded bytes."""
    return AuthenticatedClient("http://replay", token="", httpx_args={"transport": replaying(exchange)})


def _stream_items(stream: Any) -> list[Any]:
    with stream as items:
        return list(items)


# --- text_generation.Client ---------------------------------------------------------------------------------


def test_text_generation_generate_with_details_and_seed() -> None:
    with tgi() as (url, recorder):
        client = text_generation.Client(url, timeout=10)
        answer = client.generate("Why is the sky blue?", max_new_tokens=4, seed=11)
        again = client.generate("Why is the sky blue?", max_new_tokens=4, seed=11)
        other = client.generate("Why is the sky blue?", max_new_tokens=4, seed=12)
    assert isinstance(answer, text_generation.types.Response)
    assert answer.details.finish_reason is FinishReason.Length
    assert answer.details.generated_tokens == len(answer.details.tokens) == 4
    assert answer.details.seed == 11
    assert answer.generated_text == "".join(t.text for t in answer.details.tokens)
    assert again.generated_text == answer.generated_text != other.generated_text
    parsed = compat_generate.sync(client=_generated(recorder.last("/")), body=CompatGenerateRequest(inputs="x"))
    assert isinstance(parsed, list) and isinstance(parsed[0], GenerateResponse)
    assert parsed[0].generated_text == other.generated_text


def test_text_generation_stream_ends_with_text_and_details() -> None:
    with tgi() as (url, recorder):
        events = list(text_generation.Client(url, timeout=10).generate_stream("Hello", max_new_tokens=20, seed=3))
    final = events[-1]
    assert [e.generated_text for e in events[:-1]] == [None] * (len(events) - 1)
    assert final.details is not None and final.details.finish_reason is FinishReason.EndOfSequenceToken
    assert final.details.generated_tokens == TOKENS + 1 and final.details.seed == 3  # the EOS token counts
    assert final.token.special and final.generated_text == "".join(e.token.text for e in events[:-1])
    ours = _stream_items(compat_generate.stream(client=_generated(recorder.last("/")), body=CompatGenerateRequest("x")))
    assert all(type(item) is w.StreamResponse for item in ours)
    assert [(o.token.id, o.token.text, o.generated_text) for o in ours] == [
        (e.token.id, e.token.text, e.generated_text) for e in events
    ]
    assert ours[-1].details is not None and ours[-1].details.finish_reason == final.details.finish_reason.value


def test_text_generation_limited_stream_carries_the_result_on_its_last_token() -> None:
    with tgi() as (url, _):
        events = list(text_generation.Client(url, timeout=10).generate_stream("Hello", max_new_tokens=3))
    assert len(events) == 3
    assert events[-1].details is not None and events[-1].details.finish_reason is FinishReason.Length
    assert events[-1].generated_text == "".join(e.token.text for e in events)


def test_text_generation_stop_sequences_and_prefill() -> None:
    with tgi() as (url, _):
        client = text_generation.Client(url, timeout=10)
        full = client.generate("Stop me", max_new_tokens=TOKENS, seed=8)
        stop = full.details.tokens[2].text.strip()
        stopped = client.generate("Stop me", max_new_tokens=TOKENS, seed=8, stop_sequences=[stop])
        streamed = list(client.generate_stream("Stop me", max_new_tokens=TOKENS, seed=8, stop_sequences=[stop]))
        with_prefill = client.generate("Stop me", max_new_tokens=2, decoder_input_details=True)
    assert stopped.details.finish_reason is FinishReason.StopSequence
    assert stopped.generated_text == "".join(t.text for t in full.details.tokens[:3])
    final = streamed[-1]
    assert len(streamed) == 3 and final.details is not None
    assert final.details.finish_reason is FinishReason.StopSequence and final.generated_text == stopped.generated_text
    assert [t.text for t in with_prefill.details.prefill] == ["Stop", " me"]


def test_text_generation_chat() -> None:
    with tgi() as (url, _):
        message = text_generation.types.Message(role="user", content="Hi")
        answer = text_generation.Client(url, timeout=10).chat([message], max_tokens=3, seed=5)
    assert answer.choices[0].finish_reason == "length" and answer.choices[0].message.content
    assert answer.usage["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(FaultKind.OVERLOADED), tg_errors.OverloadedError),
        (Fault(FaultKind.SERVER_ERROR), tg_errors.GenerationError),
    ],
    ids=["overloaded-429", "server_error-424"],
)
def test_text_generation_refusals_are_typed_errors(fault: Fault, error: type[Exception]) -> None:
    with tgi(fault) as (url, _):
        client = text_generation.Client(url, timeout=10)
        with pytest.raises(error):
            client.generate("Hi")
        with pytest.raises(error):  # inside the stream under 200, as TGI sends it
            list(client.generate_stream("Hi"))


def test_text_generation_stall_is_a_read_timeout() -> None:
    with tgi(Fault(FaultKind.STALL_FIRST)) as (url, _):
        client = text_generation.Client(url, timeout=0.5)
        with pytest.raises(requests.exceptions.ReadTimeout):
            client.generate("Hi")
        with pytest.raises(requests.exceptions.ConnectionError):  # requests' stream read timeout
            list(client.generate_stream("Hi"))


def test_text_generation_reset_is_a_connection_error() -> None:
    with tgi(Fault(FaultKind.RESET_MID)) as (url, _):
        client = text_generation.Client(url, timeout=10)
        with pytest.raises(requests.exceptions.RequestException):
            client.generate("Hi")
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(client.generate_stream("Hi"))


# --- huggingface_hub.InferenceClient ------------------------------------------------------------------------


def test_inference_client_text_generation() -> None:
    with tgi() as (url, _):
        client = InferenceClient(model=url, timeout=10)
        text = client.text_generation("Once upon a time", max_new_tokens=5, seed=2)
        detailed = client.text_generation("Once upon a time", max_new_tokens=5, seed=2, details=True)
        full = client.text_generation("Once upon a time", max_new_tokens=5, seed=2, return_full_text=True)
    assert isinstance(text, str) and text == detailed.generated_text
    assert full == "Once upon a time" + text
    assert detailed.details is not None and detailed.details.finish_reason == "length"
    assert detailed.details.seed == 2 and [t.text for t in detailed.details.tokens] != []


def test_inference_client_text_generation_stream() -> None:
    with tgi() as (url, _):
        client = InferenceClient(model=url, timeout=10)
        pieces = list(client.text_generation("Once upon a time", max_new_tokens=4, seed=9, stream=True))
        events = list(client.text_generation("Once upon a time", max_new_tokens=4, seed=9, stream=True, details=True))
        full = list(
            client.text_generation("Once", max_new_tokens=4, seed=9, stream=True, details=True, return_full_text=True)
        )
    assert all(isinstance(p, str) for p in pieces) and len(pieces) == 4
    final = events[-1]
    assert final.details is not None and final.details.finish_reason == "length"
    assert final.details.generated_tokens == 4 and final.generated_text == "".join(pieces)
    assert full[-1].generated_text == "Once" + "".join(e.token.text for e in full)


def test_inference_client_chat_completion_with_usage() -> None:
    with tgi() as (url, recorder):
        client = InferenceClient(model=url, timeout=10)
        answer = client.chat_completion(CHAT, max_tokens=4, seed=1)
        chunks = list(
            client.chat_completion(CHAT, max_tokens=4, seed=1, stream=True, stream_options={"include_usage": True})
        )
    assert answer.object == "chat.completion" and answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 4
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 4
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None and usage.usage.completion_tokens == 4
    body = ChatRequest.from_dict({"messages": CHAT})
    whole = v1_chat_completions.sync(client=_generated(recorder.exchanges[-2]), body=body)
    assert isinstance(whole, ChatCompletion) and whole.choices[0].message.content == answer.choices[0].message.content
    assert whole.usage.to_dict() == vars(answer.usage)
    ours = _stream_items(
        v1_chat_completions.stream(client=_generated(recorder.last("/v1/chat/completions")), body=body)
    )
    assert all(type(item) is w.ChatCompletionChunk for item in ours)
    assert [c.choices[0].delta.content for c in ours if c.choices] == [
        c.choices[0].delta.content for c in chunks if c.choices
    ]
    assert ours[-1].usage is not None and ours[-1].usage.model_dump() == vars(usage.usage)


def test_inference_client_chat_stream_without_usage_ends_on_its_finish() -> None:
    with tgi() as (url, _):
        chunks = list(InferenceClient(model=url, timeout=10).chat_completion(CHAT, stream=True))
    assert len(chunks) == TOKENS + 1 and chunks[-1].choices[0].finish_reason == "stop"


def test_inference_client_errors() -> None:
    with tgi(Fault(FaultKind.OVERLOADED, times=2), Fault(FaultKind.SERVER_ERROR, times=1)) as (url, _):
        client = InferenceClient(model=url, timeout=10)
        with pytest.raises(hf_errors.OverloadedError):
            client.text_generation("Hi")
        with pytest.raises(hf_errors.OverloadedError):
            list(client.text_generation("Hi", stream=True))
        with pytest.raises(hf_errors.GenerationError):
            client.text_generation("Hi")
        assert client.text_generation("Hi")  # the faults are spent


def test_inference_client_validation_errors() -> None:
    with tgi() as (url, _):
        client = InferenceClient(model=url, timeout=10)
        with pytest.raises(hf_errors.ValidationError, match="temperature"):
            client.text_generation("Hi", temperature=0.0)
        with pytest.raises(hf_errors.ValidationError, match="max_new_tokens"):  # inside the stream, as TGI does
            list(client.text_generation("Hi", max_new_tokens=0, stream=True))


async def test_async_clients() -> None:
    with tgi() as (url, _):
        answer = await text_generation.AsyncClient(url, timeout=10).generate("Hello", max_new_tokens=3, seed=6)
        events = [e async for e in text_generation.AsyncClient(url, timeout=10).generate_stream("Hello", seed=6)]
        async with AsyncInferenceClient(model=url, timeout=10) as client:
            chunks = [
                c
                async for c in await client.chat_completion(
                    CHAT, max_tokens=3, stream=True, stream_options={"include_usage": True}
                )
            ]
    assert answer.details.finish_reason is FinishReason.Length
    assert events[-1].generated_text is not None and events[-1].generated_text.startswith(answer.generated_text)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_inference_client_chat_overload_is_an_http_429_or_an_in_stream_error() -> None:
    with tgi(Fault(FaultKind.OVERLOADED)) as (url, _):
        client = InferenceClient(model=url, timeout=10)
        with pytest.raises(hf_errors.HfHubHTTPError) as raised:
            client.chat_completion(CHAT)
        with pytest.raises(hf_errors.TextGenerationError, match="overloaded"):
            list(client.chat_completion(CHAT, stream=True))
    assert raised.value.response is not None and raised.value.response.status_code == 429


def test_inference_client_stall_and_reset() -> None:
    with tgi(Fault(FaultKind.STALL_FIRST, times=1), Fault(FaultKind.RESET_MID)) as (url, _):
        with pytest.raises(requests.exceptions.ReadTimeout):  # huggingface_hub passes requests' timeout on
            InferenceClient(model=url, timeout=0.5).text_generation("Hi")
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(InferenceClient(model=url, timeout=10).chat_completion(CHAT, stream=True))
