"""Passive health of one replica, after Envoy's outlier detection: consecutive failures eject a replica for a time
that grows when it is ejected again soon after, up to a cap.

What counts as a failure is decided by the pool: only a failure before the engine started a task that another
replica of the pool then started, so a request every replica refuses (a poison request) never counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_orch_gen.contracts.config import OutlierDetection

__all__ = ["Outlier", "OutlierPolicy"]


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_failures: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_percent: int = 50

    @classmethod
    def from_config(cls, config: OutlierDetection | None) -> OutlierPolicy:
        config = config or OutlierDetection()
        return cls(
            consecutive_failures=config.consecutive_failures or 5,
            base_ejection_s=(config.base_ejection_ms or 30_000) / 1000.0,
            max_ejection_s=(config.max_ejection_ms or 300_000) / 1000.0,
            max_ejection_percent=config.max_ejection_percent if config.max_ejection_percent is not None else 50,
        )

    def may_eject(self, replicas: int, ejected: int, other_ready: int) -> bool:
        """One more ejection keeps within the share (at least one is allowed) and leaves a ready replica."""
        allowed = max(1, replicas * self.max_ejection_percent // 100) if self.max_ejection_percent else 0
        return other_ready > 0 and ejected < allowed


@dataclass(slots=True)
class Outlier:
    consecutive: int = 0
    ejections: int = 0  # ejections in a row, each starting within max_ejection_s of the previous one's end
    ejected_until: float = 0.0  # loop time

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def succeeded(self) -> None:
        self.consecutive = 0

    def failed(self, now: float, policy: OutlierPolicy, *, may_eject: bool) -> float | None:
        """Count one failure; returns the ejection time (seconds) when this failure ejects the replica."""
        self.consecutive += 1
        if self.consecutive < policy.consecutive_failures or not may_eject:
            return None
        recent = self.ejections > 0 and now - self.ejected_until <= policy.max_ejection_s
        self.ejections = self.ejections + 1 if recent else 1
        duration = min(policy.base_ejection_s * self.ejections, policy.max_ejection_s)
        self.ejected_until = now + duration
        self.consecutive = 0
        return duration
