"""A report's recommended score thresholds, put where the planner reads them.

The planner reads per-label thresholds from the ML backend's extra params
(``model_score_thresholds``: label value -> threshold; see
:data:`backend.planner.LABEL_THRESHOLDS_PARAM`). :func:`apply_to_project`
merges them into the extra params of the ML backend connected to a Label
Studio project (every other key and label kept); :func:`config_snippet` gives
the JSON to paste there by hand when the report came from files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from backend.planner import (
    LABEL_THRESHOLDS_PARAM,
    PlanError,
    label_thresholds_of,
    shown,
)
from common.labelstudio.api import ExtraParamsError, ml_backend_extra_params

THRESHOLD_DECIMALS = 2
"""Recommended thresholds are rounded down to this many decimals: a value a
person reads and may type in Label Studio's settings, and 0.01 is finer than
a report on a few hundred regions can tell apart. Down, not to the nearest:
the prediction the best F1 was read at (scoring exactly the recommendation)
is still kept; at most those scoring less than 0.01 below come in too."""


class ApplyError(ValueError):
    """The thresholds cannot be applied; the message names the bad part."""


@dataclass(frozen=True)
class Change:
    """One label's threshold as written.

    Attributes:
        label: the Label Studio label value.
        old: its entry before (None: it had no usable entry).
        new: its entry now.
    """

    label: str
    old: float | None
    new: float


def _rounded_down(value: float) -> float:
    step = Decimal(1).scaleb(-THRESHOLD_DECIMALS)
    return float(Decimal(repr(value)).quantize(step, rounding=ROUND_FLOOR))


def recommended_thresholds(report: Mapping[str, Any]) -> dict[str, float]:
    """Label -> its ``recommended_threshold`` (best F1), rounded down to
    :data:`THRESHOLD_DECIMALS` decimals; labels without one are left out.

    ApplyError naming the label when a recommendation is not a number from 0
    to 1, or when ``report`` has no ``labels`` object.
    """
    labels = report.get("labels") if isinstance(report, Mapping) else None
    if not isinstance(labels, Mapping):
        raise ApplyError("the report has no 'labels' object")
    thresholds: dict[str, float] = {}
    for label, entry in sorted(labels.items()):
        value = (
            entry.get("recommended_threshold") if isinstance(entry, Mapping) else None
        )
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0
        ):
            raise ApplyError(
                f"label {shown(label)}: recommended_threshold {shown(value)} is not "
                "a number from 0 to 1"
            )
        thresholds[str(label)] = _rounded_down(float(value))
    return thresholds


def config_snippet(thresholds: Mapping[str, float]) -> str:
    """The extra params JSON holding ``thresholds``, to paste into the model's
    "Extra params" in Label Studio (merged with any keys already there)."""
    return json.dumps(
        {LABEL_THRESHOLDS_PARAM: dict(sorted(thresholds.items()))},
        indent=2,
        ensure_ascii=False,
    )


def _describe(backend: Mapping[str, Any]) -> str:
    return f"{backend.get('id')} {shown(backend.get('title'))} ({backend.get('url')})"


def choose_ml_backend(
    backends: list[dict[str, Any]], project_id: int, ml_backend_id: int | None
) -> dict[str, Any]:
    """The backend to update: ``ml_backend_id``'s, else the only one.

    ApplyError when there is none, when several are connected and no id is
    given (listing them), or when the id is not one of them.
    """
    listing = "; ".join(_describe(b) for b in backends)
    if ml_backend_id is not None:
        for backend in backends:
            if backend.get("id") == ml_backend_id:
                return backend
        raise ApplyError(
            f"ML backend {ml_backend_id} is not connected to project {project_id}"
            + (f"; its ML backends: {listing}" if backends else "")
        )
    if not backends:
        raise ApplyError(
            f"project {project_id} has no ML backend connected in Label Studio: "
            "connect rexlabel (project Settings -> Model) first"
        )
    if len(backends) > 1:
        raise ApplyError(
            f"project {project_id} has {len(backends)} ML backends connected "
            f"({listing}); choose one by its id"
        )
    return backends[0]


def _extra_params_of(backend: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return ml_backend_extra_params(dict(backend))
    except ExtraParamsError as exc:
        raise ApplyError(str(exc)) from None


def merged_extra_params(
    extra: Mapping[str, Any], thresholds: Mapping[str, float]
) -> tuple[dict[str, Any], list[Change]]:
    """``extra`` with ``thresholds`` merged into its per-label map (other keys
    and other labels kept), and what changed, by label.

    ApplyError when the existing map is not an object, or when an entry kept
    from it is unusable (the planner would refuse the result).
    """
    current = extra.get(LABEL_THRESHOLDS_PARAM)
    if current is None:
        current = {}
    if not isinstance(current, Mapping):
        raise ApplyError(
            f"extra_params {LABEL_THRESHOLDS_PARAM!r} is {shown(current)}, not an "
            "object of label -> threshold; fix or remove it in Label Studio first"
        )
    merged = {**current}
    changes: list[Change] = []
    for label, new in sorted(thresholds.items()):
        old = current.get(label)
        usable = isinstance(old, (int, float)) and not isinstance(old, bool)
        if usable and float(old) == new:
            continue
        merged[label] = new
        changes.append(Change(label, float(old) if usable else None, new))
    result = {**extra, LABEL_THRESHOLDS_PARAM: merged}
    try:
        label_thresholds_of(result)
    except PlanError as exc:
        raise ApplyError(f"{exc}; fix it in Label Studio first") from None
    return result, changes


def apply_to_project(
    client: Any,
    project_id: int,
    thresholds: Mapping[str, float],
    ml_backend_id: int | None = None,
) -> list[Change]:
    """Write ``thresholds`` into the extra params of the project's ML backend
    (``ml_backend_id``'s when several are connected); returns what changed
    (nothing is written when nothing would).

    ``client`` is a :class:`common.labelstudio.api.LabelStudioClient`. Label
    Studio sends the new extra params to the backend's /setup, so its
    ``model_version`` changes and "Retrieve Predictions" predicts again.
    Raises ApplyError (see :func:`choose_ml_backend`, :func:`merged_extra_params`)
    or LabelStudioAPIError.
    """
    backend = choose_ml_backend(
        client.list_ml_backends(project_id), project_id, ml_backend_id
    )
    extra, changes = merged_extra_params(_extra_params_of(backend), thresholds)
    if not changes:
        return []
    fields: dict[str, Any] = {
        "url": backend.get("url"),
        "project": backend.get("project", project_id),
        "extra_params": extra,
    }
    if backend.get("auth_method") == "BASIC_AUTH":
        # Label Studio checks the backend with these; a blank password keeps
        # the stored one (the API never shows it).
        fields.update(
            auth_method="BASIC_AUTH",
            basic_auth_user=backend.get("basic_auth_user"),
            basic_auth_pass="",
        )
    saved = client.update_ml_backend(backend["id"], fields)
    stored = saved.get("extra_params") if isinstance(saved, Mapping) else None
    held = stored.get(LABEL_THRESHOLDS_PARAM) if isinstance(stored, Mapping) else None
    if isinstance(stored, Mapping) and held != extra[LABEL_THRESHOLDS_PARAM]:
        raise ApplyError(
            f"Label Studio answered the update of ML backend {backend['id']} but "
            f"holds {LABEL_THRESHOLDS_PARAM} {shown(held)}"
        )
    return changes
