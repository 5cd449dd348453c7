"""Loading and checking a folder of rule files (spec section 4)."""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pydantic import ValidationError

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
    return ".".join(str(part) for part in loc) or "(top level)"


def load_rule_file(path: Path) -> LoadedVersion:
    """Parse and validate one file; any problem is a RuleFileError naming the
    file, the key and what was expected."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuleFileError(f"{path}: cannot read the rule file ({exc.strerror}).") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RuleFileError(f"{path}: the rule file is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"{path}: not valid TOML: {exc}.") from None
    try:
        rule = RuleVersion.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _key_path(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise RuleFileError(f"{path}: key `{key}`: {msg}{more}.") from None
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
