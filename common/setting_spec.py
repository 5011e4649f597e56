"""What one setting is: :class:`Setting` (name, type, default, why, checks)
and :class:`SettingsError`. The registry of every setting is
``common.settings``, which re-exports both; nothing here reads a variable
until a :class:`Setting` is read."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """An environment variable has a value rexlabel cannot use; names the variable."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


def _parse_int(raw: str) -> int:
    return int(raw.strip())


def _parse_float(raw: str) -> float:
    """A finite float: ``nan`` passes every minimum/maximum test and ``inf``
    every minimum, so both are refused here, where the variable is named."""
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_str(raw: str) -> str:
    return raw.strip()


_PARSERS: dict[type, Callable[[str], Any]] = {
    bool: _parse_bool,
    int: _parse_int,
    float: _parse_float,
    str: _parse_str,
}


@dataclass(frozen=True)
class Setting:
    """One environment variable.

    ``aliases`` are older names users know (read when ``name`` is unset);
    ``choices`` restricts the value; ``minimum`` and ``maximum`` bound
    numbers; ``secret`` masks the value in ``rexlabel config`` and logs;
    ``blank_is_default`` reads an empty value as the default (numbers and
    booleans always do; a text whose empty value would mean nothing useful
    sets it); ``check`` raises ValueError (its message names the bad part)
    for a value of the right type that is still unusable, so start-up refuses
    it at once.
    ``changes_predictions`` marks a value that changes what the model answers,
    so ``model_version`` hashes it.
    """

    name: str
    type: type
    default: Any
    reason: str
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False
    check: Callable[[Any], Any] | None = None
    blank_is_default: bool = False
    changes_predictions: bool = False

    def raw(self, environ: Mapping[str, str]) -> str | None:
        for key in (self.name, *self.aliases):
            if key in environ:
                return environ[key]
        return None

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        environ = os.environ if environ is None else environ
        raw = self.raw(environ)
        blank = raw is not None and raw.strip() == ""
        if raw is None or (blank and (self.type is not str or self.blank_is_default)):
            return self.default
        try:
            value = _PARSERS[self.type](raw)
        except ValueError as exc:
            raise SettingsError(f"{self.name}={raw!r} is not valid: {exc}") from None
        if self.choices and value not in self.choices:
            raise SettingsError(
                f"{self.name}={raw!r} is not valid: "
                f"expected one of {', '.join(self.choices)}"
            )
        if self.minimum is not None and value < self.minimum:
            raise SettingsError(
                f"{self.name}={raw!r} is not valid: must be at least {self.minimum}"
            )
        if self.maximum is not None and value > self.maximum:
            raise SettingsError(
                f"{self.name}={raw!r} is not valid: must be at most {self.maximum}"
            )
        if self.check is not None and value != "":
            try:
                self.check(value)
            except ValueError as exc:
                raise SettingsError(f"{self.name} is not valid: {exc}") from None
        return value
