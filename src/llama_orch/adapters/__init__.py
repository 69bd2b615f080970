"""Worker adapters: one per engine, all behind the `WorkerAdapter` contract."""

from llama_orch.adapters.base import AdapterRegistry, EngineProps, EngineVersion, Health, HealthState, WorkerAdapter

__all__ = ["AdapterRegistry", "EngineProps", "EngineVersion", "Health", "HealthState", "WorkerAdapter"]
