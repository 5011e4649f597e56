"""Scrubbing of /predict replies: no internal URL, host:port or local path
reaches a client; the task's own references do (the Flask wiring and a real
server are in tests/security/test_error_replies.py)."""

from __future__ import annotations

from backend.replies import scrub_reply, scrub_text


def test_a_task_url_the_caller_sent_is_quoted_with_its_host():
    tasks = [{"id": 1, "data": {"image": "http://10.9.8.7/x.png"}}]
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
        tasks,
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
