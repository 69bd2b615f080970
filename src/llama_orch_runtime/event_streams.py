"""Typed event streams of the resource clients: opened through the client's retry loop, never replayed.

Opening a stream is retried like any request (nothing was received yet). Once an item arrived the stream is never
replayed: when its connection is lost (reset, read timeout, EOF before the final item) a resumable stream
reconnects with its resume header set to the id of the last event it delivered, up to `max_retries` times, and
goes on from the next event; any other stream raises the taxonomy's connection error. The decoding itself is
llama_orch_runtime.streaming's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, Self, TypeVar

import httpx

from .base_client import AsyncAPIClient, ErrorTaxonomy, SyncAPIClient
from .streaming import Decoding, StreamDecodeError, StreamFormat, StreamTruncated

T = TypeVar("T")

# Builds the request that opens the stream: None the first time, then the last delivered event's id.
OpenRequest = Callable[[str | None], httpx.Request]
LOST = (httpx.TransportError, StreamTruncated)


class _Resumption(Generic[T]):
    """The state both stream twins share: decoding, where to resume, how many resumes are left."""

    def __init__(self, fmt: StreamFormat[T], errors: ErrorTaxonomy, *, resumable: bool, budget: int) -> None:
        self.fmt = fmt
        self.errors = errors
        self.resumable = resumable
        self.budget = budget
        self.state: Decoding[T] = Decoding(fmt)
        self.last_id: str | None = None

    def checked(self, batch: list[T], raise_on_error: bool) -> Iterator[T]:
        """The batch's items in order; with `raise_on_error` an error item is raised once those before it went."""
        for item in batch:
            if raise_on_error and self.fmt.is_error(item):
                raise self.errors.stream_error(item)
            yield item

    def resume_from(self, exc: Exception, request: httpx.Request) -> str | None:
        """After a lost connection: the event id to resume after, or raise the connection error."""
        self.last_id = self.state.last_event_id or self.last_id
        if not self.resumable or self.budget <= 0:
            cause = exc if isinstance(exc, httpx.TransportError) else httpx.RemoteProtocolError(str(exc))
            raise self.errors.connection_error(request, cause) from exc
        self.budget -= 1
        self.state = Decoding(self.fmt)
        return self.last_id

    def invalid(self, response: httpx.Response, exc: StreamDecodeError) -> Exception:
        return self.errors.validation_error(response, exc)


C = TypeVar("C", SyncAPIClient, AsyncAPIClient)


class _Stream(Generic[C, T]):
    """What both stream twins hold: their client, how to (re)open the stream, the resumption state."""

    def __init__(
        self,
        client: C,
        open_request: OpenRequest,
        fmt: StreamFormat[T],
        *,
        resumable: bool = False,
        raise_on_error: bool = False,
    ) -> None:
        self._client: C = client
        self._open_request = open_request
        self._raise_on_error = raise_on_error
        self._resumption = _Resumption(fmt, client._errors, resumable=resumable, budget=client.max_retries)


class EventStream(_Stream[SyncAPIClient, T]):
    """The typed items of one streaming answer: iterate it inside `with`; `response` is the current connection."""

    def __init__(self, client: SyncAPIClient, open_request: OpenRequest, fmt: StreamFormat[T], **options: bool) -> None:
        super().__init__(client, open_request, fmt, **options)
        self.response = client.send(open_request(None), stream=True)

    def __iter__(self) -> Iterator[T]:
        resumption = self._resumption
        while True:
            try:
                for batch in self._batches():
                    yield from resumption.checked(batch, self._raise_on_error)
                return
            except StreamDecodeError as exc:
                raise resumption.invalid(self.response, exc) from exc
            except LOST as exc:
                self.response.close()
                after = resumption.resume_from(exc, self.response.request)
                self.response = self._client.send(self._open_request(after), stream=True)

    def _batches(self) -> Iterator[list[T]]:
        state = self._resumption.state
        for chunk in self.response.iter_bytes():
            yield from state.batches(chunk)
            if state.finished:
                break
        else:
            yield from state.batches(None)
        self.response.close()

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventStream(_Stream[AsyncAPIClient, T]):
    """Async twin of `EventStream`: `async with` opens it (through the retry loop) and closes it."""

    response: httpx.Response | None = None

    async def _open(self) -> httpx.Response:
        self.response = await self._client.send(self._open_request(None), stream=True)
        return self.response

    async def __aiter__(self) -> AsyncIterator[T]:
        resumption = self._resumption
        response = self.response or await self._open()
        while True:
            try:
                async for batch in self._batches(response):
                    for item in resumption.checked(batch, self._raise_on_error):
                        yield item
                return
            except StreamDecodeError as exc:
                raise resumption.invalid(response, exc) from exc
            except LOST as exc:
                await response.aclose()
                after = resumption.resume_from(exc, response.request)
                response = self.response = await self._client.send(self._open_request(after), stream=True)

    async def _batches(self, response: httpx.Response) -> AsyncIterator[list[T]]:
        state = self._resumption.state
        async for chunk in response.aiter_bytes():
            for batch in state.batches(chunk):
                yield batch
            if state.finished:
                break
        else:
            for batch in state.batches(None):
                yield batch
        await response.aclose()

    async def aclose(self) -> None:
        if self.response is not None:
            await self.response.aclose()

    async def __aenter__(self) -> Self:
        if self.response is None:
            await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncEventStream", "EventStream", "OpenRequest"]
