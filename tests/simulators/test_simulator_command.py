"""`python -m llama_orch.simulators tgi|triton` as a user starts it, driven by the engines' official clients."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import text_generation
import tritonclient.http as triton
from huggingface_hub import InferenceClient

STARTUP_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def simulator(engine: str, health: str, *options: str) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "llama_orch.simulators", engine, "--port", str(port), *options]
    url = f"http://127.0.0.1:{port}"
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
        try:
            deadline = time.monotonic() + STARTUP_S
            while not _answers(url + health):
                assert process.poll() is None, process.stderr.read() if process.stderr else b""
                assert time.monotonic() < deadline, f"{engine} simulator not up after {STARTUP_S} s"
                time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate(timeout=10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.filterwarnings("ignore:The `dict` method is deprecated")
def test_tgi_command_serves_the_official_clients() -> None:
    with simulator("tgi", "/health", "--tokens", "8") as url:
        answer = text_generation.Client(url, timeout=10).generate("Hello", max_new_tokens=3, seed=4)
        chunks = list(
            InferenceClient(model=url, timeout=10).chat_completion(
                [{"role": "user", "content": "Hello"}], stream=True, stream_options={"include_usage": True}
            )
        )
    assert answer.details.generated_tokens == 3 and answer.details.seed == 4
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_triton_command_serves_the_official_client() -> None:
    with simulator("triton", "/v2/health/ready") as url:
        client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=10)
        text = triton.InferInput("text_input", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"Hello"]], dtype=object))
        limit = triton.InferInput("max_tokens", [1, 1], "INT32")
        limit.set_data_from_numpy(np.array([[3]], dtype=np.int32))
        try:
            result = client.infer("ensemble", [text, limit])
            index = client.get_model_repository_index()
        finally:
            client.close()
    assert result.as_numpy("num_output_tokens").tolist() == [[3]]
    assert index[0]["name"] == "ensemble"
