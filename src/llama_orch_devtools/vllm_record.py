"""Record real vLLM exchanges into the test fixtures: what the vLLM spec and simulator are checked against.

    python -m llama_orch_devtools.vllm_record [--url URL] [--out DIR]

Without --url a vLLM is started from the cached environment (`vllm_env`) serving the tiny model, and stopped
afterwards. Each case becomes `NAME.json` (the request, the status and content type) beside `NAME.body` (the
response body exactly as sent: streams with their SSE framing), the format of the llama.cpp transcripts. Ids,
timestamps and metric values are kept as recorded; the tests compare shapes, not values. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llama_orch.spawn import free_port
from llama_orch_devtools.llamacpp_build import BuildError
from llama_orch_devtools.vllm_env import ensure_vllm, make_tiny_model, server_command, server_environment

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "vllm-recordings"
SERVED_NAME = "tiny"
MAX_MODEL_LEN = 8192  # as the test suite's vLLM (tests/support/vllm_server.py)
READY_TIMEOUT_S = 300.0
KEPT_HEADERS = ("content-type",)  # date/server/content-length say nothing about the API
PROMPT = "Once upon a time"
CHAT = [{"role": "user", "content": "Tell me a story."}]
USAGE = {"stream_options": {"include_usage": True}}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    json: dict[str, Any] | None = None


def cases(model: str, max_model_len: int) -> list[Case]:
    """What is recorded, in order; `model` and `max_model_len` as the server reports them (/v1/models)."""
    completion = {"model": model, "prompt": PROMPT, "max_tokens": 16}
    greedy = {**completion, "temperature": 0}
    seeded = {**completion, "temperature": 1.0, "top_p": 1.0, "seed": 7}
    chat = {"model": model, "messages": CHAT, "max_tokens": 16, "temperature": 0}
    return [
        Case("completion_stream_greedy_usage", "POST", "/v1/completions", {**greedy, "stream": True, **USAGE}),
        Case("completion_stream_seeded", "POST", "/v1/completions", {**seeded, "stream": True}),
        Case("completion_nonstream", "POST", "/v1/completions", greedy),
        Case("chat_stream_usage", "POST", "/v1/chat/completions", {**chat, "stream": True, **USAGE}),
        Case("chat_stream", "POST", "/v1/chat/completions", {**chat, "stream": True}),
        Case("chat_nonstream", "POST", "/v1/chat/completions", chat),
        Case(
            "error_max_tokens_over_context",
            "POST",
            "/v1/completions",
            {**greedy, "max_tokens": max_model_len + 1, "stream": True},
        ),
        Case("error_unknown_model", "POST", "/v1/completions", {**greedy, "model": "no-such-model"}),
        Case("error_missing_prompt", "POST", "/v1/completions", {"model": model, "max_tokens": 4}),
        Case("error_unknown_route", "GET", "/no-such-route"),
        Case("models", "GET", "/v1/models"),
        Case("version", "GET", "/version"),
        Case("health", "GET", "/health"),
        Case("tokenize", "POST", "/tokenize", {"model": model, "prompt": PROMPT}),
        Case("detokenize", "POST", "/detokenize", {"model": model, "tokens": [1, 2, 3]}),
        Case("metrics", "GET", "/metrics"),
    ]


def served_model(client: httpx.Client) -> tuple[str, int]:
    card = client.get("/v1/models").raise_for_status().json()["data"][0]
    return str(card["id"]), int(card["max_model_len"])


def record(url: str, out: Path, say: Callable[[str], None]) -> list[str]:
    """Record every case from the server at `url` into `out`; the names written, in order."""
    out.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=url, timeout=120) as client:
        model, max_model_len = served_model(client)
        say(f"recording {url} (model {model}, max_model_len {max_model_len}) into {out}")
        todo = cases(model, max_model_len)
        for case in todo:
            response = client.request(case.method, case.path, json=case.json)
            headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
            meta = {
                "request": {"method": case.method, "path": case.path, "headers": {}, "json": case.json},
                "response": {"status": response.status_code, "headers": headers},
            }
            (out / f"{case.name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            (out / f"{case.name}.body").write_bytes(response.content)
            say(f"{case.name}: {response.status_code}, {len(response.content)} bytes")
    return [case.name for case in todo]


@contextlib.contextmanager
def local_vllm(say: Callable[[str], None]) -> Iterator[str]:
    """A vLLM from the cached environment serving a freshly written tiny model; its URL while it runs."""
    python = ensure_vllm(progress=say)
    with tempfile.TemporaryDirectory(prefix="vllm-record-") as scratch:
        say("writing the tiny model")
        model = make_tiny_model(Path(scratch) / "tiny", progress=say)
        port = free_port()
        command = server_command(python, model, port=port, served_name=SERVED_NAME, max_model_len=MAX_MODEL_LEN)
        log = Path(scratch) / "vllm.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=server_environment(), start_new_session=True
            )
        try:
            url = f"http://127.0.0.1:{port}"
            say(f"starting vLLM on {url} (about a minute)")
            _wait_ready(url, process, log)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # its own group: the engine core goes too
            process.wait(timeout=60)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BuildError(f"vLLM exited before it was ready:\n{log.read_text(errors='replace')[-4000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise BuildError(f"vLLM not ready within {READY_TIMEOUT_S:.0f}s:\n{log.read_text(errors='replace')[-4000:]}")


def _stderr(message: str) -> None:
    sys.stderr.write(f"record-vllm: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python xtask.py engine record-vllm",
        description="Record real vLLM exchanges (streams, errors, models, version, health, tokenize, metrics) as "
        "NAME.json + NAME.body test fixtures. Without --url, start a vLLM from the cached environment with the "
        "tiny model for the recording.",
    )
    parser.add_argument("--url", help="record a vLLM already running here instead (serving one model)")
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"where to write (default {FIXTURES})")
    args = parser.parse_args(argv)
    try:
        with contextlib.nullcontext(args.url) if args.url else local_vllm(_stderr) as url:
            names = record(url, args.out, _stderr)
    except (BuildError, httpx.HTTPError) as exc:
        _stderr(str(exc))
        return 1
    _stderr(f"wrote {len(names)} recordings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
