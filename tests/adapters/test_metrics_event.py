"""The contract's `metrics` event: engines that report their own timings or usage (llama.cpp `timings`, vLLM and
TGI usage) produce one, just before `end`; an engine that reports nothing, or a canceled task, produces none."""

from __future__ import annotations

from llama_orch_gen.contracts.events import MetricsEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.mock import MockAdapter
from tests.adapters.test_tolerant_reader import _recorded, _run
from tests.adapters.wire_fakes import DIALECTS


async def test_llamacpp_timings_become_a_metrics_event_before_end() -> None:
    (llamacpp,) = [d for d in DIALECTS if d.engine == "llamacpp"]
    items = _recorded("llamacpp")
    timings = items[-1]["timings"]
    outcome = await _run(llamacpp, items)
    kinds = [e.root.event for e in outcome.events]
    assert kinds[-2:] == ["metrics", "end"] and kinds.count("metrics") == 1, kinds
    metrics = outcome.events[-2].root
    assert isinstance(metrics, MetricsEvent)
    assert metrics.data.latency_decode_ms == timings["predicted_ms"]
    assert metrics.data.tokens_out == items[-1]["tokens_predicted"]


async def test_tgi_usage_becomes_a_metrics_event() -> None:
    (tgi,) = [d for d in DIALECTS if d.engine == "tgi"]
    outcome = await _run(tgi, _recorded("tgi"))
    assert [e.root.event for e in outcome.events][-2:] == ["metrics", "end"]


async def test_no_metrics_without_engine_numbers_or_after_a_cancel() -> None:
    adapter = MockAdapter(tokens=4)
    kinds = [e.root.event async for e in adapter.submit(TaskRequest(prompt="x", task_id="t"))]
    assert "metrics" not in kinds and kinds[-1] == "end", kinds
