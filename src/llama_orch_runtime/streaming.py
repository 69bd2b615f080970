"""Incremental stream decoding for the generated clients: SSE and NDJSON bytes -> typed items.

Each streaming operation declares its framing in its spec (`x-stream`, see specs/README.md); the endpoint
template renders that declaration as a `StreamFormat` and calls `open_stream` / `aopen_stream` here.
Exceptions:

    StreamError
    ├── StreamStatusError   the server answered a non-2xx status (its documented body is parsed)
    ├── StreamDecodeError   an item is not valid JSON or does not match its schema
    └── StreamTruncated     the stream ended before its `done` sentinel or final item
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Generic, TypeVar, Union, get_args, get_origin

import httpx
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")
_UNIONS = (Union, UnionType)


class StreamError(Exception):
    """Base class of everything a generated stream raises."""


class StreamStatusError(StreamError):
    """The server refused the stream: `status_code`, raw `content`, `headers` and the `parsed` documented body."""

    def __init__(self, status_code: int, content: bytes, headers: httpx.Headers, parsed: Any) -> None:
        super().__init__(f"unexpected status {status_code}: {content[:512]!r}")
        self.status_code = status_code
        self.content = content
        self.headers = headers
        self.parsed = parsed


class StreamDecodeError(StreamError):
    """An item could not be decoded; `raw` is the offending payload."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(f"{message}: {raw[:512]!r}")
        self.raw = raw


class StreamTruncated(StreamError):
    """The stream ended (EOF) before its declared end: no `done` sentinel and no final item
    (never raised for streams declared `eof-is-end`, which have no end marker)."""


@dataclass(frozen=True)
class FinalRule:
    """Recognises the normal last item: `field` equals one of `values`, or is not null."""

    field: str
    values: tuple[Any, ...] = ()
    not_null: bool = False

    def matches(self, item: Any) -> bool:
        # Class attributes, not isinstance: pydantic's metaclass makes isinstance an ABC check, and this runs per item.
        target = item.root if getattr(type(item), "__pydantic_root_model__", False) else item
        value = getattr(target, self.field, None)
        return value is not None if self.not_null else value in self.values


@dataclass(frozen=True)
class StreamFormat(Generic[T]):
    """A stream declaration (`x-stream`) bound to its item and error models."""

    framing: str  # "sse" | "ndjson"
    item: Any  # a model class, or a union of them: what T names
    error: type[Any] | None = None
    error_key: str | None = None
    envelope: bool = False
    done: str | None = None
    final: FinalRule | None = None
    eof_is_end: bool = False
    _item_adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)
    _plain_adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)
    # ('"<error_key>"', error adapter) when in-stream errors are told apart by a key: built once, used per item.
    _error_route: tuple[str, TypeAdapter[Any]] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        item_adapter = TypeAdapter(self.item)
        object.__setattr__(self, "_item_adapter", item_adapter)
        error_adapter = TypeAdapter(self.error) if self.error is not None else None
        route = (f'"{self.error_key}"', error_adapter) if error_adapter is not None and self.error_key else None
        object.__setattr__(self, "_error_route", route)
        # A payload without the error key cannot be the error model, so it is validated against the union's other
        # members only: pydantic tries every member of a union, and this runs once per token.
        others = [m for m in get_args(self.item) if m is not self.error] if get_origin(self.item) in _UNIONS else []
        if route is not None and others:
            plain: Any = others[0] if len(others) == 1 else Union[tuple(others)]  # noqa: UP007
            item_adapter = TypeAdapter(plain)
        object.__setattr__(self, "_plain_adapter", item_adapter)

    def parse(self, event: str, data: str) -> Any:
        """Decode one payload into the item model, or the error model for an in-stream error."""
        try:
            route = self._error_route
            if route is not None and route[0] in data:
                obj = json.loads(data)
                if isinstance(obj, dict) and self.error_key in obj:
                    return route[1].validate_python(obj)
                return self._plain_adapter.validate_python(obj)
            if self.envelope:
                return self._item_adapter.validate_json(f'{{"event":{json.dumps(event)},"data":{data}}}')
            return self._plain_adapter.validate_json(data)
        except (ValidationError, ValueError) as exc:
            raise StreamDecodeError(f"bad stream item ({exc.__class__.__name__}: {exc})", data) from exc

    def is_error(self, item: Any) -> bool:
        return type(item) is self.error  # `parse` builds exactly this class; isinstance would be the slow ABC check


class SSEDecoder:
    """WHATWG event-stream parsing over byte chunks: CR, LF or CRLF line ends, `data:` with or without a space,
    multi-line data, `:` comments; chunks may split lines and multi-byte characters anywhere."""

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_event_id: str | None = None  # the `id:` of the last event delivered: where a resume starts

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = chunk[-1:] == b"\r"
        data = self._buffer + chunk
        events: list[tuple[str, str]] = []
        if b"\r" in data or self._data or self._event:
            self._lines(data, events)
        else:
            self._blocks(data, events)
        return events

    def _blocks(self, data: bytes, events: list[tuple[str, str]]) -> None:
        """The fast path for `\n` line ends (what engines send): whole events at a time, split at blank lines, and
        an event that is one `data:` line taken without parsing it line by line. What stays buffered is the
        unfinished event, from its start."""
        blocks = data.split(b"\n\n")
        self._buffer = blocks.pop()
        for block in blocks:
            if block[:5] == b"data:" and b"\n" not in block:
                value = block[6:] if block[5:6] == b" " else block[5:]
                events.append(("message", value.decode("utf-8", errors="replace")))
                self.last_event_id = self._id  # the id persists across events that set none
            elif block:  # other fields, comments, multi-line data, a leading blank line: the general parser
                for line in block.split(b"\n"):
                    self._line(line.decode("utf-8", errors="replace"), events)
                self._line("", events)

    def _lines(self, data: bytes, events: list[tuple[str, str]]) -> None:
        """The general path, line by line (CR or CRLF line ends, or an event already begun line by line); what
        stays buffered is an unfinished line."""
        lines = data.splitlines(keepends=True)
        self._buffer = lines.pop() if lines and not lines[-1].endswith((b"\n", b"\r")) else b""
        for raw in lines:
            self._line(raw.rstrip(b"\r\n").decode("utf-8", errors="replace"), events)

    def close(self) -> list[tuple[str, str]]:
        """Flush at EOF: a last event without its blank line is still delivered."""
        events: list[tuple[str, str]] = []
        if self._buffer:
            self._lines(self._buffer + b"\n", events)
            self._buffer = b""
        self._line("", events)
        return events

    def _line(self, line: str, events: list[tuple[str, str]]) -> None:
        if not line:
            if self._data:
                events.append((self._event or "message", "\n".join(self._data)))
                self.last_event_id = self._id
            self._event, self._data = "", []
            return
        if line[0] == ":":
            return
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value


class NDJSONDecoder:
    """Newline-delimited JSON over byte chunks; blank lines are skipped."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        return [("", line.decode("utf-8", errors="replace")) for line in lines if line.strip()]

    def close(self) -> list[tuple[str, str]]:
        rest, self._buffer = self._buffer, b""
        return [("", rest.decode("utf-8", errors="replace"))] if rest.strip() else []


class Decoding(Generic[T]):
    """State shared by the sync and async streams: framing, end detection, truncation."""

    def __init__(self, fmt: StreamFormat[T]) -> None:
        self.fmt = fmt
        self.decoder: SSEDecoder | NDJSONDecoder = SSEDecoder() if fmt.framing == "sse" else NDJSONDecoder()
        self.finished = False  # nothing more to read
        self.saw_final = False  # the declared final item arrived

    @property
    def last_event_id(self) -> str | None:
        return self.decoder.last_event_id if isinstance(self.decoder, SSEDecoder) else None

    def batches(self, chunk: bytes | None) -> Iterator[list[Any]]:
        """The items `chunk` completes (None: the input ended), as one batch. A failure is raised after that batch,
        so none of the items before it is lost. The streams stop calling it once the stream is finished."""
        if chunk is not None:
            items, failure = self._decode(self.decoder.feed(chunk))
        else:
            items, failure = self._decode(self.decoder.close())
            if failure is None and not (self.finished or self.saw_final or self.fmt.eof_is_end):
                failure = StreamTruncated("stream ended before its final item")
        if items:
            yield items
        if failure is not None:
            raise failure

    def _decode(self, frames: list[tuple[str, str]]) -> tuple[list[Any], StreamError | None]:
        fmt = self.fmt
        items: list[Any] = []
        for event, data in frames:
            if self.finished:
                break
            if fmt.done is not None and data == fmt.done:
                self.finished = True
                break
            try:
                item = fmt.parse(event, data)
            except StreamDecodeError as exc:
                return items, exc
            if fmt.is_error(item):
                self.finished = True
            elif fmt.final is not None and fmt.final.matches(item):
                self.saw_final = True
                # With a `done` sentinel declared too, read on to it (e.g. a usage chunk may follow).
                self.finished = fmt.done is None
            items.append(item)
        return items, None


class SyncStream(Generic[T]):
    """Iterate the typed items of one streaming response; closing it closes the connection."""

    def __init__(self, response: httpx.Response, fmt: StreamFormat[T]) -> None:
        self.response = response
        self._state = Decoding(fmt)

    def __iter__(self) -> Iterator[T]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[T]]:
        """The items as they arrive: one list per network read that completed any (the cheap way to keep up with
        a fast server). The iteration ends at the stream's end marker or final item, not at the end of the body: a
        server may hold the body open after it (the transport decides whether the connection can be reused)."""
        state = self._state
        try:
            for chunk in self.response.iter_bytes():
                yield from state.batches(chunk)
                if state.finished:
                    return
            yield from state.batches(None)
        finally:
            self.response.close()

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStream(Generic[T]):
    """Async twin of `SyncStream`."""

    def __init__(self, response: httpx.Response, fmt: StreamFormat[T]) -> None:
        self.response = response
        self._state = Decoding(fmt)

    async def __aiter__(self) -> AsyncIterator[T]:
        async for batch in self.batches():
            for item in batch:
                yield item

    async def batches(self) -> AsyncIterator[list[T]]:
        """The items as they arrive: one list per network read that completed any; ends at the stream's end (see
        `SyncStream.batches`)."""
        state = self._state
        try:
            async for chunk in self.response.aiter_bytes():
                for batch in state.batches(chunk):
                    yield batch
                if state.finished:
                    return
            for batch in state.batches(None):
                yield batch
        finally:
            await _aclose(self.response, ended=state.finished)

    async def aclose(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


ParseBody = Callable[[httpx.Response], Any]


async def _aclose(response: httpx.Response, *, ended: bool) -> None:
    """Close a streaming response. At the stream's end a transport that can read the rest of the body in the
    background (the `aclose_at_end` response extension, e.g. llama-orch's EngineTransport) keeps the connection
    for reuse; otherwise (and always on an early close, e.g. a cancel) closing an unfinished body drops it."""
    close_at_end = response.extensions.get("aclose_at_end")
    if ended and close_at_end is not None:
        await close_at_end()
    await response.aclose()


def _status_error(response: httpx.Response, parse_body: ParseBody) -> StreamStatusError:
    try:
        parsed = parse_body(response)
    except (ValueError, KeyError, TypeError):
        parsed = None
    return StreamStatusError(response.status_code, response.content, response.headers, parsed)


def open_stream(
    client: httpx.Client, kwargs: dict[str, Any], fmt: StreamFormat[T], parse_body: ParseBody
) -> SyncStream[T]:
    response = client.send(client.build_request(**kwargs), stream=True)
    if not 200 <= response.status_code < 300:
        try:
            response.read()
        finally:
            response.close()
        raise _status_error(response, parse_body)
    return SyncStream(response, fmt)


async def aopen_stream(
    client: httpx.AsyncClient, kwargs: dict[str, Any], fmt: StreamFormat[T], parse_body: ParseBody
) -> AsyncStream[T]:
    response = await client.send(client.build_request(**kwargs), stream=True)
    if not 200 <= response.status_code < 300:
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise _status_error(response, parse_body)
    return AsyncStream(response, fmt)


__all__ = [
    "AsyncStream",
    "Decoding",
    "FinalRule",
    "NDJSONDecoder",
    "SSEDecoder",
    "StreamDecodeError",
    "StreamError",
    "StreamFormat",
    "StreamStatusError",
    "StreamTruncated",
    "SyncStream",
    "aopen_stream",
    "open_stream",
]
