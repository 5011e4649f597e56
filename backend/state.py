"""Per-project state the backend must remember between calls.

Label Studio sends a project's ``extra_params`` (the "Extra params" JSON of the
model form) only in ``/setup``; ``/predict`` and ``/webhook`` need them later,
possibly in another process. State lives in Redis when ``REDIS_URL`` is set
(shared by every backend process), else in a SQLite file when
``REXLABEL_STATE_PATH`` is set, else in this process's memory (one process,
e.g. ``rexlabel serve``).

The project key is the id part of Label Studio's ``"<id>.<created_at ts>"``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

REDIS_KEY_PREFIX = "rexlabel:project:"
"""Redis key of a project's state is this prefix plus the project id."""

SQLITE_TIMEOUT_S = 5.0
"""How long a SQLite write waits for another process's lock before failing."""


class StateError(ValueError):
    """A project key or stored state is unusable; the message names it."""


def project_id(project: Any) -> str:
    """``"1.1795697856"`` -> ``"1"``; also accepts ``1`` or ``"1"``."""
    if isinstance(project, bool) or project is None:
        raise StateError(
            f"project must be '<id>.<timestamp>' or an id, got {project!r}"
        )
    head = str(project).strip().split(".", 1)[0]
    if not head.isdigit():
        raise StateError(
            f"project must be '<id>.<timestamp>' or an id, got {project!r}"
        )
    return head


@dataclass
class ProjectState:
    """What ``/setup`` told us about a project.

    Attributes:
        project: the project id (``"1"``).
        extra_params: the model's "Extra params" JSON (``{}`` when null).
        hostname: Label Studio's base URL as sent in ``/setup``.
        label_config: the labeling config (``schema``) sent in ``/setup``.
        updated_at: unix time of the last ``/setup``.
    """

    project: str
    extra_params: dict[str, Any] = field(default_factory=dict)
    hostname: str = ""
    label_config: str = ""
    updated_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ProjectState:
        try:
            data = json.loads(text)
            return cls(
                project=str(data["project"]),
                extra_params=dict(data.get("extra_params") or {}),
                hostname=str(data.get("hostname") or ""),
                label_config=str(data.get("label_config") or ""),
                updated_at=float(data.get("updated_at") or 0.0),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"stored project state is unreadable: {exc}") from None


def make_state(
    project: Any,
    extra_params: Any = None,
    hostname: str | None = None,
    label_config: str | None = None,
) -> ProjectState:
    """Validate what ``/setup`` sent; StateError names the bad field."""
    if extra_params is None:
        extra_params = {}
    if isinstance(extra_params, str):
        try:
            extra_params = json.loads(extra_params) if extra_params.strip() else {}
        except ValueError as exc:
            raise StateError(f"extra_params is not valid JSON: {exc}") from None
    if not isinstance(extra_params, dict):
        raise StateError(f"extra_params must be a JSON object, got {extra_params!r}")
    return ProjectState(
        project=project_id(project),
        extra_params=extra_params,
        hostname=str(hostname or ""),
        label_config=str(label_config or ""),
        updated_at=time.time(),
    )


class StateStore(ABC):
    """Where project states live."""

    kind: str = "store"

    @abstractmethod
    def get(self, project: Any) -> ProjectState | None:
        """The state of ``project`` (key or id), or None if never set up."""

    @abstractmethod
    def put(self, state: ProjectState) -> None:
        """Store (replace) a project's state."""

    def extra_params(self, project: Any) -> dict[str, Any]:
        """The project's extra params, ``{}`` when unknown."""
        state = self.get(project)
        return dict(state.extra_params) if state else {}


class MemoryStore(StateStore):
    """This process only; lost on restart."""

    kind = "memory"

    def __init__(self) -> None:
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, project: Any) -> ProjectState | None:
        with self._lock:
            text = self._states.get(project_id(project))
        return ProjectState.from_json(text) if text else None

    def put(self, state: ProjectState) -> None:
        with self._lock:
            self._states[state.project] = state.to_json()


class SqliteStore(StateStore):
    """A SQLite file shared by the processes of one machine."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS project_state "
                "(project TEXT PRIMARY KEY, state TEXT NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT_S)

    def get(self, project: Any) -> ProjectState | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT state FROM project_state WHERE project = ?",
                (project_id(project),),
            ).fetchone()
        return ProjectState.from_json(row[0]) if row else None

    def put(self, state: ProjectState) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO project_state (project, state) VALUES (?, ?)",
                (state.project, state.to_json()),
            )


class RedisStore(StateStore):
    """Shared by every backend process that uses the same Redis."""

    kind = "redis"

    def __init__(self, connection: Any, prefix: str = REDIS_KEY_PREFIX) -> None:
        self.connection = connection
        self.prefix = prefix

    def get(self, project: Any) -> ProjectState | None:
        text = self.connection.get(self.prefix + project_id(project))
        return ProjectState.from_json(text) if text else None

    def put(self, state: ProjectState) -> None:
        self.connection.set(self.prefix + state.project, state.to_json())


def open_store(redis_connection: Any = None, path: str = "") -> StateStore:
    """Redis when a connection is given, else SQLite at ``path``, else memory."""
    if redis_connection is not None:
        return RedisStore(redis_connection)
    if path:
        return SqliteStore(path)
    return MemoryStore()
