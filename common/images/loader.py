"""Image references to RGB images: files, Label Studio media and downloads.

:class:`ImageLoader` resolves a reference (``common.labelstudio.media``), reads
the file or downloads it (Label Studio's auth only to Label Studio, every other
hop checked by :class:`common.images.hosts.HostGuard`, all within one deadline
and a byte limit), keeps the encoded bytes in a bounded LRU
(:class:`ByteCache`) and decodes them (``common.images.decode``).
:func:`load_image` uses the process-wide :func:`default_loader` built from the
settings.
"""

from __future__ import annotations

import functools
import http.cookiejar
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from PIL import Image

from common import settings
from common.images.decode import (
    DEFAULT_MAX_IMAGE_PIXELS,
    FitPixels,
    decode_image,
    read_capped,
)
from common.images.errors import (
    ImageAccessDenied,
    ImageFetchError,
    ImageLoadError,
    ImageNotFound,
    ImageRefused,
    ImageTooLarge,
)
from common.images.hosts import HostGuard, Resolver, parse_allowed_hosts, resolve_host
from common.labelstudio.auth import LabelStudioAuth, TokenExchangeError, TokenKind
from common.labelstudio.media import (
    LOCAL_FILE_UNREADABLE,
    MediaLocation,
    MediaReferenceError,
    resolve_media,
)
from common.urls import HttpURL, UnsafeURLError, parse_http_url, same_origin

DEFAULT_MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
"""A 100 MP PNG is at most ~300 MB raw and far less compressed; stop endless bodies."""
DEFAULT_CACHE_BYTES = settings.DEFAULT_IMAGE_CACHE_MB * 1024 * 1024
"""About a hundred 2.5 MB photos: interactive sessions revisit a few images."""
CONNECT_TIMEOUT_S = 5.0
"""A reachable host connects in milliseconds; longer means it is down."""
READ_TIMEOUT_S = 60.0
"""Between bytes of a download; presigned cloud URLs can be slow to start."""
DOWNLOAD_DEADLINE_S = settings.DEFAULT_DOWNLOAD_DEADLINE_S
"""Total seconds for one download, redirects and body included: the largest
download allowed (256 MB) arrives in under a minute at 50 Mbit/s; a host
dripping bytes slower than the read timeout must not hold a worker longer."""
MAX_REDIRECTS = 5
"""Redirect hops followed for one download (each hop is checked by the guard)."""
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
"""Read size when streaming a download against the byte limit."""


class ByteCache:
    """A thread-safe LRU of bytes by key, bounded by the total size in bytes.

    Items larger than the whole capacity are not stored.
    """

    def __init__(self, capacity_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.capacity_bytes = max(0, int(capacity_bytes))
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.capacity_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = data
            self._size += len(data)
            while self._size > self.capacity_bytes:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)


class ImageLoader:
    """Loads image references; holds the session, token, guard and cache.

    Args:
        label_studio_url: base URL for Label Studio paths and its auth.
        token: legacy token, personal access token, or the ``access_token``
            that ``/setup`` sends (see ``LabelStudioAuth``).
        allowed_hosts: extra hosts plain URLs may come from (``HostGuard``).
        local_files_root: ``LOCAL_FILES_DOCUMENT_ROOT``, to read local-files
            storage from disk.
        max_pixels: largest image accepted.
        cache_bytes: size of the download cache (0 disables it).
        max_download_bytes: largest download accepted.
        download_deadline_s: total seconds one download may take, redirects
            and body included (``REXLABEL_DOWNLOAD_DEADLINE_S``).
        session: a ``requests.Session`` to use (tests, connection pooling).
        resolver: host name -> addresses, for the guard.
    """

    def __init__(
        self,
        *,
        label_studio_url: str = "",
        token: str = "",
        allowed_hosts: str | tuple[str, ...] | list[str] | None = (),
        local_files_root: str = "",
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        download_deadline_s: float = DOWNLOAD_DEADLINE_S,
        session: requests.Session | None = None,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.label_studio_url = (label_studio_url or "").rstrip("/")
        self.local_files_root = local_files_root or ""
        self.max_pixels = int(max_pixels)
        self.max_download_bytes = int(max_download_bytes)
        self.download_deadline_s = float(download_deadline_s)
        self.session = session or _cookieless_session()
        self.auth = LabelStudioAuth(self.label_studio_url, token, session=self.session)
        self.guard = HostGuard(
            parse_allowed_hosts(allowed_hosts), self.label_studio_url, resolver
        )
        self.cache = ByteCache(cache_bytes)

    @classmethod
    def from_settings(
        cls, environ: Mapping[str, str] | None = None, **overrides
    ) -> ImageLoader:
        """A loader configured from the environment; keyword arguments win."""
        values = {
            "label_studio_url": settings.get("LABEL_STUDIO_URL", environ),
            "token": settings.get("LABEL_STUDIO_API_KEY", environ),
            "allowed_hosts": settings.get("REXLABEL_ALLOWED_HOSTS", environ),
            "local_files_root": settings.get("LOCAL_FILES_DOCUMENT_ROOT", environ),
            "max_pixels": settings.get("REXLABEL_MAX_IMAGE_PIXELS", environ),
            "cache_bytes": settings.get("REXLABEL_IMAGE_CACHE_MB", environ) * 1024**2,
            "download_deadline_s": settings.get(
                "REXLABEL_DOWNLOAD_DEADLINE_S", environ
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def load(
        self,
        ref: str,
        *,
        task_id: int | None = None,
        local_paths: bool = False,
        fit_pixels: FitPixels = None,
    ) -> Image.Image:
        """The image ``ref`` points to: RGB, EXIF orientation applied.

        ``local_paths`` allows plain paths and ``file://`` (the command line
        only; see ``resolve_media``). ``fit_pixels``: decode a larger image
        down to the model's size, or to what a rule of its size says (see
        :func:`decode_image`).
        """
        try:
            location = resolve_media(
                ref,
                label_studio_url=self.label_studio_url,
                task_id=task_id,
                local_files_root=self.local_files_root,
                local_paths=local_paths,
            )
        except (MediaReferenceError, UnsafeURLError) as exc:
            raise ImageRefused(str(exc)) from None
        if location.path is not None and location.hide_reason:
            return self._load_file_quietly(ref, location.path, fit_pixels)
        if location.path is not None:
            return self._load_file(ref, location.path, fit_pixels)
        data = self.fetch(ref, location)
        return decode_image(
            data, source=ref, max_pixels=self.max_pixels, fit_pixels=fit_pixels
        )

    def _load_file(
        self, ref: str, path: Path, fit_pixels: FitPixels = None
    ) -> Image.Image:
        if not path.is_file():
            reason = "is a directory" if path.is_dir() else "does not exist"
            raise ImageNotFound(f"image file {str(path)!r} (from {ref!r}) {reason}")
        try:
            with path.open("rb") as handle:
                data = read_capped(handle, self.max_download_bytes, str(path))
            return decode_image(
                data,
                source=str(path),
                max_pixels=self.max_pixels,
                fit_pixels=fit_pixels,
            )
        except PermissionError:
            raise ImageAccessDenied(f"no permission to read {str(path)!r}") from None

    def _load_file_quietly(
        self, ref: str, path: Path, fit_pixels: FitPixels = None
    ) -> Image.Image:
        """``_load_file`` for a request over HTTP: every failure (missing,
        directory, no permission, not an image, too large) is one answer."""
        try:
            return self._load_file(ref, path, fit_pixels)
        except (ImageLoadError, OSError):
            raise ImageNotFound(f"{ref!r}: {LOCAL_FILE_UNREADABLE}") from None

    def fetch(self, ref: str, location: MediaLocation) -> bytes:
        """The bytes behind ``location`` (from the cache when present), all
        addresses and redirects within one ``download_deadline_s``."""
        key = location.cache_key or location.urls[0]
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        deadline = time.monotonic() + self.download_deadline_s
        for index, url in enumerate(location.urls):
            try:
                data = self._download(ref, url, location.label_studio, deadline)
            except (ImageNotFound, ImageFetchError, ImageAccessDenied):
                # Uploads have two addresses and Label Studio answers 400, 403
                # or 404 on the one its storage does not use: try the next one
                # and report the last one's failure.
                if index == len(location.urls) - 1:
                    raise
                continue
            self.cache.put(key, data)
            return data
        raise ImageFetchError(f"{ref!r}: no address to download it from")

    def _download(
        self, ref: str, url: str, label_studio: bool, deadline: float
    ) -> bytes:
        """GET ``url`` following redirects by hand.

        Every hop is parsed once (``parse_http_url``) and exactly that URL is
        sent. The token goes only to a hop whose scheme, host and port are
        LABEL_STUDIO_URL's, in a chain that began at one of its media routes.
        A chain Label Studio started (presigned cloud URLs) may leave the
        guard's hosts, to public or named hosts, without the token; any other
        chain is checked by the guard at every hop.
        """
        hop = self._hop(ref, url, trusted=label_studio)
        renewed = False
        for _ in range(MAX_REDIRECTS + 1):
            # The token: only in a chain that began at a Label Studio media
            # route (resolve_media), and only to Label Studio's origin.
            is_ls = label_studio and same_origin(hop.url, self.label_studio_url)
            response = self._send(ref, hop, is_ls, deadline)
            with response:
                if response.is_redirect:
                    target = urljoin(hop.url, response.headers.get("Location", ""))
                    hop = self._hop(ref, target, trusted=label_studio)
                    continue
                if (
                    response.status_code == 401
                    and is_ls
                    and self.auth.kind is TokenKind.PAT
                ):
                    if not renewed:  # revoked or expired early: one fresh token
                        self.auth.invalidate()
                        renewed = True
                        continue
                self._raise_for_status(ref, hop.where, response, is_ls)
                if is_ls and "/user/login" in urlsplit(hop.url).path:
                    raise ImageAccessDenied(self._token_advice(ref, "a login page"))
                return self._read_body(ref, hop, response, deadline)
        raise ImageFetchError(
            f"downloading {ref!r}: more than {MAX_REDIRECTS} redirects"
        )

    def _hop(self, ref: str, url: str, *, trusted: bool) -> HttpURL:
        """One address to request: checked by the guard (in a chain Label
        Studio started, as a redirect target: public or named hosts only)."""
        if not trusted:
            return self.guard.check(url)
        try:
            return self.guard.check_redirect(url)
        except ImageRefused as exc:
            raise ImageRefused(f"{ref!r}: {exc}") from None

    def _send(
        self, ref: str, hop: HttpURL, is_ls: bool, deadline: float
    ) -> requests.Response:
        """GET exactly ``hop.url``: the prepared request must still go to the
        host and port that were checked."""
        try:
            headers = self.auth.headers() if is_ls else {}
        except TokenExchangeError as exc:
            raise ImageAccessDenied(f"{ref!r}: {exc}") from None
        prepared = self.session.prepare_request(
            requests.Request("GET", hop.url, headers=headers)
        )
        try:
            sent_to = parse_http_url(prepared.url or "").origin
        except UnsafeURLError:
            sent_to = None
        if sent_to != hop.origin:
            raise ImageRefused(
                f"{ref!r}: the request for {hop.where} would go elsewhere"
            )
        environment = self.session.merge_environment_settings(
            prepared.url, {}, True, None, None
        )
        read_timeout = min(READ_TIMEOUT_S, self._time_left(ref, hop, deadline))
        try:
            return self.session.send(
                prepared,
                allow_redirects=False,
                timeout=(min(CONNECT_TIMEOUT_S, read_timeout), read_timeout),
                **environment,
            )
        except requests.RequestException as exc:
            self._time_left(ref, hop, deadline)
            raise ImageFetchError(
                f"downloading {ref!r} from {hop.where}: {exc}"
            ) from None

    def _time_left(self, ref: str, hop: HttpURL, deadline: float) -> float:
        """Seconds until ``deadline``; ImageFetchError naming it once passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise ImageFetchError(
                f"downloading {ref!r} from {hop.where} took longer than the "
                f"{self.download_deadline_s:g} s deadline "
                "(REXLABEL_DOWNLOAD_DEADLINE_S)"
            )
        return left

    def _token_advice(self, ref: str, what: str) -> str:
        kind = self.auth.kind
        if kind is TokenKind.NONE:
            hint = "no token is configured: set LABEL_STUDIO_API_KEY"
        elif kind is TokenKind.LEGACY:
            hint = (
                "the legacy token in LABEL_STUDIO_API_KEY was rejected (new "
                "organizations disable legacy tokens: use a personal access token)"
            )
        else:
            hint = "the token in LABEL_STUDIO_API_KEY was rejected"
        return f"Label Studio answered {what} for {ref!r}: {hint}"

    def _raise_for_status(
        self, ref: str, where: str, response: requests.Response, is_ls: bool
    ) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            if is_ls:
                raise ImageAccessDenied(self._token_advice(ref, f"HTTP {status}"))
            raise ImageAccessDenied(f"HTTP {status} downloading {ref!r} from {where}")
        if status in (404, 410):
            raise ImageNotFound(f"HTTP {status}: {ref!r} not found at {where}")
        raise ImageFetchError(f"HTTP {status} downloading {ref!r} from {where}")

    def _read_body(
        self, ref: str, hop: HttpURL, response: requests.Response, deadline: float
    ) -> bytes:
        """The body, read as it arrives: each read waits at most until the
        deadline (a host dripping bytes cannot hold the download past it)."""
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_download_bytes:
            raise ImageTooLarge(
                f"{ref!r} is {declared} bytes, more than {self.max_download_bytes}"
            )
        buffer = bytearray()
        while True:
            _set_read_timeout(
                response, min(READ_TIMEOUT_S, self._time_left(ref, hop, deadline))
            )
            try:
                chunk = response.raw.read1(DOWNLOAD_CHUNK_BYTES, decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                self._time_left(ref, hop, deadline)
                raise ImageFetchError(
                    f"downloading {ref!r} from {hop.where}: {exc}"
                ) from None
            if not chunk:
                return bytes(buffer)
            buffer.extend(chunk)
            if len(buffer) > self.max_download_bytes:
                raise ImageTooLarge(
                    f"{ref!r} is larger than {self.max_download_bytes} bytes"
                )


def _set_read_timeout(response: requests.Response, seconds: float) -> None:
    """Bound the next socket read of a streamed response to ``seconds``."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _cookieless_session() -> requests.Session:
    """A session that keeps no cookies: a cookie set by one host must not
    ride along to another port of it (cookies ignore ports)."""
    session = requests.Session()
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


@functools.cache
def default_loader() -> ImageLoader:
    """The process-wide loader built from the environment (built on first use)."""
    return ImageLoader.from_settings()


def load_image(
    ref: str,
    *,
    task_id: int | None = None,
    loader: ImageLoader | None = None,
    local_paths: bool = False,
    fit_pixels: FitPixels = None,
) -> Image.Image:
    """Load ``ref`` as RGB with EXIF orientation applied (as Label Studio shows it).

    ``local_paths`` allows plain paths and ``file://``: only for references
    the command line's user gave, never for task data from a request.
    ``fit_pixels``: an image larger than that is decoded down to the model's
    size (:func:`decode_image`); ``common.images.decode.original_size`` gives
    its full size.

    Raises:
        ImageLoadError: a subclass naming the reference and the reason.
    """
    return (loader or default_loader()).load(
        ref, task_id=task_id, local_paths=local_paths, fit_pixels=fit_pixels
    )
