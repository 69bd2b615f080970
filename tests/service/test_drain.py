"""SIGTERM drains, black-box: `llama-orch serve` over a slow llama.cpp simulator. New submits get 503 with
Retry-After and pool health says `draining: true`; a task that finishes within `--drain-grace` ends normally, one
that does not is canceled with its terminal event; then the process exits 0."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.service.helpers import GUARD_S, parse_sse, validate, wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(GUARD_S)
        if process.stderr is not None:
            process.stderr.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _stream(url: str, out: dict[str, Any]) -> None:
    with httpx.Client(timeout=GUARD_S) as http:
        out["frames"] = parse_sse(http.get(url).content)


def test_sigterm_drains_then_exits_zero() -> None:
    engine_port, port = _free_port(), _free_port()
    simulator = (
        sys.executable,
        "-m",
        "llama_orch.simulators",
        "llamacpp",
        "--port",
        str(engine_port),
        "--delay-ms",
        "20",
        "--tokens",
        "500",
    )
    with _process(*simulator):
        wait_until(lambda: _up(f"http://127.0.0.1:{engine_port}/health"), "the simulator is up")
        serve = (
            str(Path(sys.executable).parent / "llama-orch"),
            "serve",
            "--engine",
            "llamacpp",
            "--engine-url",
            f"http://127.0.0.1:{engine_port}",
        )
        with _process(*serve, "--port", str(port), "--drain-grace", "1500ms") as orch:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _up(f"{base}/v1/pools/default/health"), "the orchestrator is up")
            http = httpx.Client(base_url=base, timeout=GUARD_S)
            short = http.post("/v1/tasks", json={"prompt": "short", "max_tokens": 10}).json()
            long = http.post("/v1/tasks", json={"prompt": "long", "max_tokens": 500}).json()
            streams: dict[str, dict[str, Any]] = {"short": {}, "long": {}}
            readers = [
                threading.Thread(target=_stream, args=(base + admission["streams"]["sse"], streams[name]))
                for name, admission in (("short", short), ("long", long))
            ]
            for reader in readers:
                reader.start()
            wait_until(lambda: http.get("/v1/pools/default/health").json()["replicas"][0]["inflight"] == 2, "both run")

            orch.send_signal(signal.SIGTERM)
            wait_until(lambda: http.get("/v1/pools/default/health").json()["draining"] is True, "draining")
            refused = http.post("/v1/tasks", json={"prompt": "late"})
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1, refused.text
            validate(refused.json(), "error-envelope.json")
            assert "draining" in refused.json()["message"]

            for reader in readers:
                reader.join(GUARD_S)
            short_end, long_end = streams["short"]["frames"][-1], streams["long"]["frames"][-1]
            assert short_end.event == "end" and short_end.data["finish_reason"] in ("stop", "length"), short_end
            assert long_end.event == "end" and long_end.data["finish_reason"] == "canceled", long_end
            assert orch.wait(GUARD_S) == 0, orch.stderr.read() if orch.stderr else ""
            http.close()


def test_drain_grace_is_a_flag_and_a_config_key() -> None:
    from llama_orch.cli import build_parser
    from llama_orch.serve_config import config_from_args

    base = ["serve", "--engine", "llamacpp", "--engine-url", "http://127.0.0.1:8080"]
    config, _ = config_from_args(build_parser().parse_args([*base, "--drain-grace", "5s"]))
    assert config.drain_grace_ms == 5000
    config, _ = config_from_args(build_parser().parse_args(base))
    assert config.drain_grace_ms == 30_000
    assert json.loads(config.model_dump_json())["drain_grace_ms"] == 30_000
