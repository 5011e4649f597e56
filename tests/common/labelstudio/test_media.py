import base64
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from common.labelstudio.auth import (
    ACCESS_TOKEN_MARGIN_S,
    LabelStudioAuth,
    TokenExchangeError,
    jwt_claims,
)
from common.labelstudio.media import (
    LOCAL_FILE_UNREADABLE,
    LOCAL_PATHS_REFUSED,
    MediaReferenceError,
    presign_url,
    resolve_media,
)
from common.urls import UnsafeURLError, parse_http_url, same_origin
from tests.fake_label_studio import (
    LEGACY_TOKEN,
    FakeLabelStudio,
    make_jwt,
    make_pat,
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


def test_same_origin_compares_scheme_host_and_port():
    assert same_origin("http://LS.example:8080/x", LS)
    assert not same_origin("http://ls.example:9090/x", LS)
    assert not same_origin("https://ls.example:8080/x", LS)
    assert same_origin("https://ls.example/x", "https://ls.example:443")
    assert not same_origin("http://ls.example/x", "")
    assert not same_origin("http://127.0.0.1:9\\@ls.example:8080/x", LS)


# parse_http_url ---------------------------------------------------------------


def test_parse_http_url_reads_what_the_http_client_connects_to():
    url = parse_http_url("HTTP://Images.Example.COM:8080/a b/../c.jpg?x=1#frag")
    assert url.origin == ("http", "images.example.com", 8080)
    assert url.url == "http://images.example.com:8080/c.jpg?x=1"
    assert url.where == "images.example.com:8080"
    assert parse_http_url("https://h/x").port == 443
    assert not parse_http_url("https://h/x").port_given
    assert parse_http_url("http://[::1]:8/").host == "[::1]"
    assert parse_http_url("http://10.0.0.1/").host == "10.0.0.1"
    assert parse_http_url("http://h/?d=a\\b").host == "h"  # in the query: data


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("http://127.0.0.1:9\\@ls.example:8080/x.png", "backslash"),
        ("http://ls.example\\x.png", "backslash"),
        ("http://h/a\\b.png", "backslash"),
        ("http://user:pw@ls.example:8080/x.png", "user-info"),
        ("http://ls.example:8080@127.0.0.1:9/x.png", "user-info"),
        ("http://@h/x", "user-info"),
        ("ftp://h/x", "only absolute http"),
        ("//h/x", "only absolute http"),
        ("/data/upload/x", "only absolute http"),
        ("http:///x", "no host"),
        ("http://h:/x", "does not read back"),
        ("http://h:0080/x", "does not read back"),
        ("http://h:0/x", "port 0"),
        ("http://h:99999/x", "h:99999"),
        ("http://%6cocalhost/x", "does not read back"),
        ("http://bücher.example/x", "does not read back"),
        ("http://localhost./x", "not a plain ASCII"),
        ("http://2130706433/x", "not a dotted IPv4"),
        ("http://0x7f.1/x", "not a dotted IPv4"),
        ("http://0177.0.0.1/x", "not a dotted IPv4"),
        ("http://127.1/x", "not a dotted IPv4"),
        ("http://[0:0:0:0:0:0:0:1]/x", "[::1]"),
        ("http://[::1%25eth0]/x", "does not read back"),
        ("http://h\t/x", "control character"),
        ("http://h/x\n.png", "control character"),
        ("http://h /x", "h "),
    ],
)
def test_parse_http_url_refuses_what_parsers_may_read_differently(url, part):
    with pytest.raises(UnsafeURLError) as caught:
        parse_http_url(url)
    assert part in str(caught.value)


# Tokens -----------------------------------------------------------------------


def test_token_kinds_and_headers_without_network():
    assert LabelStudioAuth(LS, "").headers() == {}
    legacy = LabelStudioAuth(LS, LEGACY_TOKEN)
    assert legacy.kind == "legacy"
    assert legacy.headers() == {"Authorization": f"Token {LEGACY_TOKEN}"}
    access = make_jwt({"token_type": "access", "exp": time.time() + 60})
    direct = LabelStudioAuth(LS, access)
    assert direct.kind == "access"
    assert direct.headers() == {"Authorization": f"Bearer {access}"}
    assert LabelStudioAuth(LS, make_pat()).kind == "pat"


def test_jwt_claims_reads_the_payload_and_rejects_other_shapes():
    assert jwt_claims(make_jwt({"token_type": "refresh"})) == {"token_type": "refresh"}
    assert jwt_claims(LEGACY_TOKEN) is None
    assert jwt_claims("a.b.c") is None
    assert jwt_claims("a.b") is None


def test_pat_is_exchanged_once_and_the_access_token_is_reused(tmp_path):
    with FakeLabelStudio(tmp_path) as ls:
        auth = LabelStudioAuth(ls.url, ls.pat)
        first = auth.headers()["Authorization"]
        for _ in range(5):
            assert auth.headers()["Authorization"] == first
        assert ls.refreshes == 1
        assert first.startswith("Bearer ")
        assert jwt_claims(first.split()[1])["token_type"] == "access"
        # The exchanged token really opens Label Studio's media.
        ls.files["1/a.bin"] = b"x"
        response = requests.get(
            ls.url + "/data/upload/1/a.bin", headers=auth.headers(), timeout=5
        )
        assert response.status_code == 200


def test_access_token_is_renewed_before_it_expires(tmp_path):
    now = [time.time()]
    with FakeLabelStudio(tmp_path) as ls:
        auth = LabelStudioAuth(ls.url, ls.pat, clock=lambda: now[0])
        first = auth.access_token()
        now[0] += ls.access_lifetime_s - ACCESS_TOKEN_MARGIN_S - 5
        assert auth.access_token() == first
        now[0] += 10  # now inside the renewal margin
        second = auth.access_token()
        assert second != first
        assert ls.refreshes == 2


def test_invalidate_forces_a_new_exchange(tmp_path):
    with FakeLabelStudio(tmp_path) as ls:
        auth = LabelStudioAuth(ls.url, ls.pat)
        auth.access_token()
        auth.invalidate()
        auth.access_token()
        assert ls.refreshes == 2


def test_rejected_pat_names_the_setting(tmp_path):
    with FakeLabelStudio(tmp_path) as ls:
        auth = LabelStudioAuth(ls.url, make_pat(user_id=99))
        with pytest.raises(TokenExchangeError, match="LABEL_STUDIO_API_KEY") as info:
            auth.headers()
        assert info.value.status == 401


def test_pat_without_label_studio_url_cannot_be_exchanged():
    with pytest.raises(TokenExchangeError, match="LABEL_STUDIO_URL"):
        LabelStudioAuth("", make_pat()).headers()


def test_unreachable_label_studio_is_a_token_exchange_error():
    auth = LabelStudioAuth("http://127.0.0.1:9", make_pat())
    with pytest.raises(TokenExchangeError, match="failed"):
        auth.access_token()
