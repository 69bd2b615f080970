"""python -m codegen {regen,check}: see xtask.py, which runs this inside the project's virtual environment."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from . import layout
from .drift import drift
from .generate import GenerationError, render
from .validate import validate_specs


def regen() -> int:
    problems = validate_specs()
    if problems:
        print("specs are invalid; nothing was generated:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    target = layout.GENERATED / layout.PACKAGE
    with tempfile.TemporaryDirectory(prefix="llama-orch-regen-", dir=layout.GENERATED.parent) as tmp:
        fresh = render(Path(tmp))
        if target.exists():
            shutil.rmtree(target)  # files no longer produced must disappear
        layout.GENERATED.mkdir(exist_ok=True)
        shutil.move(fresh, target)
    count = sum(1 for _ in target.rglob("*.py"))
    print(f"regenerated generated/{layout.PACKAGE}: {count} modules from {len(layout.all_spec_files())} specs")
    return 0


def check() -> int:
    problems = validate_specs()
    if not problems:
        problems = drift(layout.GENERATED / layout.PACKAGE)
    if problems:
        print("generated/ is out of date or specs are invalid:", file=sys.stderr)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(
            "fix the spec, then run `python xtask.py regen` and commit specs/ and generated/ together.", file=sys.stderr
        )
        return 1
    print(f"specs valid; generated/{layout.PACKAGE} matches them")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    parser.add_argument("command", choices=["regen", "check"])
    args = parser.parse_args(argv)
    try:
        return regen() if args.command == "regen" else check()
    except GenerationError as exc:
        print(f"generation failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
