"""Prometheus metrics exactly as the contract in specs/schemas/metrics.json declares them (names, types, labels,
buckets come from the generated catalog), rendered in the text exposition format without a client library."""

from __future__ import annotations

import bisect
from collections.abc import Mapping

from llama_orch_gen.contracts.tables import METRIC_FAMILIES, MetricFamilySpec

__all__ = ["Metrics"]

LabelValues = tuple[str, ...]


class _Family:
    __slots__ = ("spec", "values", "histograms")

    def __init__(self, spec: MetricFamilySpec) -> None:
        self.spec = spec
        self.values: dict[LabelValues, float] = {}
        # per label set: (bucket counts, sum, count)
        self.histograms: dict[LabelValues, tuple[list[int], list[float]]] = {}


class Metrics:
    """The orchestrator's metric families; a label set that does not match the contract is a bug and raises."""

    def __init__(self) -> None:
        self._families = {spec.name: _Family(spec) for spec in METRIC_FAMILIES}

    def _key(self, name: str, labels: Mapping[str, str]) -> tuple[_Family, LabelValues]:
        family = self._families[name]
        if set(labels) != set(family.spec.labels):
            raise ValueError(f"{name} takes labels {family.spec.labels}, got {sorted(labels)}")
        return family, tuple(labels[label] for label in family.spec.labels)

    def inc(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        family, key = self._key(name, labels)
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, /, **labels: str) -> None:
        family, key = self._key(name, labels)
        family.values[key] = value

    def observe(self, name: str, value: float, /, **labels: str) -> None:
        family, key = self._key(name, labels)
        buckets = family.spec.buckets or ()
        counts, totals = family.histograms.setdefault(key, ([0] * (len(buckets) + 1), [0.0, 0.0]))
        counts[bisect.bisect_left(buckets, value)] += 1
        totals[0] += value
        totals[1] += 1

    def value(self, name: str, /, **labels: str) -> float:
        """Current value of one counter or gauge series (0 when never touched)."""
        family, key = self._key(name, labels)
        return family.values.get(key, 0.0)

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            spec = family.spec
            lines.append(f"# HELP {spec.name} {spec.help}")
            lines.append(f"# TYPE {spec.name} {spec.type}")
            for key, value in family.values.items():
                lines.append(f"{spec.name}{_labels(spec.labels, key)} {_number(value)}")
            for key, (counts, (total, count)) in family.histograms.items():
                cumulative = 0
                for bound, n in zip((*(spec.buckets or ()), float("inf")), counts, strict=True):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else _number(bound)
                    lines.append(f"{spec.name}_bucket{_labels((*spec.labels, 'le'), (*key, le))} {cumulative}")
                lines.append(f"{spec.name}_sum{_labels(spec.labels, key)} {_number(total)}")
                lines.append(f"{spec.name}_count{_labels(spec.labels, key)} {_number(count)}")
        return "\n".join(lines) + "\n"


def _labels(names: tuple[str, ...], values: LabelValues) -> str:
    pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
