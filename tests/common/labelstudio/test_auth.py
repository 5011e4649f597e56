"""common.labelstudio.auth: legacy tokens, personal access tokens exchanged and
renewed."""

import time

import pytest
import requests

from common.labelstudio.auth import (
    ACCESS_TOKEN_MARGIN_S,
    LabelStudioAuth,
    TokenExchangeError,
    jwt_claims,
)
from tests.fake_label_studio import (
    LEGACY_TOKEN,
    FakeLabelStudio,
    make_jwt,
    make_pat,
)

LS = "http://ls.example:8080"


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
