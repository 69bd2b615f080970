"""The one place where the generated resource clients talk HTTP: base URL and bearer auth, the timeout policy, the
retry loop, response parsing and raw responses.

A generated client (e.g. `llama_orch_gen.orchestrator.Client`) subclasses `SyncAPIClient` / `AsyncAPIClient` and
hands over its generated error taxonomy (`ErrorTaxonomy`); its resources only call `request`, `request_raw` and
build streams (llama_orch_runtime.event_streams). Nothing here knows an operation.

Retries, up to `max_retries` times: answers whose error says `retriable` (the taxonomy decides: the envelope's
`retriable`, else 408/429/502/503/504), and failed connections, where sending the very same request again is
harmless (it never reached the server, its method is idempotent, or it carries an `Idempotency-Key` such as the
orchestrator's task id). The wait is what the server asked for (`Retry-After` / `X-Backoff-Ms`, capped at
`MAX_RETRY_AFTER_S`), else an exponential backoff with jitter.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import httpx
import pydantic

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)
H = TypeVar("H", httpx.Client, httpx.AsyncClient)

# The defaults, as openai-python's: a connection is given 5 s; a read (also the wait between two stream events)
# 600 s, since a queued task may wait long for its first token.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 60.0  # a longer wait asked for by the server is cut to this

TimeoutTypes = float | httpx.Timeout | None

# A request may be sent again after its connection failed if it never reached the server, or if the server treats
# a repeat as the same request: an idempotent method, or an `Idempotency-Key` (e.g. a task id).
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class NotGiven:
    """The type of `NOT_GIVEN`: an argument left out, as opposed to `None` (e.g. `timeout=None` means no timeout,
    a left-out timeout means the client's)."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()


@runtime_checkable
class RetryAdvice(Protocol):
    """What the retry loop reads of an error the taxonomy built."""

    retriable: bool
    retry_after: float | None  # seconds the server asked to wait, when it said


class ErrorTaxonomy(Protocol):
    """The generated errors module of an API: it turns what went wrong into its typed exceptions."""

    def status_error(self, response: httpx.Response) -> Exception: ...

    def connection_error(self, request: httpx.Request, cause: httpx.TransportError) -> Exception: ...

    def validation_error(self, response: httpx.Response, cause: Exception) -> Exception: ...

    def stream_error(self, item: Any) -> Exception: ...


def retry_delay(attempt: int, retry_after: float | None, jitter: float | None = None) -> float:
    """Seconds to wait before retry number `attempt + 1`: the server's wish (capped), else exponential backoff
    (0.5 s, 1 s, 2 s ... up to 8 s) less up to a quarter of jitter, so that many clients do not retry in step."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, MAX_RETRY_AFTER_S)
    backoff: float = min(INITIAL_RETRY_DELAY_S * 2.0**attempt, MAX_RETRY_DELAY_S)
    return backoff * (1 - 0.25 * (random.random() if jitter is None else jitter))


@dataclass(frozen=True)
class RawResponse(Generic[T]):
    """An answer before parsing (`client.with_raw_response.…`): status, headers, the httpx response; `parse()`."""

    http_response: httpx.Response
    _parse: Callable[[httpx.Response], T]

    @property
    def status_code(self) -> int:
        return self.http_response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.http_response.headers

    def parse(self) -> T:
        return self._parse(self.http_response)


class _BaseClient(Generic[H]):
    """What the sync and async clients share: configuration, request building, the retry decision, parsing."""

    _errors: ErrorTaxonomy  # set by the generated subclass
    _http_class: type[H]  # the httpx client made when none is given

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        http_client: H | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self.api_key = api_key
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.max_retries = max_retries
        self.default_headers = dict(default_headers or {})
        self._http: H = http_client or self._http_class()

    def build_request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str | None] | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> httpx.Request:
        """The request, with the client's URL, auth and headers, and the timeout merged (`_timeout`)."""
        return self._http.build_request(
            method,
            self.base_url.join(path.lstrip("/")),
            json=json,
            params={k: v for k, v in (params or {}).items() if v is not None} or None,
            headers=self._headers({k: v for k, v in (headers or {}).items() if v is not None}),
            timeout=self._timeout(timeout),
        )

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"Accept": "application/json", **self.default_headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return {**headers, **extra}

    def _timeout(self, timeout: TimeoutTypes | NotGiven) -> httpx.Timeout:
        """The one place a call's timeout meets the client's: a given one wins, as a whole."""
        if isinstance(timeout, NotGiven):
            return self.timeout
        return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)

    def _lost(self, request: httpx.Request, cause: httpx.TransportError) -> Exception:
        """The error of a failed connection; raised at once when sending the request again could repeat it."""
        error = self._errors.connection_error(request, cause)
        resendable = isinstance(cause, NOT_SENT) or request.method in IDEMPOTENT_METHODS
        if not (resendable or "idempotency-key" in request.headers):
            raise error
        return error

    def _retry_wait(self, attempt: int, error: Exception) -> float:
        """Seconds to wait before sending again; raises `error` when it is final (not retriable, or no retry left)."""
        if attempt >= self.max_retries or not (isinstance(error, RetryAdvice) and error.retriable):
            raise error
        return retry_delay(attempt, error.retry_after)

    def model_parser(self, model: type[M]) -> Callable[[httpx.Response], M]:
        def parse(response: httpx.Response) -> M:
            try:
                return model.model_validate_json(response.content)
            except pydantic.ValidationError as exc:
                raise self._errors.validation_error(response, exc) from exc

        return parse


def no_content(response: httpx.Response) -> None:
    return None


def text_content(response: httpx.Response) -> str:
    return response.text


class SyncAPIClient(_BaseClient[httpx.Client]):
    _http_class = httpx.Client

    def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """The retry loop: a 2xx response (unread when `stream`), or the typed error of the last attempt."""
        attempt = 0
        while True:
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                error = self._lost(request, exc)
            else:
                if response.is_success:
                    return response
                response.read()
                response.close()
                error = self._errors.status_error(response)
            time.sleep(self._retry_wait(attempt, error))
            attempt += 1

    def request(self, parse: Callable[[httpx.Response], T], method: str, path: str, **options: Any) -> T:
        return parse(self.send(self.build_request(method, path, **options)))

    def request_raw(
        self, parse: Callable[[httpx.Response], T], method: str, path: str, **options: Any
    ) -> RawResponse[T]:
        return RawResponse(self.send(self.build_request(method, path, **options)), parse)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAPIClient(_BaseClient[httpx.AsyncClient]):
    _http_class = httpx.AsyncClient

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Async twin of `SyncAPIClient.send`."""
        attempt = 0
        while True:
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                error = self._lost(request, exc)
            else:
                if response.is_success:
                    return response
                await response.aread()
                await response.aclose()
                error = self._errors.status_error(response)
            await asyncio.sleep(self._retry_wait(attempt, error))
            attempt += 1

    async def request(self, parse: Callable[[httpx.Response], T], method: str, path: str, **options: Any) -> T:
        return parse(await self.send(self.build_request(method, path, **options)))

    async def request_raw(
        self, parse: Callable[[httpx.Response], T], method: str, path: str, **options: Any
    ) -> RawResponse[T]:
        return RawResponse(await self.send(self.build_request(method, path, **options)), parse)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_RETRY_AFTER_S",
    "NOT_GIVEN",
    "AsyncAPIClient",
    "ErrorTaxonomy",
    "NotGiven",
    "RawResponse",
    "RetryAdvice",
    "SyncAPIClient",
    "TimeoutTypes",
    "no_content",
    "retry_delay",
    "text_content",
]
