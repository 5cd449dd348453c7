"""The docs are held to the code: every command documented, every code real."""

from __future__ import annotations

import re
from pathlib import Path

import click

from twopay.cli import main
from twopay.reports.reasons import QUARANTINE_CODES, REASONS, REJECTION_CODES, REVIEW_CODES

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "spec.md"


def commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += commands(cmd, f"{prefix}{name} ")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [c for c in commands(main) if f"twopay {c}" not in readme]
    assert not missing, f"commands not documented in README.md: {missing}"


def test_the_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    known = set(commands(main)) | {c.split()[0] for c in commands(main)}
    used = set(re.findall(r"`twopay ([a-z]+(?: [a-z]+)?)", readme))
    unknown = [u for u in used if u not in known and u.split()[0] not in known]
    assert not unknown, f"README names commands that do not exist: {unknown}"


def test_every_outcome_code_has_a_reason_in_both_languages() -> None:
    for code in (*QUARANTINE_CODES, *REJECTION_CODES, *REVIEW_CODES):
        zh, en = REASONS[code]
        assert zh and en and zh != en


def test_the_codes_are_the_specs() -> None:
    """Keep the outcome codes exactly as spec section 5 writes them."""
    if not SPEC.exists():  # the spec sits beside the checkout; CI has it
        return
    section = SPEC.read_text(encoding="utf-8").split("## 5.")[1].split("## 6.")[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ")]
    by_outcome = {
        r[1].strip().split(":")[0]: {c.strip() for c in r[3].split(",")} for r in rows[1:]
    }
    assert by_outcome["quarantined"] == set(QUARANTINE_CODES)
    assert by_outcome["rejected"] == set(REJECTION_CODES)
    assert by_outcome["held for review"] == set(REVIEW_CODES)
