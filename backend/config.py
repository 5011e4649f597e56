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
    predict_timeout: float = settings.DEFAULT_PREDICT_TIMEOUT_S
    sync_task_limit: int = settings.DEFAULT_SYNC_TASK_LIMIT
    chunk_size: int = settings.DEFAULT_PREDICT_CHUNK_SIZE

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
