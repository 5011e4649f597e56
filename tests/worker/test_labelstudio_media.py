import base64
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from tests.fake_label_studio import (
    LEGACY_TOKEN,
    FakeLabelStudio,
    make_jwt,
    make_pat,
)
from worker.labelstudio_media import (
    ACCESS_TOKEN_MARGIN_S,
    LabelStudioAuth,
    MediaReferenceError,
    TokenExchangeError,
    jwt_claims,
    presign_url,
    resolve_media,
    same_host,
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
    assert location.cache_key == uri
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


def test_local_files_path_leaving_the_root_is_refused(tmp_path):
    with pytest.raises(MediaReferenceError, match="leaves LOCAL_FILES_DOCUMENT_ROOT"):
        resolve_media(
            "/data/local-files/?d=../../etc/passwd",
            label_studio_url=LS,
            local_files_root=str(tmp_path),
        )


def test_plain_paths_and_file_urls_are_local(tmp_path):
    assert resolve_media("images/a.jpg").path == Path("images/a.jpg")
    assert resolve_media(str(tmp_path / "a.jpg")).path == tmp_path / "a.jpg"
    assert resolve_media("file:///tmp/x%20y.png").path == Path("/tmp/x y.png")


def test_http_urls_carry_auth_only_on_the_label_studio_host():
    own = resolve_media(f"{LS}/data/upload/1/a.jpg", label_studio_url=LS)
    other = resolve_media("https://images.example.com/a.jpg", label_studio_url=LS)
    assert own.label_studio and own.urls == (f"{LS}/data/upload/1/a.jpg",)
    assert not other.label_studio


@pytest.mark.parametrize("bad", ["", "   ", None, "ftp://host/a.jpg"])
def test_bad_references_are_named(bad):
    with pytest.raises(MediaReferenceError, match="image reference"):
        resolve_media(bad, label_studio_url=LS)


def test_same_host_compares_host_and_port_ignoring_default_ports():
    assert same_host("http://LS.example:8080/x", LS)
    assert not same_host("http://ls.example:9090/x", LS)
    assert same_host("https://ls.example/x", "https://ls.example:443")
    assert not same_host("http://ls.example/x", "")


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
