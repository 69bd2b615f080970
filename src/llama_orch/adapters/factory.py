"""Adapters from configuration: which class serves which engine comes from the engine registry
(`llama_orch_gen.contracts.tables.ENGINES`, generated from task-request.json's EngineKind `x-engines`)."""

from __future__ import annotations

import importlib
import urllib.parse
import urllib.request
from functools import cache
from typing import Any

import httpx
from llama_orch_gen.contracts.config import OrchestratorConfig, PoolConfig, ReplicaConfig
from llama_orch_gen.contracts.tables import ENGINES

from llama_orch.adapters.base import AdapterRegistry, WorkerAdapter
from llama_orch.adapters.http_adapter import HttpAdapter
from llama_orch.adapters.http_policy import HttpPolicy, bearer_token
from llama_orch.adapters.http_transport import EngineTransport
from llama_orch.adapters.mock import MockAdapter
from llama_orch.adapters.tls import tls_context
from llama_orch.errors import ConfigError

__all__ = ["adapter_class", "build_adapter", "build_registry"]


@cache
def adapter_class(engine: str) -> type[HttpAdapter]:
    """The registered adapter class of an engine (imported on first use)."""
    module, _, name = ENGINES[engine].adapter.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, HttpAdapter) and cls.engine == engine):
        raise ConfigError(f"the engine registry names {ENGINES[engine].adapter} for {engine!r}: not its HttpAdapter")
    return cls


def build_adapter(
    pool: PoolConfig, replica: ReplicaConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> WorkerAdapter:
    """One replica's adapter. Raises `ConfigError` when the replica cannot work (e.g. its token variable is unset).
    `transport` replaces the network (tests)."""
    policy = HttpPolicy.from_config(replica.timeouts, replica.retry)
    model = replica.model or pool.model
    if pool.engine == "mock":
        return MockAdapter(pool.id, replica.id, model=model or "mock", policy=policy)
    _refuse_proxy(replica.base_url, f"pool {pool.id} replica {replica.id}")
    if replica.tls is not None and not replica.base_url.startswith("https://"):
        raise ConfigError(f"pool {pool.id} replica {replica.id}: tls is set but {replica.base_url} is not https://")
    tls = tls_context(replica.tls, f"pool {pool.id} replica {replica.id}")
    if transport is None and tls is not None:
        transport = EngineTransport(tls=tls)
    common: dict[str, Any] = {
        "base_url": replica.base_url,
        "model": model,
        "token": bearer_token(replica),
        "policy": policy,
        "model_digest": replica.model_digest,
        "model_path": replica.model_path,
        "transport": transport,
    }
    cls = adapter_class(pool.engine)
    return cls(pool.id, replica.id, **common, **cls.replica_options(replica))


def _refuse_proxy(url: str, owner: str) -> None:
    """Engines are reached directly (the engine transport speaks no proxy protocol): an environment proxy that
    would apply to an engine URL is refused at startup rather than silently bypassed."""
    proxies = urllib.request.getproxies_environment()
    parts = urllib.parse.urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):  # type: ignore[attr-defined]
        raise ConfigError(
            f"{owner}: {url} would go through the proxy {proxy} ({parts.scheme.upper()}_PROXY or ALL_PROXY); "
            "llama-orch connects to engines directly: add the host to NO_PROXY, or unset the proxy variable"
        )


def build_registry(config: OrchestratorConfig) -> AdapterRegistry:
    registry = AdapterRegistry()
    for pool in config.pools:
        for replica in pool.replicas:
            registry.register(build_adapter(pool, replica))
    return registry
