"""`twopay demo` through the installed entry point, on the shipped sample data,
with payouts worked out by hand (sample_data/README.md explains each row)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "ws"
    exe = shutil.which("twopay", path=str(Path(sys.executable).parent))
    assert exe
    done = subprocess.run(
        [exe, "demo", "--out", str(root), "--json"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return root


def rows(demo: Path, period: str, name: str) -> list[dict[str, str]]:
    with (demo / "reports" / period / f"{name}.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def line_payouts(demo: Path, period: str) -> dict[tuple[str, str], Decimal]:
    return {
        (r["settlement_id"], r["scheme"]): Decimal(r["payout"])
        for r in rows(demo, period, "payout_lines")
    }


@pytest.mark.parametrize(
    "period,counts",
    [
        (
            "2024-01",
            {"rows_in": 200, "quarantined": 3, "rejected": 8, "held": 2, "adjudicated": 187},
        ),
        (
            "2024-02",
            {"rows_in": 188, "quarantined": 4, "rejected": 9, "held": 1, "adjudicated": 174},
        ),
    ],
)
def test_every_row_lands_once_and_the_books_balance(
    demo: Path, period: str, counts: dict[str, int]
) -> None:
    summary = json.loads((demo / "reports" / period / "summary.json").read_text())
    balance = summary["balance"]
    assert {k: balance[k] for k in counts} == counts
    assert balance["balanced"] is True
    paid = sum(Decimal(r["amount"]) for r in rows(demo, period, "payouts"))
    owed = sum(Decimal(r["amount"]) for r in rows(demo, period, "recoveries"))
    lines = sum(line_payouts(demo, period).values())
    assert lines == paid - owed  # no offsets pending in the demo
    # counts and amounts per outcome (spec 7), each against the ledger row by row
    con = duckdb.connect(str(demo / "twopay.duckdb"), read_only=True)
    try:
        by_row = con.execute(
            """
            SELECT o.outcome, count(*)::INTEGER, sum(s.total_cost), sum(s.self_pay_1)
            FROM outcomes o JOIN batches b USING (batch_id)
            JOIN settlements s ON s.batch_id = o.batch_id AND s.row_key = o.row_key
            WHERE b.period = ? AND NOT o.carried GROUP BY 1
            """,
            [period],
        ).fetchall()
    finally:
        con.close()
    assert {k: {**v, "payout": None} for k, v in summary["outcomes"].items()} == {
        outcome: {
            "rows": n,
            "total_cost": f"{cost or 0:.2f}",
            "self_pay_1": f"{pay or 0:.2f}",
            "payout": None,
        }
        for outcome, n, cost, pay in by_row
    }
    assert summary["outcomes"]["adjudicated"]["payout"] == f"{lines:.2f}"


def test_hand_computed_payouts(demo: Path) -> None:
    jan, feb = line_payouts(demo, "2024-01"), line_payouts(demo, "2024-02")
    # 何伟: self_pay_1 12,000 - 1,300 deductible: 10,000 x 50 % + 700 x 60 %
    assert jan[("JS240100067", "bj-inservice")] == Decimal("5420.00")
    # 马建华: 68,000 - 1,300 = 66,700 above: 10,000 x 50 % + 40,000 x 60 % + 16,700 x 70 %
    assert jan[("JS240100176", "bj-inservice")] == Decimal("40690.00")
    # 郭丽娟, no admission date: wh-hospital pays the ratio part only
    assert jan[("JS240100119", "wh-hospital")] == Decimal("2740.00")
    assert jan[("JS240100119", "bj-inservice")] == Decimal("3650.00")
    # February: 张桂兰 5,000 x 30 % + 4,300 x 40 % + 10 days x 30
    assert feb[("JS240200093", "wh-hospital")] == Decimal("3520.00")
    # 王秀英 after her move: one person, one deductible: 247.40 x 50 %
    assert feb[("JS240200038", "bj-inservice")] == Decimal("123.70")
    # 姜勇博 crosses 1,800 in February: (1,310.50 + 690 - 1,800) x 50 % = 100.25
    assert feb[("JS240200025", "bj-inservice")] == Decimal("100.25")
    assert feb[("JS240200143", "bj-inservice")] == Decimal("175.00")
    # the reversal claws January back
    assert feb[("JS240200034", "bj-inservice")] == Decimal("-5420.00")


def test_the_clawback_is_a_recovery_not_a_payment(demo: Path) -> None:
    recoveries = rows(demo, "2024-02", "recoveries")
    assert any(
        r["amount"] == "5420.00" and "JS240200034" in r["settlement_ids"] for r in recoveries
    )
    assert all(Decimal(r["amount"]) > 0 for r in rows(demo, "2024-02", "payouts"))


def test_review_and_rejection_codes(demo: Path) -> None:
    review = {r["settlement_id"]: r for r in rows(demo, "2024-02", "review")}
    assert review["JS240100104"]["candidate_member_id"] == "M00000263"  # still pending from January
    assert review["JS240200080"]["reason_code"] == "probable_id_typo"
    assert review["JS240200080"]["candidate_member_id"] == "M00000187"
    codes = {r["settlement_id"]: r["reason_code"] for r in rows(demo, "2024-02", "rejections")}
    assert codes["JS240100186"] == "duplicate_settlement"
    assert codes["JS240200039"] == "membership_inactive"
    assert codes["JS240200064"] == "reversal_unmatched"
    assert codes["JS240200134"] == "waiting_period"
    assert codes["JS240200059"] == "name_mismatch"
    # a row no scheme pays names every scheme's reason, in scheme order
    detail = {r["settlement_id"]: r["detail"] for r in rows(demo, "2024-02", "rejections")}
    assert detail["JS240200134"] == (
        "bj-inservice: category retired not covered; "
        "wh-hospital: waiting period of 90 days from 2024-01-01 runs to 2024-03-30"
    )
    january = {r["settlement_id"]: r for r in rows(demo, "2024-01", "rejections")}
    assert (january["JS240100096"]["reason_code"], january["JS240100096"]["detail"]) == (
        "no_coverage",
        "bj-inservice: category retired not covered; wh-hospital: outpatient not covered",
    )


ELIGIBILITY_CODES = (
    "membership_inactive",
    "unit_dues_unpaid",
    "no_coverage",
    "waiting_period",
    "no_rule_version",
)


def test_eligibility_is_kept_for_the_identified_rows_alone(demo: Path) -> None:
    """The checks (spec 5) of exactly the rows identity accepted: every paid or
    eligibility-rejected row has them, and a held or identity-rejected row
    neither has them nor is put on a member."""
    import duckdb

    con = duckdb.connect(str(demo / "twopay.duckdb"), read_only=True)
    try:
        checked = set(
            con.execute(
                "SELECT batch_id, row_batch_id, row_key FROM eligibility_members"
            ).fetchall()
        )
        decided = set(
            con.execute(
                "SELECT batch_id, row_batch_id, row_key FROM outcomes "
                "WHERE (outcome = 'adjudicated' AND code IS NULL) OR code IN ?",
                [list(ELIGIBILITY_CODES)],
            ).fetchall()
        )
        unidentified = con.execute(
            "SELECT outcome, code, member_id FROM outcomes "
            "WHERE outcome = 'held' OR code IN ('name_mismatch', 'not_a_member', "
            "'invalid_id_number')"
        ).fetchall()
        rejected_by_checks = con.execute(
            "SELECT count(*) FROM outcomes WHERE code IN ?", [list(ELIGIBILITY_CODES)]
        ).fetchall()[0][0]
    finally:
        con.close()
    assert rejected_by_checks > 0 and len(checked) > rejected_by_checks
    assert checked == decided
    assert {o for o, _c, _m in unidentified} == {"held", "rejected"}
    assert all(member is None for _o, _c, member in unidentified)


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_reader_that_stops_early_is_not_an_error(demo: Path, fmt: str) -> None:
    """`twopay query ... | head -1`: the reader closes the pipe after one
    line; twopay ends with its own exit code and says nothing on stderr (it
    said "internal error" with exit 1, which after a run read as a failed
    batch that had in fact committed)."""
    exe = shutil.which("twopay", path=str(Path(sys.executable).parent))
    assert exe
    proc = subprocess.Popen(
        [exe, "query", "-w", str(demo), "--format", fmt, "select * from range(200000)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert stderr == ""


def test_a_command_started_with_its_output_closed_still_does_its_work(tmp_path: Path) -> None:
    """Cron with `>&-`: Python then has no sys.stdout at all; the command
    does its work, prints nothing, and gives no traceback."""
    exe = shutil.which("twopay", path=str(Path(sys.executable).parent))
    assert exe
    ws = tmp_path / "ws"
    done = subprocess.run(
        ["sh", "-c", f'"{exe}" init "{ws}" >&-'], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and (ws / "twopay.toml").is_file()
