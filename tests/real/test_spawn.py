"""`llama-orch serve --spawn-llama --model FILE.gguf`: the orchestrator runs llama-server itself, restarts it when
it dies, and leaves no engine process behind when it stops."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.polling import wait_for
from tests.support.serve_process import Serve, processes_naming

pytestmark = pytest.mark.real_engine

WAIT_S = 60.0  # hang guard, not a speed assertion


def _infer_ends(serve: Serve) -> bool:
    answer = httpx.post(f"{serve.base_url}/infer", json={"prompt": "Hi", "max_tokens": 4}, timeout=30)
    return answer.status_code == 200 and '"done":true' in answer.text.splitlines()[-1].replace(" ", "")


def _ready(serve: Serve) -> bool:
    answer = httpx.get(f"{serve.base_url}/v1/pools/default/health", timeout=5)
    return answer.status_code == 200 and answer.json()["ready"]


def test_spawned_llama_server_is_restarted_and_stopped_with_the_orchestrator(tiny_model: Path, tmp_path: Path) -> None:
    model = Path(shutil.copy(tiny_model, tmp_path / "spawned.gguf"))
    with Serve(["--spawn-llama", "--model", str(model), "--llama-ctx", "512", "--llama-parallel", "1"]) as serve:
        assert wait_for(lambda: _ready(serve), WAIT_S, 0.1), serve.log_tail()
        assert _infer_ends(serve)
        (engine,) = processes_naming(str(model), serve)
        os.kill(engine, signal.SIGKILL)
        assert wait_for(lambda: [p for p in processes_naming(str(model), serve) if p != engine], WAIT_S, 0.1), (
            "no restart"
        )
        assert wait_for(lambda: _ready(serve) and _infer_ends(serve), WAIT_S, 0.2), serve.log_tail()
        assert serve.process is not None
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=60) == 0
    assert wait_for(lambda: not processes_naming(str(model), serve), 30.0), "llama-server outlived the orchestrator"
