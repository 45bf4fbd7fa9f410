"""The client address rate limits count by: the peer, or X-Forwarded-For from a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# An IPv6 host is usually given a whole /64 and can pick any address in it at will, so a limit
# keyed by the full address would be one limit per request for whoever wants it.
IPV6_BUCKET_PREFIX = 64

UNKNOWN = "unknown"


def parse_address(value: str) -> IPAddress | None:
    """An address as a proxy writes it into X-Forwarded-For: bare, ``[v6]``, ``v4:port`` or
    ``[v6]:port``; an IPv4-mapped IPv6 address is the IPv4 address. ``None`` if malformed."""
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not text[end + 1 :].startswith(":")):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; an IPv6 address has at least two colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def forwarded_for_entries(values: Iterable[str]) -> list[str]:
    """Every hop of every X-Forwarded-For field, in order (several fields form one list)."""
    return [entry for value in values for entry in value.split(",") if entry.strip()]


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted_proxies: Sequence[IPNetwork]
) -> IPAddress | None:
    """The address of the client that sent the request.

    X-Forwarded-For is read only when the peer itself is a trusted proxy, and then from the right:
    each trusted proxy appends the address it received the request from, so the right-most
    address that is not a trusted proxy is the first one nobody trusted wrote for us, and anything
    to its left is whatever the client chose to send. When every hop is trusted, the left-most is
    the client. A malformed hop ends the walk at the last address a trusted proxy vouched for.
    """
    address = parse_address(peer) if peer else None
    if address is None or not trusted_proxies or not _trusted(address, trusted_proxies):
        return address
    for entry in reversed(forwarded_for_entries(forwarded_for)):
        hop = parse_address(entry)
        if hop is None:
            return address
        address = hop
        if not _trusted(hop, trusted_proxies):
            return hop
    return address


def address_bucket(address: IPAddress | None) -> str:
    """The key a per-address limit counts under: an IPv4 address, or an IPv6 address's /64."""
    if address is None:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_BUCKET_PREFIX), strict=False)
        return str(network)
    return str(address)
