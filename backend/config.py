"""What the backend app reads from the environment (``common.settings``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backend.auth import AuthConfig
from common import settings


@dataclass(frozen=True)
class BackendConfig:
    """What the app reads from the environment (``common.settings``)."""

    auth: AuthConfig
    redis_url: str = ""
    state_path: str = ""
    predict_timeout: float = 90.0
    sync_task_limit: int = 16
    chunk_size: int = 4

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BackendConfig:
        def get(name: str) -> Any:
            return settings.get(name, environ)

        return cls(
            auth=AuthConfig.from_env(environ),
            redis_url=get("REDIS_URL"),
            state_path=get("REXLABEL_STATE_PATH"),
            predict_timeout=get("REXLABEL_PREDICT_TIMEOUT"),
            sync_task_limit=get("REXLABEL_SYNC_TASK_LIMIT"),
            chunk_size=get("REXLABEL_PREDICT_CHUNK_SIZE"),
        )
