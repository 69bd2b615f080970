"""The load generator's HTTP/1.1 client: raw asyncio streams, persistent connections, TCP_NODELAY.

Every side of every comparison is read through this one client, so the client's own cost is the same on both
sides, and it is small enough (no pools, no header objects) that the servers, not the client, are measured.
It speaks only what the servers under test answer: `\\n`-framed SSE or JSON lines over chunked or
length-delimited bodies.

While a stream is on the clock the reader only records each body chunk with its arrival time: the same work for
every side, whatever its payloads look like (an engine's fat JSON chunks or the relay's lean frames). The frames
are decoded after the last byte, off the clock, and each token is stamped with the arrival of the chunk that
completed its frame, so parsing never tips a ratio.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


class HttpError(RuntimeError):
    """A non-2xx answer or a broken connection."""


@dataclass
class StreamResult:
    """What one stream delivered, with the client's monotonic timestamps."""

    started: float  # the first request byte was sent (for the orchestrator: the POST)
    token_times: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    terminals: list[str] = field(default_factory=list)  # end / error / done / stop: all seen, to catch doubles
    error: str | None = None
    accepted: bool = False  # the orchestrator admitted the task (202)
    finished: float = 0.0  # the response body ended
    server_cpu_s: float | None = None  # CPU the relaying process spent on this stream (streams run one at a time)

    @property
    def tokens_per_s(self) -> float:
        elapsed = self.finished - self.started
        return len(self.token_times) / elapsed if self.finished and elapsed > 0 else 0.0

    @property
    def first_token_s(self) -> float | None:
        return self.token_times[0] - self.started if self.token_times else None

    @property
    def gaps(self) -> list[float]:
        times = self.token_times
        return [b - a for a, b in zip(times, times[1:], strict=False)]


# One SSE frame (event name, data) -> (token text or None, terminal name or None).
FrameReader = Callable[[str, str], tuple[str | None, str | None]]


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it run one after another."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
            sock = self._writer.get_extra_info("socket")
            # Without it a small request can wait ~40 ms on Nagle + the peer's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, AsyncIterator[bytes]]:
        """Send a request and return the status and an iterator over the body's chunks (read it to the end
        before the next request)."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(payload)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        for attempt in range(2):
            reused = self._writer is not None and not self._writer.is_closing()
            reader, writer = await self._ensure()
            writer.write(message)
            if status_line := await reader.readline():
                break
            await self.close()
            # A kept-alive connection the server closed meanwhile (llama-server closes after each stream despite
            # its Keep-Alive header): resend once on a new one, as HTTP clients do. Never on a fresh connection.
            if not reused or attempt:
                raise HttpError("connection closed before the response")
        status = int(status_line.split()[1])
        response_headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        return status, self._body(reader, response_headers)

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while await reader.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunk = await reader.readexactly(size + 2)
                yield chunk[:-2]
        elif "content-length" in headers:
            if length := int(headers["content-length"]):
                yield await reader.readexactly(length)
        else:  # delimited by close: the connection cannot be reused
            while chunk := await reader.read(65536):
                yield chunk
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, chunks = await self.request(method, path, body)
        raw = b"".join([chunk async for chunk in chunks])
        return status, json.loads(raw) if raw else None

    async def stream(
        self, method: str, path: str, body: Any, read_frame: FrameReader, result: StreamResult, *, ndjson: bool = False
    ) -> StreamResult:
        """Read an SSE (or, with `ndjson`, a JSON-lines) response into `result`: chunks recorded on the clock,
        frames decoded after it stops (see the module's docstring)."""
        accept = "application/x-ndjson" if ndjson else "text/event-stream"
        status, chunks = await self.request(method, path, body, {"Accept": accept})
        if status != 200:
            raw = b"".join([chunk async for chunk in chunks])
            result.error = f"{method} {path}: HTTP {status}: {raw[:200]!r}"
            return result
        arrivals: list[tuple[float, bytes]] = []
        async for chunk in chunks:
            arrivals.append((time.perf_counter(), chunk))
        result.finished = time.perf_counter()
        decode_arrivals(arrivals, read_frame, result, ndjson=ndjson)
        return result


def decode_arrivals(
    arrivals: list[tuple[float, bytes]], read_frame: FrameReader, result: StreamResult, *, ndjson: bool = False
) -> None:
    """Frames of the recorded chunks into `result`: token texts stamped with the arrival of the chunk that
    completed their frame, and every terminal seen."""
    buffer = b""
    for arrived, chunk in arrivals:
        frames = (buffer + chunk).split(b"\n" if ndjson else b"\n\n")
        buffer = frames.pop()
        for frame in frames:
            event, data = ("message", frame.decode()) if ndjson else _sse_fields(frame)
            if not data:
                continue
            token, terminal = read_frame(event, data)
            if token:
                result.token_times.append(arrived)
                result.text.append(token)
            if terminal:
                result.terminals.append(terminal)


def _sse_fields(frame: bytes) -> tuple[str, str]:
    """One `\\n`-framed SSE event → (event name, data)."""
    event, data = "message", ""
    for line in frame.decode().split("\n"):
        name, _, value = line.partition(":")
        if name == "data":
            data = value[1:] if value[:1] == " " else value
        elif name == "event":
            event = value.strip()
    return event, data


def llamacpp_native(event: str, data: str) -> tuple[str | None, str | None]:
    """llama.cpp `/completion`: one JSON chunk per token, the last one has `stop: true` (no `[DONE]`)."""
    chunk = json.loads(data)
    if "error" in chunk:
        return None, "error"
    return chunk.get("content") or None, "stop" if chunk.get("stop") else None


def openai_stream(event: str, data: str) -> tuple[str | None, str | None]:
    """OpenAI `/v1/chat/completions` or `/v1/completions` chunks, ended by `[DONE]`."""
    if data == "[DONE]":
        return None, "done"
    chunk = json.loads(data)
    if "error" in chunk:
        return None, "error"
    choices = chunk.get("choices") or [{}]
    choice = choices[0]
    text = choice.get("text") or (choice.get("delta") or {}).get("content")
    return text or None, None


def orchestrator_stream(event: str, data: str) -> tuple[str | None, str | None]:
    """The orchestrator's task stream: `token` frames carry `{"t": text, "i": index}`; `end`/`error` close it."""
    if event == "token":
        return str(json.loads(data)["t"]), None
    return None, event if event in ("end", "error") else None


def infer_stream(event: str, data: str) -> tuple[str | None, str | None]:
    """The orchestrator's `/infer` lines: `{"token": text}`, then `{"done": true, ...}` or `{"error": ...}`."""
    line = json.loads(data)
    if "token" in line:
        return str(line["token"]), None
    return None, "done" if line.get("done") else "error" if "error" in line else None
