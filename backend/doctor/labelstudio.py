"""Label Studio: reachable, the token accepted, one task image downloaded.

Through the shared client (``common.labelstudio.api``): the same token handling
(a personal access token is exchanged for an access token first) and requests
as every other Label Studio call. The image is loaded as a job loads it
(``common.images.loader``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from backend.doctor.report import HTTP_TIMEOUT_S, Check, Status, fail, ok, skip, warn
from common.labelstudio.api import LabelStudioAPIError, LabelStudioClient, health
from common.labelstudio.auth import TokenExchangeError, TokenKind

LS_PAGE_SIZE = 1
"""The image check needs one project and one task."""
PROBE_ATTEMPTS = 1
"""The doctor asks once: a failure is what it reports, not something to retry."""
TOKEN_KINDS = {
    "legacy": "legacy token",
    "pat": "personal access token (exchanged for an access token)",
    "access": "access token (expires in minutes: prefer a personal access token)",
}
"""How the report names each kind of ``LabelStudioAuth`` token."""
REFUSED_TOKEN = (401, 403)
"""HTTP statuses with which Label Studio refuses a token."""


def check_label_studio(
    values: Mapping[str, Any],
    *,
    image: str | None = None,
    task_id: int | None = None,
    project: int | None = None,
    session: requests.Session | None = None,
) -> list[Check]:
    """Label Studio reachable, token accepted, one task image downloaded.

    ``image`` (and ``task_id``) test that reference instead of the first task
    of ``project`` (default: the first project).
    """
    url = str(values["LABEL_STUDIO_URL"]).rstrip("/")
    token = str(values["LABEL_STUDIO_API_KEY"])
    session = session or requests.Session()
    if not url:
        return [
            warn(
                "label studio",
                "LABEL_STUDIO_URL is not set: only local paths and allowed URLs "
                "can be loaded; project jobs cannot run",
                "set LABEL_STUDIO_URL to where this machine reaches Label Studio "
                "(compose: http://label-studio:8080)",
            )
        ]
    up = _check_up(url, session)
    if up.status is not Status.OK:
        return [up]
    checks = [up]
    if not token:
        checks.append(
            fail(
                "label studio token",
                "LABEL_STUDIO_API_KEY is not set: task images stored in Label "
                "Studio cannot be downloaded",
                "create a Personal Access Token (Account & Settings) and set "
                "LABEL_STUDIO_API_KEY",
            )
        )
        return checks
    client = LabelStudioClient(
        url, token, session=session, timeout=HTTP_TIMEOUT_S, retries=PROBE_ATTEMPTS
    )
    accepted = _check_token(client)
    checks.append(accepted)
    if accepted.status is Status.OK:
        checks.append(_check_image(values, client, image, task_id, project))
    return checks


def _check_up(url: str, session: requests.Session) -> Check:
    """Label Studio's ``/health`` answers ``{"status": "UP"}`` (no token)."""
    try:
        response = health(url, session=session, timeout=HTTP_TIMEOUT_S)
        up = response.ok and response.json().get("status") == "UP"
    except (requests.RequestException, ValueError) as exc:
        return fail(
            "label studio",
            f"cannot reach Label Studio at {url}: {exc}",
            "fix LABEL_STUDIO_URL; inside Docker use the service name "
            "(http://label-studio:8080), since localhost is the container itself",
        )
    if not up:
        return fail(
            "label studio",
            f"{url}/health answered HTTP {response.status_code}, not Label "
            "Studio's {'status': 'UP'}",
            "point LABEL_STUDIO_URL at Label Studio's base URL",
        )
    return ok("label studio", f"Label Studio at {url} is up")


def _check_token(client: LabelStudioClient) -> Check:
    """``whoami`` with the token: any answer but 401/403 means it was accepted."""
    kind = client.auth.kind
    try:
        me = client.whoami()
        user = me.get("email") or me.get("username")
    except TokenExchangeError as exc:
        return fail(
            "label studio token",
            str(exc),
            "create a new Personal Access Token (Account & Settings) and set "
            "LABEL_STUDIO_API_KEY",
        )
    except LabelStudioAPIError as exc:
        if exc.status is None:
            return fail("label studio token", f"whoami failed: {exc}", "retry")
        if exc.status in REFUSED_TOKEN:
            fix = (
                "new organizations disable legacy tokens: use a Personal Access "
                "Token, or enable legacy tokens in Organization settings"
                if kind is TokenKind.LEGACY
                else "create a new Personal Access Token and set LABEL_STUDIO_API_KEY"
            )
            return fail(
                "label studio token",
                f"Label Studio rejected the {TOKEN_KINDS[kind]} in "
                f"LABEL_STUDIO_API_KEY (HTTP {exc.status})",
                fix,
            )
        user = None  # another error, or no JSON: the token itself was not refused
    shown = user or "?"
    return ok("label studio token", f"{TOKEN_KINDS[kind]} accepted (user {shown})")


def _check_image(
    values: Mapping[str, Any],
    client: LabelStudioClient,
    image: str | None,
    task_id: int | None,
    project: int | None,
) -> Check:
    from common.images.decode import DEFAULT_MAX_IMAGE_PIXELS
    from common.images.errors import ImageLoadError
    from common.images.loader import ImageLoader

    if image is None:
        try:
            found = _first_task_image(client, project)
        except (
            LabelStudioAPIError,
            TokenExchangeError,
            ValueError,
            KeyError,
            TypeError,
        ) as exc:
            return fail(
                "image download",
                f"cannot list projects/tasks: {exc}",
                "check that the token's user can see the project",
            )
        if found is None:
            return skip(
                "image download",
                "no task with an image yet: import one, or pass --image REF",
            )
        image, task_id = found
    loader = ImageLoader(
        label_studio_url=client.url,
        token=str(values["LABEL_STUDIO_API_KEY"]),
        allowed_hosts=values.get("REXLABEL_ALLOWED_HOSTS", ""),
        local_files_root=values.get("LOCAL_FILES_DOCUMENT_ROOT", ""),
        max_pixels=values.get("REXLABEL_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
        cache_bytes=0,  # a cached image would prove nothing
        session=client.session,
    )
    try:
        picture = loader.load(image, task_id=task_id)
    except ImageLoadError as exc:
        return fail(
            "image download",
            str(exc),
            "check the token and LABEL_STUDIO_URL; for local files set "
            "LOCAL_FILES_DOCUMENT_ROOT; for other hosts REXLABEL_ALLOWED_HOSTS",
        )
    where = f"task {task_id}" if task_id is not None else "given reference"
    return ok(
        "image download",
        f"{image} ({where}) downloaded: {picture.width}x{picture.height}",
    )


def _first_task_image(
    client: LabelStudioClient, project: int | None
) -> tuple[str, int] | None:
    """(image reference, task id) of the first task with an image, or None."""
    if project is None:
        projects = client.list_projects(page_size=LS_PAGE_SIZE)
        if not projects:
            return None
        project, label_config = projects[0]["id"], projects[0].get("label_config", "")
    else:
        label_config = client.get_project(project).get("label_config", "")
    task = next(client.iter_tasks(project, page_size=LS_PAGE_SIZE), None)
    if task is None:
        return None
    task_data = task.get("data", {})
    key = _image_key(label_config)
    value = task_data.get(key) if key else None
    if not isinstance(value, str):
        value = next((v for v in task_data.values() if isinstance(v, str)), None)
    return (value, int(task["id"])) if value else None


def _image_key(label_config: str) -> str | None:
    """The task data key of the config's first ``<Image>`` (as the SDK's
    ``LabelInterface`` reads it); None when the config has none or is not one
    the SDK reads."""
    from backend.bulk.convert import config_image_key
    from backend.planner import PlanError

    try:
        return config_image_key(label_config) or None
    except PlanError:
        return None
