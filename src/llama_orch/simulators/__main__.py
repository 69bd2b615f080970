"""`python -m llama_orch.simulators ENGINE [options]`: serve one engine simulator under uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from llama_orch.simulators import ENGINES, Fault, FaultKind, SimulatorConfig, create_app
from llama_orch.simulators.core import InjectedReset

EPILOG = """faults (repeat --fault; options after commas):
  refuse           nothing listens on the port: connections are refused (the whole run)
  loading          503 "loading" (llama.cpp: on every route)       overloaded    429 with Retry-After
  server_error     a 5xx (status=, default 500)                    stall_first   silence before the first token
  stall_mid        silence after after_tokens= tokens              reset_mid     connection dropped mid-body
  malformed        a non-JSON chunk mid-stream                     in_stream_error  the engine's in-stream error
  truncated        the body ends without the terminal chunk
  options: times=N (generation requests it hits, then the engine behaves), after_tokens=N, status=N,
  retry_after_s=N.  e.g. --fault server_error,times=2,status=502 --fault stall_mid,after_tokens=3
"""


@contextmanager
def refusing_socket(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Hold `host:port` bound but not listening, so every connection to it is refused (ECONNREFUSED), the
    honest "refuse" fault: an ASGI app cannot refuse a connection it was handed. Yields the base URL."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        yield f"http://{host}:{sock.getsockname()[1]}"


class _HideInjectedResets(logging.Filter):
    """uvicorn logs every exception that aborts a response; an injected reset is the point, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedReset))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m llama_orch.simulators",
        description="Serve an engine simulator: the engine's exact wire format, deterministic tokens from "
        "(prompt, seed), optional per-token delay and faults.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("engine", choices=sorted(ENGINES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--tokens", type=int, default=16, help="tokens per request unless it asks fewer (16)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay before each token (0)")
    parser.add_argument("--model", help="the served model's name (default: the engine's own)")
    parser.add_argument("--slots", type=int, default=2, help="llama.cpp slots reported (2)")
    parser.add_argument("--stall-s", type=float, default=3600.0, help="how long a stall fault lasts (3600)")
    parser.add_argument("--fault", action="append", default=[], type=Fault.parse, metavar="NAME[,opt=N...]")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    faults: tuple[Fault, ...] = tuple(args.fault)
    if any(f.kind is FaultKind.REFUSE for f in faults):
        with refusing_socket(args.host, args.port) as url:
            logging.basicConfig(level=logging.INFO)
            logging.getLogger(__name__).warning("refusing every connection to %s (Ctrl-C to stop)", url)
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                return
    config = SimulatorConfig(
        tokens=args.tokens,
        delay_ms=args.delay_ms,
        faults=faults,
        model=args.model,
        slots=args.slots,
        stall_s=args.stall_s,
    )
    logging.getLogger("uvicorn.error").addFilter(_HideInjectedResets())
    uvicorn.run(create_app(args.engine, config), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
