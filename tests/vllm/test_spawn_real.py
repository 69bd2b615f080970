"""`llama-orch serve --spawn-vllm --model DIR`: the orchestrator runs vLLM itself, serves through it once it has
loaded, and leaves no engine process behind when it stops."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.polling import wait_for
from tests.support.serve_process import Serve, processes_naming

pytestmark = pytest.mark.real_vllm

LOAD_S = 300.0  # vLLM loads in about a minute on 2 idle cores; a hang guard, not a speed assertion


def _ready(serve: Serve) -> bool:
    answer = httpx.get(f"{serve.base_url}/v1/pools/default/health", timeout=5)
    return answer.status_code == 200 and answer.json()["ready"]


def test_spawned_vllm_serves_then_stops_with_the_orchestrator(tiny_hf_model: Path, tmp_path: Path) -> None:
    model = shutil.copytree(tiny_hf_model, tmp_path / "spawned")  # its own path: the shared vLLM serves the other
    with Serve(["--spawn-vllm", "--model", str(model), "--vllm-max-model-len", "1024"]) as serve:
        assert wait_for(lambda: _ready(serve), LOAD_S, 0.5), serve.log_tail()
        with httpx.Client(base_url=serve.base_url, timeout=60) as client:
            health = client.get("/v1/pools/default/health").json()
            assert health["replicas"][0]["engine_version"] == "0.32.0"
            lines = client.post("/infer", json={"prompt": "Hi", "max_tokens": 4}).text.splitlines()
        assert lines and '"done":true' in lines[-1].replace(" ", ""), lines
        assert processes_naming(str(model), serve), "no vLLM process serving the model"
        assert serve.process is not None
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=60) == 0
    assert wait_for(lambda: not processes_naming(str(model), serve), 30.0), "vLLM outlived the orchestrator"
