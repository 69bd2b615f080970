"""The physical reference: a TCP proxy that forwards bytes both ways and understands nothing.

    python -m llama_orch_devtools.bench.byte_proxy --port P --upstream HOST:PORT

No relay can be faster than this on the same machine: it pays for the extra process, the extra socket hop and
the event loop's wake-ups, and nothing else (no HTTP parsing, no decoding, no validation). The bench reads an
engine through it beside the orchestrator, so "the relay's limit here" is a figure of the same run, not a guess.
It runs on the orchestrator's event loop (uvloop when installed, as uvicorn picks it) with TCP_NODELAY on both legs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket

READ_SIZE = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close, so the other direction can finish (HTTP keep-alive never sends EOF)."""
    try:
        while chunk := await reader.read(READ_SIZE):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def serve(port: int, upstream_host: str, upstream_port: int) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            engine_reader, engine_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_writer.close()
            return
        _no_delay(client_writer)
        _no_delay(engine_writer)
        try:
            await asyncio.gather(_pipe(client_reader, engine_writer), _pipe(engine_reader, client_writer))
        finally:
            for writer in (client_writer, engine_writer):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llama_orch_devtools.bench.byte_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the engine")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    try:
        import uvloop  # the loop uvicorn runs the orchestrator on: the same loop on both sides

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
