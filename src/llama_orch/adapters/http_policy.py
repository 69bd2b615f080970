"""The one HTTP policy of every engine adapter: timeouts, retries, bearer auth, pooled connections, and the
translation of transport failures and HTTP statuses into the contract's error codes.

Phases of one task (all configurable per replica, `config.Timeouts`):

    connect ──► first token (sized for long prefill) ──► inter-token gaps ──► ...      all within the task deadline

httpx enforces only `connect`; the streaming loop enforces the others with asyncio deadlines, because the time
to the response headers depends on the engine (llama.cpp sends them with the first token, vLLM at once).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from llama_orch_gen.contracts.config import ReplicaConfig, RetryPolicy, Timeouts

from llama_orch.adapters.http_transport import EngineTransport
from llama_orch.errors import EngineError, ErrorCode
from llama_orch.secrets import token_from_env
from llama_orch_runtime.bodies import MalformedBody
from llama_orch_runtime.streaming import StreamDecodeError, StreamTruncated

__all__ = [
    "HttpPolicy",
    "bearer_token",
    "code_for_status",
    "code_for_stream_error",
    "error_for_exception",
    "error_for_status",
    "make_http_client",
    "parse_retry_after_ms",
    "with_retries",
]

T = TypeVar("T")

# Retried before the first token only: the engine may accept the same request a moment later.
_RETRIED_CODES: frozenset[ErrorCode] = frozenset(
    {"POOL_UNAVAILABLE", "POOL_UNREADY", "ADMISSION_REJECT", "WORKER_RESET"}
)


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts (seconds) and retry numbers of one replica; defaults come from the config schema."""

    connect_s: float = 5.0
    first_token_s: float = 120.0
    inter_token_s: float = 30.0
    request_s: float = 30.0
    max_attempts: int = 4
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 2.0
    max_retry_after_s: float = 10.0

    @classmethod
    def from_config(cls, timeouts: Timeouts | None, retry: RetryPolicy | None) -> HttpPolicy:
        t = timeouts or Timeouts()
        r = retry or RetryPolicy()
        return cls(
            connect_s=_ms(t.connect_ms, 5000),
            first_token_s=_ms(t.first_token_ms, 120000),
            inter_token_s=_ms(t.inter_token_ms, 30000),
            request_s=_ms(t.request_ms, 30000),
            max_attempts=r.max_attempts or 1,
            backoff_base_s=_ms(r.base_ms, 100),
            backoff_cap_s=_ms(r.cap_ms, 2000),
            max_retry_after_s=_ms(r.max_retry_after_ms, 10000),
        )

    def backoff_s(self, failed_attempts: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**n)] after the n-th failed attempt (1-based)."""
        return rng.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2.0**failed_attempts))


def _ms(value: int | None, default: int) -> float:
    return (default if value is None else value) / 1000.0


def bearer_token(replica: ReplicaConfig) -> str | None:
    """The replica's engine token, read from the environment variable the config names (never from the file)."""
    return token_from_env(replica.bearer_token_env, f"replica {replica.id!r}")


def make_http_client(
    base_url: str, policy: HttpPolicy, token: str | None, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """One pooled keep-alive client per replica, on `EngineTransport` unless another is given (tests). Only the
    connect (and pool) phases are bounded here; the relay bounds the rest."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(None, connect=policy.connect_s, pool=policy.connect_s),
        transport=transport or EngineTransport(),
    )


def parse_retry_after_ms(value: str | None, now: float | None = None) -> int | None:
    """`Retry-After` as delta-seconds or an HTTP date, in ms; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil((when.timestamp() - (time.time() if now is None else now)) * 1000))


def code_for_status(status: int) -> ErrorCode:
    """HTTP status of an engine → contract code (engines refine it from their error bodies)."""
    if status in (400, 413, 422):
        return "INVALID_PARAMS"
    if status in (401, 403):
        return "UPSTREAM_AUTH"
    if status in (409, 425, 429):
        return "ADMISSION_REJECT"
    if status == 503:
        return "POOL_UNREADY"
    if status in (408, 424, 500, 502, 504) or status > 504:
        return "WORKER_RESET"
    return "INTERNAL"  # 404 (wrong route or model), 501 (unsupported), and other surprises


def code_for_stream_error(status: int) -> ErrorCode:
    """The status an in-stream error payload names → contract code. Unlike a refused request (where a 5xx is
    worth retrying), a failure the engine reports mid-generation is an engine failure: INTERNAL."""
    code = code_for_status(status)
    return "INTERNAL" if code == "WORKER_RESET" else code


def error_for_status(
    status: int, message: str, headers: httpx.Headers | None = None, code: ErrorCode | None = None
) -> EngineError:
    retry_after = parse_retry_after_ms(headers.get("retry-after")) if headers is not None else None
    return EngineError(
        code or code_for_status(status),
        f"engine answered {status}: {message}",
        retry_after_ms=retry_after,
        status=status,
    )


def error_for_exception(exc: BaseException) -> EngineError:
    """Transport and decoding failures → contract codes. Status errors are engine-specific (see the adapters)."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout):
        return EngineError("POOL_UNAVAILABLE", f"cannot reach the engine ({type(exc).__name__}: {exc})")
    if isinstance(exc, StreamTruncated):
        return EngineError("WORKER_RESET", "the engine stream ended without its terminal chunk")
    if isinstance(exc, StreamDecodeError):
        return EngineError("WORKER_RESET", f"malformed engine stream item: {exc}")
    if isinstance(exc, MalformedBody):
        if exc.status_code >= 400:  # a refusal whose body is not the engine's own (e.g. a proxy's page)
            return error_for_status(exc.status_code, exc.reason)
        return EngineError("INTERNAL", f"the engine's answer does not match its spec: {exc}")
    if isinstance(exc, httpx.LocalProtocolError):  # we refused to send it: no engine is at fault, no retry helps
        return EngineError("INTERNAL", f"request not sent: {exc}", retriable=False)
    if isinstance(exc, httpx.TimeoutException):
        return EngineError("DECODE_TIMEOUT", f"engine read timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return EngineError("WORKER_RESET", f"engine connection lost ({type(exc).__name__}: {exc})")
    return EngineError("INTERNAL", f"unexpected adapter failure ({type(exc).__name__}: {exc})")


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    classify: Callable[[BaseException], EngineError],
    policy: HttpPolicy,
    *,
    deadline: float,
    rng: random.Random | None = None,
) -> T:
    """The only retry loop towards engines (the generated clients' users have theirs in
    llama_orch_runtime.base_client): run `attempt` until it succeeds, retrying retriable failures with jittered
    exponential backoff (or the engine's `Retry-After`), never past `deadline` (loop time) or the attempt cap.
    Callers use it only before the first token, so a retry can never duplicate output."""
    rng = rng or random.Random()
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:  # every failure is classified into a contract code
            error = classify(exc)
        failures += 1
        if not error.retriable or error.code not in _RETRIED_CODES or failures >= policy.max_attempts:
            raise error
        if error.retry_after_ms is not None:
            delay = error.retry_after_ms / 1000.0
            if delay > policy.max_retry_after_s:
                raise error  # the engine asks for longer than we wait; the caller sees retry_after_ms
        else:
            delay = policy.backoff_s(failures, rng)
        if loop.time() + delay >= deadline:
            raise error
        await asyncio.sleep(delay)
