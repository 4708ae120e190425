"""Where an alert channel may send: URL checks when a channel is saved, and again on the resolved address.

A channel's URL is checked twice. When it is saved (model clean(), the admin, add_alert_channel): https,
a host, no credentials in it, and no address or name that is refused outright. When a message is sent:
the host is resolved, every address it resolves to is checked, and the request goes to that checked
address (the host name kept for TLS and the Host header), so a name that re-resolves to a cloud metadata
address between the check and the connect (DNS rebinding) reaches nothing.

Refused always: link-local addresses (169.254.0.0/16, fe80::/10, where cloud metadata lives), the known
metadata hosts, unspecified, multicast and reserved addresses. Refused unless DEBUG or
ALERT_CHANNEL_ALLOW_LOCAL: plain http, and loopback or private addresses (a receiver on our own network).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)


class TargetError(ValueError):
    """A channel URL we will not send to; the message says why and never repeats the URL's path."""


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """A checked URL rewritten to the checked address, with the host name TLS and Host must carry."""

    url: str
    host_header: str
    tls_hostname: str | None


def allow_local() -> bool:
    return bool(settings.DEBUG or settings.ALERT_CHANNEL_ALLOW_LOCAL)


def check_url(url: str) -> None:
    """What can be checked without DNS: scheme, host, no credentials, no refused address or name."""
    parts = _split(url)
    if parts.scheme not in ("https", "http"):
        raise TargetError("The URL must start with https://.")
    if parts.scheme == "http" and not allow_local():
        raise TargetError(
            "Only https:// URLs are allowed (http only with DEBUG or ALERT_CHANNEL_ALLOW_LOCAL)."
        )
    if not parts.hostname:
        raise TargetError("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise TargetError("The URL must not carry credentials; give a secret with --secret instead.")
    host = parts.hostname.rstrip(".").lower()
    if host in METADATA_HOSTS:
        raise TargetError(f"{host} is a cloud metadata service; alerts are never sent there.")
    if host == "localhost" or host.endswith(".localhost"):
        _check_address(ipaddress.ip_address("127.0.0.1"), host)
    literal = _literal(host)
    if literal is not None:
        _check_address(literal, host)


def pin(url: str) -> PinnedTarget:
    """check_url(), then resolve the host, check every address and point the URL at the first one."""
    check_url(url)
    parts = _split(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = _literal(host)
    addresses = [literal] if literal is not None else _resolve(host, port)
    for address in addresses:
        _check_address(address, host)
    chosen = addresses[0]
    netloc = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
    tls_hostname = host if literal is None and parts.scheme == "https" else None
    return PinnedTarget(pinned, parts.netloc, tls_hostname)


def _split(url: str):  # noqa: ANN202 - urllib's SplitResult
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise TargetError("The URL cannot be parsed.") from None
    return parts


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetError(f"{host} does not resolve ({exc.strerror or type(exc).__name__}).") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in found]
    if not addresses:
        raise TargetError(f"{host} does not resolve.")
    return list(dict.fromkeys(addresses))


def _check_address(address: IpAddress, host: str) -> None:
    """Refuse metadata, link-local and unusable addresses; loopback and private ones unless allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    shown = host if str(address) == host else f"{host} ({address})"
    if address in METADATA_ADDRESSES:
        raise TargetError(f"{shown} is a cloud metadata address; alerts are never sent there.")
    if address.is_link_local:
        raise TargetError(f"{shown} is link-local; alerts are never sent there.")
    # ::1 counts as reserved too (::/8); it is loopback, which the next check handles.
    if address.is_unspecified or address.is_multicast or (address.is_reserved and not address.is_loopback):
        raise TargetError(f"{shown} is not an address a receiver can have.")
    if not address.is_global and not allow_local():
        raise TargetError(
            f"{shown} is a loopback or private address; allowed only with DEBUG or ALERT_CHANNEL_ALLOW_LOCAL."
        )
