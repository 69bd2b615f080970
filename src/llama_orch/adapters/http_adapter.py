"""What every HTTP engine adapter shares on top of the relay: one pooled client per replica, bounded control
calls, status-error classification with redaction, cached version capture and the model digest."""

from __future__ import annotations

import asyncio
import hashlib
import json
from abc import abstractmethod
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from llama_orch_gen.contracts.config import ReplicaConfig

from llama_orch.adapters.base import EngineVersion, Health, HealthState
from llama_orch.adapters.http_policy import HttpPolicy, error_for_exception, error_for_status, make_http_client
from llama_orch.adapters.streaming import StreamingAdapter
from llama_orch.errors import EngineError, redact
from llama_orch_runtime.streaming import StreamStatusError

__all__ = ["HttpAdapter", "body_message", "file_digest"]

T = TypeVar("T")
_MESSAGE_BYTES = 300


class HttpAdapter(StreamingAdapter):
    """Base of the engine adapters. Subclasses implement `_open`, `_read`, `_fetch_version`, `_probe_health` and
    `props` (and may refine `_status_error`), calling the engine through their generated
    client over `self.http`."""

    # Where the engine lists the models it serves (OpenAI's /v1/models), for preflight; None: it lists none.
    model_list_path: str | None = None

    @classmethod
    def replica_options(cls, replica: ReplicaConfig) -> dict[str, Any]:
        """Constructor arguments of this engine's own replica settings (the factory passes them along)."""
        return {}

    def __init__(
        self,
        pool_id: str,
        replica_id: str,
        *,
        base_url: str,
        model: str | None = None,
        token: str | None = None,
        policy: HttpPolicy | None = None,
        model_digest: str | None = None,
        model_path: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        policy = policy or HttpPolicy()
        super().__init__(pool_id, replica_id, policy=policy, model=model)
        self.base_url = base_url.rstrip("/")
        self.http = make_http_client(self.base_url, policy, token, transport)
        self._secrets = (token,) if token else ()
        self._model_digest = model_digest
        self._model_path = model_path
        self._version: EngineVersion | None = None

    # -- hooks -------------------------------------------------------------------------------------------------

    @abstractmethod
    async def _fetch_version(self) -> EngineVersion:
        """Ask the engine who it is (the digest is added here, from config or the local model file)."""

    @abstractmethod
    async def _probe_health(self) -> Any:
        """Call the engine's health route; returns the generated client's `Response` (200 = live and loaded)."""

    def _status_error(self, status: int, parsed: Any, content: bytes, headers: httpx.Headers) -> EngineError:
        """A refused request (non-2xx) → contract error; engines override it to refine the code from their body."""
        return error_for_status(status, body_message(content), headers)

    # -- shared ------------------------------------------------------------------------------------------------

    async def health(self) -> Health:
        """Live when the health route answers; ready when it answers 200 and (read once) the version can be read
        with our credentials. One call per probe once the version is known: capacity is the pool's to ask."""
        try:
            answer = await self.call(self._probe_health())
        except EngineError as exc:
            return Health(live=False, ready=False, state=HealthState.UNHEALTHY, detail=exc.message, code=exc.code)
        if answer.status_code != 200:
            error = self.refusal(answer.status_code, answer.parsed, answer.content, answer.headers)
            return Health(live=True, ready=False, state=HealthState.UNHEALTHY, detail=error.message, code=error.code)
        if self._version is None:
            try:
                await self.refresh_version()
            except EngineError as exc:  # e.g. the version route needs the key we lack: reachable but not usable
                state = HealthState.UNHEALTHY if exc.code == "UPSTREAM_AUTH" else HealthState.DEGRADED
                ready = state is HealthState.DEGRADED
                return Health(live=True, ready=ready, state=state, detail=exc.message, code=exc.code)
        return Health(live=True, ready=True, state=HealthState.HEALTHY)

    async def engine_version(self) -> EngineVersion:
        """Read on first use, then cached; `refresh_version` (called by health checks) re-reads it."""
        if self._version is None:
            await self.refresh_version()
        assert self._version is not None
        return self._version

    async def refresh_version(self) -> EngineVersion:
        found = await self.call(self._fetch_version())
        digest = self._model_digest or found.model_digest
        if digest is None and self._model_path is not None:
            digest = self._model_digest = await asyncio.to_thread(file_digest, self._model_path)
        self._version = EngineVersion(
            engine=found.engine, version=found.version, model=found.model or self.model, model_digest=digest
        )
        return self._version

    async def call(self, request: Awaitable[T]) -> T:
        """Run one control call (health, props, version) within the replica's request timeout."""
        try:
            async with asyncio.timeout(self.policy.request_s):
                return await request
        except TimeoutError:
            raise EngineError("POOL_UNAVAILABLE", f"engine did not answer within {self.policy.request_s:g}s") from None
        except EngineError:
            raise
        except Exception as exc:
            raise self._classify(exc) from exc

    def refusal(self, status: int, parsed: Any, content: bytes, headers: Mapping[str, str]) -> EngineError:
        """A non-2xx answer (a refused stream, or a control call's `Response`) → contract error."""
        return self._redacted(self._status_error(status, parsed, content, httpx.Headers(headers)))

    def _classify(self, exc: BaseException) -> EngineError:
        if isinstance(exc, StreamStatusError):
            return self.refusal(exc.status_code, exc.parsed, exc.content, exc.headers)
        return self._redacted(error_for_exception(exc))

    def _redacted(self, error: EngineError) -> EngineError:
        if self._secrets:
            error.message = redact(error.message, self._secrets)
        return error

    async def aclose(self) -> None:
        await self.http.aclose()


def body_message(content: bytes) -> str:
    """The message of an engine error body, whichever of the engines' shapes it has: `{"error": {"message"}}`
    (llama.cpp, vLLM), `{"error": "..."}` (TGI, Triton, vLLM 401), flat `{"message"}` (old vLLM), or text."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return content[:_MESSAGE_BYTES].decode("utf-8", errors="replace").strip() or "(empty body)"


def file_digest(path: str) -> str:
    """`sha256:<hex>` of a local model file (read in 1 MiB blocks; GGUF files are large)."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return f"sha256:{sha.hexdigest()}"
