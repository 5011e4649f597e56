import io
import re
import struct
import zlib

import pytest
from PIL import Image

from common import settings
from common.images.decode import (
    DEFAULT_MAX_IMAGE_PIXELS,
    decode_image,
    original_size,
    read_capped,
    resize_for_model,
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
from common.images.hosts import HostGuard, parse_allowed_hosts
from common.images.loader import (
    DEFAULT_CACHE_BYTES,
    DOWNLOAD_DEADLINE_S,
    ByteCache,
    ImageLoader,
    load_image,
)
from common.labelstudio.media import LOCAL_FILE_UNREADABLE
from converters.geometry import MAX_PIXELS, smart_resize
from tests.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio, make_pat
from tests.security.conftest import Dripper, Listener

RED, BLUE = (255, 0, 0), (0, 0, 255)
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6
"""EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise."""


def _encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _two_colour(width=40, height=20, mode="RGB") -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(Image.new("RGB", (width // 2, height), RED), (0, 0))
    return image.convert(mode)


def _close(pixel, colour, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (the pixel data is tiny)."""
    data = bytearray(_encoded(Image.new("L", (1, 1))))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    start = 8 + 8  # signature, then IHDR length + type
    data[start : start + 13] = ihdr
    data[start + 13 : start + 17] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.fixture
def ls(tmp_path):
    with FakeLabelStudio(tmp_path / "root") as server:
        yield server


# Decoding -----------------------------------------------------------------------


def test_exif_orientation_is_applied_as_label_studio_shows_it(tmp_path):
    stored = _two_colour(40, 20)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_encoded(stored, "JPEG", exif=exif, quality=95))

    image = load_image(str(path), loader=ImageLoader(), local_paths=True)

    assert image.size == (20, 40)
    assert image.mode == "RGB"
    # Turned clockwise, the stored left (red) half ends on top.
    assert _close(image.getpixel((10, 5)), RED)
    assert _close(image.getpixel((10, 35)), BLUE)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_every_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = decode_image(_encoded(_two_colour(mode=mode), fmt), source="x")
    assert image.mode == "RGB"
    assert image.size == (40, 20)


def test_more_pixels_than_the_limit_is_refused_before_decoding():
    # The header claims 5000 x 5000 but the pixel data is one byte: the
    # refusal must come from the size check, not from a decode error.
    with pytest.raises(
        ImageTooLarge, match=r"25000000 pixels.*REXLABEL_MAX_IMAGE_PIXELS"
    ):
        decode_image(_png_with_size(5000, 5000), source="bomb.png", max_pixels=10**6)


def test_a_decompression_bomb_beyond_pillows_own_limit_is_too_large():
    with pytest.raises(ImageTooLarge, match=r"bomb.png"):
        decode_image(_png_with_size(40_000, 40_000), source="bomb.png")


def test_an_image_at_the_limit_loads():
    image = decode_image(_encoded(_two_colour(40, 20)), source="x", max_pixels=800)
    assert image.size == (40, 20)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_file_is_a_decode_error_naming_it(tmp_path, fmt):
    data = _encoded(Image.effect_noise((64, 64), 50).convert("RGB"), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut"):
        ImageLoader().load(str(path), local_paths=True)


def test_a_non_image_is_a_decode_error(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image at all")
    with pytest.raises(ImageDecodeError, match=r"notes.jpg.*not an image"):
        ImageLoader().load(str(path), local_paths=True)


def test_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(ImageNotFound, match="does not exist"):
        ImageLoader().load(str(tmp_path / "nope.png"), local_paths=True)
    with pytest.raises(ImageNotFound, match="is a directory"):
        ImageLoader().load(str(tmp_path), local_paths=True)


def test_file_urls_load(tmp_path):
    path = tmp_path / "a b.png"
    path.write_bytes(_encoded(_two_colour()))
    image = ImageLoader().load(
        "file://" + str(path).replace(" ", "%20"), local_paths=True
    )
    assert image.size == (40, 20)


def test_errors_share_one_base_class():
    for cls in (ImageNotFound, ImageAccessDenied, ImageDecodeError, ImageTooLarge):
        assert issubclass(cls, ImageLoadError)


# Label Studio downloads -----------------------------------------------------------


def test_upload_with_a_legacy_token(ls):
    ls.files["1/a.png"] = _encoded(_two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    image = loader.load("/data/upload/1/a.png")
    assert image.size == (40, 20)
    assert ls.requests[-1][2] == f"Token {LEGACY_TOKEN}"


def test_upload_comes_from_the_legacy_route_in_one_request(ls):
    ls.storage_data_enabled = False  # a plain `label-studio start` answers 400
    ls.files["1/a.png"] = _encoded(_two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    assert loader.load("/data/upload/1/a.png").size == (40, 20)
    assert ls.paths_requested() == ["/data/upload/1/a.png"]


def test_upload_falls_back_to_storage_data(ls):
    ls.legacy_upload_enabled = False  # a cloud default storage
    ls.files["1/a.png"] = _encoded(_two_colour())
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
        ls.files[f"1/{i}.png"] = _encoded(_two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=ls.pat)
    for i in range(3):
        loader.load(f"/data/upload/1/{i}.png")
    assert ls.refreshes == 1
    downloads = [r for r in ls.requests if r[0] == "GET"]
    assert all(auth.startswith("Bearer ") for _, _, auth in downloads)


def test_an_access_token_revoked_early_is_renewed_once(ls):
    ls.files["1/a.png"] = _encoded(_two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=ls.pat)
    loader.auth.access_token()
    ls.access_tokens.clear()  # the server forgets the token (restart, revocation)
    assert loader.load("/data/upload/1/a.png").size == (40, 20)
    assert ls.refreshes == 2


def test_401_names_the_token_problem(ls):
    ls.files["1/a.png"] = _encoded(_two_colour())
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
    ls.files["1/a.png"] = _encoded(_two_colour())
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
    ls.cloud["s3://bucket/a.png"] = _encoded(_two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    with pytest.raises(ImageRefused, match="non-public address"):
        loader.load("s3://bucket/a.png", task_id=1)
    assert not [r for r in ls.requests if r[1].startswith("cloud:")]


def test_cloud_uri_is_presigned_and_the_token_stays_with_label_studio(ls):
    ls.cloud["s3://bucket/photos/a.png"] = _encoded(_two_colour())
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
    (ls.local_root / "photos" / "a.png").write_bytes(_encoded(_two_colour()))
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
    ls.files["1/a.png"] = _encoded(_two_colour())
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    first = loader.load("/data/upload/1/a.png")
    count = len(ls.requests)
    second = loader.load("/data/upload/1/a.png")
    assert len(ls.requests) == count
    assert loader.cache.hits == 1
    assert first.tobytes() == second.tobytes()


def test_cloud_uris_are_cached_by_uri_not_by_presigned_url(ls):
    ls.cloud["gs://b/a.png"] = _encoded(_two_colour())
    loader = ImageLoader(
        label_studio_url=ls.url, token=LEGACY_TOKEN, allowed_hosts=_cloud(ls)
    )
    loader.load("gs://b/a.png", task_id=1)
    count = len(ls.requests)
    loader.load("gs://b/a.png", task_id=1)
    assert len(ls.requests) == count


def test_a_download_larger_than_the_byte_limit_is_refused(ls):
    ls.files["1/big.png"] = _encoded(Image.effect_noise((200, 200), 50))
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


# SSRF guard ---------------------------------------------------------------------


def test_plain_urls_from_other_hosts_are_refused(ls):
    ls.files["1/a.png"] = _encoded(_two_colour())
    # The cloud server is another host:port on loopback: not Label Studio.
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    with pytest.raises(ImageRefused, match="REXLABEL_ALLOWED_HOSTS"):
        loader.load(ls.cloud_url + "/bucket?key=x")
    assert not any(path.startswith("cloud:") for path in ls.paths_requested())


def test_no_label_studio_and_no_allow_list_refuses_every_url():
    with pytest.raises(ImageRefused, match="not allowed"):
        ImageLoader().load("http://127.0.0.1:1/a.png")


def test_loopback_needs_an_explicit_entry_not_the_wildcard(ls):
    ls.cloud["k"] = _encoded(_two_colour())
    url = ls.cloud_url + "/bucket?key=k"
    with pytest.raises(ImageRefused, match=r"non-public address 127.0.0.1"):
        ImageLoader(allowed_hosts="*").load(url)
    port = url.split(":")[2].split("/")[0]
    allowed = ImageLoader(allowed_hosts=f"127.0.0.1:{port}")
    assert allowed.load(url).size == (40, 20)


def test_each_redirect_hop_of_a_plain_url_is_checked(ls):
    ls.cloud["k"] = _encoded(_two_colour())
    # Served by 127.0.0.1, redirecting to the same loopback server named "localhost".
    target = ls.cloud_url.replace("127.0.0.1", "localhost") + "/bucket?key=k"
    url = f"{ls.url}/redirect?to={target}"
    first = ls.url.removeprefix("http://")
    with pytest.raises(ImageRefused, match=r"localhost:\d+ are not allowed"):
        ImageLoader(allowed_hosts=first).load(url)
    assert not any(path.startswith("cloud:") for path in ls.paths_requested())
    then = target.removeprefix("http://").split("/")[0]
    image = ImageLoader(allowed_hosts=f"{first}, {then}").load(url)
    assert image.size == (40, 20)


def test_host_guard_patterns_and_public_resolution():
    def resolver(host):
        return {"cdn.example.com": ["93.184.216.34"], "evil.example.com": ["10.0.0.5"]}[
            host
        ]

    guard = HostGuard(("*.images.org", "*"), "http://ls:8080", resolver)
    guard.check("http://ls:8080/data/upload/1/a.png")
    guard.check("https://a.images.org/x.png")
    guard.check("https://cdn.example.com/x.png")
    with pytest.raises(ImageRefused, match=r"10.0.0.5"):
        guard.check("https://evil.example.com/x.png")
    with pytest.raises(ImageRefused, match="http"):
        guard.check("gopher://cdn.example.com/x")
    strict = HostGuard(("images.org",), "", resolver)
    with pytest.raises(ImageRefused):
        strict.check("https://cdn.example.com/x.png")


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 to 127.0.0.1
        "64:ff9b::a00:5",  # NAT64 to 10.0.0.5 (AWS runs NAT64)
        "64:ff9b:1::a00:5",  # local-use NAT64
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::7f00:1",  # IPv4-compatible
    ],
)
def test_ipv6_addresses_carrying_a_private_ipv4_are_not_public(address):
    """Python counts most of these as global; the IPv4 address they reach is not."""
    guard = HostGuard(("*",), "", lambda host: [address])
    with pytest.raises(ImageRefused, match="non-public address"):
        guard.check("https://cdn.example.com/x.png")
    public = HostGuard(("*",), "", lambda host: ["64:ff9b::808:808", "2002:808:808::"])
    public.check("https://cdn.example.com/x.png")


def test_parse_allowed_hosts():
    assert parse_allowed_hosts(" A.com, *.b.org ,, * ") == ("a.com", "*.b.org", "*")
    assert parse_allowed_hosts("a.com:8080, *.b.org:8443, [::1]:9") == (
        "a.com:8080",
        "*.b.org:8443",
        "[::1]:9",
    )
    assert parse_allowed_hosts("") == ()
    assert parse_allowed_hosts(None) == ()


@pytest.mark.parametrize(
    "entry", ["http://a.com", "a.com/x", "a.com:", "a.com:x", "u@a.com", "a b", "*a"]
)
def test_a_bad_allowed_host_entry_is_named(entry):
    with pytest.raises(ValueError, match=re.escape(repr(entry.lower()))):
        parse_allowed_hosts(f"ok.com, {entry}")


def test_an_allowed_host_allows_only_its_port():
    def resolver(host):
        return ["10.0.0.5"]  # private: only a named entry may allow it

    guard = HostGuard(
        parse_allowed_hosts("cdn.lan, api.lan:8443, *.img.lan, *.raw.lan:9000"),
        "http://ls.lan:8080",
        resolver,
    )
    allowed = [
        "http://cdn.lan/a.png",
        "https://cdn.lan/a.png",
        "http://cdn.lan:80/a.png",
        "https://api.lan:8443/a.png",
        "http://api.lan:8443/a.png",
        "https://x.img.lan/a.png",
        "http://y.raw.lan:9000/a.png",
        "http://ls.lan:8080/data/upload/1/a.png",
    ]
    refused = [
        "http://cdn.lan:6379/a.png",
        "https://cdn.lan:80/a.png",
        "http://cdn.lan:443/a.png",
        "https://api.lan/a.png",
        "http://x.img.lan:8080/a.png",
        "http://img.lan/a.png",
        "http://y.raw.lan/a.png",
        "http://ls.lan/a.png",
        "http://ls.lan:9090/a.png",
        "https://ls.lan:8080/a.png",
    ]
    for url in allowed:
        assert guard.check(url).url == url, url
    for url in refused:
        with pytest.raises(ImageRefused, match="not allowed"):
            guard.check(url)


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


# Model-size resize ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1440, 810), (1428, 812)),
        ((2246, 1590), (1680, 1176)),
        ((112, 112), (112, 112)),
    ],
)
def test_resize_for_model_uses_smart_resize_sizes(size, expected):
    resized = resize_for_model(Image.new("L", size, 128))
    assert resized.size == expected
    assert resized.mode == "RGB"


def test_resize_for_model_keeps_an_image_already_at_size():
    image = _two_colour(56, 28)
    assert resize_for_model(image, min_pixels=28 * 28) is image


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
    (tmp_path / "ok.png").write_bytes(_encoded(_two_colour()))
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


# Images larger than the model takes ------------------------------------------------


def test_a_10000_square_png_bomb_is_refused_from_its_header(monkeypatch):
    """12 KB on disk, 100 MP in memory: refused before Pillow allocates a pixel
    (the default limit is 32x what the model sees)."""
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge, match=r"10000x10000.*REXLABEL_MAX_IMAGE_PIXELS"):
        decode_image(_png_with_size(10_000, 10_000), source="bomb.png")
    assert DEFAULT_MAX_IMAGE_PIXELS == 32 * MAX_PIXELS


def _record_decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Sizes Pillow allocates when it decodes (after any JPEG draft)."""
    from PIL import ImageFile

    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    return sizes


def test_a_large_jpeg_is_decoded_at_reduced_scale_to_the_model_size(monkeypatch):
    data = _encoded(_two_colour(8000, 6000), "JPEG", quality=90)
    sizes = _record_decoded_sizes(monkeypatch)
    image = decode_image(data, source="big.jpg", fit_pixels=MAX_PIXELS)
    fit_h, fit_w = smart_resize(6000, 8000)
    assert image.size == (fit_w, fit_h)
    assert original_size(image) == (8000, 6000)
    assert set(sizes) == {(2000, 1500)}  # DCT scaling by 4, not 48 MP
    assert _close(image.getpixel((10, 10)), RED)
    assert _close(image.getpixel((fit_w - 10, 10)), BLUE)


def test_a_jpeg_too_large_even_after_dct_scaling_is_refused():
    data = _encoded(_two_colour(4000, 4000), "JPEG")  # at most 8x smaller a side
    with pytest.raises(ImageTooLarge, match=r"4000x4000 \(decoded at 500x500\)"):
        decode_image(data, source="x", max_pixels=200_000, fit_pixels=10_000)


def test_a_large_rotated_png_fits_the_model_and_keeps_its_shown_size():
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    data = _encoded(_two_colour(3000, 2000), "PNG", exif=exif)
    image = decode_image(data, source="x", fit_pixels=MAX_PIXELS)
    fit_h, fit_w = smart_resize(3000, 2000)
    assert image.size == (fit_w, fit_h)
    assert original_size(image) == (2000, 3000)
    # As the full-size decode shows it: red on top after the turn.
    assert _close(image.getpixel((10, 10)), RED)
    assert _close(image.getpixel((10, fit_h - 10)), BLUE)
    full = resize_for_model(decode_image(data, source="x"))
    assert full.size == image.size


def test_an_image_the_model_takes_whole_is_not_resized():
    data = _encoded(_two_colour(1000, 800))
    image = decode_image(data, source="x", fit_pixels=MAX_PIXELS)
    assert image.size == original_size(image) == (1000, 800)


def test_a_local_file_larger_than_the_download_limit_is_not_read(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_encoded(_two_colour(40, 20)) + b"\0" * 5000)
    loader = ImageLoader(max_download_bytes=4096)
    with pytest.raises(ImageTooLarge, match=r"huge.png is \d+ bytes, more than 4096"):
        loader.load(str(path), local_paths=True)


def test_a_local_file_is_read_no_further_than_the_cap(tmp_path):
    """A file that grows after its size was taken (a pipe, a log) is cut off."""
    path = tmp_path / "growing.bin"
    path.write_bytes(b"x" * 10)
    with path.open("rb") as handle:
        path.write_bytes(b"x" * 100)
        with pytest.raises(ImageTooLarge, match="more than 50"):
            read_capped(handle, 50, str(path))
    with path.open("rb") as handle:
        assert read_capped(handle, 100, str(path)) == b"x" * 100


def test_a_jpeg_whose_dct_scaling_lands_on_the_model_size_keeps_its_size():
    """2800 x 2800 drafts by 2 to exactly the model's 1400 x 1400: no resize is
    left to do, and the full size must still be known."""
    data = _encoded(_two_colour(2800, 2800), "JPEG")
    image = decode_image(data, source="x", fit_pixels=MAX_PIXELS)
    assert image.size == (1400, 1400)
    assert original_size(image) == (2800, 2800)


@pytest.mark.parametrize("value", ["12", "ab", "(5, 5)"])
@pytest.mark.parametrize("fit", [None, 2_007_040], ids=["whole", "fit"])
def test_a_png_text_chunk_cannot_set_the_original_size(value, fit):
    """Pillow copies PNG text chunks into ``info``: one named like our key made
    every region scale to 1x2 px, or failed the whole chunk."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("rexlabel.original_size", value)
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480)).save(buffer, "PNG", pnginfo=info)
    image = decode_image(buffer.getvalue(), source="x", fit_pixels=fit)
    assert original_size(image) == (640, 480)
