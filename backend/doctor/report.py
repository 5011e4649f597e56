"""The doctor's rows (:class:`Check`) and the report printed from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

HTTP_TIMEOUT_S = 5.0
"""Each HTTP probe waits this long: a healthy service answers in milliseconds."""


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One finding: ``name`` of the check, ``status``, ``detail``, ``fix``."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def warn(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, Status.WARN, detail, fix)


def skip(name: str, detail: str) -> Check:
    return Check(name, Status.SKIP, detail)


MARKS = {
    Status.OK: "OK  ",
    Status.WARN: "WARN",
    Status.FAIL: "FAIL",
    Status.SKIP: "SKIP",
}


def format_report(checks: list[Check]) -> str:
    """One line per check; a ``fix:`` line under each warning or failure."""
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append(f"{MARKS[check.status]}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status in (Status.WARN, Status.FAIL):
            lines.append(f"      {'':<{width}}  fix: {check.fix}")
    failed = sum(c.status is Status.FAIL for c in checks)
    warned = sum(c.status is Status.WARN for c in checks)
    lines.append(
        f"{failed} problem(s), {warned} warning(s)"
        if failed or warned
        else "everything checked is fine"
    )
    return "\n".join(lines)
