"""Shared helpers of the service tests: mock-engine deployments served on a real socket, strict SSE / NDJSON /
Prometheus parsers, and validators built from the committed JSON Schemas."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from llama_orch_gen.contracts.config import OrchestratorConfig
from llama_orch_gen.contracts.task_request import TaskRequest
from referencing import Registry, Resource
from starlette.applications import Starlette

from llama_orch.adapters.base import AdapterRegistry
from llama_orch.adapters.factory import build_registry
from llama_orch.adapters.mock import Fault, MockAdapter
from llama_orch.adapters.streaming import Tally
from llama_orch.service.app import create_app
from llama_orch.service.orchestrator import Orchestrator
from tests.support.asgi_server import serve_asgi

GUARD_S = 30.0  # hang guard for polls and HTTP calls; no test asserts speed
SCHEMAS = Path(__file__).resolve().parents[2] / "specs" / "schemas"
TERMINAL = ("end", "error")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# -- configuration -------------------------------------------------------------------------------------------


def mock_pool(pool_id: str = "default", replicas: tuple[str, ...] = ("m0",), **extra: Any) -> dict[str, Any]:
    """A mock-engine pool; `replica` settings (e.g. max_inflight, retry) apply to every replica."""
    replica = extra.pop("replica", {})
    return {
        "id": pool_id,
        "engine": "mock",
        "replicas": [{"id": r, "base_url": "http://mock", **replica} for r in replicas],
        **extra,
    }


def make_config(*pools: dict[str, Any], **settings: Any) -> OrchestratorConfig:
    return OrchestratorConfig.model_validate({**settings, "pools": list(pools) or [mock_pool()]})


# -- a served deployment ---------------------------------------------------------------------------------------


class ClassRegistry(AdapterRegistry):
    """`build_registry`, with every mock built as `cls` (e.g. a recording subclass)."""

    def __init__(self, config: OrchestratorConfig, cls: type[MockAdapter]) -> None:
        super().__init__()
        for adapter in build_registry(config):
            assert isinstance(adapter, MockAdapter)
            replacement = cls(adapter.pool_id, adapter.replica_id, model=adapter.model or "mock", policy=adapter.policy)
            self.register(replacement)


class RecordingMock(MockAdapter):
    """A mock that records the task ids it was asked to run, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened: list[str] = []

    async def _open(self, task: TaskRequest, seed: int) -> Any:
        self.opened.append(task.task_id or "")
        return await super()._open(task, seed)


class WideMock(MockAdapter):
    """A mock whose tokens are ~1 KiB each, so a reader that stops reading fills the socket buffers quickly."""

    def _read(self, item: Any, tally: Tally) -> str:
        return super()._read(item, tally) * 256


@dataclass
class Service:
    """An app over mock engines. Tune the mocks (`mock(...)`) before `running()`; they run in the server's thread."""

    config: OrchestratorConfig
    registry: AdapterRegistry
    app: Starlette = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.app = create_app(self.config, self.registry)

    @property
    def orch(self) -> Orchestrator:
        orch = self.app.state.orchestrator
        assert isinstance(orch, Orchestrator)
        return orch

    def mock(self, replica_id: str = "m0", pool_id: str = "default") -> MockAdapter:
        adapter = self.registry.get(pool_id, replica_id)
        assert isinstance(adapter, MockAdapter)
        return adapter

    def mocks(self) -> list[MockAdapter]:
        return [a for a in self.registry if isinstance(a, MockAdapter)]

    @contextmanager
    def running(self, **client: Any) -> Iterator[httpx.Client]:
        with serve_asgi(self.app) as url, httpx.Client(base_url=url, timeout=GUARD_S, **client) as http:
            self.url = url
            yield http

    def engine_busy(self) -> int:
        """Engine requests the mocks still hold open (a stream not closed holds an engine slot)."""
        return sum(adapter._busy for adapter in self.mocks())


def service(
    *pools: dict[str, Any],
    adapter_cls: type[MockAdapter] | None = None,
    mock: dict[str, Any] | None = None,
    **settings: Any,
) -> Service:
    """A deployment of `pools` (default: one mock pool, one replica); `mock` attributes are set on every mock."""
    config = make_config(*pools, **settings)
    registry = ClassRegistry(config, adapter_cls) if adapter_cls else build_registry(config)
    svc = Service(config, registry)
    for adapter in svc.mocks():
        for name, value in (mock or {}).items():
            setattr(adapter, name, value)
    return svc


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = GUARD_S) -> None:
    """Poll `predicate` until it holds (fail after a generous guard, never used to measure speed)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.005)


def pool_health(http: httpx.Client, pool_id: str = "default") -> dict[str, Any]:
    answer = http.get(f"/v1/pools/{pool_id}/health")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def inflight(http: httpx.Client, pool_id: str = "default") -> dict[str, int]:
    return {r["replica_id"]: r["inflight"] for r in pool_health(http, pool_id)["replicas"]}


def wait_idle(svc: Service, http: httpx.Client, pool_id: str = "default") -> None:
    """Every replica of the pool has nothing in flight and every mock closed its engine streams."""
    wait_until(
        lambda: not any(inflight(http, pool_id).values()) and svc.engine_busy() == 0, "replicas and engines idle"
    )


# -- schemas ---------------------------------------------------------------------------------------------------


def _schema_registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.json"):
        document = json.loads(path.read_text())
        resources.append((document["$id"], Resource.from_contents(document)))
    return Registry().with_resources(resources)


_REGISTRY = _schema_registry()


@functools.cache
def _validator(ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=_REGISTRY)


def validate(instance: Any, ref: str) -> None:
    """Validate against a committed schema, e.g. `error-envelope.json` or `infer-line.json#/$defs/InferError`."""
    _validator(ref).validate(instance)


def check_envelope(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A refusal: the status, the error envelope (schema-valid) with `code`, and a correlation id."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body: dict[str, Any] = answer.json()
    validate(body, "error-envelope.json")
    assert body["code"] == code, body
    assert answer.headers.get("x-correlation-id"), answer.headers
    return body


# -- SSE -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    event: str
    data: dict[str, Any]
    id: int = -1  # the frame's `id:`, its number in the task's stream


_FRAME = re.compile(r"id: (0|[1-9][0-9]*)\nevent: ([a-z]+)\ndata: ([^\n]*)")


def parse_sse(raw: bytes) -> list[Frame]:
    """Strictly `id: <n>\\nevent: <name>\\ndata: <json>\\n\\n` frames; each validates against
    specs/schemas/events.json."""
    text = raw.decode()
    assert text.endswith("\n\n") or not text, f"stream does not end with a blank line: {text[-80:]!r}"
    frames = []
    for block in text.split("\n\n")[:-1]:
        if block == ": ping":  # a heartbeat
            continue
        match = _FRAME.fullmatch(block)
        assert match is not None, f"not an SSE frame: {block!r}"
        frame = Frame(match[2], json.loads(match[3]), int(match[1]))
        validate({"event": frame.event, "data": frame.data}, "events.json")
        frames.append(frame)
    return frames


def check_order(frames: list[Frame]) -> Frame:
    """started → token* (i contiguous) → metrics? → exactly one terminal event, last. A task that never reached an
    engine (canceled or dropped in the queue, every replica failed) has only its terminal event. Returns it."""
    kinds = [f.event for f in frames]
    assert kinds and kinds[-1] in TERMINAL and sum(k in TERMINAL for k in kinds) == 1, kinds
    if kinds[0] != "started":
        assert len(kinds) == 1, kinds
    else:
        assert kinds.count("started") == 1, kinds
        assert set(kinds[1:-1]) <= {"token", "metrics"}, kinds
    assert [f.data["i"] for f in frames if f.event == "token"] == list(range(kinds.count("token")))
    assert [f.id for f in frames] == list(range(len(frames))), "frame ids are not 0, 1, 2, ..."
    return frames[-1]


def tokens(frames: list[Frame]) -> list[str]:
    return [f.data["t"] for f in frames if f.event == "token"]


def read_stream(http: httpx.Client, task_id: str) -> list[Frame]:
    """The whole stream of a task, checked (framing, schema, order)."""
    answer = http.get(f"/v1/tasks/{task_id}/stream")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream"), answer.headers
    frames = parse_sse(answer.content)
    check_order(frames)
    return frames


class StreamReader:
    """An open SSE stream read frame by frame (for cancel and disconnect tests)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.iter_bytes()
        self._pending = bytearray()
        self._scanned = 0
        self.frames: list[Frame] = []

    def next(self) -> Frame | None:
        """The next event frame (heartbeats skipped); None at the end of the stream."""
        while True:
            while (end := self._pending.find(b"\n\n", self._scanned)) < 0:
                self._scanned = max(0, len(self._pending) - 1)
                chunk = next(self._chunks, None)
                if chunk is None:
                    assert not self._pending, self._pending
                    return None
                self._pending += chunk
            block = bytes(self._pending[: end + 2])
            del self._pending[: end + 2]
            self._scanned = 0
            if parsed := parse_sse(block):
                self.frames.append(parsed[0])
                return parsed[0]

    def until(self, predicate: Callable[[Frame], bool]) -> Frame:
        while (frame := self.next()) is not None:
            if predicate(frame):
                return frame
        raise AssertionError(f"stream ended before the expected frame: {[f.event for f in self.frames]}")

    def drain(self) -> list[Frame]:
        """Every frame read, to the end of the stream (of a resumed stream: not checked from event 0)."""
        while self.next() is not None:
            pass
        return self.frames

    def rest(self) -> list[Frame]:
        check_order(self.drain())
        return self.frames


@contextmanager
def open_stream(http: httpx.Client, task_id: str, **headers: str) -> Iterator[StreamReader]:
    with http.stream("GET", f"/v1/tasks/{task_id}/stream", headers=headers) as response:
        assert response.status_code == 200, response.read()
        yield StreamReader(response)


def submit(http: httpx.Client, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    """Admit a task (202 expected) and return the admission body."""
    answer = http.post("/v1/tasks", json=body or {"prompt": "hello"}, headers=headers)
    assert answer.status_code == 202, answer.text
    admission: dict[str, Any] = answer.json()
    validate(admission, "admission.json")
    return admission


def run_task(http: httpx.Client, body: dict[str, Any] | None = None) -> list[Frame]:
    return read_stream(http, submit(http, body)["task_id"])


# -- NDJSON ----------------------------------------------------------------------------------------------------


def parse_ndjson(raw: bytes) -> list[dict[str, Any]]:
    """`/infer` lines: each one JSON object on its own line, valid against infer-line.json."""
    text = raw.decode()
    assert text.endswith("\n"), text[-80:]
    lines = [json.loads(line) for line in text.split("\n")[:-1]]
    for line in lines:
        validate(line, "infer-line.json")
    return lines


# -- Prometheus text exposition --------------------------------------------------------------------------------


@dataclass
class Family:
    name: str
    type: str = ""
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
_SUFFIXES = ("_bucket", "_sum", "_count")


def parse_metrics(text: str) -> dict[str, Family]:
    """Parse the text exposition strictly: every sample belongs to a family declared by `# TYPE` before it."""
    families: dict[str, Family] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith(("# HELP ", "# TYPE ")):
            _, kind, name, rest = line.split(" ", 3)
            family = families.setdefault(name, Family(name))
            if kind == "TYPE":
                family.type = rest
            else:
                family.help = rest
            continue
        assert not line.startswith("#"), line
        match = _SAMPLE.fullmatch(line)
        assert match is not None, f"not a sample line: {line!r}"
        sample, labels_text, value = match[1], match[2] or "", match[3]
        labels: dict[str, str] = {}
        position = 0
        while position < len(labels_text):
            label = _LABEL.match(labels_text, position)
            assert label is not None, f"bad labels in {line!r}"
            labels[label[1]] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], label[2])
            position = label.end()
        base = sample
        if sample not in families:
            base = next((sample.removesuffix(s) for s in _SUFFIXES if sample.removesuffix(s) in families), sample)
        assert base in families and families[base].type, f"sample {sample} before its # TYPE"
        families[base].samples.append((sample, labels, float(value)))
    return families


def total(families: dict[str, Family], name: str, sample: str | None = None, **match: str) -> float:
    """Sum of the samples of `name` (or its `sample`, e.g. `x_count`) whose labels include `match`."""
    wanted = sample or name
    return sum(
        value
        for s, labels, value in families[name].samples
        if s == wanted and all(labels.get(k) == v for k, v in match.items())
    )


def scrape(http: httpx.Client) -> dict[str, Family]:
    answer = http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain"), answer.headers
    return parse_metrics(answer.text)


# -- a replica held busy ---------------------------------------------------------------------------------------

NO_RETRY = {"retry": {"max_attempts": 1}}


def blocked(
    capacity: int = 8, policy: str = "reject", adapter_cls: type[RecordingMock] = RecordingMock, **settings: Any
) -> Service:
    """One replica that runs one task at a time; its first task stalls until canceled (the blocker)."""
    svc = service(
        mock_pool(queue={"capacity": capacity, "policy": policy}, replica={"max_inflight": 1}),
        adapter_cls=adapter_cls,
        **settings,
    )
    svc.mock().inject(Fault("stall_first", times=1))
    return svc


def start_blocker(http: httpx.Client) -> str:
    admission = submit(http, {"prompt": "blocker", "task_id": "blocker"})
    assert (admission["queue_position"], admission["predicted_start_ms"]) == (0, 0), admission
    wait_until(lambda: inflight(http) == {"m0": 1}, "the blocker runs")
    return "blocker"


def cancel(http: httpx.Client, task_id: str) -> None:
    answer = http.post(f"/v1/tasks/{task_id}/cancel")
    assert answer.status_code == 204, answer.text
