"""/setup's ``hostname`` is never where credentials go.

A real ``rexlabel serve`` on loopback with FakeChat as the model and a token
configured but no LABEL_STUDIO_URL. A /setup names an attacker's Listener as
Label Studio; then a /predict too large to answer at once (a background job
that would post predictions with the token), and one with a Label Studio
upload path (downloaded with the token). Neither reaches the attacker: the
replies say that LABEL_STUDIO_URL is needed.
"""

from __future__ import annotations

from tests.security.conftest import (
    BASIC_AUTH,
    BOX_CONFIG,
    LEGACY_TOKEN,
    FakeChat,
    Listener,
    basic_auth_env,
    serve,
)

PROJECT = "3.1795697856"


def test_setup_hostname_gets_no_credentials(tmp_path):
    with FakeChat() as chat, Listener() as attacker, Listener() as images:
        env = {
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
            "LABEL_STUDIO_API_KEY": LEGACY_TOKEN,
            # both forms: any port on 127.0.0.1 before the fix, this one after
            "REXLABEL_ALLOWED_HOSTS": f"127.0.0.1, 127.0.0.1:{images.port}",
            "REXLABEL_SYNC_TASK_LIMIT": "1",
            "REXLABEL_JOBS_DIR": str(tmp_path / "jobs"),
            **basic_auth_env(),
        }
        with serve(tmp_path, env) as served:
            setup = {"project": PROJECT, "schema": BOX_CONFIG, "hostname": attacker.url}
            assert served.post("/setup", setup, auth=BASIC_AUTH).status_code == 200
            tasks = [
                {"id": i, "data": {"image": f"{images.url}/{i}.png"}} for i in (1, 2)
            ]
            body = {"tasks": tasks, "project": PROJECT, "label_config": BOX_CONFIG}
            big = served.post("/predict", body, auth=BASIC_AUTH)
            upload = {"id": 3, "data": {"image": "/data/upload/3/a.png"}}
            body = {"tasks": [upload], "project": PROJECT, "label_config": BOX_CONFIG}
            small = served.post("/predict", body, auth=BASIC_AUTH)
    assert attacker.seen == []
    assert big.status_code >= 400 and "LABEL_STUDIO_URL" in big.text
    assert "background_job" not in big.text
    (error,) = small.json()["errors"]
    assert "LABEL_STUDIO_URL" in error["error"]
