"""Stream bytes as written: token frames and lines are formatted by hand (the hot path) and must parse as the
contract says."""

from __future__ import annotations

import json

from llama_orch_gen.contracts.events import End, TaskEvent

from llama_orch import events
from llama_orch.events import TokenRun
from llama_orch.service.wire import infer_tokens, sse_frames


def _parse(frames: bytes, first: int = 0) -> list[TaskEvent]:
    parsed = []
    for number, frame in enumerate(frames.decode().split("\n\n")[:-1], first):
        id_line, name_line, data_line = frame.split("\n")
        assert id_line == f"id: {number}"
        event = {"event": name_line.removeprefix("event: "), "data": json.loads(data_line.removeprefix("data: "))}
        parsed.append(TaskEvent.model_validate(event))
    return parsed


def test_token_frames_round_trip_any_text() -> None:
    texts = ["plain", 'quote " and \\ backslash', "new\nline\r\ttab", "\x00\x1f", "é ü 雪 🦙", ""]
    end = events.end(End.model_construct(tokens_out=len(texts), decode_time_ms=1.0, finish_reason="stop"))
    parsed = _parse(sse_frames(12, [TokenRun(7, texts[:2]), TokenRun(9, texts[2:]), end]), 12)
    assert [(e.root.data.t, e.root.data.i) for e in parsed[:-1]] == [(t, i) for i, t in enumerate(texts, 7)]
    assert parsed[:-1] == TokenRun(7, texts).events()
    assert parsed[-1] == TaskEvent.model_validate(end.model_dump())


def test_a_lone_surrogate_from_an_engine_becomes_a_replacement_not_a_broken_stream() -> None:
    frames = sse_frames(0, [TokenRun(0, ["ok \ud800 ok"])])
    assert _parse(frames)[0].root.data.t == "ok ? ok"


def test_infer_token_lines_round_trip_any_text() -> None:
    texts = ['quote " \\ back', "new\nline", "é 雪 🦙", "lone \udc80"]
    lines = infer_tokens(TokenRun(0, texts)).decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"token": text.replace("\udc80", "?")} for text in texts]
