"""Small builders for test inputs: valid ID numbers, CSV files, workspaces."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from click.testing import CliRunner, Result

from twopay.cli import main

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK = "10X98765432"


def make_id(first17: str) -> str:
    """A valid 18-character ID number (GB 11643-1999) from its first 17 digits."""
    assert len(first17) == 17 and first17.isdigit()
    return first17 + CHECK[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def person_id(n: int, birth: str = "19800101") -> str:
    """The n-th test person's ID: region 110105, a birth date, sequence n."""
    return make_id(f"110105{birth}{n:03d}")


def write_csv(
    path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], encoding: str = "utf-8"
) -> Path:
    with path.open("w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])
    return path


SETTLEMENT_HEADER = (
    "settlement_id",
    "id_number",
    "name",
    "visit_type",
    "service_date",
    "admission_date",
    "total_cost",
    "self_pay_1",
    "reverses",
)
ROSTER_HEADER = (
    "member_id",
    "name",
    "id_number",
    "card_no",
    "unit_code",
    "category",
    "valid_from",
    "valid_to",
)

SIMPLE_RULE = """
scheme = "test-plan"
title = "test plan"
version = "v1"
effective_from = 2020-01-01
categories = ["in_service", "retired"]
base = "self_pay_1"
annual_cap = 5000

[outpatient]
deductible = 1000
ratio = 0.5
annual_cap = 3000

[inpatient]
deductible = 500
tiers = [ { up_to = 2000, ratio = 0.5 }, { ratio = 0.8 } ]

[inpatient.allowance]
per_day = 20
max_days = 10
"""


def cli(*args: object, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def init_workspace(root: Path, rules: dict[str, str] | None = None) -> Path:
    result = cli("init", root)
    assert result.exit_code == 0, result.output
    if rules is not None:
        for old in (root / "rules").glob("*.toml"):
            old.unlink()
        for name, text in rules.items():
            (root / "rules" / name).write_text(text, encoding="utf-8")
    return root


def one_member(tmp_path: Path, valid_from: str = "2020-01-01") -> tuple[Path, Path, str]:
    """A workspace with SIMPLE_RULE and a roster of one member, M1 张伟
    (person 1, unit U1): (workspace, roster file, ID number)."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    pid = person_id(1)
    roster = tmp_path / "r.csv"
    roster.write_text(
        f"member_id,name,id_number,card_no,unit_code,valid_from\nM1,张伟,{pid},C1,U1,{valid_from}\n",
        encoding="utf-8",
    )
    return ws, roster, pid
