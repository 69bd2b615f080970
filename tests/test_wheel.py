"""The wheel holds what users run: the library, the CLI, the simulators it serves, the generated clients, py.typed.
The developer tooling (bench, fuzz, engine builds, tiny models) stays in the source tree (src/llama_orch_devtools)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    hatchling = Path(sys.executable).with_name("hatchling")
    subprocess.run([str(hatchling), "build", "--target", "wheel", "--directory", str(out)], cwd=ROOT, check=True)
    (wheel,) = out.glob("llama_orch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_keeps_the_library_cli_simulators_and_generated_clients(wheel_files: set[str]) -> None:
    for path in (
        "llama_orch/cli.py",
        "llama_orch/py.typed",
        "llama_orch/service/app.py",
        "llama_orch/simulators/tgi.py",
        "llama_orch_runtime/streaming.py",
        "llama_orch_runtime/py.typed",
        "llama_orch_gen/py.typed",
        "llama_orch_gen/orchestrator/__init__.py",
        "llama_orch_gen/contracts/events.py",
    ):
        assert path in wheel_files, path


def test_wheel_leaves_out_bench_fuzz_and_engine_build_tooling(wheel_files: set[str]) -> None:
    unwanted = ("devtools", "bench", "fuzz", "llamacpp_build", "tiny_gguf", "tiny_hf", "vllm_env", "vllm_record")
    leaked = sorted(path for path in wheel_files if any(word in path for word in unwanted))
    assert leaked == []
    assert not [path for path in wheel_files if path.endswith(".constraints.txt")]
