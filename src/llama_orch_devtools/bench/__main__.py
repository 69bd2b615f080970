"""Side-by-side benchmarks of llama-orch, in one run, written to bench/results/.

    python xtask.py bench [--quick] [--only SECTION ...] [--out DIR] [--profile]

Sections (each compares its sides in the same run, in alternating pairs, and reports the ratios):
  decoding     the generated client's SSE decoder vs httpx-sse and openai's, on the same recorded bytes
  relay        one stream from the llama.cpp simulator (no delay) on its native route: direct, through a
               byte-forwarding proxy (the physical reference) and through the orchestrator (/v1/tasks SSE and
               /infer NDJSON); tokens/s ratio per pair (median, spread), added first-token latency (p50, p99)
  concurrency  1, 16, 128, 512 simultaneous streams through the orchestrator: aggregate tokens/s,
               inter-token gaps, first-token p99, peak RSS, errors, lost tasks
  peer         the same simulator's OpenAI-compatible /v1/completions: direct, byte proxy, the orchestrator
               (api: openai) and LiteLLM's proxy (own virtual environment in the cache, made on first use)
  real         the real llama-server (cached build) with the tiny model: direct vs through the orchestrator
  cluster      scale-out cost: the relay through one in-memory instance vs one instance on a throwaway
               redis-server vs two instances on it (submit on one, read from the other)
  workers      `llama-orch serve --workers N` at N = 1 and 2 (scale-out mode on the same Redis) under the same
               concurrent load: aggregate tokens/s, first-token p99, cores used
  profile      (with --profile) the orchestrator under cProfile: µs per token by stage of the hot path

Every process under test runs on its own (simulator, byte proxy, orchestrator under uvicorn with one worker,
LiteLLM, llama-server); this process is the load generator, on persistent connections with TCP_NODELAY, and
reads every side with the same client (chunks recorded on the clock, decoded after it). The machine's load
during each section is recorded. Progress goes to stderr. A section that cannot run is recorded under
"skipped" with the reason; the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_orch_devtools.bench import (
    cluster,
    concurrency,
    decoding,
    peer,
    profile,
    real_engine,
    relay,
    report,
    stack,
    workers,
)
from llama_orch_devtools.bench.harness import Service, say
from llama_orch_devtools.bench.litellm_env import LITELLM_VERSION, ensure_litellm
from llama_orch_devtools.bench.machine_load import LoadWatch

SECTIONS = ("decoding", "relay", "concurrency", "peer", "real", "cluster", "workers", "profile")
# Run by default; `profile` only with --profile (or --only profile).
DEFAULT_SECTIONS = SECTIONS[:-1]


@dataclass(frozen=True)
class Sizes:
    decode_events: int = 20_000
    decode_rounds: int = 7
    relay_tokens: int = 2_000
    relay_rounds: int = 10  # alternating pairs per relay; the issue asks for at least 5
    latency_samples: int = 200
    levels: tuple[int, ...] = (1, 16, 128, 512)
    level_tokens: int = 100
    peer_tokens: int = 2_000
    peer_rounds: int = 5
    peer_latency_samples: int = 40
    peer_streams: int = 16
    real_tokens: int = 256
    real_rounds: int = 5
    workers_streams: int = 128
    workers_rounds: int = 6  # 3 alternating pairs


QUICK = Sizes(
    decode_events=2_000,
    decode_rounds=2,
    relay_tokens=200,
    relay_rounds=3,
    latency_samples=20,
    levels=(1, 16),
    level_tokens=20,
    peer_tokens=100,
    peer_rounds=2,
    peer_latency_samples=5,
    real_tokens=64,
    real_rounds=2,
    workers_streams=16,
    workers_rounds=2,
)


class Runner:
    """Runs the chosen sections, starting each process once, on first need, and stopping all at the end."""

    def __init__(self, sizes: Sizes, stack_: ExitStack, results: dict[str, Any]) -> None:
        self.sizes = sizes
        self.stack = stack_
        self.services: dict[str, Service] = {}
        self._redis: str | None = None
        self.results = results  # the sections run so far (the profile scales by the relay's figures)

    def _service(self, key: str, make: Callable[[], Service]) -> Service:
        if key not in self.services:
            say(f"starting {key}")
            self.services[key] = self.stack.enter_context(make())
        return self.services[key]

    def simulator(self) -> Service:
        tokens = max(self.sizes.relay_tokens, self.sizes.level_tokens, self.sizes.peer_tokens)
        return self._service("simulator", lambda: stack.simulator(tokens, max(self.sizes.levels)))

    def orchestrator(self, api: str = "native") -> Service:
        """The orchestrator relaying the simulator on its `native` (/completion) or `openai` route."""
        streams = max(self.sizes.levels)
        engine = self.simulator().base_url
        key = "orchestrator" if api == "native" else f"orchestrator ({api} route)"
        return self._service(key, lambda: stack.orchestrator(engine, streams=streams, api=api))

    def byte_proxy(self) -> Service:
        engine = self.simulator().base_url
        return self._service("byte proxy", lambda: stack.byte_proxy(engine))

    def run(self, section: str) -> dict[str, Any]:
        sz = self.sizes
        if section == "decoding":
            return decoding.run(sz.decode_events, sz.decode_rounds)
        if section == "relay":
            sim, proxy, orch = self.simulator(), self.byte_proxy(), self.orchestrator()
            return asyncio.run(
                relay.run(
                    sim.port,
                    (proxy.port, proxy.pid),
                    (orch.port, orch.pid),
                    tokens=sz.relay_tokens,
                    rounds=sz.relay_rounds,
                    latency_samples=sz.latency_samples,
                )
            )
        if section == "concurrency":
            orch = self.orchestrator()
            return asyncio.run(concurrency.run(orch.port, orch.pid, levels=list(sz.levels), tokens=sz.level_tokens))
        if section == "peer":
            return self._peer()
        if section == "cluster":
            return self._cluster()
        if section == "workers":
            return self._workers()
        if section == "profile":
            return self._profile()
        return self._real()

    def _profile(self) -> dict[str, Any]:
        relayed = self.results.get("relay", {}).get("throughput", {})
        unprofiled = {
            surface: relayed[surface]["cpu_us_per_token"]
            for surface in profile.SURFACES
            if "cpu_us_per_token" in relayed.get(surface, {})
        }
        sz = self.sizes
        return profile.run(
            self.simulator().base_url, tokens=sz.relay_tokens, rounds=sz.relay_rounds, unprofiled=unprofiled
        )

    def redis(self) -> str:
        """The throwaway Redis of the scale-out sections (database 0; others for the workers section)."""
        if self._redis is None:
            say("starting redis-server")
            self._redis = self.stack.enter_context(stack.redis_server())
        return self._redis

    def _workers(self) -> dict[str, Any]:
        sz = self.sizes
        engine, base = self.simulator().base_url, self.redis().rsplit("/", 1)[0]
        groups = {n: self._served(engine, n, f"{base}/{n}") for n in (1, 2)}
        return asyncio.run(
            workers.run(
                {n: (s.port, s.pid) for n, s in groups.items()},
                streams=sz.workers_streams,
                tokens=sz.level_tokens,
                rounds=sz.workers_rounds,
            )
        )

    def _served(self, engine: str, n: int, state_url: str) -> Service:
        streams = self.sizes.workers_streams
        return self._service(
            f"serve --workers {n}", lambda: stack.served(engine, workers=n, streams=streams, state_url=state_url)
        )

    def _cluster(self) -> dict[str, Any]:
        sz = self.sizes
        engine, memory = self.simulator().base_url, self.orchestrator()
        state_url = self.redis()
        streams = max(sz.levels)  # the in-memory instance's admission limits: like for like
        redis = [
            self._service(
                f"orchestrator {name} (Redis)",
                lambda: stack.orchestrator(engine, streams=streams, state_url=state_url),
            )
            for name in ("A", "B")
        ]
        return asyncio.run(
            cluster.run(
                (memory.port, memory.pid),
                ((redis[0].port, redis[0].pid), (redis[1].port, redis[1].pid)),
                tokens=sz.relay_tokens,
                rounds=sz.relay_rounds,
                latency_samples=sz.latency_samples,
            )
        )

    def _peer(self) -> dict[str, Any]:
        sz = self.sizes
        sim, proxy, orch = self.simulator(), self.byte_proxy(), self.orchestrator("openai")
        binary = ensure_litellm()
        litellm = self._service("litellm", lambda: stack.litellm(binary, sim.base_url))
        return asyncio.run(
            peer.run(
                sim.port,
                (proxy.port, proxy.pid),
                (orch.port, orch.pid),
                (litellm.port, litellm.pid),
                version=LITELLM_VERSION,
                tokens=sz.peer_tokens,
                rounds=sz.peer_rounds,
                latency_samples=sz.peer_latency_samples,
                streams=sz.peer_streams,
            )
        )

    def _real(self) -> dict[str, Any]:
        # Imported here: the tiny model writer needs gguf/numpy (dev tools), the other sections do not.
        from llama_orch_devtools.llamacpp_build import ensure_llama_server
        from llama_orch_devtools.tiny_gguf import write_tiny_model

        binary = ensure_llama_server(progress=say)
        probe = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
        version = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in (probe.stdout + probe.stderr).splitlines()
                if ln.startswith("version:")
            ),
            "unknown",
        )
        scratch = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-real-")))
        model = write_tiny_model(scratch / "tiny.gguf")
        engine = self._service("llama-server", lambda: stack.llama_server(binary, model))
        orch = self._service("orchestrator (llama-server)", lambda: stack.orchestrator(engine.base_url, streams=4))
        sz = self.sizes
        return asyncio.run(
            real_engine.run(engine.port, orch.port, tokens=sz.real_tokens, rounds=sz.real_rounds, version=version)
        )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python xtask.py bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run (small sizes, concurrency 1 and 16 only)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="output directory (default bench/results)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="add the profile section: the orchestrator under cProfile, µs per token by stage of the hot path",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = QUICK if args.quick else Sizes()
    results: dict[str, Any] = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": report.machine(),
        "sizes": {name: getattr(sizes, name) for name in sizes.__dataclass_fields__},
        "sections": {},
        "skipped": {},
    }
    chosen = [*(args.only or DEFAULT_SECTIONS), *(["profile"] if args.profile else [])]
    results["load"] = {}
    with ExitStack() as processes:
        runner = Runner(sizes, processes, results["sections"])
        for section in [s for s in SECTIONS if s in chosen]:
            say(f"== {section}")
            watch = LoadWatch()
            try:
                with watch:
                    results["sections"][section] = runner.run(section)
            except Exception as exc:  # one broken section must not cost the figures of the others
                say(traceback.format_exc())
                results["skipped"][section] = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
            results["load"][section] = watch.figures
            say(f"load during {section}: {watch.figures}")
    results["targets"] = report.targets(results["sections"])
    for target in results["targets"]:
        verdict = "met" if target["met"] else "MISSED"
        say(f"target {target['name']}: {target['measured']} (wanted {target['target']}) {verdict}")
    for path in report.write(results, args.out):
        sys.stdout.write(f"{path}\n")
    return 1 if results["skipped"] and not results["sections"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
