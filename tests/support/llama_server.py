"""Run real `llama-server` processes for tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from llama_orch_devtools.llamacpp_build import ensure_llama_server
from tests.support.engine_process import EngineProcess


class LlamaServer(EngineProcess):
    """One llama-server process."""

    name = "llama-server"

    def __init__(
        self,
        model: Path,
        *,
        api_key: str | None = None,
        ctx_size: int = 512,
        parallel: int = 2,
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(port)
        self.model = model
        self.api_key = api_key
        self.args = [
            str(ensure_llama_server()),
            *("--model", str(model), "--host", "127.0.0.1", "--port", str(self.port)),
            *("--ctx-size", str(ctx_size * parallel), "--parallel", str(parallel), "--threads", "1"),
            *("--metrics", "--slots", "--no-webui"),
            *(("--api-key", api_key) if api_key else ()),
            *extra_args,
        ]

    def command(self) -> Sequence[str]:
        return self.args


@contextmanager
def start_llama_server(
    model: Path,
    *,
    api_key: str | None = None,
    ctx_size: int = 512,
    parallel: int = 2,
    extra_args: Sequence[str] = (),
) -> Iterator[LlamaServer]:
    """A running server for the duration of the block."""
    with LlamaServer(model, api_key=api_key, ctx_size=ctx_size, parallel=parallel, extra_args=extra_args) as server:
        yield server
