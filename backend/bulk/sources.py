"""Turn what the user named (files, folders, globs, manifests) into image references.

Order is deterministic without sorting everything in memory: arguments in the
order given; a folder is walked with its entries sorted per directory; a glob's
matches are sorted; a manifest keeps its line order. Local paths become
absolute (workers open them by path); URLs are kept as they are.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)
"""File types a folder or glob contributes (what PIL decodes and users label)."""
MANIFEST_EXTENSIONS = (".jsonl", ".ndjson")
"""A file argument with one of these suffixes is read as a manifest."""
MANIFEST_KEYS = ("image", "image_path", "path", "url", "file_name")
"""Keys a manifest object may name its image with (first present wins)."""
URL_PREFIXES = ("http://", "https://", "file://", "s3://", "gs://", "azure-blob://")
"""References passed through untouched (the worker's image loader reads them)."""
GLOB_CHARS = frozenset("*?[")
"""An argument containing one of these is a glob pattern."""


class SourceError(ValueError):
    """An input names nothing usable; the message names the input."""


def is_url(ref: str) -> bool:
    return ref.startswith(URL_PREFIXES) or ref.startswith("/data/")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def walk_folder(folder: Path) -> Iterator[str]:
    """Image files under ``folder`` (recursively), sorted per directory."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            if _is_image(path):
                yield str(path.resolve())


def iter_json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """``("<path>:<line number>", value)`` of each non-blank line of a JSONL
    file; SourceError naming the line for one that is not JSON."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{number}", json.loads(line)
            except ValueError as exc:
                raise SourceError(f"{path}:{number}: not JSON ({exc})") from None


def image_name(item: Any) -> Any:
    """What a JSONL line names its image with: the line itself, or the first
    of :data:`MANIFEST_KEYS` an object has."""
    if isinstance(item, dict):
        return next((item[k] for k in MANIFEST_KEYS if item.get(k)), None)
    return item


def read_manifest(path: Path) -> Iterator[str]:
    """References from a JSONL manifest: each line a JSON string or an object
    with one of :data:`MANIFEST_KEYS`. Relative paths are relative to the manifest."""
    base = path.resolve().parent
    for at, item in iter_json_lines(path):
        ref = image_name(item)
        if not isinstance(ref, str) or not ref.strip():
            raise SourceError(
                f"{at}: expected a path/URL string or an object with "
                f"one of {', '.join(MANIFEST_KEYS)}, got {json.dumps(item)[:120]}"
            )
        ref = ref.strip()
        if is_url(ref):
            yield ref
        else:
            yield str((base / os.path.expanduser(ref)).resolve())


def expand_inputs(
    inputs: Iterable[str], manifests: Iterable[str] = ()
) -> Iterator[str]:
    """Every image reference named by ``inputs`` (files, folders, globs, URLs,
    ``*.jsonl`` manifests) and ``manifests``, in a deterministic order.

    Raises:
        SourceError: an input does not exist or names no image.
    """
    for manifest in manifests:
        path = Path(manifest).expanduser()
        if not path.is_file():
            raise SourceError(f"manifest {manifest!r} does not exist")
        yield from read_manifest(path)
    for raw in inputs:
        if is_url(raw):
            yield raw
            continue
        path = Path(raw).expanduser()
        if path.is_dir():
            found = False
            for ref in walk_folder(path):
                found = True
                yield ref
            if not found:
                raise SourceError(f"folder {raw!r} holds no image files")
        elif path.is_file():
            if path.suffix.lower() in MANIFEST_EXTENSIONS:
                yield from read_manifest(path)
            else:
                yield str(path.resolve())
        elif GLOB_CHARS & set(raw):
            matches = sorted(glob.glob(os.path.expanduser(raw), recursive=True))
            images = [m for m in matches if Path(m).is_file() and _is_image(Path(m))]
            if not images:
                raise SourceError(f"pattern {raw!r} matches no image files")
            for match in images:
                yield str(Path(match).resolve())
        else:
            raise SourceError(f"{raw!r} is not a file, folder, glob or URL")
