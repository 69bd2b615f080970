"""TLS to engines, per replica: a private CA bundle, a client certificate for mutual TLS, or (loudly) no
verification at all."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from llama_orch_gen.contracts.config import TlsConfig

from llama_orch.errors import ConfigError

__all__ = ["tls_context"]

logger = logging.getLogger("llama_orch.adapters")


def tls_context(config: TlsConfig | None, owner: str) -> ssl.SSLContext | None:
    """The context for `owner`'s engine connections; None: the system's defaults. Unreadable files are a
    `ConfigError` naming the field, at startup."""
    if config is None:
        return None
    for field in ("ca_bundle", "client_cert", "client_key"):
        path = getattr(config, field)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{owner}: tls.{field} {path!r} is not a readable file")
    try:
        context = ssl.create_default_context(cafile=config.ca_bundle)
        if config.client_cert is not None:
            context.load_cert_chain(config.client_cert, config.client_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{owner}: cannot load its TLS files: {exc}") from None
    if config.verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        logger.warning("%s: TLS certificate verification is OFF (tls.verify: false); use only for testing", owner)
    return context
