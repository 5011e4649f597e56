"""Load a task's image as Label Studio shows it: one RGB PIL image, EXIF applied.

Usage::

    from worker.images import load_image
    image = load_image("/data/upload/1/2ac9ba97-up.jpg", task_id=1)

References (see ``worker.labelstudio_media``): local paths, ``file://`` URLs,
http(s) URLs, Label Studio paths and cloud URIs. Downloads go through a guard
(only the Label Studio host or ``REXLABEL_ALLOWED_HOSTS``; private and loopback
addresses only when that host is named) and a bounded LRU cache of the encoded
bytes, keyed by URL. Every failure is an :class:`ImageLoadError` naming the
reference.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import socket
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image, ImageOps, UnidentifiedImageError

from converters.geometry import MAX_PIXELS, MIN_PIXELS, smart_resize
from worker import settings
from worker.labelstudio_media import (
    LabelStudioAuth,
    MediaLocation,
    MediaReferenceError,
    TokenExchangeError,
    resolve_media,
    same_host,
)

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
"""Above any camera (61 MP sensors) yet refuses decompression bombs; also note
that Pillow itself refuses more than 2 x ``Image.MAX_IMAGE_PIXELS`` (179 MP)."""
DEFAULT_MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
"""A 100 MP PNG is at most ~300 MB raw and far less compressed; stop endless bodies."""
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
"""About a hundred 2.5 MB photos: interactive sessions revisit a few images."""
CONNECT_TIMEOUT_S = 5.0
"""A reachable host connects in milliseconds; longer means it is down."""
READ_TIMEOUT_S = 60.0
"""Between bytes of a download; presigned cloud URLs can be slow to start."""
MAX_REDIRECTS = 5
"""Redirect hops followed for one download (each hop is checked by the guard)."""
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
"""Read size when streaming a download against the byte limit."""


class ImageLoadError(Exception):
    """An image could not be loaded; the message names the reference and why."""


class ImageNotFound(ImageLoadError):
    """The file does not exist, or the server answered 404."""


class ImageAccessDenied(ImageLoadError):
    """The server answered 401/403: the Label Studio token is missing or rejected."""


class ImageFetchError(ImageLoadError):
    """The download failed (connection, timeout, other HTTP status)."""


class ImageDecodeError(ImageLoadError):
    """The bytes are not an image Pillow can read, or the file is truncated."""


class ImageTooLarge(ImageLoadError):
    """The image has more pixels (or the download more bytes) than allowed."""


class ImageRefused(ImageLoadError):
    """The reference is not allowed: unknown host, private address, bad value."""


# Decoding -------------------------------------------------------------------


def decode_image(
    data: bytes | Path, *, source: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode bytes (or a file) to an RGB image with EXIF orientation applied.

    Size is checked from the header before any pixel is decoded.

    Raises:
        ImageDecodeError: not an image, or truncated.
        ImageTooLarge: more than ``max_pixels`` pixels.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{source}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{source} is not an image Pillow can read") from None
    except OSError as exc:
        raise ImageDecodeError(f"{source} could not be read: {exc}") from None
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"{source} is {width}x{height} = {width * height} pixels, more than "
                f"the limit of {max_pixels} (REXLABEL_MAX_IMAGE_PIXELS)"
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(f"{source} is damaged or truncated: {exc}") from None
        oriented = ImageOps.exif_transpose(image)
        return oriented if oriented.mode == "RGB" else oriented.convert("RGB")
    finally:
        if isinstance(data, Path):
            image.close()


def resize_for_model(
    image: Image.Image, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """The image at its smart_resize size (PIL bicubic), as upstream's vLLM path
    sends it (``qwen_vl_utils.fetch_image``); the processor then keeps that size.

    Coordinates stay relative to the original image: the model's bins are
    fractions of the width and height, whatever the pixel size.
    """
    height, width = smart_resize(
        image.height, image.width, min_pixels=min_pixels, max_pixels=max_pixels
    )
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if (width, height) == rgb.size:
        return rgb
    return rgb.resize((width, height), Image.Resampling.BICUBIC)


# Cache ----------------------------------------------------------------------


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


# Host guard -----------------------------------------------------------------

Resolver = Callable[[str], list[str]]


def _resolve_host(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def parse_allowed_hosts(
    raw: str | list[str] | tuple[str, ...] | None,
) -> tuple[str, ...]:
    """``"a.com, *.b.org, *"`` -> ``("a.com", "*.b.org", "*")`` (lower-case)."""
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return tuple(item.strip().lower() for item in items if item.strip())


class HostGuard:
    """Decides which hosts plain http(s) downloads may reach (SSRF guard).

    Allowed: the Label Studio host, and hosts in ``allowed`` (exact names,
    ``*.suffix`` patterns, or ``*`` for any host). A host named explicitly
    (or the Label Studio host) may be private or loopback; a host allowed only
    through ``*`` must resolve to public addresses alone. The check resolves
    the name once before the request (a DNS answer that changes between the
    check and the connection is not caught).
    """

    def __init__(
        self,
        allowed: tuple[str, ...] = (),
        label_studio_url: str = "",
        resolver: Resolver = _resolve_host,
    ) -> None:
        self.allowed = allowed
        self.label_studio_url = label_studio_url
        self._resolver = resolver

    def _named(self, host: str) -> bool:
        for pattern in self.allowed:
            if pattern == host:
                return True
            if pattern.startswith("*.") and host.endswith(pattern[1:]):
                return True
        return False

    def check(self, url: str) -> None:
        """Raise ImageRefused unless ``url`` may be downloaded."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageRefused(f"{url!r} is not an http(s) URL with a host")
        host = parts.hostname.lower()
        if same_host(url, self.label_studio_url) or self._named(host):
            return
        if "*" not in self.allowed:
            raise ImageRefused(
                f"downloads from {host!r} are not allowed: only the Label Studio host "
                f"and REXLABEL_ALLOWED_HOSTS ({', '.join(self.allowed) or 'empty'})"
            )
        try:
            addresses = self._resolver(host)
        except OSError as exc:
            raise ImageFetchError(
                f"cannot resolve {host!r} for {url!r}: {exc}"
            ) from None
        for address in addresses:
            if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
                raise ImageRefused(
                    f"{host!r} resolves to the non-public address {address}; name it "
                    "in REXLABEL_ALLOWED_HOSTS to allow it"
                )


# Loader ---------------------------------------------------------------------


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
        session: requests.Session | None = None,
        resolver: Resolver = _resolve_host,
    ) -> None:
        self.label_studio_url = (label_studio_url or "").rstrip("/")
        self.local_files_root = local_files_root or ""
        self.max_pixels = int(max_pixels)
        self.max_download_bytes = int(max_download_bytes)
        self.session = session or requests.Session()
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
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def load(self, ref: str, *, task_id: int | None = None) -> Image.Image:
        """The image ``ref`` points to: RGB, EXIF orientation applied."""
        try:
            location = resolve_media(
                ref,
                label_studio_url=self.label_studio_url,
                task_id=task_id,
                local_files_root=self.local_files_root,
            )
        except MediaReferenceError as exc:
            raise ImageRefused(str(exc)) from None
        if location.path is not None:
            return self._load_file(ref, location.path)
        data = self.fetch(ref, location)
        return decode_image(data, source=ref, max_pixels=self.max_pixels)

    def _load_file(self, ref: str, path: Path) -> Image.Image:
        if not path.is_file():
            reason = "is a directory" if path.is_dir() else "does not exist"
            raise ImageNotFound(f"image file {str(path)!r} (from {ref!r}) {reason}")
        try:
            with path.open("rb") as handle:
                return decode_image(
                    handle.read(), source=str(path), max_pixels=self.max_pixels
                )
        except PermissionError:
            raise ImageAccessDenied(f"no permission to read {str(path)!r}") from None

    def fetch(self, ref: str, location: MediaLocation) -> bytes:
        """The bytes behind ``location`` (from the cache when present)."""
        key = location.cache_key or location.urls[0]
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if not location.label_studio:
            self.guard.check(location.urls[0])
        for index, url in enumerate(location.urls):
            try:
                data = self._download(ref, url, location.label_studio)
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

    def _download(self, ref: str, url: str, label_studio: bool) -> bytes:
        """GET ``url`` following redirects by hand: each hop off Label Studio is
        checked by the guard; a chain Label Studio started (presigned cloud
        URLs) is trusted. Auth goes only to the Label Studio host."""
        current = url
        trusted = label_studio
        renewed = False
        for _ in range(MAX_REDIRECTS + 1):
            is_ls = label_studio and same_host(current, self.label_studio_url)
            try:
                headers = self.auth.headers() if is_ls else {}
            except TokenExchangeError as exc:
                raise ImageAccessDenied(f"{ref!r}: {exc}") from None
            try:
                response = self.session.get(
                    current,
                    headers=headers,
                    stream=True,
                    allow_redirects=False,
                    timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                )
            except requests.RequestException as exc:
                raise ImageFetchError(
                    f"downloading {ref!r} from {current}: {exc}"
                ) from None
            with response:
                if response.is_redirect:
                    target = urljoin(current, response.headers.get("Location", ""))
                    if not trusted:
                        self.guard.check(target)
                    current = target
                    continue
                if response.status_code == 401 and is_ls and self.auth.kind == "pat":
                    if not renewed:  # revoked or expired early: one fresh token
                        self.auth.invalidate()
                        renewed = True
                        continue
                self._raise_for_status(ref, current, response, is_ls)
                if is_ls and "/user/login" in urlsplit(current).path:
                    raise ImageAccessDenied(self._token_advice(ref, "a login page"))
                return self._read_body(ref, current, response)
        raise ImageFetchError(
            f"downloading {ref!r}: more than {MAX_REDIRECTS} redirects"
        )

    def _token_advice(self, ref: str, what: str) -> str:
        kind = self.auth.kind
        if kind == "none":
            hint = "no token is configured: set LABEL_STUDIO_API_KEY"
        elif kind == "legacy":
            hint = (
                "the legacy token in LABEL_STUDIO_API_KEY was rejected (new "
                "organizations disable legacy tokens: use a personal access token)"
            )
        else:
            hint = "the token in LABEL_STUDIO_API_KEY was rejected"
        return f"Label Studio answered {what} for {ref!r}: {hint}"

    def _raise_for_status(
        self, ref: str, url: str, response: requests.Response, is_ls: bool
    ) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            if is_ls:
                raise ImageAccessDenied(self._token_advice(ref, f"HTTP {status}"))
            raise ImageAccessDenied(f"HTTP {status} downloading {ref!r} from {url}")
        if status in (404, 410):
            raise ImageNotFound(f"HTTP {status}: {ref!r} not found at {url}")
        raise ImageFetchError(f"HTTP {status} downloading {ref!r} from {url}")

    def _read_body(self, ref: str, url: str, response: requests.Response) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_download_bytes:
            raise ImageTooLarge(
                f"{ref!r} is {declared} bytes, more than {self.max_download_bytes}"
            )
        buffer = bytearray()
        try:
            for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                buffer.extend(chunk)
                if len(buffer) > self.max_download_bytes:
                    raise ImageTooLarge(
                        f"{ref!r} is larger than {self.max_download_bytes} bytes"
                    )
        except requests.RequestException as exc:
            raise ImageFetchError(f"downloading {ref!r} from {url}: {exc}") from None
        return bytes(buffer)


@functools.cache
def default_loader() -> ImageLoader:
    """The process-wide loader built from the environment (built on first use)."""
    return ImageLoader.from_settings()


def load_image(
    ref: str, *, task_id: int | None = None, loader: ImageLoader | None = None
) -> Image.Image:
    """Load ``ref`` as RGB with EXIF orientation applied (as Label Studio shows it).

    Raises:
        ImageLoadError: a subclass naming the reference and the reason.
    """
    return (loader or default_loader()).load(ref, task_id=task_id)
