"""Fixtures of every test in this package."""

from tests.support.environment import no_proxy_environment

__all__ = ["no_proxy_environment"]
