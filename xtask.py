#!/usr/bin/env python3
"""llama-orch task runner. Standard library only at import, so it works on a fresh clone.

Every subcommand first makes sure the project's virtual environment (.venv) exists and has the project and its
dev tools installed (reinstalling when pyproject.toml changed), then runs inside it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
MARKER = VENV / ".llama-orch-installed"
EXTRAS = "dev,bench"
LINT_PATHS = ["src", "codegen", "generated", "tests", "xtask.py"]


def log(message: str) -> None:
    print(f"xtask: {message}", file=sys.stderr, flush=True)


def run(*cmd: str | Path, check: bool = True, env: dict[str, str] | None = None) -> int:
    log("$ " + " ".join(str(c) for c in cmd))
    code = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env).returncode
    if check and code != 0:
        raise SystemExit(code)
    return code


def ensure_venv() -> None:
    """Create .venv and install the project with its `dev` and `bench` tools when missing or when pyproject.toml
    changed since the last install. One environment for everything: mypy checks the bench code, in CI too."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and MARKER.exists() and MARKER.read_text().strip() == digest:
        return
    if not PY.exists():
        log(f"creating virtual environment {VENV.relative_to(ROOT)}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    log(f"installing llama-orch with its {EXTRAS} tools (first run takes a minute)")
    run(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", f".[{EXTRAS}]")
    MARKER.write_text(digest + "\n")


def venv_tool(name: str) -> Path:
    return BIN / name


def cmd_regen(_: argparse.Namespace) -> int:
    return run(PY, "-m", "codegen", "regen", check=False)


def cmd_check(_: argparse.Namespace) -> int:
    return run(PY, "-m", "codegen", "check", check=False)


def cmd_lint(_: argparse.Namespace) -> int:
    codes = [
        run(venv_tool("ruff"), "check", *LINT_PATHS, check=False),
        run(venv_tool("ruff"), "format", "--check", "src", "codegen", "tests", "xtask.py", check=False),
        run(venv_tool("mypy"), check=False),
    ]
    return max(codes)


def cmd_engine(args: argparse.Namespace) -> int:
    if args.action == "build":
        extra = ["--force"] if args.force else []
        return run(PY, "-m", "llama_orch.devtools.llamacpp_build", *extra, check=False)
    return run(PY, "-m", "llama_orch.devtools.tiny_gguf", args.path, check=False)


def cmd_fuzz(args: argparse.Namespace) -> int:
    return run(PY, "-m", "llama_orch.devtools.fuzz", *args.passthrough, check=False)


def cmd_bench(args: argparse.Namespace) -> int:
    return run(PY, "-m", "llama_orch.devtools.bench", *args.passthrough, check=False)


def cmd_serve(args: argparse.Namespace) -> int:
    return run(venv_tool("llama-orch"), "serve", *args.passthrough, check=False)


def cmd_test(args: argparse.Namespace) -> int:
    for step in (cmd_check, cmd_lint):
        code = step(args)
        if code != 0:
            log(f"{step.__name__.removeprefix('cmd_')} failed; not running pytest")
            return code
    # The real-engine tests need llama-server; building it once here shows progress instead of a silent fixture.
    if run(PY, "-m", "llama_orch.devtools.llamacpp_build", check=False) != 0:
        return 1
    return run(PY, "-m", "pytest", *args.pytest_args, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python xtask.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("regen", help="validate specs/ and regenerate generated/ from them").set_defaults(func=cmd_regen)
    sub.add_parser(
        "check", help="fail with a diff when generated/ differs from what specs/ produce, or a spec is invalid"
    ).set_defaults(func=cmd_check)
    sub.add_parser("lint", help="ruff (lint + format check) and mypy --strict over the code").set_defaults(
        func=cmd_lint
    )
    test = sub.add_parser("test", help="check + lint + the whole pytest suite (builds llama-server if not cached)")
    test.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after `--`")
    test.set_defaults(func=cmd_test)

    engine = sub.add_parser("engine", help="real engine assets: build llama-server, write the tiny GGUF model")
    engine_sub = engine.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = engine_sub.add_parser(
        "build", help="build llama-server (cached by version outside the work tree); prints the binary's path last"
    )
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    model = engine_sub.add_parser("model", help="write the tiny real GGUF model to PATH and print its path")
    model.add_argument("path", help="where to write the .gguf file")
    engine.set_defaults(func=cmd_engine)

    # These forward every argument (and --help) to their program.
    for name, func, text in (
        ("serve", cmd_serve, "run the orchestrator: llama-orch serve [...] (see serve --help)"),
        ("fuzz", cmd_fuzz, "schemathesis against a running orchestrator: fuzz --url URL [...] (see fuzz --help)"),
        ("bench", cmd_bench, "side-by-side benchmarks into bench/results/ (see bench --help)"),
    ):
        sub.add_parser(name, help=text, add_help=False).set_defaults(func=func)

    args, passthrough = parser.parse_known_args(argv)
    if passthrough and args.func not in (cmd_serve, cmd_fuzz, cmd_bench):
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    args.passthrough = passthrough
    ensure_venv()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
