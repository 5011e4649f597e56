"""Every check in the order a set-up is built, starting with the settings."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from backend.doctor.gpu import check_gpu
from backend.doctor.labelstudio import check_label_studio
from backend.doctor.model import check_model, check_sam
from backend.doctor.report import Check, fail, ok
from backend.doctor.workers import check_redis
from common import settings


def read_settings(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[Check]]:
    """Every setting's value (the default where the value is bad) and a row per
    bad variable (or one ``ok`` row)."""
    values: dict[str, Any] = {}
    checks: list[Check] = []
    for item in settings.SETTINGS:
        try:
            values[item.name] = item.read(environ)
        except settings.SettingsError as exc:
            values[item.name] = item.default
            checks.append(
                fail(
                    "settings",
                    str(exc),
                    f"fix {item.name} ({item.reason}); `rexlabel config` lists all",
                )
            )
    if not checks:
        checks.append(ok("settings", f"{len(values)} variables parse"))
    return values, checks


def run_checks(
    environ: Mapping[str, str] | None = None,
    *,
    image: str | None = None,
    task_id: int | None = None,
    project: int | None = None,
    queues: tuple[str, ...] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> list[Check]:
    """Every check, in the order a set-up is built."""
    values, checks = read_settings(environ)
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("redis", lambda: check_redis(values["REDIS_URL"], queues)),
        (
            "label studio",
            lambda: check_label_studio(
                values, image=image, task_id=task_id, project=project
            ),
        ),
        ("model", lambda: check_model(values)),
        ("gpu", lambda: check_gpu(values, run)),
        ("sam", lambda: check_sam(values)),
    ]
    for name, step in steps:
        try:
            found = step()
        except Exception as exc:  # a check must report, not crash the doctor
            found = fail(name, f"the check itself failed: {exc!r}", "report a bug")
        checks.extend(found if isinstance(found, list) else [found])
    return checks
