"""Label Studio media: where a task's image value points, and the auth header.

Two jobs, no image decoding (that is ``worker.images``):

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
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import requests

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
    """

    path: Path | None = None
    urls: tuple[str, ...] = ()
    label_studio: bool = False
    cache_key: str = ""


def _origin(url: str) -> tuple[str, str]:
    """``(scheme, host[:port])`` of a URL, lower-cased, default ports dropped."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return scheme, host
    return scheme, f"{host}:{port}"


def same_host(url: str, base_url: str) -> bool:
    """Whether ``url`` is served by the Label Studio at ``base_url`` (host and port)."""
    return bool(base_url) and _origin(url)[1] == _origin(base_url)[1]


def _local_files_path(value: str, root: str) -> Path:
    """``/data/local-files/?d=rel`` under ``root``, refusing paths that leave it."""
    query = parse_qs(urlsplit(value).query)
    relative = (query.get("d") or [""])[0]
    if not relative:
        raise MediaReferenceError(f"local-files URL {value!r} has no ?d= path")
    base = Path(root).resolve()
    path = (base / unquote(relative).lstrip("/")).resolve()
    if not path.is_relative_to(base):
        raise MediaReferenceError(
            f"local-files path {relative!r} leaves LOCAL_FILES_DOCUMENT_ROOT {root!r}"
        )
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
) -> MediaLocation:
    """Where to read the image a task value refers to.

    Args:
        value: the ``task.data`` value (or any path / URL a job names).
        label_studio_url: Label Studio's base URL; needed for its relative paths.
        task_id: the task; needed to presign cloud URIs.
        local_files_root: ``LOCAL_FILES_DOCUMENT_ROOT``; when set, local-files
            URLs are read from disk instead of through Label Studio.

    Raises:
        MediaReferenceError: the value is empty, or needs a Label Studio URL or
            task id that was not given.
    """
    if not isinstance(value, str) or not value.strip():
        raise MediaReferenceError(
            f"image reference must be a non-empty string, got {value!r}"
        )
    value = value.strip()
    base = label_studio_url.rstrip("/")
    scheme = urlsplit(value).scheme.lower()

    if scheme == "file":
        return MediaLocation(path=Path(unquote(urlsplit(value).path)))

    if scheme in CLOUD_SCHEMES:
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
            cache_key=value,
        )

    if scheme in ("http", "https"):
        is_label_studio = same_host(value, base)
        path = urlsplit(value).path
        if is_label_studio and path.startswith(LOCAL_FILES_PATH) and local_files_root:
            return MediaLocation(path=_local_files_path(value, local_files_root))
        return MediaLocation(
            urls=(value,), label_studio=is_label_studio, cache_key=value
        )

    if scheme:
        raise MediaReferenceError(
            f"image reference {value!r} has unsupported scheme {scheme!r}; expected "
            f"a path, file://, http(s):// or "
            f"{', '.join(s + '://' for s in CLOUD_SCHEMES)}"
        )

    is_ls_path = value.startswith(
        (UPLOAD_PREFIX, STORAGE_DATA_PREFIX, LOCAL_FILES_PATH)
    )
    if not is_ls_path:
        return MediaLocation(path=Path(value))
    if value.startswith(LOCAL_FILES_PATH) and local_files_root:
        return MediaLocation(path=_local_files_path(value, local_files_root))
    if not base:
        raise MediaReferenceError(
            f"{value!r} is a Label Studio path: set LABEL_STUDIO_URL to download it"
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
            response = self._session.post(
                url, json={"refresh": self.token}, timeout=TOKEN_EXCHANGE_TIMEOUT_S
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
