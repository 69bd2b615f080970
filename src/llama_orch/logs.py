"""JSON-lines logs: one object per record with the task's structured fields (task, session, engine, version,
pool, replica, queue position, tokens, timings) and every message scrubbed of secrets on the way out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from llama_orch.errors import redact

__all__ = ["JsonLines", "configure"]

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD and v is not None)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False), self._secrets)


def configure(level: str = "info", secrets: Iterable[str] = ()) -> None:
    """Route every `llama_orch` logger to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines(secrets))
    root = logging.getLogger("llama_orch")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
