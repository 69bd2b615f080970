"""The tests that replay recorded engine data load it when they run, and fail clearly when it is missing: never an
import-time crash of the whole fault matrix, never an empty parametrization skipped quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_orch.adapters.http_policy import HttpPolicy
from tests.adapters import wire_fakes
from tests.adapters.replay import llamacpp_recordings
from tests.adapters.wire_fakes import LLAMACPP, Fake

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_reference_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLAMA_ORCH_SHARED", str(tmp_path))
    return tmp_path


def test_the_fault_matrix_modules_import_without_the_data(no_reference_data: Path) -> None:
    code = "import tests.adapters.wire_fakes, tests.adapters.replay, tests.adapters.test_fault_matrix"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ, check=True, timeout=120)


def test_a_fake_engine_needing_a_recording_fails_naming_where_it_looked(
    no_reference_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire_fakes, "TRANSCRIPTS", no_reference_data / "llamacpp-transcripts")
    with pytest.raises(AssertionError, match=f"missing recording {no_reference_data}.*props.body"):
        Fake(LLAMACPP, []).adapter(HttpPolicy())


def test_replaying_recordings_that_are_missing_fails(no_reference_data: Path) -> None:
    with pytest.raises(FileNotFoundError, match="llamacpp-transcripts"):
        llamacpp_recordings()


def test_an_empty_parametrization_fails_the_run(tmp_path: Path) -> None:
    case = tmp_path / "test_empty.py"
    case.write_text("import pytest\n\n@pytest.mark.parametrize('x', [])\ndef test_x(x):\n    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(case), "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0, run.stdout
    assert "Empty parameter set" in run.stdout, run.stdout
