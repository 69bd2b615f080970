"""The orchestrator client black-box: against `llama-orch serve` (the mock engine) as a user runs it, the README's
examples, the CLI's `submit`, and against stand-in servers that refuse, answer 599 or are busy twice."""

from __future__ import annotations

import contextlib
import importlib
import io
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import llama_orch_gen.orchestrator as orchestrator_package
import pydantic
import pytest
from llama_orch_gen.orchestrator import (
    APIConnectionError,
    APIStatusError,
    BadRequestError,
    Client,
    NotFoundError,
)
from llama_orch_gen.orchestrator.models import AdmissionResponse, EndEvent, StartedEvent, TokenEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llama_orch.spawn import free_port
from tests.support.asgi_server import serve_asgi
from tests.support.serve_process import Serve

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with Serve([]) as serve:  # no engine configured: the embedded mock engine
        yield serve.base_url


def test_a_task_is_created_and_streamed_to_its_end(served: str) -> None:
    with Client(served) as client:
        admitted = client.tasks.create({"prompt": "Once upon a time", "max_tokens": 8, "seed": 7})
        assert isinstance(admitted, AdmissionResponse) and isinstance(admitted, pydantic.BaseModel)
        with client.tasks.stream(admitted.task_id) as events:
            items = list(events)
    assert isinstance(items[0], StartedEvent) and isinstance(items[-1], EndEvent)
    assert all(isinstance(e, TokenEvent) for e in items[1:-1]) and items[-1].event == "end"


def test_unknown_task_and_invalid_params_are_typed_errors_with_their_code(served: str) -> None:
    with Client(served) as client:
        with pytest.raises(NotFoundError) as missing, client.tasks.stream("no-such-task") as events:
            list(events)
        assert missing.value.code == "NOT_FOUND" and missing.value.status_code == 404
        with pytest.raises(BadRequestError) as invalid:
            client.tasks.create({"prompt": "hi", "max_tokens": 0})
        assert invalid.value.code == "INVALID_PARAMS" and invalid.value.envelope is not None
        assert invalid.value.envelope.field == "max_tokens"


def _python_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Use the client") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readme_examples_run_against_the_served_mock_engine(served: str) -> None:
    examples = _python_examples()
    assert len(examples) == 4, "README 'Use the client': sync, async, errors, retries"
    outputs = []
    for code in examples:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code.replace(EXAMPLE_URL, served), "README.md", "exec"), {"__name__": "readme"})
        outputs.append(out.getvalue())
    sync, asynchronous, failures, retries = outputs
    assert "tokens]" in sync and sync.rstrip().endswith("True")
    assert asynchronous.strip()
    assert "400 INVALID_PARAMS max_tokens" in failures and "NOT_FOUND False" in failures
    assert "no answer:" in failures and "202 " in retries


def test_cli_submit_streams_with_the_generated_client(served: str) -> None:
    script = Path(sys.executable).with_name("llama-orch")
    done = subprocess.run(
        [str(script), "submit", "--url", served, "--max-tokens", "4", "Hi"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "4 tokens" in done.stderr
    refused = subprocess.run(
        [str(script), "submit", "--url", served, "--max-tokens", "0", "Hi"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "INVALID_PARAMS" in refused.stderr


# -- stand-in servers ------------------------------------------------------------------------------------------


def test_a_closed_port_is_a_connection_error() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", max_retries=1) as client, pytest.raises(APIConnectionError):
        client.capabilities()


def test_a_599_is_a_status_error_with_that_status() -> None:
    app = Starlette(routes=[Route("/v1/capabilities", lambda request: Response("upstream gone", status_code=599))])
    with serve_asgi(app) as url, Client(url, max_retries=0) as client, pytest.raises(APIStatusError) as info:
        client.capabilities()
    assert info.value.status_code == 599 and info.value.code is None


def test_two_busy_answers_with_retry_after_zero_then_success_on_the_third_request() -> None:
    seen: list[str] = []

    async def create(request: Request) -> Response:
        seen.append((await request.body()).decode())
        if len(seen) <= 2:
            busy = {"code": "POOL_UNREADY", "message": "loading", "retriable": True}
            return JSONResponse(busy, status_code=503, headers={"Retry-After": "0"})
        admitted = {"task_id": "t-1", "queue_position": 0, "predicted_start_ms": 0, "backoff_ms": 0}
        return JSONResponse(admitted, status_code=202)

    app = Starlette(routes=[Route("/v1/tasks", create, methods=["POST"])])
    with serve_asgi(app) as url, Client(url) as client:
        admitted = client.tasks.create({"prompt": "hi"})
    assert admitted.task_id == "t-1" and len(seen) == 3 and len(set(seen)) == 1  # the same task, three times


def test_the_orchestrator_package_defines_only_pydantic_models_no_attrs_classes() -> None:
    for module_info in pkgutil.walk_packages(orchestrator_package.__path__, "llama_orch_gen.orchestrator."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            assert not hasattr(value, "__attrs_attrs__"), f"{module_info.name}.{value!r} is an attrs class"
