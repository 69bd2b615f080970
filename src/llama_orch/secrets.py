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
    if token != token.strip() or any(c in token for c in "\r\n\x00"):
        # It becomes a header value: a line break would start a second header line on the wire.
        raise ConfigError(
            f"{owner}: environment variable {variable} holds a line break, NUL or surrounding whitespace; "
            "a bearer token must be one line"
        )
    return token
