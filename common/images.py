"""Load a task's image as Label Studio shows it: one RGB PIL image, EXIF applied.

Usage::

    from common.images import load_image
    image = load_image("/data/upload/1/2ac9ba97-up.jpg", task_id=1)

References (see ``common.labelstudio.media``): local paths and ``file://``
URLs (command line only: ``local_paths=True``), http(s) URLs, Label Studio
paths (``/data/local-files/?d=`` read from LOCAL_FILES_DOCUMENT_ROOT when set)
and cloud URIs. Downloads go through a guard
(only the Label Studio host or ``REXLABEL_ALLOWED_HOSTS``; private and loopback
addresses only when that host is named) and a bounded LRU cache of the encoded
bytes, keyed by URL. Every failure is an :class:`ImageLoadError` naming the
reference.

Memory: files and downloads are capped in bytes before they are read; an
image is refused from its header above ``REXLABEL_MAX_IMAGE_PIXELS``, and with
``fit_pixels`` (the pipeline passes the model's ``max_pixels``) a larger one is
decoded straight down to the model's size, its full size kept as
:func:`original_size` for coordinates.
"""

from __future__ import annotations

import functools
import http.cookiejar
import io
import ipaddress
import os
import socket
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from PIL import ExifTags, Image, UnidentifiedImageError

from common import settings
from common.labelstudio.media import (
    LOCAL_FILE_UNREADABLE,
    STANDARD_PORTS,
    HttpURL,
    LabelStudioAuth,
    MediaLocation,
    MediaReferenceError,
    TokenExchangeError,
    UnsafeURLError,
    parse_http_url,
    resolve_media,
    same_origin,
)
from converters.geometry import (
    MAX_IMAGE_PIXELS,
    MAX_PIXELS,
    MIN_PIXELS,
    smart_resize,
)

DEFAULT_MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
"""``converters.geometry.MAX_IMAGE_PIXELS`` (32x what the model sees): pixels
decoded at once. Pillow itself refuses headers over 2 x ``Image.MAX_IMAGE_PIXELS``
(179 MP), whatever the format."""
REDUCING_GAP = 3.0
"""Pillow's ``resize(reducing_gap=3)``: ``reduce()`` by whole factors first, then
bicubic; Pillow documents the result as indistinguishable from a full bicubic."""
ORIGINAL_SIZE_KEY = "rexlabel.original_size"
"""``Image.info`` key of a reduced image's full ``(width, height)``."""
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that shows the image upright (as
``ImageOps.exif_transpose``; applied after any reduction, on the small image)."""
GREY_MODES = ("1", "L")
"""Modes resized as ``L`` before becoming RGB: the same pixels, a third of the
memory (a 1-bit bomb would otherwise be tripled to RGB at full size)."""
SIDEWAYS_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations whose upright image swaps width and height."""
DEFAULT_MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
"""A 100 MP PNG is at most ~300 MB raw and far less compressed; stop endless bodies."""
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
"""About a hundred 2.5 MB photos: interactive sessions revisit a few images."""
CONNECT_TIMEOUT_S = 5.0
"""A reachable host connects in milliseconds; longer means it is down."""
READ_TIMEOUT_S = 60.0
"""Between bytes of a download; presigned cloud URLs can be slow to start."""
DOWNLOAD_DEADLINE_S = 120.0
"""Total seconds for one download, redirects and body included: the largest
download allowed (256 MB) arrives in under a minute at 50 Mbit/s; a host
dripping bytes slower than the read timeout must not hold a worker longer."""
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
    data: bytes | Path,
    *,
    source: str,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    fit_pixels: int | None = None,
) -> Image.Image:
    """Decode bytes (or a file) to an RGB image with EXIF orientation applied.

    ``fit_pixels`` (the model's ``max_pixels``): an image with more pixels is
    decoded straight down to the size the model takes (``smart_resize``): a
    JPEG by DCT scaling while decoding (``Image.draft``, up to 8x a side), any
    image by ``reduce()`` inside the bicubic resize. Its size as Label Studio
    shows it stays available as :func:`original_size`, for coordinates.

    ``max_pixels`` bounds what is decoded at once: the header's size, or a
    drafted JPEG's reduced size. Both are known before any pixel is decoded, so
    a bomb is refused for the price of its header.

    Raises:
        ImageDecodeError: not an image, or truncated.
        ImageTooLarge: more than ``max_pixels`` pixels to decode.
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
        stored = image.size
        target = _fit_size(stored, fit_pixels)
        if target is not None:
            image.draft("RGB", target)
        _check_pixels(source, stored, image.size, max_pixels)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(f"{source} is damaged or truncated: {exc}") from None
        return _finish(image, target, stored)
    finally:
        if isinstance(data, Path):
            image.close()


def _fit_size(size: tuple[int, int], fit_pixels: int | None) -> tuple[int, int] | None:
    """``(width, height)`` the model takes an image of ``size`` at, when that is
    a downscale (more than ``fit_pixels`` pixels); None to keep the size."""
    width, height = size
    if fit_pixels is None or width * height <= fit_pixels:
        return None
    try:
        fit_h, fit_w = smart_resize(height, width, max_pixels=fit_pixels)
    except ValueError:  # aspect ratio the model refuses: the engine says so
        return None
    return fit_w, fit_h


def _check_pixels(
    source: str,
    stored: tuple[int, int],
    decoded: tuple[int, int],
    max_pixels: int,
) -> None:
    """ImageTooLarge when decoding would allocate more than ``max_pixels``."""
    pixels = decoded[0] * decoded[1]
    if pixels <= max_pixels:
        return
    size = f"{stored[0]}x{stored[1]}"
    if decoded != stored:
        size += f" (decoded at {decoded[0]}x{decoded[1]})"
    raise ImageTooLarge(
        f"{source} is {size} = {pixels} pixels, more than the limit of "
        f"{max_pixels} (REXLABEL_MAX_IMAGE_PIXELS)"
    )


def _finish(
    image: Image.Image, target: tuple[int, int] | None, stored: tuple[int, int]
) -> Image.Image:
    """The loaded ``image`` as RGB, at ``target`` when given, EXIF-oriented; a
    resized one carries its displayed full size (:func:`original_size`).

    Grey images are resized in ``L`` (1 byte a pixel) and made RGB once small;
    colour ones become RGB first (alpha dropped, as before). The full-size
    source is released as soon as its converted copy exists."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    work_mode = "L" if image.mode in GREY_MODES and target is not None else "RGB"
    work = image if image.mode == work_mode else image.convert(work_mode)
    if work is not image:
        image.close()  # frees the decoded pixels; ``work`` holds the copy
    # Only we set this key: a PNG text chunk of that name (copied into
    # ``info`` by Pillow) must not decide the size regions are scaled to.
    work.info.pop(ORIGINAL_SIZE_KEY, None)
    if target is not None:  # smaller than ``stored``, whatever draft did
        if work.size != target:
            work = work.resize(
                target, Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP
            )
        sideways = orientation in SIDEWAYS_ORIENTATIONS
        work.info[ORIGINAL_SIZE_KEY] = stored[::-1] if sideways else stored
    if orientation in EXIF_TRANSPOSE:
        work = work.transpose(EXIF_TRANSPOSE[orientation])  # keeps ``info``
    return work if work.mode == "RGB" else work.convert("RGB")


def read_capped(handle: BinaryIO, max_bytes: int, source: str) -> bytes:
    """All of an open file, refused (ImageTooLarge) when it holds more than
    ``max_bytes``: its size is checked before reading, and the read stops one
    byte past the cap in case the file grew meanwhile."""
    size = os.fstat(handle.fileno()).st_size
    data = b"" if size > max_bytes else handle.read(max_bytes + 1)
    if size > max_bytes or len(data) > max_bytes:
        raise ImageTooLarge(
            f"{source} is {max(size, len(data))} bytes, more than {max_bytes} "
            "(the download limit applies to local files too)"
        )
    return data


def original_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of the image as Label Studio shows it: the full size
    of one :func:`decode_image` reduced for the model, else ``image.size``.
    Pixel coordinates (prompts, parsed regions, masks) use this size."""
    size = image.info.get(ORIGINAL_SIZE_KEY)
    if (
        isinstance(size, tuple)
        and len(size) == 2
        and all(isinstance(v, int) and v > 0 for v in size)
    ):
        return size
    return image.size


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
        resolver: Resolver = _resolve_host,
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
        resolver: Resolver = _resolve_host,
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
        fit_pixels: int | None = None,
    ) -> Image.Image:
        """The image ``ref`` points to: RGB, EXIF orientation applied.

        ``local_paths`` allows plain paths and ``file://`` (the command line
        only; see ``resolve_media``). ``fit_pixels``: decode a larger image
        down to the model's size (see :func:`decode_image`).
        """
        try:
            location = resolve_media(
                ref,
                label_studio_url=self.label_studio_url,
                task_id=task_id,
                local_files_root=self.local_files_root,
                local_paths=local_paths,
            )
        except MediaReferenceError as exc:
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
        self, ref: str, path: Path, fit_pixels: int | None = None
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
        self, ref: str, path: Path, fit_pixels: int | None = None
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
                if response.status_code == 401 and is_ls and self.auth.kind == "pat":
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
    fit_pixels: int | None = None,
) -> Image.Image:
    """Load ``ref`` as RGB with EXIF orientation applied (as Label Studio shows it).

    ``local_paths`` allows plain paths and ``file://``: only for references
    the command line's user gave, never for task data from a request.
    ``fit_pixels``: an image larger than that is decoded down to the model's
    size (:func:`decode_image`); :func:`original_size` gives its full size.

    Raises:
        ImageLoadError: a subclass naming the reference and the reason.
    """
    return (loader or default_loader()).load(
        ref, task_id=task_id, local_paths=local_paths, fit_pixels=fit_pixels
    )
