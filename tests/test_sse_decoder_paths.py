"""The SSE decoder's whole-event path (`\\n` line ends, what engines send) gives exactly what its line-by-line
path gives (CRLF input): the same events and last event ids, for any chunking."""

from __future__ import annotations

import json
import random

import pytest

from llama_orch_runtime.streaming import SSEDecoder


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
