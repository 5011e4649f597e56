"""Which hosts plain http(s) image downloads may reach (the SSRF guard).

``REXLABEL_ALLOWED_HOSTS`` entries (:func:`parse_allowed_hosts`), matched by
:class:`HostGuard` against URLs parsed as the HTTP client connects
(``common.urls``); hosts allowed only through ``*`` must resolve to public
addresses (:func:`is_public_address`). Reads no settings: ``common.settings``
checks the variable with :func:`parse_allowed_hosts`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from common.images.errors import ImageFetchError, ImageRefused
from common.urls import (
    STANDARD_PORTS,
    HttpURL,
    UnsafeURLError,
    parse_http_url,
    same_origin,
)

Resolver = Callable[[str], list[str]]
"""Host name -> its addresses (tests pass their own)."""


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to (what the HTTP client may connect to)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class AllowedHost:
    """One ``REXLABEL_ALLOWED_HOSTS`` entry: a host (or ``*.suffix``) and port.

    ``port`` None means the scheme's standard port (80 for http, 443 for
    https); ``suffix`` makes ``host`` match its subdomains (not itself).
    """

    host: str
    port: int | None = None
    suffix: bool = False

    def matches(self, url: HttpURL) -> bool:
        if self.suffix:
            if not url.host.endswith("." + self.host):
                return False
        elif url.host != self.host:
            return False
        return url.port == (self.port or STANDARD_PORTS[url.scheme])


ANY_PUBLIC_HOST = "*"
"""The allowed-hosts entry for any host (public addresses only, any port)."""


def _allowed_entry(entry: str) -> AllowedHost:
    """``host``, ``host:port``, ``*.suffix[:port]`` or ``[v6][:port]``."""
    suffix = entry.startswith("*.")
    authority = entry[2:] if suffix else entry
    try:
        parsed = parse_http_url(f"http://{authority}/")
    except UnsafeURLError:
        parsed = None
    if parsed is None or "/" in authority:
        raise ValueError(
            f"REXLABEL_ALLOWED_HOSTS entry {entry!r} is not host, host:port, "
            "*.suffix, *.suffix:port or *"
        )
    return AllowedHost(parsed.host, parsed.port if parsed.port_given else None, suffix)


def parse_allowed_hosts(
    raw: str | list[str] | tuple[str, ...] | None,
) -> tuple[str, ...]:
    """``"a.com, *.b.org:8443, *"`` -> ``("a.com", "*.b.org:8443", "*")``
    (lower-case); ValueError names an entry that is not host[:port],
    *.suffix[:port] or *."""
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    entries = tuple(item.strip().lower() for item in items if item.strip())
    for entry in entries:
        if entry != ANY_PUBLIC_HOST:
            _allowed_entry(entry)
    return entries


class HostGuard:
    """Decides which hosts plain http(s) downloads may reach (SSRF guard).

    Allowed: Label Studio (LABEL_STUDIO_URL's scheme, host and port), and
    ``allowed`` entries: ``host`` (the scheme's standard port only),
    ``host:port``, ``*.suffix[:port]``, or ``*`` for any public host on any
    port. A host named explicitly (or Label Studio) may be private or
    loopback; one allowed only through ``*`` must resolve to public addresses
    alone. URLs are parsed by :func:`parse_http_url` (what the HTTP client
    connects to). The check resolves the name once before the request (a DNS
    answer that changes between the check and the connection is not caught).
    """

    def __init__(
        self,
        allowed: tuple[str, ...] = (),
        label_studio_url: str = "",
        resolver: Resolver = resolve_host,
    ) -> None:
        self.allowed = allowed
        self._entries = tuple(
            _allowed_entry(e) for e in allowed if e != ANY_PUBLIC_HOST
        )
        self.label_studio_url = label_studio_url
        self._resolver = resolver

    def check(self, url: str) -> HttpURL:
        """The parsed ``url`` if it may be downloaded; else ImageRefused."""
        parsed = self._parse(url)
        if self._named(parsed):
            return parsed
        if ANY_PUBLIC_HOST not in self.allowed:
            raise ImageRefused(
                f"downloads from {parsed.where} are not allowed: only Label Studio "
                f"(LABEL_STUDIO_URL) and REXLABEL_ALLOWED_HOSTS "
                f"({', '.join(self.allowed) or 'empty'}; a host without :port "
                "means port 80/443)"
            )
        self._check_public(parsed)
        return parsed

    def check_redirect(self, url: str) -> HttpURL:
        """The parsed target of a redirect Label Studio answered (a presigned
        cloud URL): Label Studio, an allowed entry, or any host resolving to
        public addresses only -- never an internal one that is not named (an
        open redirect must not reach a metadata service or a private port).
        MinIO on a private network: name it in REXLABEL_ALLOWED_HOSTS."""
        parsed = self._parse(url)
        if not self._named(parsed):
            self._check_public(parsed)
        return parsed

    @staticmethod
    def _parse(url: str) -> HttpURL:
        try:
            return parse_http_url(url)
        except UnsafeURLError as exc:
            raise ImageRefused(str(exc)) from None

    def _named(self, parsed: HttpURL) -> bool:
        """Label Studio's own origin, or an allowed entry's host and port."""
        return same_origin(parsed.url, self.label_studio_url) or any(
            entry.matches(parsed) for entry in self._entries
        )

    def _check_public(self, parsed: HttpURL) -> None:
        host = parsed.host.strip("[]")
        try:
            addresses = self._resolver(host)
        except OSError as exc:
            raise ImageFetchError(f"cannot resolve {host!r}: {exc}") from None
        for address in addresses:
            if not is_public_address(address):
                raise ImageRefused(
                    f"{host!r} resolves to the non-public address {address}; name "
                    "it in REXLABEL_ALLOWED_HOSTS to allow it"
                )


NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""Well-known NAT64 prefix: the last 32 bits are the IPv4 address reached."""
LOCAL_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b:1::/48")
"""Local-use NAT64 (RFC 8215): the IPv4 address may sit anywhere; never public."""
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
"""Deprecated IPv4-compatible addresses (``::a.b.c.d``)."""


def is_public_address(address: str) -> bool:
    """Whether ``address`` is globally routable, and so is every IPv4 address
    it carries (NAT64, 6to4, Teredo, IPv4-mapped or -compatible): Python
    counts ``64:ff9b::7f00:1`` as global, yet NAT64 takes it to 127.0.0.1."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not ip.is_global:
        return False
    if ip.version == 4:
        return True
    if ip in LOCAL_NAT64_PREFIX:
        return False
    carried = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in NAT64_PREFIX or ip in IPV4_COMPATIBLE:
        carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return all(v4.is_global for v4 in carried if v4 is not None)
