"""Loading and checking a folder of rule files (spec section 4)."""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from twopay.errors import RuleFileError
from twopay.rules.models import RuleVersion


@dataclass(frozen=True)
class LoadedVersion:
    rule: RuleVersion
    path: Path
    sha256: str


@dataclass(frozen=True)
class RuleSet:
    """Every version of every scheme, ordered by scheme then effective_from."""

    versions: tuple[LoadedVersion, ...]
    schemes: tuple[str, ...] = field(default=())

    def of(self, scheme: str) -> list[LoadedVersion]:
        return [v for v in self.versions if v.rule.scheme == scheme]

    def in_force(self, scheme: str, day: date) -> LoadedVersion | None:
        return next((v for v in self.of(scheme) if v.rule.in_force(day)), None)

    def manifest(self) -> list[dict[str, str]]:
        """What summary.json and the ledger record about the rules used."""
        return [
            {
                "scheme": v.rule.scheme,
                "version": v.rule.version,
                "file": v.path.name,
                "sha256": v.sha256,
            }
            for v in self.versions
        ]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.manifest(), sort_keys=True).encode()).hexdigest()


def _key_path(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc)


# What a key of the wrong TOML type should have been, by pydantic error type.
_EXPECTED_TYPE = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "decimal_type": "a number",
    "decimal_parsing": "a number",
    "is_instance_of": "a number",  # strict Decimal: the only is-instance check
    "string_type": "a string",
    "date_type": "a date such as 2024-01-01 (unquoted)",
    "date_from_datetime_inexact": "a date such as 2024-01-01 (unquoted)",
    "date_parsing": "a date such as 2024-01-01 (unquoted)",
    "list_type": "an array (list)",
    "model_type": "a table",
    "dict_type": "a table",
}


def _toml_value(value: object) -> str:
    """How a TOML value is shown in a message: its TOML type, then the value."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown, ensure_ascii=False)}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


# what a key's pattern asks for, in words (pydantic would print the regex)
_PATTERN_EXPECTED = {
    "scheme": "an id of lower-case letters, digits, '-' and '_' (at most 64)",
    "version": "a version label that is not blank",
}


def _problem(err: ErrorDetails) -> str:
    """One validation error as "what was expected": pydantic's wording for
    limits and choices, ours for wrong types, unknown and missing keys."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _EXPECTED_TYPE:
        return f"expected {_EXPECTED_TYPE[kind]}, got {_toml_value(err['input'])}"
    if kind == "string_pattern_mismatch" and err["loc"][-1] in _PATTERN_EXPECTED:
        return f"expected {_PATTERN_EXPECTED[err['loc'][-1]]}, got {_toml_value(err['input'])}"
    if kind == "value_error":  # a plain ValueError: drop pydantic's "Value error, "
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return err["msg"]


def load_rule_file(path: Path) -> LoadedVersion:
    """Parse and validate one file; any problem is a RuleFileError naming the
    file, the key and what was expected."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuleFileError(f"{path}: cannot read the rule file ({exc.strerror}).") from None
    try:
        # utf-8-sig: Notepad and Excel save UTF-8 with a byte-order mark
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise RuleFileError(f"{path}: the rule file is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"{path}: not valid TOML: {exc}.") from None
    try:
        # strict: a TOML boolean or string is not a number, a string is not a date
        rule = RuleVersion.model_validate(data, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _key_path(err["loc"])
        where = f"key `{key}`: " if key else ""  # a whole-file check names its keys itself
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise RuleFileError(f"{path}: {where}{_problem(err)}{more}.") from None
    return LoadedVersion(rule=rule, path=path, sha256=hashlib.sha256(raw).hexdigest())


def load_rules(folder: Path) -> RuleSet:
    """Load every ``*.toml`` in ``folder``; versions of one scheme must not
    overlap in time and must have distinct version labels."""
    if not folder.is_dir():
        raise RuleFileError(f"{folder}: the rules folder does not exist.")
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise RuleFileError(f"{folder}: no rule files (*.toml) in the rules folder.")
    loaded = [load_rule_file(p) for p in files]
    loaded.sort(key=lambda v: (v.rule.scheme, v.rule.effective_from, v.path.name))
    labels: dict[tuple[str, str], LoadedVersion] = {}
    for v in loaded:
        other = labels.setdefault((v.rule.scheme, v.rule.version), v)
        if other is not v:
            raise RuleFileError(
                f"{other.path} and {v.path}: both are version {v.rule.version!r} of scheme "
                f"{v.rule.scheme!r}."
            )
    for a, b in zip(loaded, loaded[1:], strict=False):
        if a.rule.scheme != b.rule.scheme:
            continue
        if a.rule.effective_to is None or a.rule.effective_to >= b.rule.effective_from:
            raise RuleFileError(
                f"{a.path} and {b.path}: versions {a.rule.version!r} and {b.rule.version!r} of "
                f"scheme {a.rule.scheme!r} overlap in time (from {b.rule.effective_from})."
            )
    schemes = tuple(sorted({v.rule.scheme for v in loaded}))
    return RuleSet(versions=tuple(loaded), schemes=schemes)


def json_schema() -> dict[str, object]:
    """The JSON Schema of a rule file, for editors."""
    return RuleVersion.model_json_schema()
