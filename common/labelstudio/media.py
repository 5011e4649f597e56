"""Label Studio media: where a task's image value points, and the auth header.

Two jobs, no image decoding (that is ``common.images``):

- :func:`resolve_media` turns a ``task.data`` value into a :class:`MediaLocation`:
  a file on disk, or the URL(s) to fetch and whether Label Studio's auth goes
  with them. Values Label Studio writes (label-studio-protocol.md, section 3)::

      /data/upload/<pid>/<hash>-f.jpg           upload (local storage)
      /storage-data/uploaded/?filepath=...      upload (cloud default storage)
      /data/local-files/?d=rel/path.jpg         local-files storage (or http://LS/...)
      s3://b/k, gs://b/k, azure-blob://c/k      cloud storage: presigned through LS
      http(s)://any.host/...                    imported URL; auth only for the LS host

- :class:`LabelStudioAuth` builds the ``Authorization`` header from a legacy
  token (``Token <t>``), a personal access token (a JWT *refresh* token,
  exchanged at ``POST /api/token/refresh/`` for a 5-minute access token that is
  cached and renewed before it expires; ``Bearer <access>``), or an access JWT
  used as it is.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

UPLOAD_PREFIX = "/data/upload/"
"""Path of files uploaded through Label Studio's import dialog."""
STORAGE_DATA_PREFIX = "/storage-data/"
"""Path Label Studio serves uploads from when its default storage is cloud."""
LOCAL_FILES_PATH = "/data/local-files/"
"""Path of Label Studio's local-files storage (``?d=<path under the root>``)."""
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
"""Cloud storage URIs Label Studio presigns for us (``/tasks/<id>/presign/``)."""
TOKEN_REFRESH_PATH = "/api/token/refresh/"
"""Where a personal access token (JWT refresh) is exchanged for an access token."""
ACCESS_TOKEN_LIFETIME_S = 300.0
"""Label Studio's access tokens live 5 minutes; used when the token has no ``exp``."""
ACCESS_TOKEN_MARGIN_S = 30.0
"""Renew this long before expiry so a download in flight never carries a dead token."""
TOKEN_EXCHANGE_TIMEOUT_S = 10.0
"""The refresh endpoint answers in milliseconds; longer means Label Studio is down."""


class MediaReferenceError(ValueError):
    """A task value cannot be turned into something to read; names the value."""


class TokenExchangeError(RuntimeError):
    """Label Studio refused or failed the token exchange; ``status``: HTTP code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MediaLocation:
    """Where the bytes of one image reference are.

    Attributes:
        path: read this file (local path, ``file://``, local-files with a
            document root); ``urls`` is then empty.
        urls: fetch the first of these that answers (uploads have a legacy
            and a storage-data address).
        label_studio: the URLs are Label Studio's: send its auth header, and
            trust its redirects (presigned cloud URLs).
        cache_key: a stable name for the content (the presigned URL changes on
            every request, the cloud URI does not).
        hide_reason: a local-files path read for a request over HTTP: any
            failure to read it is answered with LOCAL_FILE_UNREADABLE alone.
    """

    path: Path | None = None
    urls: tuple[str, ...] = ()
    label_studio: bool = False
    cache_key: str = ""
    hide_reason: bool = False


STANDARD_PORTS = {"http": 80, "https": 443}
"""The port a URL without one connects to, by scheme."""
_ABSOLUTE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)")
"""``scheme://authority`` at the start of a URL, as RFC 3986 splits it."""
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
"""A DNS name in ASCII (punycode for others), lower-case, no trailing dot."""
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
"""A last label that makes resolvers read the name as an IPv4 number."""


class UnsafeURLError(MediaReferenceError):
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


LOCAL_FILE_UNREADABLE = (
    "no readable image at this local-files path under LOCAL_FILES_DOCUMENT_ROOT"
)
"""The one answer, over HTTP, for a local-files path that is missing, a
directory, unreadable, not an image or a link out of the root: a request must
not learn which files exist."""
LOCAL_PATHS_REFUSED = (
    "local file paths and file URLs are read only by the command line; over "
    "HTTP put the image under LOCAL_FILES_DOCUMENT_ROOT and name it by its "
    "local-files URL (?d=<its path under that root>)"
)
"""Why a plain path in task data sent over HTTP is not read (whether or not
it exists)."""


def _local_files_relative(value: str) -> str:
    """The ``d=`` path of a local-files URL, decoded once, checked as text."""
    query = parse_qs(urlsplit(value).query, keep_blank_values=True)
    given = query.get("d") or []
    if len(given) != 1 or not given[0]:
        raise MediaReferenceError(
            f"local-files URL {value!r} needs exactly one non-empty ?d= path"
        )
    relative = given[0]
    if relative.startswith("/") or "\0" in relative:
        raise MediaReferenceError(
            f"local-files path {relative!r} must be relative to "
            "LOCAL_FILES_DOCUMENT_ROOT"
        )
    if ".." in relative.split("/"):
        raise MediaReferenceError(f"local-files path {relative!r} may not contain '..'")
    return relative


def _local_files_path(value: str, root: str) -> Path:
    """``/data/local-files/?d=rel`` under ``root``; a path whose real location
    (symlinks followed) leaves the root is refused with LOCAL_FILE_UNREADABLE,
    the same answer as a missing file."""
    relative = _local_files_relative(value)
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise MediaReferenceError(f"{value!r}: {LOCAL_FILE_UNREADABLE}")
    return path


def presign_url(label_studio_url: str, task_id: int, uri: str) -> str:
    """Label Studio's presign endpoint for a cloud ``uri`` of task ``task_id``."""
    encoded = base64.urlsafe_b64encode(uri.encode("utf-8")).decode("ascii")
    return f"{label_studio_url}/tasks/{task_id}/presign/?fileuri={quote(encoded)}"


def resolve_media(
    value: str,
    *,
    label_studio_url: str = "",
    task_id: int | None = None,
    local_files_root: str = "",
    local_paths: bool = False,
) -> MediaLocation:
    """Where to read the image a task value refers to.

    Args:
        value: the ``task.data`` value (or any path / URL a job names).
        label_studio_url: Label Studio's base URL; needed for its relative paths.
        task_id: the task; needed to presign cloud URIs.
        local_files_root: ``LOCAL_FILES_DOCUMENT_ROOT``; when set, local-files
            URLs are read from disk instead of through Label Studio.
        local_paths: plain paths and ``file://`` may be read (the command
            line). False for anything a request over HTTP sent.

    Raises:
        MediaReferenceError: the value is empty, unsafe, a local path while
            ``local_paths`` is off, or needs a Label Studio URL or task id
            that was not given.
    """
    if not isinstance(value, str) or not value.strip():
        raise MediaReferenceError(
            f"image reference must be a non-empty string, got {value!r}"
        )
    value = value.strip()
    base = label_studio_url.rstrip("/")
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", value)
    scheme = scheme_match.group(1).lower() if scheme_match else ""

    if scheme in CLOUD_SCHEMES:
        return _cloud_location(value, base, task_id)
    if scheme in STANDARD_PORTS:
        return _http_location(value, base, local_files_root, local_paths)
    if scheme and scheme != "file":
        raise MediaReferenceError(
            f"image reference {value!r} has unsupported scheme {scheme!r}; expected "
            f"a path, file://, http(s):// or "
            f"{', '.join(s + '://' for s in CLOUD_SCHEMES)}"
        )
    is_ls_path = value.startswith(
        (UPLOAD_PREFIX, STORAGE_DATA_PREFIX, LOCAL_FILES_PATH)
    )
    if not is_ls_path:
        if not local_paths:
            raise MediaReferenceError(f"{value!r}: {LOCAL_PATHS_REFUSED}")
        path = unquote(urlsplit(value).path) if scheme == "file" else value
        return MediaLocation(path=Path(path))
    if value.startswith(LOCAL_FILES_PATH) and local_files_root:
        return MediaLocation(
            path=_local_files_path(value, local_files_root),
            hide_reason=not local_paths,
        )
    _check_media_path(value, urlsplit(value).path)
    if not base:
        raise MediaReferenceError(
            f"{value!r} is a Label Studio path: set LABEL_STUDIO_URL to download "
            "it (the token goes only to LABEL_STUDIO_URL)"
        )
    if value.startswith(UPLOAD_PREFIX):
        # A plain `label-studio start` (local storage) serves /data/upload/ and
        # answers 400 on /storage-data/uploaded/ (seen against 1.23.2); with a
        # cloud default storage only the storage-data route has the file. The
        # SDK asks storage-data first; the common case first saves a request.
        filepath = quote(value[len("/data/") :], safe="/")
        urls = (base + value, f"{base}/storage-data/uploaded/?filepath={filepath}")
        return MediaLocation(urls=urls, label_studio=True, cache_key=base + value)
    return MediaLocation(
        urls=(base + value,), label_studio=True, cache_key=base + value
    )


def _cloud_location(value: str, base: str, task_id: int | None) -> MediaLocation:
    """A cloud URI, presigned through Label Studio's task endpoint."""
    if not base:
        raise MediaReferenceError(
            f"{value!r} is a cloud storage URI: set LABEL_STUDIO_URL so Label "
            "Studio can presign it"
        )
    if task_id is None:
        raise MediaReferenceError(
            f"{value!r} is a cloud storage URI: presigning it needs the task id"
        )
    return MediaLocation(
        urls=(presign_url(base, int(task_id), value),),
        label_studio=True,
        # Label Studio decides per task whether it presigns a URI: a copy
        # cached for one task must not serve another task's request.
        cache_key=f"task {int(task_id)}|{value}",
    )


def _http_location(
    value: str, base: str, local_files_root: str, local_paths: bool
) -> MediaLocation:
    """An http(s) URL: Label Studio's own (auth, or local-files from disk) or
    another host's (no auth; the guard decides)."""
    parsed = parse_http_url(value)
    is_label_studio = same_origin(parsed.url, base)
    path = urlsplit(parsed.url).path
    if is_label_studio and path.startswith(LOCAL_FILES_PATH) and local_files_root:
        return MediaLocation(
            path=_local_files_path(parsed.url, local_files_root),
            hide_reason=not local_paths,
        )
    if is_label_studio:
        _check_media_path(value, path)
    return MediaLocation(
        urls=(parsed.url,),
        # The token goes with Label Studio's media routes only: a task naming
        # /api/... on Label Studio gets no authenticated answer.
        label_studio=is_label_studio and path.startswith(MEDIA_PREFIXES),
        cache_key=parsed.url,
    )


MEDIA_PREFIXES = (UPLOAD_PREFIX, STORAGE_DATA_PREFIX, LOCAL_FILES_PATH)
"""Label Studio's routes for task media: the only paths a task may name that
get the token (the presign route is built by us, never taken from a task)."""


def _check_media_path(value: str, path: str) -> None:
    """A Label Studio path must not climb out of its route, written plainly or
    percent-encoded (``/data/upload/%2e%2e/api/...`` reached the API with the
    token: the server decodes what the check did not)."""
    decoded = unquote(path)
    if ".." in decoded.split("/") or "\\" in decoded or decoded != unquote(decoded):
        raise MediaReferenceError(
            f"Label Studio path {value!r} may not contain '..' or encoded separators"
        )


# Tokens ---------------------------------------------------------------------


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The (unverified) payload of a JWT, or None if ``token`` is not JWT-shaped."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


class LabelStudioAuth:
    """The ``Authorization`` header for Label Studio, from whichever token is given.

    ``kind`` is ``legacy`` (``Token <t>``), ``pat`` (a refresh JWT exchanged for
    access tokens), ``access`` (an access JWT, sent as it is) or ``none``.
    Thread-safe: concurrent downloads share one exchange.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = (token or "").strip()
        self._session = session or requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        self._access: str | None = None
        self._access_expires = 0.0
        claims = jwt_claims(self.token) if self.token else None
        if not self.token:
            self.kind = "none"
        elif claims is None:
            self.kind = "legacy"
        elif claims.get("token_type") == "access":
            self.kind = "access"
        else:
            self.kind = "pat"

    def headers(self) -> dict[str, str]:
        """Headers to send to Label Studio (empty when no token is configured)."""
        if self.kind == "none":
            return {}
        if self.kind == "legacy":
            return {"Authorization": f"Token {self.token}"}
        if self.kind == "access":
            return {"Authorization": f"Bearer {self.token}"}
        return {"Authorization": f"Bearer {self.access_token()}"}

    def invalidate(self) -> None:
        """Forget the cached access token (after a 401), so the next call renews it."""
        with self._lock:
            self._access = None
            self._access_expires = 0.0

    def access_token(self) -> str:
        """A valid access token for the personal access token, renewed when due."""
        with self._lock:
            now = self._clock()
            if self._access and now < self._access_expires - ACCESS_TOKEN_MARGIN_S:
                return self._access
            access = self._exchange()
            claims = jwt_claims(access) or {}
            expires = claims.get("exp")
            if not isinstance(expires, (int, float)):
                expires = now + ACCESS_TOKEN_LIFETIME_S
            self._access, self._access_expires = access, float(expires)
            return access

    def _exchange(self) -> str:
        if not self.base_url:
            raise TokenExchangeError(
                "a personal access token needs LABEL_STUDIO_URL to be exchanged"
            )
        url = self.base_url + TOKEN_REFRESH_PATH
        try:
            # no redirects: a 307/308 would carry the refresh token elsewhere
            response = self._session.post(
                url,
                json={"refresh": self.token},
                timeout=TOKEN_EXCHANGE_TIMEOUT_S,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise TokenExchangeError(f"token exchange at {url} failed: {exc}") from exc
        if response.status_code in (400, 401, 403):
            raise TokenExchangeError(
                f"Label Studio rejected the personal access token in "
                f"LABEL_STUDIO_API_KEY (HTTP {response.status_code} from {url}); "
                "create a new one under Account & Settings",
                status=response.status_code,
            )
        if response.is_redirect:
            raise TokenExchangeError(
                f"token exchange at {url} answered a redirect (HTTP "
                f"{response.status_code}), not followed: set LABEL_STUDIO_URL to the "
                "address Label Studio serves its API at",
                status=response.status_code,
            )
        if not response.ok:
            raise TokenExchangeError(
                f"token exchange at {url} failed with HTTP {response.status_code}",
                status=response.status_code,
            )
        try:
            access = response.json()["access"]
        except (ValueError, KeyError, TypeError):
            raise TokenExchangeError(
                f"token exchange at {url} returned no 'access' token"
            ) from None
        if not isinstance(access, str) or not access:
            raise TokenExchangeError(f"token exchange at {url} returned an empty token")
        return access
