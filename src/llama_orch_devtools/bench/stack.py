"""The processes under test, each in its own process: engine simulator, byte proxy, orchestrator, LiteLLM,
llama-server, and the Redis of the cluster section."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

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


def orchestrator(
    engine_url: str,
    *,
    streams: int,
    api: str = "native",
    profile: Path | None = None,
    state_url: str | None = None,
) -> Service:
    """`api` is the engine route the llama.cpp adapter takes: `native` (/completion) or `openai` (/v1/completions);
    with `state_url`, the instance runs in scale-out mode on that Redis."""
    port = free_port()
    config = Path(tempfile.mkstemp(prefix="bench-orch-", suffix=".json")[1])
    settings = bench_config(engine_url, streams=streams, api=api, state_url=state_url)
    config.write_text(settings.model_dump_json(exclude_none=True))
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


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway `redis-server` (no persistence, its own port and directory) for the cluster section; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        args = [binary, "--port", str(port), "--bind", LOCAL, "--dir", directory, "--save", "", "--appendonly", "no"]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_redis(port, process)
            yield f"redis://{LOCAL}:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def _wait_for_redis(port: int, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with redis.Redis(host=LOCAL, port=port, socket_timeout=1) as client:
                client.ping()
            return
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)


def served(engine_url: str, *, workers: int, streams: int, state_url: str) -> Service:
    """`llama-orch serve --workers N` as a user runs it, in scale-out mode on `state_url`, from the bench's config."""
    port = free_port()
    config = Path(tempfile.mkstemp(prefix="bench-serve-", suffix=".json")[1])
    settings = bench_config(engine_url, streams=streams, state_url=state_url)
    config.write_text(settings.model_dump_json(exclude_none=True))
    command = str(Path(sys.executable).with_name("llama-orch"))
    cmd = [command, "serve", "--config", str(config), "--port", str(port), "--workers", str(workers)]
    ready_url = f"http://{LOCAL}:{port}/v1/pools/bench/health"
    return Service(
        f"serve --workers {workers}",
        [*cmd, "--log-level", "warning"],
        ready_url,
        ready=lambda r: r.status_code == 200 and r.json()["ready"] is True,
    )
