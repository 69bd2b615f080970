"""How one replica reaches its engine: the TLS context of an https:// engine (CA bundle, client certificate for
mutual TLS, verification off only when asked and never quietly), and the refusal of proxy settings the engine
transport does not follow (it connects to engines directly)."""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from llama_orch_gen.contracts.config import ReplicaConfig

from llama_orch.errors import ConfigError

__all__ = ["check_direct", "tls_context"]

logger = logging.getLogger("llama_orch.adapters")


def tls_context(replica: ReplicaConfig) -> ssl.SSLContext | None:
    """The replica's TLS context; None for a plain http:// engine without TLS settings (nothing to configure).
    Unreadable files are a `ConfigError` naming the replica and the file, raised at startup."""
    tls = replica.tls
    if tls is None:
        return ssl.create_default_context() if replica.base_url.startswith("https://") else None
    owner = f"replica {replica.id!r}"
    if not replica.base_url.startswith("https://"):
        raise ConfigError(
            f"{owner}: tls is set but {replica.base_url} is not an https:// URL (it would be sent in clear)"
        )
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{owner}: cannot load the CA bundle {tls.ca_file}: {exc}") from None
    if tls.client_cert_file is not None:
        try:
            context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{owner}: cannot load the client certificate {tls.client_cert_file}: {exc}") from None
    elif tls.client_key_file is not None:
        raise ConfigError(f"{owner}: tls.client_key_file needs tls.client_cert_file")
    if tls.verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        logger.warning(
            "TLS VERIFICATION IS OFF for %s (%s): any certificate is accepted, so anyone on the path can read and "
            "change its traffic; set tls.ca_file instead",
            owner,
            replica.base_url,
        )
    return context


def check_direct(replica: ReplicaConfig, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse, at startup, a proxy variable that would apply to this engine: the engine transport connects
    directly, so a proxy the operator relies on would be bypassed silently. Loopback engines and hosts matched by
    `NO_PROXY` are direct anyway."""
    lowered = {key.lower(): value for key, value in environ.items() if value}
    scheme = urlsplit(replica.base_url).scheme
    proxy = lowered.get(f"{scheme}_proxy") or lowered.get("all_proxy")
    if not proxy:
        return
    host = urlsplit(replica.base_url).hostname or ""
    if _loopback(host) or _no_proxy(host, lowered.get("no_proxy", "")):
        return
    variable = next(name.upper() for name in (f"{scheme}_proxy", "all_proxy") if lowered.get(name))
    raise ConfigError(
        f"replica {replica.id!r}: {variable} is set, but engines are reached directly, never through a proxy; "
        f"add {host} to NO_PROXY (or unset {variable}) to confirm a direct connection"
    )


def _no_proxy(host: str, no_proxy: str) -> bool:
    """curl's reading of NO_PROXY: `*`, or a comma-separated list of host names (matching the host and its
    subdomains, a leading dot optional), IP addresses or CIDR ranges; a `:port` suffix is ignored."""
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if entry == "*":
            return True
        if not entry:
            continue
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry.strip("[]"), strict=False):
                return True
            continue
        except ValueError:
            pass
        name = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        name = name.lstrip(".")
        if host.lower() == name or host.lower().endswith("." + name):
            return True
    return False


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
