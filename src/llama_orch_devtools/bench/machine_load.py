"""How busy the machine was while a section ran, and how much of that was the bench itself.

Other work on a shared 2-core machine skews every figure (both sides of a pair alike, the ratios less): the report
says, per section, the load average seen, how many cores were busy on the whole machine (/proc/stat) and how many
of those the bench's own processes used (/proc/PID/stat), so "others" is what the rest of the machine took.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> tuple[float, float]:
    """(busy CPU seconds, elapsed CPU seconds) of all cores since boot, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) * _TICK_S, total * _TICK_S


def process_cpu_s(pid: int) -> float:
    """CPU seconds of one process, all its threads, at nanosecond resolution (/proc/PID/task/*/schedstat: the
    scheduler's own run time; /proc/PID/stat counts in 10 ms ticks, too coarse for one stream). 0 once it is gone."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (the bench's services and their own workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))  # field 4 of proc(5): the parent
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class LoadWatch:
    """A context manager sampling, every `period_s` while the body runs, the 1-minute load average and the CPU
    time of this process and all its descendants; on exit `figures` holds the load seen and the cores used by the
    whole machine, by the bench and by everything else."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.figures: dict[str, Any] = {}
        self._samples: list[float] = []
        # Last CPU seconds seen per bench process: a process that ends mid-section (a profiled orchestrator)
        # still counts with what it had used at its last sample.
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            self._samples.append(os.getloadavg()[0])
            self._update()

    def _update(self) -> None:
        for pid in descendants(os.getpid()):
            if cpu := process_cpu_s(pid):
                self._cpu[pid] = cpu

    def __enter__(self) -> LoadWatch:
        self._update()
        self._start = (time.monotonic(), machine_busy_s(), dict(self._cpu))
        self._samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        began, (busy0, _), ours0 = self._start
        wall = time.monotonic() - began
        self._update()
        busy1, _ = machine_busy_s()
        # Processes started during the body (a service on first need) count from 0.
        ours = sum(cpu - ours0.get(pid, 0.0) for pid, cpu in self._cpu.items())
        machine = (busy1 - busy0) / wall if wall > 0 else 0.0
        bench = ours / wall if wall > 0 else 0.0
        self.figures = {
            "wall_s": round(wall, 1),
            "load_avg_1m": {
                "min": round(min(self._samples), 2),
                "median": round(statistics.median(self._samples), 2),
                "max": round(max(self._samples), 2),
            },
            "busy_cores": round(machine, 2),
            "bench_cores": round(bench, 2),
            # What the rest of the machine took meanwhile (other engineers' work); never below 0 from rounding.
            "other_cores": round(max(machine - bench, 0.0), 2),
        }
