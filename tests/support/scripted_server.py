"""A scripted HTTP/1.1 server on a real socket, for transport and adapter tests that need exact bytes on the wire
(held connections, interim responses, truncated bodies)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

# One scripted answer: gets the raw request head+body, returns the bytes to send (None: send nothing; a list: parts
# sent `pause_s` apart, so each arrives in its own read) and whether to close the connection afterwards.
Script = Callable[[bytes], Awaitable[tuple[bytes | list[bytes] | None, bool]]]


class ScriptedServer:
    def __init__(self, script: Script, pause_s: float = 0.05) -> None:
        self.script = script
        self.pause_s = pause_s
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                sizes = [line.split(b":")[1] for line in lines if line.startswith(b"content-length")]
                length = int(sizes[0]) if sizes else 0
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer, close = await self.script(request)
                for n, part in enumerate([answer] if isinstance(answer, bytes) else answer or []):
                    if n:
                        await asyncio.sleep(self.pause_s)
                    writer.write(part)
                    await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(body: bytes, *, close: bool = False, extra: bytes = b"") -> Script:
    async def script(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        return head + extra + b"\r\n" + body, close

    return script


def chunked(*chunks: bytes) -> bytes:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
