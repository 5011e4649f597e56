"""A tiny Label Studio REST helper for the end-to-end tests.

Deliberately independent of ``common.labelstudio.api`` (the code under test): the tests
drive Label Studio the way a user's browser or script would, with plain
``requests`` calls against the endpoints in ``label-studio-protocol.md`` §8.
Every call is bounded by a timeout; any HTTP error raises
:class:`LabelStudioHTTPError` with the method, path, status and body.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

REQUEST_TIMEOUT_S = 30.0
"""Plain REST calls answer in well under a second; 30 s covers a loaded 2-core box."""

RETRIEVE_TIMEOUT_S = 240.0
""""Retrieve Predictions" waits for the backend's one synchronous ``/predict``
(Label Studio's own limit is ML_TIMEOUT_PREDICT = 100 s, plus /health and
/setup); the margin covers a slow first model call on CPU."""

PAGE_SIZE = 1000
"""Test projects hold a few dozen tasks; one page is enough."""


class LabelStudioHTTPError(RuntimeError):
    """Label Studio answered a test call with HTTP >= 400."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class LabelStudioClient:
    """REST calls against one Label Studio, authenticated with one header.

    ``token`` is a legacy API token (sent as ``Token <t>``) or, with
    ``scheme="Bearer"``, a short-lived JWT access token.
    """

    def __init__(self, url: str, token: str, scheme: str = "Token") -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"{scheme} {token}"

    # -- plumbing ---------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        timeout: float = REQUEST_TIMEOUT_S,
        **kwargs: Any,
    ) -> requests.Response:
        url = path if path.startswith("http") else f"{self.url}{path}"
        response = self.session.request(method, url, timeout=timeout, **kwargs)
        if response.status_code >= 400:
            raise LabelStudioHTTPError(
                method, path, response.status_code, response.text
            )
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    # -- users and tokens -------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self.get_json("/api/current-user/whoami")

    def create_personal_access_token(self) -> str:
        """A new PAT (a JWT refresh token) for the current user.

        Label Studio 1.23 allows one live PAT per user; a second call fails."""
        return self.post_json("/api/token/", {})["token"]

    def exchange_personal_access_token(self, pat: str) -> str:
        """The 5-minute JWT access token Label Studio gives for a PAT."""
        response = requests.post(
            f"{self.url}/api/token/refresh/",
            json={"refresh": pat},
            timeout=REQUEST_TIMEOUT_S,
        )
        if response.status_code >= 400:
            raise LabelStudioHTTPError(
                "POST", "/api/token/refresh/", response.status_code, response.text
            )
        return response.json()["access"]

    # -- projects and tasks -----------------------------------------------
    def create_project(self, title: str, label_config: str) -> dict[str, Any]:
        return self.post_json(
            "/api/projects", {"title": title, "label_config": label_config}
        )

    def import_files(self, project_id: int, paths: Iterable[Path]) -> dict[str, Any]:
        """Upload image files; one task per file.

        Each file needs its own multipart field name, else Label Studio makes
        only one task."""
        handles = [Path(p).open("rb") for p in paths]
        try:
            files = {
                f"file{i}": (Path(h.name).name, h, "application/octet-stream")
                for i, h in enumerate(handles)
            }
            return self.request(
                "POST", f"/api/projects/{project_id}/import", files=files
            ).json()
        finally:
            for handle in handles:
                handle.close()

    def import_tasks(
        self, project_id: int, tasks: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Import JSON tasks (``[{"data": {...}}, ...]``)."""
        return self.post_json(f"/api/projects/{project_id}/import", tasks)

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        body = self.get_json(
            "/api/tasks", params={"project": project_id, "page_size": PAGE_SIZE}
        )
        return body["tasks"]

    def task(self, task_id: int) -> dict[str, Any]:
        return self.get_json(f"/api/tasks/{task_id}")

    def download(self, url_or_path: str) -> bytes:
        """Bytes of a media URL (``/data/upload/...``) with this client's auth."""
        return self.request("GET", url_or_path).content

    # -- ML backends and predictions --------------------------------------
    def add_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str,
        is_interactive: bool = True,
        extra_params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Connect a model; ``extra_params`` is the dialog's "Extra params" JSON
        (Label Studio sends it to the backend's /setup)."""
        body: dict[str, Any] = {
            "url": url,
            "project": project_id,
            "title": title,
            "is_interactive": is_interactive,
        }
        if extra_params is not None:
            body["extra_params"] = extra_params
        return self.post_json("/api/ml", body)

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        return self.get_json("/api/ml", params={"project": project_id})

    def ml_backend(self, ml_id: int) -> dict[str, Any]:
        return self.get_json(f"/api/ml/{ml_id}")

    def retrieve_predictions(self, project_id: int) -> Any:
        """The Data Manager's "Retrieve Predictions" action on all tasks.

        Label Studio answers 200 even when nothing was stored: read back."""
        return self.post_json(
            "/api/dm/actions",
            {"selectedItems": {"all": True, "excluded": []}},
            params={"id": "retrieve_tasks_predictions", "project": project_id},
            timeout=RETRIEVE_TIMEOUT_S,
        )

    def predictions(self, project_id: int) -> list[dict[str, Any]]:
        return self.get_json("/api/predictions", params={"project": project_id})

    def interactive(
        self, ml_id: int, task_id: int, context_result: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """What the labeling UI sends after a smart region or a typed prompt."""
        return self.post_json(
            f"/api/ml/{ml_id}/interactive-annotating",
            {"task": task_id, "context": {"result": context_result}},
            timeout=RETRIEVE_TIMEOUT_S,
        )
