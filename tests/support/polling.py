"""Polling for a condition in tests: a bound to wait within, never a speed assertion."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.02) -> bool:
    """True once `predicate()` is truthy, False when `timeout_s` passed first."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True
