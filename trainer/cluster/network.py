"""Is the cluster address on a private network? Ray's client and dashboard ports have no authentication."""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CGNAT = ipaddress.ip_network("100.64.0.0/10")

PUBLIC_WARNING = (
    "The Ray cluster address %s resolves to %s, which is not on a private network. Ray's client and dashboard "
    "ports have no authentication and photos travel to the nodes: keep the cluster on a LAN or a VPN "
    "(README: Scaling out)."
)


def cluster_host(address: str) -> str | None:
    """The host of `ray://host:port` or `host:port`; None for `auto` / `local` (the machine's own cluster)."""
    if address.strip().lower() in ("auto", "local", ""):
        return None
    parsed = urlsplit(address if "://" in address else f"ray://{address}")
    return parsed.hostname


def is_private_host(host: str) -> bool:
    """True when every address the host resolves to is loopback, link-local, private or a VPN range."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(_is_private(ipaddress.ip_address(text.split("%")[0])) for text in addresses)


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.version == 4 and address in CGNAT:
        return True  # carrier-grade NAT range, used by Tailscale and other VPNs
    return address.is_private or address.is_loopback or address.is_link_local


def warn_if_public(address: str) -> bool:
    """Log a warning when the address is not on a private network; returns whether it warned."""
    host = cluster_host(address)
    if host is None or is_private_host(host):
        return False
    log.warning(PUBLIC_WARNING, address, host)
    return True
