"""`relay-item`: the relay's view of a llama.cpp chunk (`/completion`, `/v1/completions`) validates what the relay
reads, as the full item does, and leaves the rest unvalidated."""

from __future__ import annotations

import json

import pytest
from llama_orch_gen.engines.llamacpp import wire as w
from llama_orch_gen.engines.llamacpp.api.native.completion import RELAY_STREAM_FORMAT, STREAM_FORMAT
from llama_orch_gen.engines.llamacpp.api.openai import v1_completions

from llama_orch_runtime.streaming import StreamDecodeError
from tests.adapters.replay import TRANSCRIPTS, sse_payloads


def test_the_relay_view_reads_a_real_recording_as_the_full_item_does() -> None:
    payloads = [json.dumps(p) for p in sse_payloads((TRANSCRIPTS / "completion_stream_timings.body").read_bytes())]
    full = [STREAM_FORMAT.parse("message", p) for p in payloads]
    relayed = [RELAY_STREAM_FORMAT.parse("message", p) for p in payloads]
    assert all(type(item) is w.CompletionChunkRead for item in relayed)
    for a, b in zip(full, relayed, strict=True):
        assert (a.content, a.stop, a.stop_type, a.tokens_predicted, a.tokens_evaluated) == (
            b.content,
            b.stop,
            b.stop_type,
            b.tokens_predicted,
            b.tokens_evaluated,
        )
        assert (a.timings is None) == (b.timings is None)
        if a.timings is not None and b.timings is not None:
            assert a.timings.predicted_ms == b.timings.predicted_ms
    assert relayed[-1].stop and RELAY_STREAM_FORMAT.final is not None and RELAY_STREAM_FORMAT.final.matches(relayed[-1])


@pytest.mark.parametrize(
    "payload",
    [
        '{"content": 5, "stop": false}',  # a read field of the wrong type
        '{"stop": false}',  # a required read field missing
        '{"content": "a", "stop": false, "timings": {"predicted_ms": "slow"}}',
        '{"content": "a", "stop": fa',  # not JSON
    ],
)
def test_what_the_relay_reads_is_still_validated(payload: str) -> None:
    for fmt in (STREAM_FORMAT, RELAY_STREAM_FORMAT):
        with pytest.raises(StreamDecodeError):
            fmt.parse("message", payload)


def test_what_the_relay_never_reads_is_not_validated() -> None:
    payload = '{"content": "a", "stop": false, "tokens": "not a list", "id_slot": "x"}'
    with pytest.raises(StreamDecodeError):
        STREAM_FORMAT.parse("message", payload)
    item = RELAY_STREAM_FORMAT.parse("message", payload)
    assert item.content == "a" and item.model_extra == {"tokens": "not a list", "id_slot": "x"}


def test_an_in_stream_error_is_the_same_typed_error_item_either_way() -> None:
    payload = '{"error": {"code": 500, "message": "boom", "type": "server_error"}}'
    assert type(RELAY_STREAM_FORMAT.parse("message", payload)) is type(STREAM_FORMAT.parse("message", payload))


def test_the_openai_route_view_reads_a_real_recording_as_the_full_item_does() -> None:
    body = (TRANSCRIPTS / "oai_completions_stream_usage.body").read_bytes()
    payloads = [json.dumps(p) for p in sse_payloads(body) if isinstance(p, dict)]
    full = [v1_completions.STREAM_FORMAT.parse("message", p) for p in payloads]
    relayed = [v1_completions.RELAY_STREAM_FORMAT.parse("message", p) for p in payloads]
    assert all(type(item) is w.TextCompletionChunkRead for item in relayed)
    for a, b in zip(full, relayed, strict=True):
        assert [(c.text, c.finish_reason) for c in a.choices] == [(c.text, c.finish_reason) for c in b.choices]
        assert a.usage == b.usage and (a.timings is None) == (b.timings is None)
    assert any(b.usage is not None for b in relayed) and any(b.choices for b in relayed)
