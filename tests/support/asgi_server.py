"""Serve an ASGI app on a real socket from a background thread, for tests that need true streaming."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serve_asgi(app: Any, *, startup_timeout_s: float = 20.0) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 (a free port) and yield its base URL; stop it on exit."""
    # A long keep-alive: httpx does not resend a request on a pooled connection the server closed as idle, and a
    # loaded test machine can leave one idle past uvicorn's default 5 s.
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_keep_alive=120)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the ASGI server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
