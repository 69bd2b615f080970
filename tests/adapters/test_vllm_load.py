"""vLLM's own queue counts, read from its Prometheus exposition (a real recording), tolerant of releases that
rename or drop a gauge."""

from __future__ import annotations

from pathlib import Path

from llama_orch.adapters.base import EngineLoad
from llama_orch.adapters.vllm import engine_load

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "vllm-recordings" / "metrics.body"


def test_the_recorded_exposition_gives_running_and_waiting() -> None:
    exposition = RECORDED.read_bytes()
    load = engine_load(exposition)
    assert isinstance(load, EngineLoad)
    running = [line for line in exposition.splitlines() if line.startswith(b"vllm:num_requests_running{")]
    assert running and load.running == sum(int(float(line.rsplit(b" ", 1)[1])) for line in running)


def test_several_engines_are_summed() -> None:
    exposition = (
        b'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
        b'vllm:num_requests_running{engine="1",model_name="m"} 2.0\n'
        b'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0\n'
        b'vllm:num_requests_waiting{engine="1",model_name="m"} 0.0\n'
    )
    assert engine_load(exposition) == EngineLoad(running=5, waiting=1)


def test_a_release_without_the_gauges_reports_nothing_instead_of_failing() -> None:
    assert engine_load(b'# HELP other\nvllm:num_requests_running{engine="0"} 1.0\n') is None
    assert engine_load(b"") is None
