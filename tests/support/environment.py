"""Test environment hygiene shared by the test packages' conftest files."""

from __future__ import annotations

import os

import pytest

_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's proxy settings never reach adapter and service tests: `serve` refuses engines a proxy would
    apply to (README, Reliability), and the tests that need the variables set them themselves. (Tests that install
    packages keep them.)"""
    for name in [name for name in os.environ if name.lower() in _PROXY_VARIABLES]:
        monkeypatch.delenv(name)
