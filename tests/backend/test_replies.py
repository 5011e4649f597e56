"""Scrubbing of /predict replies: no internal URL, host:port or local path
reaches a client; the image references the plan read from the tasks do, each
only whole and standing alone (the Flask wiring and a real server are in
tests/security/test_error_replies.py)."""

from __future__ import annotations

import pytest

from backend.replies import is_reference, scrub_reply, scrub_text

INTERNAL = (
    "not found at http://10.1.2.3:8080/data/upload/1/a.png and model server "
    "ls.internal:8080 failed in /srv/models/secret/weights.bin"
)
"""An error quoting the worker's insides: a URL, a host:port and a path."""
INTERNAL_SCRUBBED = "not found at <url> and model server <host> failed in <path>"


def test_a_task_url_the_caller_sent_is_quoted_with_its_host():
    images = ["http://10.9.8.7/x.png"]
    reply = scrub_reply(
        {
            "errors": [
                {
                    "task": 1,
                    "error": "cannot load 'http://10.9.8.7/x.png': downloads from "
                    "10.9.8.7:80 are not allowed; Label Studio at ls.internal:8080 "
                    "said: see http://ls.internal:8080/api and /srv/app/worker.py",
                }
            ]
        },
        images,
    )
    assert reply["errors"][0]["error"] == (
        "cannot load 'http://10.9.8.7/x.png': downloads from 10.9.8.7:80 are not "
        "allowed; Label Studio at <host> said: see <url> and <path>"
    )


def test_plain_messages_stay() -> None:
    for text in (
        "no route POST /predict",
        "3/4 chunks done at 12:30",
        "image 1: call 'label' (detection: car) found nothing",
    ):
        assert scrub_text(text) == text


def test_windows_home_and_file_urls_are_hidden() -> None:
    text = r"C:\models\rex\a.bin, ~/cache/hub and file:///etc/passwd"
    assert scrub_text(text) == "<path>, <path> and <url>"


def test_host_ports_are_hidden_but_not_label_like_pairs() -> None:
    text = "redis:6379 and [::1]:9090 and 10.0.0.1:9 refused; label dog:2 at 3:45"
    assert scrub_text(text) == (
        "<host> and <host> and <host> refused; label dog:2 at 3:45"
    )


@pytest.mark.parametrize(
    "images",
    [
        [":", "/", "."],  # separators would cut every URL and path apart
        ["8080", "10.1.2.3", "data", "upload"],  # fragments of the internal URL
        ["s", "http", "://"],
    ],
)
def test_short_or_partial_strings_shield_nothing(images):
    reply = scrub_reply({"errors": [{"task": 1, "error": INTERNAL}]}, images)
    assert reply["errors"][0]["error"] == INTERNAL_SCRUBBED


def test_a_reference_is_kept_only_where_it_stands_alone():
    ref = "/data/upload/1/a.png"
    text = (
        f"cannot load '{ref}': not found at http://ls:8080{ref} "
        f"(nor {ref}/../../etc/passwd, nor /srv{ref}), {ref}."
    )
    assert scrub_text(text, [ref]) == (
        f"cannot load '{ref}': not found at <url> (nor <path>, nor <path>), {ref}."
    )


def test_a_url_reference_does_not_shield_a_longer_url():
    ref = "http://img.example.com/a.png"
    text = f"{ref}?next=http://10.1.2.3:8000/internal and {ref}/x failed; {ref} 404"
    assert scrub_reply({"message": text}, [ref])["message"] == (
        f"<url> and <url> failed; {ref} 404"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/data/upload/1/a.png", True),
        ("/data/local-files/?d=images/a.png", True),
        ("http://img.example.com/a.png", True),
        ("s3://bucket/key.png", True),
        ("C:\\data\\a.png", True),
        ("~/images/a.png", True),
        ("/a/b", False),  # shorter than MIN_REFERENCE_CHARS
        ("/predict", False),  # one part
        ("a.png-long-name", False),  # relative: no path, no URL
        ("file:///etc/passwd", True),  # the task's own file URL, echoed back
        ("file:///x", False),  # one part
        ("http://host/a b", False),  # a URL has no spaces
        ("/data/x\n/y", False),
    ],
)
def test_what_counts_as_an_image_reference(value, expected):
    assert is_reference(value) is expected
