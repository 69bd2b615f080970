"""The wheel holds what users run: the library, the CLI, the simulators it serves, the generated clients, py.typed.
The developer tooling (bench, fuzz, engine builds, tiny models) stays in the source tree (src/llama_orch_devtools)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llama_orch import cli
from llama_orch.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    hatchling = Path(sys.executable).with_name("hatchling")
    subprocess.run([str(hatchling), "build", "--target", "wheel", "--directory", str(out)], cwd=ROOT, check=True)
    (built,) = out.glob("llama_orch-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_files(wheel: Path) -> set[str]:
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


def test_installed_from_the_wheel_the_dev_tooling_is_absent(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([str(uv), "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheel)], check=True)
    probe = (
        "import importlib.util as u; "
        "print(u.find_spec('llama_orch_devtools'), u.find_spec('llama_orch.devtools'), "
        "all(u.find_spec(m) for m in ('llama_orch.cli', 'llama_orch_runtime.base_client', 'llama_orch_gen')))"
    )
    shown = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert shown.stdout.split() == ["None", "None", "True"]


@pytest.mark.parametrize("module", ["llamacpp_build", "vllm_env"])
def test_spawning_an_engine_without_the_tooling_is_a_config_error_saying_why(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, f"llama_orch_devtools.{module}", None)  # as from the wheel: not importable
    with pytest.raises(ConfigError, match="engine tooling of a llama-orch source checkout"):
        cli._engine_tooling(module, "--spawn-x")
