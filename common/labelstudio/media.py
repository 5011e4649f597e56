"""Label Studio media: where a task's image value points.

:func:`resolve_media` turns a ``task.data`` value into a :class:`MediaLocation`:
a file on disk, or the URL(s) to fetch and whether Label Studio's auth
(``common.labelstudio.auth``) goes with them. No downloading, no decoding (that
is ``common.images``). The values Label Studio writes::

    /data/upload/<pid>/<hash>-f.jpg           upload (local storage)
    /storage-data/uploaded/?filepath=...      upload (cloud default storage)
    /data/local-files/?d=rel/path.jpg         local-files storage (or http://LS/...)
    s3://b/k, gs://b/k, azure-blob://c/k      cloud storage: presigned through LS
    http(s)://any.host/...                    imported URL; auth only for the LS host
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from common.urls import STANDARD_PORTS, parse_http_url, same_origin

UPLOAD_PREFIX = "/data/upload/"
"""Path of files uploaded through Label Studio's import dialog."""
STORAGE_DATA_PREFIX = "/storage-data/"
"""Path Label Studio serves uploads from when its default storage is cloud."""
LOCAL_FILES_PATH = "/data/local-files/"
"""Path of Label Studio's local-files storage (``?d=<path under the root>``)."""
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
"""Cloud storage URIs Label Studio presigns for us (``/tasks/<id>/presign/``)."""


class MediaReferenceError(ValueError):
    """A task value cannot be turned into something to read; names the value."""


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
        UnsafeURLError: an http(s) value that HTTP clients could read
            differently (``common.urls.parse_http_url``).
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
