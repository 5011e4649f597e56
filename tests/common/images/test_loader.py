"""common.images.loader: Label Studio downloads, the token's reach, the cache."""

import pytest
from PIL import Image

from common import settings
from common.images.decode import (
    DEFAULT_MAX_IMAGE_PIXELS,
)
from common.images.errors import (
    ImageAccessDenied,
    ImageDecodeError,
    ImageFetchError,
    ImageLoadError,
    ImageNotFound,
    ImageRefused,
    ImageTooLarge,
)
from common.images.loader import (
    DEFAULT_CACHE_BYTES,
    DOWNLOAD_DEADLINE_S,
    ByteCache,
    ImageLoader,
)
from common.labelstudio.media import LOCAL_FILE_UNREADABLE
from tests.common.images.helpers import (
    encoded,
    two_colour,
)
from tests.fake_label_studio import LEGACY_TOKEN, make_pat
from tests.security.conftest import Dripper, Listener

# Label Studio downloads -----------------------------------------------------------


def test_upload_with_a_legacy_token(ls):
    ls.files["1/a.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    image = loader.load("/data/upload/1/a.png")
    assert image.size == (40, 20)
    assert ls.requests[-1][2] == f"Token {LEGACY_TOKEN}"


def test_upload_comes_from_the_legacy_route_in_one_request(ls):
    ls.storage_data_enabled = False  # a plain `label-studio start` answers 400
    ls.files["1/a.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    assert loader.load("/data/upload/1/a.png").size == (40, 20)
    assert ls.paths_requested() == ["/data/upload/1/a.png"]


def test_upload_falls_back_to_storage_data(ls):
    ls.legacy_upload_enabled = False  # a cloud default storage
    ls.files["1/a.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    assert loader.load("/data/upload/1/a.png").size == (40, 20)
    assert ls.paths_requested() == [
        "/data/upload/1/a.png",
        "/storage-data/uploaded/?filepath=upload/1/a.png",
    ]


def test_upload_on_neither_route_reports_the_last_failure(ls):
    ls.legacy_upload_enabled = False
    ls.storage_data_enabled = False
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    with pytest.raises(ImageFetchError, match="HTTP 400"):
        loader.load("/data/upload/1/a.png")


def test_upload_with_a_personal_access_token_is_exchanged_once(ls):
    for i in range(3):
        ls.files[f"1/{i}.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=ls.pat)
    for i in range(3):
        loader.load(f"/data/upload/1/{i}.png")
    assert ls.refreshes == 1
    downloads = [r for r in ls.requests if r[0] == "GET"]
    assert all(auth.startswith("Bearer ") for _, _, auth in downloads)


def test_an_access_token_revoked_early_is_renewed_once(ls):
    ls.files["1/a.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=ls.pat)
    loader.auth.access_token()
    ls.access_tokens.clear()  # the server forgets the token (restart, revocation)
    assert loader.load("/data/upload/1/a.png").size == (40, 20)
    assert ls.refreshes == 2


def test_401_names_the_token_problem(ls):
    ls.files["1/a.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token="f" * 40)
    with pytest.raises(
        ImageAccessDenied, match=r"HTTP 401.*legacy token.*LABEL_STUDIO_API_KEY"
    ):
        loader.load("/data/upload/1/a.png")


def test_a_rejected_personal_access_token_names_the_setting(ls):
    loader = ImageLoader(label_studio_url=ls.url, token=make_pat(user_id=42))
    with pytest.raises(ImageAccessDenied, match="personal access token"):
        loader.load("/data/upload/1/a.png")


def test_no_token_and_a_login_redirect_says_to_set_one(ls):
    ls.files["1/a.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url)
    with pytest.raises(
        ImageAccessDenied, match=r"login page.*set LABEL_STUDIO_API_KEY"
    ):
        loader.load("/data/upload/1/a.png")


def test_404_is_not_found(ls):
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    with pytest.raises(ImageNotFound, match="HTTP 404"):
        loader.load("/data/upload/1/missing.png")


def _cloud(ls) -> str:
    """The fake cloud's host:port (an REXLABEL_ALLOWED_HOSTS entry)."""
    return ls.cloud_url.removeprefix("http://")


def test_a_presigned_url_to_an_unnamed_internal_host_is_refused(ls):
    ls.cloud["s3://bucket/a.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    with pytest.raises(ImageRefused, match="non-public address"):
        loader.load("s3://bucket/a.png", task_id=1)
    assert not [r for r in ls.requests if r[1].startswith("cloud:")]


def test_cloud_uri_is_presigned_and_the_token_stays_with_label_studio(ls):
    ls.cloud["s3://bucket/photos/a.png"] = encoded(two_colour())
    # The fake cloud is on loopback, as MinIO on a private network: named.
    loader = ImageLoader(
        label_studio_url=ls.url, token=ls.pat, allowed_hosts=_cloud(ls)
    )
    image = loader.load("s3://bucket/photos/a.png", task_id=12)
    assert image.size == (40, 20)
    presign, cloud = [r for r in ls.requests if r[0] == "GET"]
    assert presign[1].startswith("/tasks/12/presign/?fileuri=")
    assert presign[2].startswith("Bearer ")
    assert cloud[1].startswith("cloud:/bucket?key=s3://bucket/photos/a.png")
    assert cloud[2] == ""  # the cloud server would answer 403 to a stray token


def test_local_files_through_label_studio_and_from_disk(ls, tmp_path):
    (ls.local_root / "photos").mkdir(parents=True)
    (ls.local_root / "photos" / "a.png").write_bytes(encoded(two_colour()))
    value = "/data/local-files/?d=photos/a.png"

    via_ls = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    assert via_ls.load(value).size == (40, 20)
    assert ls.paths_requested() == [value]

    from_disk = ImageLoader(
        label_studio_url=ls.url, token=LEGACY_TOKEN, local_files_root=str(ls.local_root)
    )
    assert from_disk.load(value).size == (40, 20)
    assert ls.paths_requested() == [value]  # no second request


def test_cache_hit_makes_no_request(ls):
    ls.files["1/a.png"] = encoded(two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    first = loader.load("/data/upload/1/a.png")
    count = len(ls.requests)
    second = loader.load("/data/upload/1/a.png")
    assert len(ls.requests) == count
    assert loader.cache.hits == 1
    assert first.tobytes() == second.tobytes()


def test_cloud_uris_are_cached_by_uri_not_by_presigned_url(ls):
    ls.cloud["gs://b/a.png"] = encoded(two_colour())
    loader = ImageLoader(
        label_studio_url=ls.url, token=LEGACY_TOKEN, allowed_hosts=_cloud(ls)
    )
    loader.load("gs://b/a.png", task_id=1)
    count = len(ls.requests)
    loader.load("gs://b/a.png", task_id=1)
    assert len(ls.requests) == count


def test_a_download_larger_than_the_byte_limit_is_refused(ls):
    ls.files["1/big.png"] = encoded(Image.effect_noise((200, 200), 50))
    loader = ImageLoader(
        label_studio_url=ls.url, token=LEGACY_TOKEN, max_download_bytes=1000
    )
    with pytest.raises(ImageTooLarge, match="1000"):
        loader.load("/data/upload/1/big.png")


def test_a_downloaded_non_image_is_a_decode_error(ls):
    ls.files["1/a.png"] = b"<html>oops</html>"
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    with pytest.raises(ImageDecodeError, match=r"/data/upload/1/a.png"):
        loader.load("/data/upload/1/a.png")


# Cache and settings -------------------------------------------------------------


def test_byte_cache_evicts_least_recently_used_within_its_size():
    cache = ByteCache(10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # a is now the most recent
    cache.put("c", b"cccc")  # 12 bytes > 10: evict b
    assert cache.get("b") is None
    assert cache.get("a") == b"aaaa" and cache.get("c") == b"cccc"
    assert cache.size_bytes == 8
    cache.put("huge", b"x" * 11)  # larger than the cache: not stored
    assert cache.get("huge") is None and len(cache) == 2


def test_loader_from_settings_reads_the_environment(tmp_path):
    env = {
        "LABEL_STUDIO_URL": "http://ls:8080/",
        "LABEL_STUDIO_API_KEY": LEGACY_TOKEN,
        "REXLABEL_ALLOWED_HOSTS": "cdn.example.com",
        "LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path),
        "REXLABEL_MAX_IMAGE_PIXELS": "1234",
        "REXLABEL_IMAGE_CACHE_MB": "2",
    }
    loader = ImageLoader.from_settings(env)
    assert loader.label_studio_url == "http://ls:8080"
    assert loader.auth.kind == "legacy"
    assert loader.guard.allowed == ("cdn.example.com",)
    assert loader.local_files_root == str(tmp_path)
    assert loader.max_pixels == 1234
    assert loader.cache.capacity_bytes == 2 * 1024 * 1024
    assert ImageLoader.from_settings(env, max_pixels=99).max_pixels == 99


def test_setting_defaults_match_the_named_constants():
    assert (
        settings.setting("REXLABEL_MAX_IMAGE_PIXELS").default
        == DEFAULT_MAX_IMAGE_PIXELS
    )
    assert (
        settings.setting("REXLABEL_IMAGE_CACHE_MB").default * 1024**2
        == DEFAULT_CACHE_BYTES
    )


# Where the token goes, and for how long ---------------------------------------


def _redirect_to(location: str):
    def reply(_request):
        return 302, {"Location": location}, b""

    return reply


def test_the_backslash_trick_never_reaches_the_other_port():
    with Listener() as ls, Listener() as attacker:
        ls_host = ls.url.removeprefix("http://")
        trick = f"{attacker.url}\\@{ls_host}/data/upload/1/x.png"
        loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
        with pytest.raises(ImageRefused, match="backslash"):
            loader.load(trick)
        with pytest.raises(ImageRefused, match="backslash"):
            ImageLoader(allowed_hosts=ls_host).load(trick)
    assert attacker.seen == [] and ls.seen == []


@pytest.mark.parametrize("trick", ["backslash", "plain", "user-info"])
def test_a_redirect_from_label_studio_carries_no_token_elsewhere(trick):
    with Listener() as attacker, Listener() as ls:
        ls_host = ls.url.removeprefix("http://")
        location = {
            "backslash": f"{attacker.url}\\@{ls_host}/x.png",
            "plain": f"{attacker.url}/x.png",
            "user-info": f"http://{ls_host}@{attacker.url.removeprefix('http://')}/",
        }[trick]
        ls.reply = _redirect_to(location)
        loader = ImageLoader(
            label_studio_url=ls.url,
            token=LEGACY_TOKEN,
            allowed_hosts=attacker.url.removeprefix("http://"),
        )
        if trick == "plain":  # a presigned URL: followed, without the token
            assert loader.load("/data/upload/1/x.png").size == (64, 64)
        else:
            with pytest.raises(ImageRefused, match=trick):
                loader.load("/data/upload/1/x.png")
    assert ls.authorized()  # Label Studio itself gets the token
    assert attacker.authorized() == []
    if trick != "plain":
        assert attacker.seen == []


def test_an_allowed_host_redirecting_to_label_studio_cannot_send_it_elsewhere():
    with Listener() as attacker, Listener() as allowed:
        host = allowed.url.removeprefix("http://")
        allowed.reply = _redirect_to(f"{attacker.url}/x.png")
        loader = ImageLoader(
            label_studio_url="http://ls.invalid", token=LEGACY_TOKEN, allowed_hosts=host
        )
        with pytest.raises(ImageRefused, match=r"127.0.0.1:\d+ are not allowed"):
            loader.load(f"{allowed.url}/a.png")
    assert attacker.seen == []


def test_localhost_allowed_means_port_80_not_every_loopback_port():
    with Listener() as internal:
        with pytest.raises(ImageRefused, match=r"localhost:\d+ are not allowed"):
            ImageLoader(allowed_hosts="localhost").load(
                internal.url.replace("127.0.0.1", "localhost") + "/a.png"
            )
    assert internal.seen == []


def test_a_download_has_a_total_deadline():
    with Dripper() as slow:
        host = slow.url.removeprefix("http://")
        loader = ImageLoader(allowed_hosts=host, download_deadline_s=1.0)
        with pytest.raises(ImageFetchError, match=r"1 s deadline.*DEADLINE_S"):
            loader.load(f"{slow.url}/a.png")
    assert slow.requests == 1


def test_the_deadline_is_a_setting_matching_its_constant():
    assert settings.setting("REXLABEL_DOWNLOAD_DEADLINE_S").default == (
        DOWNLOAD_DEADLINE_S
    )
    env = {"REXLABEL_DOWNLOAD_DEADLINE_S": "7.5"}
    assert ImageLoader.from_settings(env).download_deadline_s == 7.5


def test_local_files_for_a_request_fail_with_one_answer(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "folder").mkdir()
    (tmp_path / "ok.png").write_bytes(encoded(two_colour()))
    loader = ImageLoader(local_files_root=str(tmp_path))
    answers = set()
    for name in ("notes.jpg", "folder", "missing.png"):
        ref = f"/data/local-files/?d={name}"
        with pytest.raises(ImageLoadError) as caught:
            loader.load(ref)
        answers.add(str(caught.value).replace(ref, "REF"))
    assert answers == {f"'REF': {LOCAL_FILE_UNREADABLE}"}
    assert loader.load("/data/local-files/?d=ok.png").size == (40, 20)
    with pytest.raises(ImageNotFound, match="does not exist"):  # the CLI is told
        loader.load("/data/local-files/?d=missing.png", local_paths=True)
