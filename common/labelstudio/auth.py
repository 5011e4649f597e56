"""Label Studio's ``Authorization`` header, from whichever token is configured.

:class:`LabelStudioAuth` builds it from a legacy token (``Token <t>``), a
personal access token (a JWT *refresh* token, exchanged at
``POST /api/token/refresh/`` for a 5-minute access token that is cached and
renewed before it expires; ``Bearer <access>``), or an access JWT used as it is.
The REST client (``common.labelstudio.api``) and the image loader
(``common.images.loader``) share it.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

import requests

TOKEN_REFRESH_PATH = "/api/token/refresh/"
"""Where a personal access token (JWT refresh) is exchanged for an access token."""
ACCESS_TOKEN_LIFETIME_S = 300.0
"""Label Studio's access tokens live 5 minutes; used when the token has no ``exp``."""
ACCESS_TOKEN_MARGIN_S = 30.0
"""Renew this long before expiry so a download in flight never carries a dead token."""
TOKEN_EXCHANGE_TIMEOUT_S = 10.0
"""The refresh endpoint answers in milliseconds; longer means Label Studio is down."""


class TokenExchangeError(RuntimeError):
    """Label Studio refused or failed the token exchange; ``status``: HTTP code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenKind(str, Enum):
    """Which token ``LABEL_STUDIO_API_KEY`` holds, read from its shape."""

    NONE = "none"
    """No token: requests go without ``Authorization``."""
    LEGACY = "legacy"
    """Not a JWT: Label Studio's legacy token, sent as ``Token <t>``."""
    ACCESS = "access"
    """An access JWT, sent as it is (``Bearer <t>``) until it expires."""
    PAT = "pat"
    """A personal access token (a refresh JWT), exchanged for access tokens."""


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The (unverified) payload of a JWT, or None if ``token`` is not JWT-shaped."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


class LabelStudioAuth:
    """The ``Authorization`` header for Label Studio, from whichever token is given.

    ``kind`` (:class:`TokenKind`) says which token it is and so how it is sent.
    Thread-safe: concurrent downloads share one exchange.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = (token or "").strip()
        self._session = session or requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        self._access: str | None = None
        self._access_expires = 0.0
        claims = jwt_claims(self.token) if self.token else None
        if not self.token:
            self.kind = TokenKind.NONE
        elif claims is None:
            self.kind = TokenKind.LEGACY
        elif claims.get("token_type") == "access":
            self.kind = TokenKind.ACCESS
        else:
            self.kind = TokenKind.PAT

    def headers(self) -> dict[str, str]:
        """Headers to send to Label Studio (empty when no token is configured)."""
        if self.kind is TokenKind.NONE:
            return {}
        if self.kind is TokenKind.LEGACY:
            return {"Authorization": f"Token {self.token}"}
        if self.kind is TokenKind.ACCESS:
            return {"Authorization": f"Bearer {self.token}"}
        return {"Authorization": f"Bearer {self.access_token()}"}

    def invalidate(self) -> None:
        """Forget the cached access token (after a 401), so the next call renews it."""
        with self._lock:
            self._access = None
            self._access_expires = 0.0

    def access_token(self) -> str:
        """A valid access token for the personal access token, renewed when due."""
        with self._lock:
            now = self._clock()
            if self._access and now < self._access_expires - ACCESS_TOKEN_MARGIN_S:
                return self._access
            access = self._exchange()
            claims = jwt_claims(access) or {}
            expires = claims.get("exp")
            if not isinstance(expires, (int, float)):
                expires = now + ACCESS_TOKEN_LIFETIME_S
            self._access, self._access_expires = access, float(expires)
            return access

    def _exchange(self) -> str:
        if not self.base_url:
            raise TokenExchangeError(
                "a personal access token needs LABEL_STUDIO_URL to be exchanged"
            )
        url = self.base_url + TOKEN_REFRESH_PATH
        try:
            # no redirects: a 307/308 would carry the refresh token elsewhere
            response = self._session.post(
                url,
                json={"refresh": self.token},
                timeout=TOKEN_EXCHANGE_TIMEOUT_S,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise TokenExchangeError(f"token exchange at {url} failed: {exc}") from exc
        if response.status_code in (400, 401, 403):
            raise TokenExchangeError(
                f"Label Studio rejected the personal access token in "
                f"LABEL_STUDIO_API_KEY (HTTP {response.status_code} from {url}); "
                "create a new one under Account & Settings",
                status=response.status_code,
            )
        if response.is_redirect:
            raise TokenExchangeError(
                f"token exchange at {url} answered a redirect (HTTP "
                f"{response.status_code}), not followed: set LABEL_STUDIO_URL to the "
                "address Label Studio serves its API at",
                status=response.status_code,
            )
        if not response.ok:
            raise TokenExchangeError(
                f"token exchange at {url} failed with HTTP {response.status_code}",
                status=response.status_code,
            )
        try:
            access = response.json()["access"]
        except (ValueError, KeyError, TypeError):
            raise TokenExchangeError(
                f"token exchange at {url} returned no 'access' token"
            ) from None
        if not isinstance(access, str) or not access:
            raise TokenExchangeError(f"token exchange at {url} returned an empty token")
        return access
