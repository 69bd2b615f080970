"""`python xtask.py fuzz` (llama_orch_devtools.fuzz) against a served deployment."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llama_orch.service.app import openapi_document
from llama_orch_devtools import fuzz
from tests.service.helpers import mock_pool, service
from tests.support.asgi_server import serve_asgi

TINY = ["--max-examples", "2", "--seed", "7", "--phases", "examples,fuzzing,stateful"]


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        fuzz.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--url", "--max-examples", "--seed", "--token-env", "--mode"):
        assert option in text


def test_url_is_required_and_token_variable_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as exit_:
        fuzz.main([])
    assert exit_.value.code == 2
    monkeypatch.delenv("LLORCH_FUZZ_NOPE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        fuzz.main(["--url", "http://127.0.0.1:9", "--token-env", "LLORCH_FUZZ_NOPE"])
    assert exit_.value.code == 2


def test_fuzz_passes_against_the_service_with_auth(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    token = "fuzz-token-5a8c1e0b9d"
    monkeypatch.setenv("LLORCH_FUZZ_TOKEN", token)
    svc = service(mock_pool(queue={"capacity": 64}), mock={"tokens": 4}, auth_token_env="LLORCH_FUZZ_TOKEN")
    with svc.running():
        code = fuzz.main(["--url", svc.url, "--mode", "positive", "--token-env", "LLORCH_FUZZ_TOKEN", *TINY])
    out = capfd.readouterr().out
    assert code == 0, out[-4000:]
    assert "/openapi.json" in out and token not in out
    # The token reached the service: tasks were admitted (without it every task would be a 401).
    assert (
        svc.orch.metrics.value(
            "tasks_enqueued_total",
            engine="mock",
            engine_version="mock-1",
            pool_id="default",
            replica_id="",
            priority="interactive",
        )
        > 0
    )


def test_fuzz_fails_against_a_broken_deployment(capfd: pytest.CaptureFixture[str]) -> None:
    async def broken(request: Request) -> Response:
        if request.url.path == "/openapi.json":
            return Response(openapi_document(), media_type="application/json")
        return JSONResponse({"oops": True}, status_code=500)

    app = Starlette(routes=[Route("/{path:path}", broken, methods=["GET", "POST", "DELETE"])])
    with serve_asgi(app) as url:
        code = fuzz.main(["--url", url, "--mode", "positive", *TINY])
    assert code != 0
    assert "server error" in capfd.readouterr().out.lower()
