"""A pool whose queue and slot counts are in Redis, shared by every instance (scale-out mode): dispatch is a
claim through `Cluster`, a freed slot is released there, and a task no replica started goes back to the shared
queue. Health, outlier detection and the engine calls stay per instance, as in `Pool`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llama_orch.service.pools import Pool, ReplicaState
from llama_orch.service.runs import TaskRun

if TYPE_CHECKING:
    from llama_orch.service.cluster import Cluster

__all__ = ["SharedPool"]


@dataclass(eq=False)
class SharedPool(Pool):
    cluster: Cluster | None = None  # set once the cluster is built around the orchestrator

    def _cluster(self) -> Cluster:
        assert self.cluster is not None, "a SharedPool runs inside a Cluster"
        return self.cluster

    def dispatch(self) -> None:
        self._cluster().wake(self)

    async def freed(self, run: TaskRun, replica: ReplicaState) -> None:
        await self._cluster().release(run, replica)

    def requeue(self, run: TaskRun) -> None:
        self._cluster().requeue(run)
