"""Session fixtures for the real llama.cpp engine: one tiny model, one shared server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_orch_devtools.tiny_gguf import write_tiny_model
from tests.support.llama_server import LlamaServer


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def llama_server(tiny_model: Path) -> Iterator[LlamaServer]:
    """A shared server (2 slots of 512 tokens). Tests must not change its state for others."""
    with LlamaServer(tiny_model, ctx_size=512, parallel=2) as server:
        yield server
