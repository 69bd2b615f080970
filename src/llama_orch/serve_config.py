"""Where `llama-orch serve` gets its pools: a config file, the `--engine` flags, the llama.cpp daemon flags of the
migration plan (`--llama-url`, ...), the `ORCHD_*` environment variables, or, with none of them, the embedded
mock engine. Every path ends in one `OrchestratorConfig`, validated by the generated model of specs/schemas."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from llama_orch_gen.contracts.config import OrchestratorConfig
from pydantic import ValidationError

from llama_orch.errors import ConfigError

__all__ = ["EMBEDDED_ENGINE", "LLAMA_KEY_ENV", "STATE_URL_ENV", "config_from_args", "load_config", "parse_duration_ms"]

EMBEDDED_ENGINE = {
    "id": "default",
    "engine": "mock",
    "model": "mock",
    "replicas": [{"id": "mock0", "base_url": "http://mock.invalid"}],
}
# `--llama-api-key` is copied here so the key travels like every other engine token: by variable name only.
LLAMA_KEY_ENV = "LLAMA_ORCH_LLAMA_API_KEY"
STATE_URL_ENV = "LLAMA_ORCH_STATE_URL"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0, None: 1000.0}


def parse_duration_ms(text: str) -> int:
    """`30s`, `500ms`, `2m`, or plain seconds → milliseconds (the daemon's Go-style durations)."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30s, 500ms, 2m)")
    return max(1, int(float(match.group(1)) * _UNIT_MS[match.group(2)]))


def load_config(path: Path) -> OrchestratorConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.suffix in (".yaml", ".yml") else None
        data = raw if raw is not None else json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return validate(data, str(path))


def validate(data: Any, source: str) -> OrchestratorConfig:
    try:
        return OrchestratorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration from {source}: {problems}") from None


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> tuple[OrchestratorConfig, str]:
    """The configuration and a one-line description of where it came from (printed at startup)."""
    settings: dict[str, Any] = {}
    if args.auth_token_env:
        settings["auth_token_env"] = args.auth_token_env
    for flag, key in (("sse_heartbeat_ms", "sse_heartbeat_ms"), ("drain_grace", "drain_grace_ms")):
        if getattr(args, flag, None) is not None:  # serve's flags (preflight shares this function)
            settings[key] = getattr(args, flag)
    state_url = getattr(args, "state_url", None) or environ.get(STATE_URL_ENV)
    if state_url:
        settings["state_url"] = state_url
    if args.config:
        config = load_config(Path(args.config))
        if settings:
            config = validate({**config.model_dump(exclude_unset=True), **settings}, f"config file {args.config}")
        return config, f"config file {args.config}"
    pools, source = _pools_from_flags(args, environ)
    return validate({**settings, "pools": pools}, source), source


def _pools_from_flags(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[list[dict[str, Any]], str]:
    queue = {k: v for k, v in (("capacity", args.queue_capacity), ("policy", args.queue_policy)) if v is not None}
    extra: dict[str, Any] = {"queue": queue} if queue else {}

    def replica(replica_id: str, url: str, **fields: Any) -> dict[str, Any]:
        if args.max_inflight is not None:
            fields["max_inflight"] = args.max_inflight
        return {"id": replica_id, "base_url": url, **fields}

    if args.engine or args.engine_url:
        if not (args.engine and args.engine_url):
            raise ConfigError("--engine and --engine-url go together")
        model = {"model": args.model} if args.model else {}
        pool = {"id": "default", "engine": args.engine, **model, **extra, "replicas": [replica("r0", args.engine_url)]}
        return [pool], f"{args.engine} at {args.engine_url}"
    llama_url = args.llama_url or environ.get("ORCHD_LLAMACPP_URL")
    vllm_url = environ.get("ORCHD_VLLM_URL")
    pools: list[dict[str, Any]] = []
    if llama_url:
        use_openai = args.llama_use_openai
        fields: dict[str, Any] = {"api": "auto" if use_openai is None else "openai" if use_openai else "native"}
        timeouts: dict[str, int] = {}
        if args.llama_timeout is not None:
            timeouts.update(request_ms=args.llama_timeout, inter_token_ms=args.llama_timeout)
        if args.llama_connect_timeout is not None:
            timeouts["connect_ms"] = args.llama_connect_timeout
        if timeouts:
            fields["timeouts"] = timeouts
        if args.llama_api_key:
            os.environ[LLAMA_KEY_ENV] = args.llama_api_key
            fields["bearer_token_env"] = LLAMA_KEY_ENV
        if args.spawned_model:
            fields["model_path"] = args.spawned_model
        replica_id = environ.get("ORCHD_LLAMACPP_REPLICA", "r0")
        pools.append(
            {
                "id": environ.get("ORCHD_LLAMACPP_POOL", "default"),
                "engine": "llamacpp",
                **extra,
                "replicas": [replica(replica_id, llama_url, **fields)],
            }
        )
    if vllm_url:
        pools.append(
            {
                "id": environ.get("ORCHD_VLLM_POOL", "vllm" if pools else "default"),
                "engine": "vllm",
                **({"model": args.model} if args.model else {}),
                **extra,
                "replicas": [replica(environ.get("ORCHD_VLLM_REPLICA", "r0"), vllm_url)],
            }
        )
    if pools:
        return pools, ", ".join(f"{p['engine']} at {p['replicas'][0]['base_url']}" for p in pools)
    return [{**EMBEDDED_ENGINE, **extra}], "the embedded mock engine (no engine configured)"
