"""The `llama-orch` command."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama-orch",
        description="Orchestrate LLM inference engines (llama.cpp, vLLM, TGI, Triton) behind one typed event stream.",
    )
    parser.add_argument("--version", action="version", version=f"llama-orch {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
