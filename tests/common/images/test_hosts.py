"""common.images.hosts: which hosts a download may reach (the SSRF guard)."""

import re

import pytest

from common.images.errors import (
    ImageRefused,
)
from common.images.hosts import HostGuard, parse_allowed_hosts
from common.images.loader import (
    ImageLoader,
)
from tests.common.images.helpers import (
    encoded,
    two_colour,
)
from tests.fake_label_studio import LEGACY_TOKEN

# SSRF guard ---------------------------------------------------------------------


def test_plain_urls_from_other_hosts_are_refused(ls):
    ls.files["1/a.png"] = encoded(two_colour())
    # The cloud server is another host:port on loopback: not Label Studio.
    loader = ImageLoader(label_studio_url=ls.url, token=LEGACY_TOKEN)
    with pytest.raises(ImageRefused, match="REXLABEL_ALLOWED_HOSTS"):
        loader.load(ls.cloud_url + "/bucket?key=x")
    assert not any(path.startswith("cloud:") for path in ls.paths_requested())


def test_no_label_studio_and_no_allow_list_refuses_every_url():
    with pytest.raises(ImageRefused, match="not allowed"):
        ImageLoader().load("http://127.0.0.1:1/a.png")


def test_loopback_needs_an_explicit_entry_not_the_wildcard(ls):
    ls.cloud["k"] = encoded(two_colour())
    url = ls.cloud_url + "/bucket?key=k"
    with pytest.raises(ImageRefused, match=r"non-public address 127.0.0.1"):
        ImageLoader(allowed_hosts="*").load(url)
    port = url.split(":")[2].split("/")[0]
    allowed = ImageLoader(allowed_hosts=f"127.0.0.1:{port}")
    assert allowed.load(url).size == (40, 20)


def test_each_redirect_hop_of_a_plain_url_is_checked(ls):
    ls.cloud["k"] = encoded(two_colour())
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
