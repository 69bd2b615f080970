"""The processes under test, each in its own process: engine simulator, byte proxy, orchestrator, LiteLLM,
llama-server."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from llama_orch_devtools.bench.harness import Service, free_port
from llama_orch_devtools.bench.orchestrator_proc import bench_config

LOCAL = "127.0.0.1"


def simulator(tokens: int, slots: int) -> Service:
    """The llama.cpp simulator with no artificial delay: as fast an engine as this machine can serve. It reports
    `slots` slots, so that the engine, not its advertised capacity, is what the load meets."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_orch.simulators", "llamacpp", "--port", str(port), "--slots", str(slots)]
    return Service("simulator", [*cmd, "--tokens", str(tokens), "--delay-ms", "0"], f"http://{LOCAL}:{port}/health")


def byte_proxy(engine_url: str) -> Service:
    port = free_port()
    upstream = engine_url.split("://", 1)[1]
    cmd = [sys.executable, "-m", "llama_orch_devtools.bench.byte_proxy", "--port", str(port), "--upstream", upstream]
    return Service("byte-proxy", cmd, f"http://{LOCAL}:{port}/health")  # the engine's health, through the proxy


def orchestrator(engine_url: str, *, streams: int, api: str = "native", profile: Path | None = None) -> Service:
    """`api` is the engine route the llama.cpp adapter takes: `native` (/completion) or `openai` (/v1/completions)."""
    port = free_port()
    config = Path(tempfile.mkstemp(prefix="bench-orch-", suffix=".json")[1])
    config.write_text(bench_config(engine_url, streams=streams, api=api).model_dump_json(exclude_none=True))
    cmd = [sys.executable, "-m", "llama_orch_devtools.bench.orchestrator_proc", str(config), "--port", str(port)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    # Ready once its health probe has seen the engine: a task submitted before would be refused (POOL_UNREADY).
    ready_url = f"http://{LOCAL}:{port}/v1/pools/bench/health"
    return Service("orchestrator", cmd, ready_url, ready=lambda r: r.status_code == 200 and r.json()["ready"] is True)


def litellm(binary: Path, engine_url: str) -> Service:
    """LiteLLM's proxy with one model routed to the engine's `/v1/completions` (the `text-completion-openai`
    provider: the route the orchestrator takes with `api: openai`), one worker, no database."""
    port = free_port()
    config = Path(tempfile.mkstemp(prefix="bench-litellm-", suffix=".json")[1])
    model = {"model": "text-completion-openai/bench", "api_base": f"{engine_url}/v1", "api_key": "unused"}
    config.write_text(json.dumps({"model_list": [{"model_name": "bench", "litellm_params": model}]}))
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list at start (no network here)
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        # No auth on either relay (the orchestrator runs without its token too); loopback only.
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    cmd = [str(binary), "--config", str(config), "--host", LOCAL, "--port", str(port), "--num_workers", "1"]
    return Service("litellm", cmd, f"http://{LOCAL}:{port}/health/liveliness", env=env)


def llama_server(binary: Path, model: Path) -> Service:
    port = free_port()
    cmd = [str(binary), "-m", str(model), "--host", LOCAL, "--port", str(port), "-c", "2048", "-t", "1"]
    return Service("llama-server", cmd, f"http://{LOCAL}:{port}/health")
