"""The event builders make exactly what pydantic's own constructors and validation make."""

from __future__ import annotations

from llama_orch_gen.contracts.events import End, EndEvent, TaskEvent, Token, TokenEvent

from llama_orch import events


def test_token_event_is_what_model_construct_and_validation_make() -> None:
    built = events.token("héllo", 7)
    constructed = TaskEvent.model_construct(
        root=TokenEvent.model_construct(event="token", data=Token.model_construct(t="héllo", i=7))
    )
    validated = TaskEvent.model_validate({"event": "token", "data": {"t": "héllo", "i": 7}})
    assert built == constructed == validated
    assert built.model_dump_json() == validated.model_dump_json() == '{"event":"token","data":{"t":"héllo","i":7}}'
    assert built.root.model_fields_set == {"event", "data"} and built.root.data.model_fields_set == {"t", "i"}
    assert built.root.data.model_copy(update={"i": 8}).i == 8  # a real model: pydantic's methods work on it


def test_terminal_events_wrap_their_data() -> None:
    data = End.model_construct(tokens_out=3, decode_time_ms=1.5, finish_reason="stop")
    assert events.end(data) == TaskEvent(root=EndEvent(event="end", data=data))
