"""The stream runtime's fast paths give exactly what the general ones give: the SSE decoder's whole-event path
(`\\n` line ends) against its line-by-line path (CRLF), and one validation per read against one per payload,
malformed and adversarial payloads included."""

from __future__ import annotations

import json
import random

import pytest
from llama_orch_gen.engines.llamacpp.api.native.completion import STREAM_FORMAT as NATIVE
from llama_orch_gen.engines.llamacpp.api.openai.v1_completions import STREAM_FORMAT as OPENAI
from llama_orch_gen.engines.llamacpp.wire import CompletionChunk
from pydantic import TypeAdapter

from llama_orch_runtime.streaming import Decoding, SSEDecoder, StreamDecodeError, StreamFormat


def _chunk(text: str, stop: bool = False) -> str:
    return json.dumps({"content": text, "stop": stop, "tokens": [7], "id_slot": -1}, ensure_ascii=False)


def _events(lines: list[str], newline: str) -> bytes:
    return "".join(line + newline for line in lines).encode()


# Events of every shape the decoder knows: one `data:` line (the fast path), with and without the space, named
# events, comments, multi-line data, extra blank lines, multi-byte text.
SHAPES = [
    "data: " + _chunk("日本"),
    "",
    "data:" + _chunk(" wörld"),
    "",
    "",
    ": a comment",
    "data: " + _chunk("a"),
    "",
    "event: token",
    "data: " + _chunk("b"),
    "",
    "data: line one",
    "data: line two",
    "",
    "id: 4",
    "data: 🙂",
    "",
    "id: 5",  # an id alone: no event, but the next one carries it
    "",
    "data: " + _chunk("after the id"),  # one data line again: the fast path, with the id set before it
    "",
    "data: tail without blank line",
]


def _decode(body: bytes, cuts: list[int]) -> list[tuple[str, str, str | None]]:
    """Every event with the decoder's last event id after the feed that delivered it, where that id is the
    event's own (the feed delivered one event)."""
    decoder = SSEDecoder()
    out: list[tuple[str, str, str | None]] = []
    for start, end in [*zip([0, *cuts], [*cuts, len(body)], strict=True), (len(body), None)]:
        events = decoder.feed(body[start:end]) if end is not None else decoder.close()
        out += [(name, data, decoder.last_event_id if len(events) == 1 else "?") for name, data in events]
    return out


@pytest.mark.parametrize("seed", range(40))
def test_whole_event_path_decodes_as_the_line_path_for_any_chunking(seed: int) -> None:
    rng = random.Random(seed)
    lf, crlf = _events(SHAPES, "\n"), _events(SHAPES, "\r\n")
    # One event per feed, so each carries its own last event id; CR in the input: line by line throughout.
    expected = _decode(crlf, _event_ends(crlf))
    assert expected[0] == ("message", _chunk("日本"), None) and ("message", "🙂", "4") in expected
    assert ("message", _chunk("after the id"), "5") in expected
    assert expected[-1] == ("message", "tail without blank line", "5")  # the id persists: none set since
    for body in (lf, crlf):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(1, 30)))
        assert [event[:2] for event in _decode(body, cuts)] == [event[:2] for event in expected]
    assert [event[2] for event in _decode(lf, _event_ends(lf))] == [event[2] for event in expected]


def _event_ends(body: bytes) -> list[int]:
    """Offsets just past each blank line: feeding up to each delivers one event at a time."""
    blank = b"\r\n\r\n" if b"\r" in body else b"\n\n"
    ends, at = [], body.find(blank)
    while at != -1:
        ends.append(at + len(blank))
        at = body.find(blank, at + len(blank))
    return ends


def _items(fmt: StreamFormat[object], payloads: list[str], batch: bool) -> tuple[list[object], str | None]:
    """The items `Decoding` makes of one read holding `payloads`, and the error it reports, with batching on or off."""
    state = Decoding(fmt)
    if not batch:
        state.fmt = _NoBatch(fmt)  # type: ignore[assignment]
    items, failure = state._decode([("message", p) for p in payloads])
    return items, None if failure is None else f"{type(failure).__name__}: {failure}"


class _NoBatch:
    """The format with batching off: every payload through `parse`, as before batches existed."""

    def __init__(self, fmt: StreamFormat[object]) -> None:
        self._fmt = fmt

    def __getattr__(self, name: str) -> object:
        return getattr(self._fmt, name)

    def parse_batch(self, payloads: list[str]) -> None:
        return None


GOOD = [_chunk("a"), _chunk("b"), _chunk("], [ in a token"), _chunk("", stop=True), _chunk("after the final")]
CASES = {
    "good": GOOD,
    "malformed JSON mid-read": [_chunk("a"), '{"content": "b", "stop": fa', _chunk("c")],
    "schema violation": [_chunk("a"), '{"content": 5, "stop": false}', _chunk("c")],
    "in-stream error": [_chunk("a"), '{"error": {"code": 500, "message": "boom", "type": "server_error"}}'],
    "two values in one payload": [_chunk("a") + "," + _chunk("b"), _chunk("c")],
    "empty payload": [_chunk("a"), "", _chunk("c")],
    # One payload left open and closed by the next, the count made up by one holding two: joined into a list,
    # they would validate as three good items. Each is malformed on its own.
    "boundaries shifted": [
        '{"content": "x", "stop": false, "a": [[{"b": 1}',
        '{"c": 1}]]}',
        _chunk("y") + "],[" + _chunk("z"),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_validation_per_read_gives_what_one_per_payload_gives(case: str) -> None:
    assert _items(NATIVE, CASES[case], batch=True) == _items(NATIVE, CASES[case], batch=False)


def test_a_good_read_is_validated_in_one_call_and_a_shifted_one_is_not() -> None:
    assert NATIVE.parse_batch(GOOD[:2]) == [NATIVE.parse("message", p) for p in GOOD[:2]]
    shifted = CASES["boundaries shifted"]
    # Joined without the boundary check, the shifted payloads pass as three items: the check is what refuses them.
    naive = TypeAdapter(list[tuple[CompletionChunk]]).validate_json("[[" + "],[".join(shifted) + "]]")
    assert len(naive) == len(shifted)
    assert NATIVE.parse_batch(shifted) is None
    assert NATIVE.parse_batch(CASES["in-stream error"]) is None  # errors take the routed path
    assert NATIVE.parse_batch(CASES["malformed JSON mid-read"]) is None


def test_a_bad_payload_in_a_read_is_the_same_typed_error_after_the_items_before_it() -> None:
    items, failure = _items(NATIVE, CASES["schema violation"], batch=True)
    assert [item.content for item in items] == ["a"]  # type: ignore[attr-defined]
    assert failure is not None and failure.startswith(StreamDecodeError.__name__) and "content" in failure


def test_the_done_sentinel_ends_the_read_and_nothing_after_it_is_validated() -> None:
    chunk = json.dumps({"choices": [{"text": "a", "index": 0, "finish_reason": None}], "object": "text_completion"})
    payloads = [chunk, chunk, "[DONE]", "not json at all"]
    for batch in (True, False):
        items, failure = _items(OPENAI, payloads, batch=batch)
        assert len(items) == 2 and failure is None
