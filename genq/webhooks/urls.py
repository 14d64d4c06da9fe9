"""Which webhook URLs the service may call: syntax, and where the host really points.

A webhook makes the service send requests to an address a client chose, so without a check a client
could reach the service's own network (server-side request forgery). A URL is refused when it is not
plain http(s), carries credentials, or its host is, or resolves to, an address that is loopback,
private, link-local, multicast, reserved, unspecified or otherwise not globally routable (IPv4 and
IPv6, including IPv6 forms that embed an IPv4 address) — unless the configured `AllowList` names the
host or a network holding the address. The check runs when a job is submitted and again, on the
addresses actually connected to, at every delivery (see `deliver.py`), because a name can be made to
resolve elsewhere later (DNS rebinding).
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from genq.webhooks.errors import WebhookValidationError

FIELD = "webhook"
MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# NAT64's well-known prefix: on an IPv6-only network a gateway turns 64:ff9b::a.b.c.d into a.b.c.d.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# A DNS name: dot-separated labels of letters, digits and inner hyphens (non-ASCII names come as punycode).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class WebhookURLError(WebhookValidationError):
    """A webhook URL is refused. `code` is `webhook_url_invalid` (not a usable http(s) URL),
    `webhook_url_forbidden` (points at an address not allowed) or `webhook_url_unresolvable`."""

    def __init__(self, code: str, message: str):
        super().__init__(FIELD, code, message)


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks a webhook may reach although they are not public (e.g. 127.0.0.1 in tests)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_config(cls, value: str | None) -> AllowList:
        """Parse a comma-separated list of IP addresses, CIDR networks and host names.

        Example: "127.0.0.1,10.0.0.0/8,::1,example.internal". Empty or None allows nothing extra.
        A network with host bits set ("10.0.0.1/8") is refused as a likely typo.
        """
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in (value or "").split(","):
            entry = raw.strip()
            if not entry:
                continue
            literal = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
            try:
                networks.append(_normalize_network(ipaddress.ip_network(literal, strict=True)))
                continue
            except ValueError as e:
                if "/" in literal or ":" in literal:
                    raise ValueError(
                        f"webhook allow-list entry {entry!r} is not a valid address or network: {e}") from None
            name = _normalize_hostname(entry)
            if name is None:
                raise ValueError(f"webhook allow-list entry {entry!r} is not an address, network or host name")
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        """Whether the host name itself is allowed (then whatever it resolves to is trusted)."""
        return _normalize_hostname(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        """Whether the address lies in an allowed network (IPv4-mapped IPv6 counts as its IPv4 address)."""
        address = _unmap(address)
        return any(address in network for network in self.networks)


def is_forbidden_address(address: IPAddress) -> bool:
    """Whether an address is not a public unicast one, seen through IPv6 forms embedding IPv4."""
    address = _unmap(address)
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64:  # stands for its low 32 bits; some Pythons call the whole prefix reserved
            return is_forbidden_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        embedded = address.sixtofour  # 2002:AABB:CCDD::/48 carries IPv4 AA.BB.CC.DD
        if embedded is not None and is_forbidden_address(embedded):
            return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        # The catch-all: shared address space (100.64/10), documentation and benchmark ranges, ...
        or not address.is_global
    )


def check_url_syntax(url: str, allow: AllowList) -> SplitResult:
    """Check the URL without resolving its host; return it split. Raises WebhookURLError.

    An IP-literal host is checked against the address rules here; a host name only by
    `check_resolved`, since that needs the resolver.
    """
    if not isinstance(url, str):
        raise WebhookURLError("webhook_url_invalid", "must be a string")
    if not url or len(url) > MAX_URL_LENGTH:
        raise WebhookURLError("webhook_url_invalid", f"must be 1..{MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise WebhookURLError("webhook_url_invalid", "must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when not a number in 0..65535
    except ValueError as e:
        raise WebhookURLError("webhook_url_invalid", f"cannot be parsed: {e}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise WebhookURLError("webhook_url_invalid", "scheme must be http or https")
    if "@" in parts.netloc:
        raise WebhookURLError("webhook_url_invalid", "must not carry credentials (user:password@)")
    if not parts.hostname:
        raise WebhookURLError("webhook_url_invalid", "must name a host")
    if port == 0:
        raise WebhookURLError("webhook_url_invalid", "port must be 1..65535")
    address = _ip_literal(parts.hostname)
    if address is None:
        if _normalize_hostname(parts.hostname) is None:
            raise WebhookURLError("webhook_url_invalid", f"host {parts.hostname!r} is not a valid host name")
    elif is_forbidden_address(address) and not allow.allows_address(address):
        raise WebhookURLError("webhook_url_forbidden", f"address {address} is not a public address")
    return parts


def check_resolved(host: str, port: int, allow: AllowList) -> list[IPAddress]:
    """Resolve `host` with the system resolver and check every address it gives.

    Returns the addresses, in the resolver's order, to connect to. Refuses the host if ANY address is
    forbidden (a name resolving to both a public and a private address could be steered to the
    private one). Raises WebhookURLError, or socket.gaierror when the name does not resolve.
    """
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    # Resolve as urllib3 will connect: without the root's trailing dot ("localhost." is "localhost").
    host = host.rstrip(".")
    forbidden_ok = allow.allows_host(host)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        # sockaddr[0] of an IPv6 link-local result may carry a zone ("fe80::1%eth0").
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not forbidden_ok and is_forbidden_address(address) and not allow.allows_address(address):
            raise WebhookURLError(
                "webhook_url_forbidden", f"host {host!r} resolves to {address}, which is not a public address"
            )
        if address not in addresses:
            addresses.append(address)
    return addresses


def validate_webhook_url(url: str, allow: AllowList) -> None:
    """Check a client's webhook URL at submission: syntax, then every address its host resolves to.

    Raises WebhookURLError: `webhook_url_invalid`, `webhook_url_forbidden`, or
    `webhook_url_unresolvable` when the system resolver cannot resolve the host.
    """
    parts = check_url_syntax(url, allow)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        check_resolved(parts.hostname or "", port, allow)
    except socket.gaierror as e:
        raise WebhookURLError("webhook_url_unresolvable", f"host {parts.hostname!r} does not resolve: {e}") from None


def _unmap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _normalize_network(network: IPNetwork) -> IPNetwork:
    # ::ffff:10.0.0.0/104 means 10.0.0.0/8; addresses are unmapped before matching, so networks must be too.
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _normalize_hostname(host: str) -> str | None:
    """Lower-cased name without a trailing dot, or None when it is not a DNS name."""
    name = host.lower()
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name
