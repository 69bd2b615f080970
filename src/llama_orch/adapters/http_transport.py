"""The engines' HTTP/1.1 transport for httpx: keep-alive connections on asyncio streams, responses parsed by
httptools (llhttp, the C parser uvicorn already uses).

Why not httpx's default (httpcore + h11): an engine streams one HTTP chunk per token, and h11 parses each chunk
and httpcore and httpx hand each one up through several async layers, all in Python: about a third of the
relay's time per token. Here one socket read is parsed in C and handed up as one piece, however many chunks it
holds, so the stream decoder sees every token that has arrived at once.

Scope: what engines need. HTTP/1.1 over TCP or TLS; request bodies are sent whole; responses end by
Content-Length, chunked encoding or EOF. Failures are httpx's own exceptions, so callers classify them as
before: ConnectError / ConnectTimeout (never reached), PoolTimeout, WriteTimeout / ReadTimeout, WriteError /
ReadError (socket errors) and RemoteProtocolError (closed early or malformed).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import httpx
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

__all__ = ["EngineTransport"]

_READ_BYTES = 1 << 16
# A stream ends at its final chunk; the rest of the body (usually just the chunked terminator) is read after that,
# in the background, for this long at most, to keep the connection. A body still open then costs the connection.
_DRAIN_S = 1.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Framing is ours to set: the body is sent whole with its length.
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})

# RFC 9110 §5.1: a header name is a token; a value never holds CR, LF or NUL (a line break would start a new header).
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_UNSAFE_VALUE = re.compile(rb"[\r\n\x00]")

Key = tuple[str, str, int]


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed: nothing was answered, so the request is sent again."""


class _Response:
    """httptools callbacks for one response; `body` collects what arrived since it was last taken. Interim 1xx
    responses (100 Continue, 103 Early Hints, ...) are skipped: llhttp parses each as a message of its own."""

    __slots__ = ("parser", "headers", "body", "headers_done", "complete", "keep_alive", "interim")

    def __init__(self) -> None:
        self.parser = HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.interim = False

    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the end of the response: the connection is out of step, never reuse it
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:
            self.interim = True  # its headers are not the response's
            self.headers.clear()
            return
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.complete:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is done

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            raise httpx.RemoteProtocolError("the server switched protocols (101); an engine answers HTTP") from None
        except HttpParserError as exc:
            raise httpx.RemoteProtocolError(f"malformed response from the server: {exc}") from exc

    def take_body(self) -> bytes:
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        return body


class _Connection:
    __slots__ = ("key", "reader", "writer", "idle_since")

    def __init__(self, key: Key, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def open(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def abort(self) -> None:
        # Abort, not close: nothing unsent matters, and closing could wait on a peer that stopped reading.
        self.writer.transport.abort()

    async def wait_closed(self) -> None:
        """Let the loop release the socket now (a loop that ends first would leak it)."""
        with suppress(OSError):
            await self.writer.wait_closed()

    async def read(self, timeout: float | None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(_READ_BYTES)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no data from the server within {timeout:g}s") from None
        except OSError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; closing it returns a completed keep-alive connection to the pool."""

    def __init__(
        self,
        transport: EngineTransport,
        connection: _Connection,
        response: _Response,
        *,
        until_eof: bool,
        timeout: float | None,
    ) -> None:
        self._transport = transport
        self._connection: _Connection | None = connection
        self._response = response
        self._until_eof = until_eof
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        response, connection = self._response, self._connection
        if response.body:
            yield response.take_body()
        while not response.complete and connection is not None:
            data = await connection.read(self._timeout)
            if not data:
                if self._until_eof:  # a body delimited by the end of the connection
                    response.complete = True
                    self._until_eof = False
                    connection.abort()
                    break
                raise httpx.RemoteProtocolError("the server closed the connection before the end of the body")
            response.feed(data)
            if response.body:
                yield response.take_body()

    async def aclose_at_end(self) -> None:
        """The reader saw the stream's end marker: what remains of the body (usually the chunked terminator) is
        read in the background, so the connection can be reused without delaying the caller."""
        connection = self._connection
        if connection is not None and not self._response.complete and not self._until_eof and connection.open():
            self._connection = None
            self._transport.drain(connection, self._response)
        else:
            await self.aclose()

    async def aclose(self) -> None:
        """Closing a body not read to its end (e.g. a cancel) closes its connection: the engine sees it at once."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._response.complete and self._response.keep_alive and connection.open():
            self._transport.release(connection)
        else:
            self._transport.discard(connection)
            await connection.wait_closed()


class EngineTransport(httpx.AsyncBaseTransport):
    """Pooled keep-alive HTTP/1.1 connections (see the module docstring). `max_connections` bounds the open
    connections to each host (None: the callers bound concurrency, as the orchestrator does per replica); one busy
    host never takes another's connections. At most `max_idle` idle ones are kept per host, each for
    `idle_expiry_s`. `tls` verifies https engines (a private CA, a client certificate; None: the system's trust
    store). The orchestrator gives each replica a transport of its own."""

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        max_idle: int = 32,
        idle_expiry_s: float = 60.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[Key, list[_Connection]] = {}
        self._max_connections = max_connections
        self._slots: dict[Key, asyncio.Semaphore] = {}  # per host, with `max_connections`
        self._held: dict[_Connection, asyncio.Semaphore] = {}  # connections holding a permit of their host's
        self._max_idle = max_idle
        self._idle_expiry_s = idle_expiry_s
        self._tls = tls  # None: the system's trust store, made on first use
        self._draining: set[asyncio.Task[None]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        key = (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 80))
        message = _head(request, await request.aread())
        while True:
            connection, reused = await self._checkout(key, timeouts)
            try:
                return await self._exchange(connection, request, message, timeouts)
            except _StaleConnection:
                self.discard(connection)
                if not reused:
                    raise httpx.RemoteProtocolError("the server closed the connection without answering") from None
            except BaseException:
                self.discard(connection)
                raise

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, message: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        try:
            connection.writer.write(message)
            async with asyncio.timeout(timeouts.get("write")):
                await connection.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("the request could not be sent in time") from None
        except OSError as exc:
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc
        response = _Response()
        received = False
        while not response.headers_done:
            data = await connection.read(timeouts.get("read"))
            if not data:
                if not received:
                    raise _StaleConnection
                raise httpx.RemoteProtocolError("the server closed the connection inside the response head")
            received = True
            response.feed(data)
        if request.method == "HEAD":
            response.complete = True
        framed = any(name.lower() in _FRAMING_HEADERS for name, _ in response.headers)
        body = _Body(
            self,
            connection,
            response,
            until_eof=not (framed or response.complete),
            timeout=timeouts.get("read"),
        )
        return httpx.Response(
            response.parser.get_status_code(),
            headers=response.headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "aclose_at_end": body.aclose_at_end},
            request=request,
        )

    async def _checkout(self, key: Key, timeouts: dict[str, float | None]) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if connection.open() and now - connection.idle_since < self._idle_expiry_s:
                return connection, True
            self.discard(connection)
        async with self._permit(key, timeouts.get("pool")) as slot:
            connection = await self._connect(key, timeouts.get("connect"))
        if slot is not None:
            self._held[connection] = slot
        return connection, False

    @asynccontextmanager
    async def _permit(self, key: Key, timeout: float | None) -> AsyncIterator[asyncio.Semaphore | None]:
        """Reserve one of the host's connection slots for the connection opened inside (kept until it is
        forgotten)."""
        if self._max_connections is None:
            yield None
            return
        slot = self._slots.setdefault(key, asyncio.Semaphore(self._max_connections))
        try:
            async with asyncio.timeout(timeout):
                await slot.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(f"no free connection to {key[1]}:{key[2]} in time") from None
        try:
            yield slot
        except BaseException:
            slot.release()
            raise

    async def _connect(self, key: Key, timeout: float | None) -> _Connection:
        scheme, host, port = key
        tls = None
        if scheme == "https":
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=_READ_BYTES)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout:g}s") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # A request is one write and tokens are small: never wait on Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(key, reader, writer)

    def release(self, connection: _Connection) -> None:
        """A response was read to its end on a keep-alive connection: keep it for the next request."""
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self._max_idle:
            self.discard(connection)
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    def drain(self, connection: _Connection, response: _Response) -> None:
        """Read the rest of a body whose stream already ended in the background, within `_DRAIN_S`, then keep
        the connection; a body that does not end in time loses it."""
        job = asyncio.get_running_loop().create_task(self._drain(connection, response))
        self._draining.add(job)
        job.add_done_callback(self._draining.discard)

    async def _drain(self, connection: _Connection, response: _Response) -> None:
        try:
            async with asyncio.timeout(_DRAIN_S):
                while not response.complete:
                    data = await connection.reader.read(_READ_BYTES)
                    if not data:
                        break
                    response.feed(data)
                    response.body.clear()
        except (TimeoutError, OSError, httpx.RemoteProtocolError):
            pass
        finally:  # also when the transport closes meanwhile: never leave the connection unaccounted
            if response.complete and response.keep_alive and connection.open():
                self.release(connection)
            else:
                self.discard(connection)

    def discard(self, connection: _Connection) -> None:
        """Close a connection that will not be used again, and free its slot."""
        connection.abort()
        slot = self._held.pop(connection, None)
        if slot is not None:
            slot.release()

    async def aclose(self) -> None:
        for job in list(self._draining):
            job.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
        closing = [connection for idle in self._idle.values() for connection in idle]
        self._idle.clear()
        for connection in closing:
            self.discard(connection)
        for connection in closing:
            await connection.wait_closed()


def _head(request: httpx.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name):
            raise httpx.LocalProtocolError(f"invalid header name {name[:64]!r}: not sent")
        if _UNSAFE_VALUE.search(value):
            # The value may be a secret: name the header only.
            raise httpx.LocalProtocolError(f"header {name.decode()!r} holds CR, LF or NUL: not sent")
        if name.lower() not in _FRAMING_HEADERS:
            lines.append(b"%s: %s" % (name, value))
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
