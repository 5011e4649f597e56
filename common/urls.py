"""http(s) URLs parsed once, the way the HTTP client connects.

:func:`parse_http_url` reads a URL with urllib3 (what ``requests`` connects
with) and refuses anything another parser could read differently: credentials
go to Label Studio, and downloads to the hosts the guard allows, only when
every reader agrees on the scheme, host and port. :func:`same_origin` compares
two URLs by what receives the request.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

STANDARD_PORTS = {"http": 80, "https": 443}
"""The port a URL without one connects to, by scheme."""
_ABSOLUTE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)")
"""``scheme://authority`` at the start of a URL, as RFC 3986 splits it."""
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
"""A DNS name in ASCII (punycode for others), lower-case, no trailing dot."""
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
"""A last label that makes resolvers read the name as an IPv4 number."""


class UnsafeURLError(ValueError):
    """A URL that HTTP clients could read differently than our check does."""


@dataclass(frozen=True)
class HttpURL:
    """An http(s) URL parsed once, by the parser ``requests`` connects with.

    Attributes:
        url: the URL to send (re-serialised; path normalised, no fragment).
        scheme: ``http`` or ``https``.
        host: lower-case name, canonical dotted IPv4, or ``[v6]`` in brackets.
        port: the port connected to (the scheme's standard one when not given).
        port_given: the URL names its port.
    """

    url: str
    scheme: str
    host: str
    port: int
    port_given: bool

    @property
    def origin(self) -> tuple[str, str, int]:
        """Who receives the request: ``(scheme, host, port)``."""
        return self.scheme, self.host, self.port

    @property
    def where(self) -> str:
        """``host:port`` for messages and logs (never user-info or a token)."""
        return f"{self.host}:{self.port}"


def _refuse(url: str, why: str) -> UnsafeURLError:
    return UnsafeURLError(f"URL {url!r} refused: {why}")


def _check_host(url: str, host: str) -> None:
    """The host must be one thing to every resolver: no trailing dot, no
    numeric shorthand (``2130706433``, ``0x7f.1``), IPv6 in canonical form."""
    if host.startswith("["):
        inner = host[1:-1]
        try:
            canonical = str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise _refuse(url, f"bad IPv6 address {host!r}") from None
        if canonical != inner:
            raise _refuse(url, f"write the IPv6 address as [{canonical}]")
        return
    if not _HOST_NAME.match(host):
        raise _refuse(url, f"host {host!r} is not a plain ASCII name or address")
    if _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            canonical = ""
        if canonical != host:
            raise _refuse(url, f"host {host!r} is not a dotted IPv4 address a.b.c.d")


def parse_http_url(url: str) -> HttpURL:
    """Parse an http(s) URL with urllib3 (what ``requests`` connects with) and
    refuse anything another parser could read differently.

    Refused: other schemes, control characters, a backslash before the query,
    user-info (``user@``), an empty host, and an authority that does not
    re-serialise to itself (percent-encoding, non-ASCII, trailing dot, empty
    or zero-padded port, numeric IPv4 shorthand, non-canonical IPv6).

    Raises:
        UnsafeURLError: names the URL and the part refused.
    """
    if not isinstance(url, str):
        raise UnsafeURLError(f"a URL must be a string, got {url!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise _refuse(url, "it contains a control character (tab, newline, ...)")
    match = _ABSOLUTE.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme not in STANDARD_PORTS:
        raise _refuse(url, "only absolute http:// and https:// URLs are fetched")
    authority = match.group(2)
    if "\\" in url.split("?", 1)[0].split("#", 1)[0]:
        raise _refuse(url, "it contains a backslash before the query")
    if "@" in authority:
        raise _refuse(url, "user-info (user@) in a URL is not allowed")
    try:
        parsed = parse_url(url)
    except LocationParseError as exc:
        raise _refuse(url, str(exc)) from None
    host = parsed.host or ""
    if not host:
        raise _refuse(url, "it has no host")
    rebuilt = host if parsed.port is None else f"{host}:{parsed.port}"
    if parsed.auth is not None or rebuilt != authority.lower():
        raise _refuse(url, f"its host part {authority!r} does not read back the same")
    _check_host(url, host)
    if parsed.port == 0:
        raise _refuse(url, "port 0")
    return HttpURL(
        url=parsed._replace(fragment=None).url,
        scheme=scheme,
        host=host,
        port=parsed.port or STANDARD_PORTS[scheme],
        port_given=parsed.port is not None,
    )


def same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` goes to the Label Studio at ``base_url``: same scheme,
    host and port, both parsed as the HTTP client does (False if either is
    not a safe http(s) URL)."""
    if not base_url:
        return False
    try:
        return parse_http_url(url).origin == parse_http_url(base_url).origin
    except UnsafeURLError:
        return False
