"""Contract events (`TaskEvent`) built from values already checked, without validation, and `TokenRun`, the
relay's own form of consecutive tokens.

The adapters and the service make every event here. Between an engine and a stream writer, tokens travel as
`TokenRun`s (one object per network read, not three models per token); `token` builds a token's `TaskEvent` only
for callers of `WorkerAdapter.submit`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_orch_gen.contracts.events import (
    End,
    EndEvent,
    ErrorEvent,
    Metrics,
    MetricsEvent,
    Started,
    StartedEvent,
    StreamError,
    TaskEvent,
    Token,
    TokenEvent,
)

__all__ = ["TokenRun", "end", "error", "metrics", "started", "token"]


@dataclass(slots=True)
class TokenRun:
    """Consecutive `token` events: `texts[k]` is the text of token `first + k`."""

    first: int
    texts: list[str]

    def events(self) -> list[TaskEvent]:
        return [token(text, index) for index, text in enumerate(self.texts, self.first)]


def token(text: str, index: int) -> TaskEvent:
    data = Token.model_construct(t=text, i=index)
    return TaskEvent.model_construct(root=TokenEvent.model_construct(event="token", data=data))


def started(data: Started) -> TaskEvent:
    return TaskEvent.model_construct(root=StartedEvent.model_construct(event="started", data=data))


def metrics(data: Metrics) -> TaskEvent:
    return TaskEvent.model_construct(root=MetricsEvent.model_construct(event="metrics", data=data))


def end(data: End) -> TaskEvent:
    return TaskEvent.model_construct(root=EndEvent.model_construct(event="end", data=data))


def error(data: StreamError) -> TaskEvent:
    return TaskEvent.model_construct(root=ErrorEvent.model_construct(event="error", data=data))
