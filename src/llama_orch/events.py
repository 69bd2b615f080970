"""Contract events (`TaskEvent`) built from values already checked, without validation, and `TokenRun`, the
relay's own form of consecutive tokens.

The adapters and the service make every event here. Between an engine and a stream writer, tokens travel as
`TokenRun`s (one object per network read, not three models per token); `token` builds a token's `TaskEvent` for
callers of `WorkerAdapter.submit`. It skips even `model_construct`'s field bookkeeping; tests/test_events.py holds
it equal to what pydantic builds, so a pydantic upgrade that changes the layout fails there, not in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from llama_orch_gen.contracts.events import (
    End,
    EndEvent,
    ErrorEvent,
    Started,
    StartedEvent,
    StreamError,
    TaskEvent,
    Token,
    TokenEvent,
)
from pydantic import BaseModel

__all__ = ["TokenRun", "end", "error", "started", "token"]

M = TypeVar("M", bound=BaseModel)
_new = object.__new__
_set = object.__setattr__


@dataclass(slots=True)
class TokenRun:
    """Consecutive `token` events: `texts[k]` is the text of token `first + k`."""

    first: int
    texts: list[str]

    def events(self) -> list[TaskEvent]:
        return [token(text, index) for index, text in enumerate(self.texts, self.first)]


def token(text: str, index: int) -> TaskEvent:
    data = _built(Token, {"t": text, "i": index})
    return _built(TaskEvent, {"root": _built(TokenEvent, {"event": "token", "data": data})})


def started(data: Started) -> TaskEvent:
    return TaskEvent.model_construct(root=StartedEvent.model_construct(event="started", data=data))


def end(data: End) -> TaskEvent:
    return TaskEvent.model_construct(root=EndEvent.model_construct(event="end", data=data))


def error(data: StreamError) -> TaskEvent:
    return TaskEvent.model_construct(root=ErrorEvent.model_construct(event="error", data=data))


def _built(model: type[M], values: dict[str, Any]) -> M:
    """What `model.model_construct(**values)` makes when `values` names every field."""
    instance = _new(model)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", set(values))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance
