"""/metrics: every family exactly as specs/schemas/metrics.json declares it, and values that agree with the
traffic driven through the API."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from llama_orch_gen.contracts.tables import METRIC_FAMILIES

from llama_orch.adapters.mock import Fault
from tests.service.helpers import (
    Family,
    Frame,
    blocked,
    cancel,
    check_envelope,
    parse_metrics,
    read_stream,
    scrape,
    start_blocker,
    submit,
    tokens,
    total,
    wait_until,
)

SPECS = {spec.name: spec for spec in METRIC_FAMILIES}


def check_families(families: dict[str, Family]) -> None:
    """Names, types, label sets and histogram shapes are the contract's."""
    assert set(families) == set(SPECS), set(families) ^ set(SPECS)
    for name, family in families.items():
        spec = SPECS[name]
        assert family.type == spec.type and family.help == spec.help, (name, family.type)
        for sample, labels, value in family.samples:
            if spec.type == "histogram":
                assert sample in (f"{name}_bucket", f"{name}_sum", f"{name}_count"), sample
                expected = {*spec.labels, "le"} if sample.endswith("_bucket") else set(spec.labels)
            else:
                assert sample == name, sample
                expected = set(spec.labels)
            assert set(labels) == expected, (sample, labels)
            assert value >= 0, (sample, value)
        if spec.type == "histogram":
            series: dict[tuple[Any, ...], list[tuple[str, float]]] = {}
            for sample, labels, value in family.samples:
                if sample.endswith("_bucket"):
                    key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                    series.setdefault(key, []).append((labels["le"], value))
            for key, buckets in series.items():
                assert [float(le) for le, _ in buckets] == [*(spec.buckets or ()), float("inf")], buckets
                counts = [count for _, count in buckets]
                assert counts == sorted(counts), buckets
                assert counts[-1] == total(families, name, f"{name}_count", **dict(key))


def test_parser_rejects_what_is_not_exposition() -> None:
    with pytest.raises(AssertionError):
        parse_metrics("orphan_total 1\n")
    with pytest.raises(AssertionError):
        parse_metrics('# TYPE x counter\nx{a="1",b} 1\n')
    parsed = parse_metrics('# TYPE x counter\nx{a="q\\"uote",b="n\\\\l"} 2.5\n')
    assert parsed["x"].samples == [("x", {"a": 'q"uote', "b": "n\\l"}, 2.5)]


def drive() -> tuple[dict[str, Family], dict[str, list[Frame]], Counter[str]]:
    """Successes, an engine error, a cancel, a full queue and invalid requests; returns the scrape, the streams
    and the refusals by code."""
    svc = blocked(capacity=1)
    mock = svc.mock()
    mock.faults.insert(0, Fault("in_stream_error", after_tokens=2, times=1))  # the first engine call fails
    refused: Counter[str] = Counter()
    streams: dict[str, list[Frame]] = {}
    with svc.running() as http:
        streams["error"] = read_stream(http, submit(http, {"prompt": "e", "task_id": "error"})["task_id"])
        start_blocker(http)  # the second engine call stalls until canceled
        submit(http, {"prompt": "q", "task_id": "queued", "priority": "batch"})
        refused[check_envelope(http.post("/v1/tasks", json={"prompt": "r"}), 429, "ADMISSION_REJECT")["code"]] += 1
        for body in ({"prompt": "x", "max_tokens": 0}, {"prompt": "x", "deadline_ms": 0}, {}):
            refused[http.post("/v1/tasks", json=body).json()["code"]] += 1
        cancel(http, "blocker")
        for task_id in ("blocker", "queued"):
            streams[task_id] = read_stream(http, task_id)
        for n in range(2):
            streams[f"ok{n}"] = read_stream(http, submit(http, {"prompt": f"ok{n}", "max_tokens": 5 + n})["task_id"])
        wait_until(lambda: not svc.orch.runs, "every run read and forgotten")
        families = scrape(http)
    return families, streams, refused


@pytest.fixture(scope="module")
def driven() -> tuple[dict[str, Family], dict[str, list[Frame]], Counter[str]]:
    return drive()


def test_families_follow_the_contract(driven: tuple[dict[str, Family], Any, Any]) -> None:
    check_families(driven[0])


def test_values_agree_with_the_traffic(driven: tuple[dict[str, Family], dict[str, list[Frame]], Counter[str]]) -> None:
    families, streams, refused = driven
    outcomes = {task: frames[-1] for task, frames in streams.items()}
    assert outcomes["error"].data["code"] == "INTERNAL"
    assert outcomes["blocker"].data["finish_reason"] == "canceled"
    assert refused == {"ADMISSION_REJECT": 1, "INVALID_PARAMS": 2, "DEADLINE_UNMET": 1}

    assert total(families, "tasks_enqueued_total") == len(streams) == 5
    assert total(families, "tasks_enqueued_total", priority="batch") == 1
    assert total(families, "tasks_started_total") == sum(f[0].event == "started" for f in streams.values())
    assert total(families, "tasks_rejected_total") == sum(refused.values())
    for code, count in refused.items():
        assert total(families, "tasks_rejected_total", reason=code) == count, code
    assert total(families, "admission_backpressure_events_total", policy="reject") == 1
    assert total(families, "tasks_finished_total") == len(streams)
    assert total(families, "tasks_finished_total", outcome="end") == 3
    assert total(families, "tasks_finished_total", outcome="canceled") == 1
    assert total(families, "tasks_finished_total", outcome="error") == 1
    assert total(families, "tasks_canceled_total", reason="client") == 1
    ends = [frames[-1].data for frames in streams.values() if frames[-1].event == "end"]
    failed = [frames for frames in streams.values() if frames[-1].event == "error"]
    streamed_before_error = sum(f.event == "token" for frames in failed for f in frames)
    assert total(families, "tokens_out_total") == sum(end["tokens_out"] for end in ends) + streamed_before_error > 0
    timed = [end for end in ends if "first_token_ms" in end]
    assert len(timed) >= 3
    count = total(families, "latency_first_token_ms", "latency_first_token_ms_count")
    assert count == total(families, "latency_decode_ms", "latency_decode_ms_count") == len(timed)
    assert total(families, "latency_first_token_ms", "latency_first_token_ms_sum") == pytest.approx(
        sum(end["first_token_ms"] for end in timed), rel=1e-6
    )
    assert total(families, "queue_depth") == 0
    for family in ("tasks_started_total", "tokens_out_total", "tasks_finished_total"):
        assert all(
            labels["engine"] == "mock" and labels["pool_id"] == "default" for _, labels, _ in families[family].samples
        )


def test_tokens_out_counts_every_token_streamed(driven: tuple[dict[str, Family], dict[str, list[Frame]], Any]) -> None:
    families, streams, _ = driven
    assert tokens(streams["error"]), "the failing task streamed tokens before its error"
    assert total(families, "tokens_out_total") == sum(len(tokens(frames)) for frames in streams.values())


def test_rejections_by_a_pool_carry_its_engine(driven: tuple[dict[str, Family], Any, Any]) -> None:
    assert total(driven[0], "tasks_rejected_total", engine="mock", reason="ADMISSION_REJECT") == 1


def test_the_instance_says_where_its_state_lives(driven: tuple[dict[str, Family], Any, Any]) -> None:
    families = driven[0]
    [(_, labels, value)] = families["instance_info"].samples
    assert labels["state"] == "memory" and labels["instance_id"] and value == 1
    assert not families["cluster_queue_depth"].samples and not families["cluster_inflight"].samples
