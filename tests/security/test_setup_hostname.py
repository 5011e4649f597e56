"""/setup's ``hostname`` is never where credentials go.

A real ``rexlabel serve`` on loopback with FakeChat as the model and a token
configured but no LABEL_STUDIO_URL. A /setup names an attacker's Listener as
Label Studio; then a /predict too large to answer at once (a background job
that would post predictions with the token), and one with a Label Studio
upload path (downloaded with the token). Neither reaches the attacker: the
replies say that LABEL_STUDIO_URL is needed.
"""

from __future__ import annotations

from tests.security.conftest import FakeChat, Listener, serve

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="shape"/>'
    "</RectangleLabels></View>"
)
TOKEN = "0123456789abcdef0123456789abcdef01234567"
"""A legacy Label Studio token (40 hex characters)."""
USER, PASSWORD = "ls", "basic-secret"
AUTH = (USER, PASSWORD)
PROJECT = "3.1795697856"


def test_setup_hostname_gets_no_credentials(tmp_path):
    with FakeChat() as chat, Listener() as attacker, Listener() as images:
        env = {
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
            "LABEL_STUDIO_API_KEY": TOKEN,
            # both forms: any port on 127.0.0.1 before the fix, this one after
            "REXLABEL_ALLOWED_HOSTS": f"127.0.0.1, 127.0.0.1:{images.port}",
            "REXLABEL_SYNC_TASK_LIMIT": "1",
            "REXLABEL_JOBS_DIR": str(tmp_path / "jobs"),
            "BASIC_AUTH_USER": USER,
            "BASIC_AUTH_PASS": PASSWORD,
        }
        with serve(tmp_path, env) as served:
            setup = {"project": PROJECT, "schema": CONFIG, "hostname": attacker.url}
            assert served.post("/setup", setup, auth=AUTH).status_code == 200
            tasks = [
                {"id": i, "data": {"image": f"{images.url}/{i}.png"}} for i in (1, 2)
            ]
            body = {"tasks": tasks, "project": PROJECT, "label_config": CONFIG}
            big = served.post("/predict", body, auth=AUTH)
            upload = {"id": 3, "data": {"image": "/data/upload/3/a.png"}}
            body = {"tasks": [upload], "project": PROJECT, "label_config": CONFIG}
            small = served.post("/predict", body, auth=AUTH)
    assert attacker.seen == []
    assert big.status_code >= 400 and "LABEL_STUDIO_URL" in big.text
    assert "background_job" not in big.text
    (error,) = small.json()["errors"]
    assert "LABEL_STUDIO_URL" in error["error"]
