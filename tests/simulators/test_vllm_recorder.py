"""`xtask engine record-vllm` writes what the tests read: one NAME.json + NAME.body per case, loadable as a
recording, and the committed fixtures are exactly the recorder's cases (a case added without re-recording, or a
fixture left from a removed case, fails here). The recorder runs against the vLLM simulator over a real socket."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from llama_orch.simulators import ENGINES, SimulatorConfig
from llama_orch_devtools import vllm_record
from llama_orch_devtools.vllm_record import FIXTURES, SERVED_NAME, cases, record
from tests.support.asgi_server import serve_asgi
from tests.support.recordings import Recording


def _committed() -> set[str]:
    return {path.name for path in FIXTURES.iterdir()}


def _recorded_limits() -> tuple[str, int]:
    """The model and context length the committed recordings were made with (their /v1/models answer)."""
    card = json.loads((FIXTURES / "models.body").read_bytes())["data"][0]
    return card["id"], card["max_model_len"]


def test_the_fixtures_are_the_recorders_cases_with_their_requests() -> None:
    expected = cases(*_recorded_limits())
    assert _committed() == {f"{case.name}{suffix}" for case in expected for suffix in (".json", ".body")}
    for case in expected:
        recording = Recording.load(FIXTURES / f"{case.name}.json")
        assert (recording.method, recording.path, recording.request_json) == (case.method, case.path, case.json)


def test_the_recorder_writes_every_case_as_a_loadable_recording(tmp_path: Path) -> None:
    app = ENGINES["vllm"](SimulatorConfig(tokens=3, model=SERVED_NAME))
    with serve_asgi(app) as url:
        names = record(url, tmp_path, lambda message: None)
    assert {path.name for path in tmp_path.iterdir()} == _committed()
    for name in names:  # the same requests, answered as the real server answered them
        ours, theirs = Recording.load(tmp_path / f"{name}.json"), Recording.load(FIXTURES / f"{name}.json")
        assert (ours.status, ours.content_type) == (theirs.status, theirs.content_type), name


def test_without_url_it_starts_an_engine_records_it_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default path (start, wait for /health, record, stop the process group), with the vLLM simulator as the
    process instead of vLLM, which takes a minute to start."""
    ports: list[int] = []

    def simulator_command(python: Path, model: Path, *, port: int, served_name: str, max_model_len: int) -> list[str]:
        ports.append(port)
        return [str(python), "-m", "llama_orch.simulators", "vllm", "--port", str(port), "--model", served_name]

    monkeypatch.setattr(vllm_record, "ensure_vllm", lambda progress: Path(sys.executable))
    monkeypatch.setattr(vllm_record, "make_tiny_model", lambda directory, progress: directory)
    monkeypatch.setattr(vllm_record, "server_command", simulator_command)
    assert vllm_record.main(["--out", str(tmp_path)]) == 0
    assert {path.name for path in tmp_path.iterdir()} == _committed()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports[0]}/health", timeout=5)
