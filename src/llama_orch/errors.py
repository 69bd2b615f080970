"""Typed errors of llama-orch, and the one place secrets are scrubbed from text.

    LlamaOrchError
    ├── EngineError    an engine call failed; carries the contract's error code (see `tables.ERROR_CODES`)
    ├── ApiError       the orchestrator refuses a request; becomes the error envelope with the code's HTTP status
    └── ConfigError    the configuration cannot work (e.g. a bearer-token variable that is not set)

Every message that leaves an adapter (error events, health details, logs) goes through `redact` first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Literal, get_args

from llama_orch_gen.contracts.events import StreamError
from llama_orch_gen.contracts.tables import ERROR_CODES

__all__ = ["ApiError", "ConfigError", "EngineError", "ErrorCode", "LlamaOrchError", "fingerprint", "redact"]

ErrorCode = Literal[
    "ADMISSION_REJECT",
    "QUEUE_FULL_DROP_LRU",
    "INVALID_PARAMS",
    "DEADLINE_UNMET",
    "POOL_UNREADY",
    "POOL_UNAVAILABLE",
    "REPLICA_EXHAUSTED",
    "DECODE_TIMEOUT",
    "WORKER_RESET",
    "UPSTREAM_AUTH",
    "INTERNAL",
    "MODEL_DEPRECATED",
    "UNTRUSTED_ARTIFACT",
    "UNAUTHENTICATED",
    "NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "SLOW_CONSUMER",
    "CONFLICT",
    "METHOD_NOT_ALLOWED",
    "MODEL_NOT_SERVED",
    "STATE_UNAVAILABLE",
    "INSTANCE_LOST",
]

_MAX_MESSAGE = 512
_MAX_HASHED = 8192


class LlamaOrchError(Exception):
    """Base class of every error llama-orch raises on purpose."""


class ConfigError(LlamaOrchError):
    """The configuration cannot work; raised when adapters are built, never during a task."""


class EngineError(LlamaOrchError):
    """An engine call failed. `retriable` defaults to the code's entry in the contract table; `status` is the
    engine's HTTP status when there was one; `message` is already redacted and bounded."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retriable: bool | None = None,
        retry_after_ms: int | None = None,
        status: int | None = None,
    ) -> None:
        self.code: ErrorCode = code
        self.message = redact(message)[:_MAX_MESSAGE]
        self.retriable = ERROR_CODES[code].retriable if retriable is None else retriable
        self.retry_after_ms = retry_after_ms
        self.status = status
        super().__init__(f"{code}: {self.message}")

    def to_stream_error(self, engine: str | None) -> StreamError:
        """The payload of the `error` event (built without re-validation: every field is already checked)."""
        return StreamError.model_construct(
            code=self.code,
            message=self.message,
            engine=engine,
            retriable=self.retriable,
            retry_after_ms=self.retry_after_ms,
        )


class ApiError(LlamaOrchError):
    """A refused request. `status` comes from the contract table; `retry_after_ms` also sets `Retry-After` (whole
    seconds, at least 1) and `X-Backoff-Ms`; `field` names the offending JSON path for INVALID_PARAMS."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        retry_after_ms: int | None = None,
        policy_label: str | None = None,
        pool_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        self.code: ErrorCode = code
        self.status = ERROR_CODES[code].status
        self.message = redact(message)[:_MAX_MESSAGE]
        self.field = field
        self.retry_after_ms = retry_after_ms
        self.policy_label = policy_label
        self.pool_id = pool_id
        self.task_id = task_id
        super().__init__(f"{code}: {self.message}")

    def envelope(self) -> dict[str, object]:
        """The error envelope (specs/schemas/error-envelope.json), without absent fields."""
        body: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "retriable": ERROR_CODES[self.code].retriable,
            "retry_after_ms": self.retry_after_ms,
            "policy_label": self.policy_label,
            "pool_id": self.pool_id,
            "task_id": self.task_id,
            "field": self.field,
        }
        return {k: v for k, v in body.items() if v is not None}

    def headers(self) -> dict[str, str]:
        if self.retry_after_ms is None:
            return {}
        return {"Retry-After": str(max(1, self.retry_after_ms // 1000)), "X-Backoff-Ms": str(self.retry_after_ms)}


def fingerprint(secret: str) -> str:
    """First 6 hex digits of the secret's sha256: enough to tell keys apart in logs, useless to an attacker."""
    data = secret.encode()
    return hashlib.sha256(data[:_MAX_HASHED]).hexdigest()[:6]


_TOKEN = r"[A-Za-z0-9._~+/=-]+"
# Group 2 of each rule is the secret.
_RULES = (
    re.compile(rf"(authorization\s*:\s*bearer\s+)({_TOKEN})", re.IGNORECASE),
    re.compile(rf"(x-api-key\s*:\s*)({_TOKEN})", re.IGNORECASE),
    re.compile(r"((?:token|api[_-]?key)\s*[:=]\s*\"?)([A-Za-z0-9._-]{8,})", re.IGNORECASE),
    re.compile(rf"(\bbearer\s+)({_TOKEN})", re.IGNORECASE),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask credentials in `text` as `****<fp6>`: known `secrets` wherever they appear, and anything that looks
    like an Authorization/X-Api-Key header or a `token=`/`api_key:` assignment (rules of the original http-util)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, f"****{fingerprint(secret)}")
    for pattern in _RULES:
        text = pattern.sub(_mask, text)
    return text


def _mask(match: re.Match[str]) -> str:
    return f"{match.group(1)}****{fingerprint(match.group(2))}"


def _check_codes() -> None:
    # The Literal above must list exactly the codes of the generated contract table.
    if set(get_args(ErrorCode)) != set(ERROR_CODES):
        raise RuntimeError("errors.ErrorCode is out of date with specs/schemas (ERROR_CODES)")


_check_codes()
