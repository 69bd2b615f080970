"""Secrets come from environment variables named in the configuration, never from the configuration itself."""

from __future__ import annotations

import os

from llama_orch.errors import ConfigError

__all__ = ["token_from_env"]


def token_from_env(variable: str | None, owner: str) -> str | None:
    """The value of `variable` (None when no variable is configured); `ConfigError` when it is named but unset."""
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise ConfigError(f"{owner}: environment variable {variable} is not set")
    return token
