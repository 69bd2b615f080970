"""Secrets come from environment variables named in the configuration, never from the configuration itself."""

from __future__ import annotations

import os
import re

from llama_orch.errors import ConfigError

__all__ = ["token_from_env"]

_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but TAB


def token_from_env(variable: str | None, owner: str) -> str | None:
    """The value of `variable` (None when no variable is configured); `ConfigError` when it is named but unset."""
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise ConfigError(f"{owner}: environment variable {variable} is not set")
    if _UNSAFE.search(token):
        # The token goes into a header line: a line break would inject headers. Never echo the value.
        raise ConfigError(f"{owner}: environment variable {variable} holds a control character (CR, LF, NUL, ...)")
    return token
