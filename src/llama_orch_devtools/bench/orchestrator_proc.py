"""Run the orchestrator for the bench: `create_app` under uvicorn (one worker), from a config file.

    python -m llama_orch_devtools.bench.orchestrator_proc CONFIG.json --port P [--profile OUT.prof]

The bench needs knobs the `serve` CLI does not take (queue capacity and in-flight limit for 512 streams), so it
builds the app from a full config. `--profile` runs the server under cProfile and writes the stats on SIGTERM.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from pathlib import Path

import uvicorn
from llama_orch_gen.contracts.config import OrchestratorConfig

from llama_orch.adapters.factory import build_registry
from llama_orch.service.app import create_app


def bench_config(
    engine_url: str, *, streams: int, api: str = "native", state_url: str | None = None
) -> OrchestratorConfig:
    """One llama.cpp pool on one replica, admitting `streams` tasks at once with room to spare (in scale-out mode
    over `state_url` when given)."""
    return OrchestratorConfig.model_validate(
        {
            **({"state_url": state_url} if state_url else {}),
            "pools": [
                {
                    "id": "bench",
                    "engine": "llamacpp",
                    "model": "bench",
                    "queue": {"capacity": streams, "policy": "reject"},
                    "replicas": [{"id": "r0", "base_url": engine_url, "api": api, "max_inflight": streams}],
                }
            ],
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llama_orch_devtools.bench.orchestrator_proc")
    parser.add_argument("config", type=Path, help="OrchestratorConfig as JSON")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", type=Path, help="write cProfile stats here when stopped")
    args = parser.parse_args(argv)
    config = OrchestratorConfig.model_validate(json.loads(args.config.read_text()))
    app = create_app(config, build_registry(config))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", workers=1))
    if args.profile is None:
        server.run()
        return 0
    # CPU time of the serving thread, not wall time: otherwise the event loop's idle waits count as its work.
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it stopped on; the stats are the point now
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)
    sys.stderr.write(f"profile written to {args.profile}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
