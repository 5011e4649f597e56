"""common.labelstudio.media: where each kind of task value is read from."""

import base64
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from common.labelstudio.media import (
    LOCAL_FILE_UNREADABLE,
    LOCAL_PATHS_REFUSED,
    MediaReferenceError,
    presign_url,
    resolve_media,
)

LS = "http://ls.example:8080"


# resolve_media ----------------------------------------------------------------


def test_upload_path_tries_the_legacy_route_then_storage_data():
    location = resolve_media("/data/upload/1/2ac9-up.jpg", label_studio_url=LS + "/")
    assert location.label_studio
    assert location.urls == (
        f"{LS}/data/upload/1/2ac9-up.jpg",
        f"{LS}/storage-data/uploaded/?filepath=upload/1/2ac9-up.jpg",
    )
    assert location.cache_key == f"{LS}/data/upload/1/2ac9-up.jpg"
    assert location.path is None


def test_storage_data_path_is_fetched_from_label_studio():
    value = "/storage-data/uploaded/?filepath=upload/3/x.png"
    location = resolve_media(value, label_studio_url=LS)
    assert location.urls == (LS + value,)
    assert location.label_studio


def test_cloud_uri_goes_through_the_presign_endpoint_with_urlsafe_base64():
    uri = "s3://bucket/dir/a b?.jpg"
    location = resolve_media(uri, label_studio_url=LS, task_id=7)
    (url,) = location.urls
    parts = urlsplit(url)
    assert parts.path == "/tasks/7/presign/"
    encoded = unquote(parse_qs(parts.query)["fileuri"][0])
    assert base64.urlsafe_b64decode(encoded).decode() == uri
    # Label Studio presigns per task: one task's copy never serves another.
    assert location.cache_key == f"task 7|{uri}"
    assert resolve_media(uri, label_studio_url=LS, task_id=8).cache_key != (
        location.cache_key
    )
    assert location.label_studio
    assert url == presign_url(LS, 7, uri)


@pytest.mark.parametrize("uri", ["gs://b/k.jpg", "azure-blob://c/k.jpg"])
def test_other_cloud_schemes_are_presigned_too(uri):
    location = resolve_media(uri, label_studio_url=LS, task_id=1)
    assert "/tasks/1/presign/?fileuri=" in location.urls[0]


def test_cloud_uri_without_task_id_or_label_studio_names_what_is_missing():
    with pytest.raises(MediaReferenceError, match="task id"):
        resolve_media("s3://b/k.jpg", label_studio_url=LS)
    with pytest.raises(MediaReferenceError, match="LABEL_STUDIO_URL"):
        resolve_media("s3://b/k.jpg", task_id=3)


def test_label_studio_path_without_label_studio_url_names_the_setting():
    with pytest.raises(MediaReferenceError, match="LABEL_STUDIO_URL"):
        resolve_media("/data/upload/1/a.jpg")


def test_local_files_are_read_from_disk_when_the_document_root_is_set(tmp_path):
    value = "/data/local-files/?d=photos/cat%201.jpg"
    location = resolve_media(value, label_studio_url=LS, local_files_root=str(tmp_path))
    assert location.path == (tmp_path / "photos" / "cat 1.jpg").resolve()
    assert location.urls == ()
    # The absolute form Label Studio writes when HOSTNAME is set, too.
    absolute = resolve_media(
        LS + value, label_studio_url=LS, local_files_root=str(tmp_path)
    )
    assert absolute.path == location.path


def test_local_files_go_through_label_studio_without_a_document_root():
    value = "/data/local-files/?d=photos/cat.jpg"
    location = resolve_media(value, label_studio_url=LS)
    assert location.urls == (LS + value,)
    assert location.label_studio


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ("../../etc/passwd", "may not contain '..'"),
        ("photos/%2e%2e/%2e%2e/etc/passwd", "may not contain '..'"),
        ("photos/..", "may not contain '..'"),
        ("/etc/passwd", "must be relative to LOCAL_FILES_DOCUMENT_ROOT"),
        ("%2Fetc%2Fpasswd", "must be relative to LOCAL_FILES_DOCUMENT_ROOT"),
        ("a.jpg&d=../../etc/passwd", "exactly one non-empty"),
        ("", "exactly one non-empty"),
    ],
)
def test_local_files_path_leaving_the_root_is_refused(tmp_path, d, message):
    for value in (f"/data/local-files/?d={d}", f"{LS}/data/local-files/?d={d}"):
        with pytest.raises(MediaReferenceError, match=message):
            resolve_media(value, label_studio_url=LS, local_files_root=str(tmp_path))


def test_local_files_symlink_out_of_the_root_is_answered_like_a_missing_file(
    tmp_path,
):
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to("/etc")
    with pytest.raises(MediaReferenceError) as caught:
        resolve_media(
            "/data/local-files/?d=etc/passwd",
            label_studio_url=LS,
            local_files_root=str(root),
        )
    assert LOCAL_FILE_UNREADABLE in str(caught.value)
    assert "/etc" not in str(caught.value).replace("d=etc/passwd", "")


def test_plain_paths_and_file_urls_are_local_for_the_command_line(tmp_path):
    def path_of(value: str) -> Path | None:
        return resolve_media(value, local_paths=True).path

    assert path_of("images/a.jpg") == Path("images/a.jpg")
    assert path_of(str(tmp_path / "a.jpg")) == tmp_path / "a.jpg"
    assert path_of("file:///tmp/x%20y.png") == Path("/tmp/x y.png")


@pytest.mark.parametrize(
    "value", ["images/a.jpg", "/etc/passwd", "file:///etc/hostname", "FILE:///x"]
)
def test_plain_paths_and_file_urls_are_refused_by_default(value):
    with pytest.raises(MediaReferenceError) as caught:
        resolve_media(value, label_studio_url=LS, local_files_root="/")
    assert LOCAL_PATHS_REFUSED in str(caught.value)


def test_local_files_read_for_a_request_hide_why_they_fail(tmp_path):
    value = "/data/local-files/?d=a.jpg"
    quiet = resolve_media(value, local_files_root=str(tmp_path))
    loud = resolve_media(value, local_files_root=str(tmp_path), local_paths=True)
    assert quiet.hide_reason and not loud.hide_reason


def test_http_urls_carry_auth_only_on_the_label_studio_host():
    own = resolve_media(f"{LS}/data/upload/1/a.jpg", label_studio_url=LS)
    other = resolve_media("https://images.example.com/a.jpg", label_studio_url=LS)
    assert own.label_studio and own.urls == (f"{LS}/data/upload/1/a.jpg",)
    assert not other.label_studio


def test_the_token_goes_with_media_routes_only():
    """A task naming Label Studio's API got it fetched with the token (its
    status leaked whatever the token's user may see)."""
    for route in ("data/upload/1/a.jpg", "storage-data/uploaded/?filepath=a"):
        assert resolve_media(f"{LS}/{route}", label_studio_url=LS).label_studio
    for other in ("api/current-user/whoami", "api/projects/", "user/login/"):
        assert not resolve_media(f"{LS}/{other}", label_studio_url=LS).label_studio


@pytest.mark.parametrize(
    "value",
    [
        "/data/upload/%2e%2e/%2e%2e/api/projects/",
        "/data/upload/1/%2E%2E/%2e%2e/%2e%2e/api/tasks/1",
        "/data/upload/1/%252e%252e/x",
        f"{LS}/data/upload/%2e%2e/api/projects/",
        "/storage-data/../api/projects/",
    ],
)
def test_encoded_climbs_out_of_a_media_route_are_refused(value):
    with pytest.raises(MediaReferenceError, match=r"'\.\.'"):
        resolve_media(value, label_studio_url=LS)


@pytest.mark.parametrize("bad", ["", "   ", None, "ftp://host/a.jpg"])
def test_bad_references_are_named(bad):
    with pytest.raises(MediaReferenceError, match="image reference"):
        resolve_media(bad, label_studio_url=LS)
