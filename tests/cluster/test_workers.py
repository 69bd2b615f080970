"""`llama-orch serve --workers N --state-url`: N worker processes on one port form one orchestrator. Any worker's
/metrics reports all of them; a worker killed -9 is replaced; SIGTERM drains every worker and leaves nothing behind.
Without `--state-url` the flag is refused (in-memory state cannot be shared)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.cluster.instances import GUARD_S, Process, frames, instance, one_terminal, pool_config
from tests.service.helpers import parse_metrics, total
from tests.support.engine_process import processes
from tests.support.polling import wait_for
from tests.support.redis_server import RedisServer


def _instance_ids(process: Process) -> set[str]:
    families = parse_metrics(httpx.get(f"{process.url}/metrics", timeout=GUARD_S).text)
    return {labels["instance_id"] for _, labels, value in families["instance_info"].samples if value}


def _workers(process: Process) -> list[int]:
    """The worker processes (multiprocessing's resource tracker is a child too, but not a worker)."""
    assert process.process is not None
    parent = process.process.pid
    return [pid for pid, ppid, command in processes() if ppid == parent and b"resource_tracker" not in command]


def test_two_workers_are_one_orchestrator(tmp_path: Path, engine: Process, redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    config = pool_config(tmp_path, engine.url, queue={"capacity": 8, "policy": "reject"})
    served = instance("W", config, redis_server.url, "--workers", "2")
    try:
        assert wait_for(lambda: len(_instance_ids(served)) == 2, 20.0), "two workers, each an instance"
        for n in range(6):
            answer = httpx.post(f"{served.url}/v1/tasks", json={"prompt": f"w{n}", "max_tokens": 3}, timeout=GUARD_S)
            assert answer.status_code == 202, answer.text
            with httpx.stream("GET", f"{served.url}/v1/tasks/{answer.json()['task_id']}/stream", timeout=GUARD_S) as s:
                assert one_terminal(list(frames(s))).event == "end"
        for _ in range(4):  # whichever worker answers the scrape, it counts every worker's tasks
            families = parse_metrics(httpx.get(f"{served.url}/metrics", timeout=GUARD_S).text)
            assert total(families, "tasks_finished_total", outcome="end") == 6

        workers = _workers(served)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        assert wait_for(lambda: len(set(_workers(served)) - {workers[0]}) == 2, 20.0), "the dead worker is replaced"
        assert wait_for(lambda: len(_instance_ids(served)) == 2, 20.0), "the dead worker left the scrape"
    finally:
        assert served.process is not None
        workers = _workers(served)
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 0, served.log_tail()
        served.close()
    assert not [p for p in workers if Path(f"/proc/{p}").exists()], "a worker outlived the server"


def test_workers_without_shared_state_are_refused(tmp_path: Path, engine: Process) -> None:
    config = pool_config(tmp_path, engine.url)
    args = [sys.executable, "-m", "llama_orch.cli", "serve", "--config", str(config), "--workers", "2"]
    answer = subprocess.run(args, capture_output=True, text=True, timeout=GUARD_S)
    assert answer.returncode == 2 and "--workers 2 needs --state-url" in answer.stderr, answer.stderr
