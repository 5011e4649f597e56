"""common.urls: http(s) URLs read once, the way the HTTP client connects."""

import pytest

from common.urls import UnsafeURLError, parse_http_url, same_origin

LS = "http://ls.example:8080"


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


def test_same_origin_compares_scheme_host_and_port():
    assert same_origin("http://LS.example:8080/x", LS)
    assert not same_origin("http://ls.example:9090/x", LS)
    assert not same_origin("https://ls.example:8080/x", LS)
    assert same_origin("https://ls.example/x", "https://ls.example:443")
    assert not same_origin("http://ls.example/x", "")
    assert not same_origin("http://127.0.0.1:9\\@ls.example:8080/x", LS)
