"""Fuzz a running orchestrator against its OpenAPI contract with schemathesis.

    python xtask.py fuzz --url http://127.0.0.1:8000 [--max-examples 20] [--seed 42] [--token-env LLORCH_API_TOKEN]

The contract is the deployment's own `/openapi.json` (or the spec packaged with llama-orch when the deployment
does not serve one). Schemathesis generates valid and invalid requests for every operation, then follows the
spec's links (submit → stream → cancel), and checks every answer: documented status, content type, body and
headers. Server errors fail the run, except the contract's own 503 envelopes (POOL_UNAVAILABLE / POOL_UNREADY:
a request for an engine or placement that no ready pool serves). Exit status: 0 when nothing failed.

The bearer token is read from the environment variable named by `--token-env` and handed to schemathesis through
its configuration file's environment substitution, so it never appears on a command line or in this tool's output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import schemathesis

__all__ = ["main"]

HOOKS_ENV = "SCHEMATHESIS_HOOKS"
CONTRACT_503 = frozenset({"POOL_UNAVAILABLE", "POOL_UNREADY"})
# `not_a_server_error` is replaced by `contract_server_error` below; the others run as schemathesis defines them.
# Not `ensure_resource_availability`: a task's stream is read once, then the task is forgotten (404 by design).
CHECKS = (
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "use_after_free",
    "contract_server_error",
)


@schemathesis.check
def contract_server_error(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> bool:
    """A 5xx is a failure unless it is one of the contract's documented 503 envelopes."""
    if response.status_code < 500:
        return True
    if response.status_code == 503:
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("code") in CONTRACT_503:
            return True
    raise AssertionError(f"server error {response.status_code}: {response.content[:500]!r}")


def load_spec(url: str, token: str | None, timeout_s: float = 10.0) -> tuple[dict[str, Any], str]:
    """The deployment's `/openapi.json`, else the packaged spec; returns (document, where it came from)."""
    request = urllib.request.Request(url.rstrip("/") + "/openapi.json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            document: dict[str, Any] = json.loads(answer.read())
            return document, request.full_url
    except (urllib.error.URLError, ValueError, OSError):
        from llama_orch.service.app import openapi_document

        return json.loads(openapi_document()), "the packaged llama-orch spec"


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def build_command(args: argparse.Namespace, spec: Path, config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        str(spec),
        "--url",
        args.url.rstrip("/"),
        "--checks",
        ",".join(CHECKS),
        "--phases",
        args.phases,
        "--mode",
        args.mode,
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--generation-database",
        "none",
        "--request-timeout",
        str(args.request_timeout),
        "--workers",
        "1",
        "--no-color",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python xtask.py fuzz",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        epilog="Example: python xtask.py fuzz --url http://127.0.0.1:8000 --max-examples 10 --token-env LLORCH_TOKEN",
    )
    parser.add_argument("--url", required=True, help="base URL of the running orchestrator, e.g. http://127.0.0.1:8000")
    parser.add_argument("--max-examples", type=int, default=20, metavar="N", help="examples per operation (default 20)")
    parser.add_argument(
        "--seed", type=int, default=42, metavar="N", help="random seed; same seed, same run (default 42)"
    )
    parser.add_argument(
        "--token-env",
        metavar="VAR",
        help="environment variable holding the orchestrator's bearer token (if auth is on)",
    )
    parser.add_argument(
        "--mode",
        choices=("positive", "negative", "all"),
        default="all",
        help="valid requests, invalid ones, or both (default all)",
    )
    parser.add_argument(
        "--phases",
        default="examples,coverage,fuzzing,stateful",
        help="schemathesis phases, comma-separated (default examples,coverage,fuzzing,stateful)",
    )
    parser.add_argument("--request-timeout", type=float, default=30.0, metavar="S", help="per request (default 30)")
    args = parser.parse_args(argv)
    if args.max_examples < 1:
        parser.error("--max-examples must be at least 1")
    if args.token_env is not None and not os.environ.get(args.token_env):
        parser.error(f"--token-env names {args.token_env}, which is not set")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.get(args.token_env) if args.token_env else None
    document, origin = load_spec(args.url, token)
    sys.stdout.write(f"fuzz: contract from {origin}; target {args.url}\n")
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="llama-orch-fuzz-") as scratch:
        spec = Path(scratch) / "openapi.json"
        spec.write_text(json.dumps(document))
        config = Path(scratch) / "schemathesis.toml"
        lines = ["max-stream-events = 200"]
        if args.token_env:
            lines.append(f"headers = {{ Authorization = {_toml_string('Bearer ${' + args.token_env + '}')} }}")
        config.write_text("\n".join(lines) + "\n")
        env = {**os.environ, HOOKS_ENV: __name__ if __name__ != "__main__" else "llama_orch_devtools.fuzz"}
        return subprocess.run(build_command(args, spec, config), env=env, cwd=scratch, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
