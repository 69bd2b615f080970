"""Prometheus metrics exactly as the contract in specs/schemas/metrics.json declares them (names, types, labels,
buckets and gauge aggregation come from the generated catalog), kept and rendered by `prometheus_client`.

Under `serve --workers N` every worker process writes its values to files in `PROMETHEUS_MULTIPROC_DIR` (set by the
parent before the workers start) and a scrape of any worker renders all of them: counters and histograms summed,
gauges summed over the live workers or, for figures every worker reads from the shared state, the latest one."""

from __future__ import annotations

import os
from typing import Literal

import prometheus_client
from llama_orch_gen.contracts.tables import METRIC_FAMILIES, MetricFamilySpec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["Metrics", "mark_worker_dead"]

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created` series are not in the contract

_GaugeMode = Literal["livesum", "livemostrecent"]
_GAUGE_MODES: dict[str, _GaugeMode] = {"sum": "livesum", "latest": "livemostrecent"}


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _family(spec: MetricFamilySpec, registry: CollectorRegistry) -> MetricWrapperBase:
    if spec.type == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.type == "histogram":
        return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets or ())
    return Gauge(spec.name, spec.help, spec.labels, registry=registry, multiprocess_mode=_GAUGE_MODES[spec.aggregate])


class Metrics:
    """The orchestrator's metric families; a label set that does not match the contract is a bug and raises."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._families = {spec.name: _family(spec, self._registry) for spec in METRIC_FAMILIES}

    def inc(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        self._families[name].labels(**labels).inc(amount)  # type: ignore[attr-defined]

    def set(self, name: str, value: float, /, **labels: str) -> None:
        self._families[name].labels(**labels).set(value)  # type: ignore[attr-defined]

    def observe(self, name: str, value: float, /, **labels: str) -> None:
        self._families[name].labels(**labels).observe(value)  # type: ignore[attr-defined]

    def value(self, name: str, /, **labels: str) -> float:
        """Current value of one counter or gauge series in this process (0 when never touched)."""
        return self._registry.get_sample_value(name, labels) or 0.0

    def render(self) -> str:
        directory = _multiprocess_dir()
        if directory is None:
            return generate_latest(self._registry).decode()
        merged = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged).decode()


def mark_worker_dead(pid: int) -> None:
    """A worker exited: its live gauges leave the merged scrape (its counters stay counted)."""
    directory = _multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
