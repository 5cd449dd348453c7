"""Bank returns and rule simulations on real workspaces through the real CLI (spec 8)."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

from helpers import ROSTER_HEADER, SETTLEMENT_HEADER, SIMPLE_RULE, cli, init_workspace, write_csv
from test_ledger import NAMES, ledger_rows, month_rows, person_id, roster, run


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def bank_return(path: Path, payouts: list[dict[str, str]], failed: set[str]) -> Path:
    return write_csv(
        path,
        ("payment_id", "card_no", "amount", "status", "reason"),
        [
            (
                p["payment_id"],
                p["card_no"],
                p["amount"],
                "failed" if p["payment_id"] in failed else "success",
                "card closed" if p["payment_id"] in failed else "",
            )
            for p in payouts
        ],
    )


def test_a_full_cycle_reissues_failed_payments_to_the_current_card(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    r = roster(tmp_path / "roster.csv")
    assert (
        run(
            ws, "2024-01", write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1)), r
        ).exit_code
        == 0
    )
    jan = read(ws / "reports" / "2024-01" / "payouts.csv")
    assert len(jan) >= 2
    failed = jan[0]
    ret1 = bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]})
    first = cli("reconcile", "-w", ws, "--bank-return", ret1, "--json")
    assert first.exit_code == 3
    out = json.loads(first.output.split("\nerror")[0]) if first.output.startswith("{") else None
    assert out is not None and out["counts"] == {"failed": 1, "success": len(jan) - 1}
    rows_before = ledger_rows(ws, "bank_returns", "return_id, payment_id")
    again = cli("reconcile", "-w", ws, "--bank-return", ret1)
    assert again.exit_code == 3 and "already reconciled" in again.output
    assert ledger_rows(ws, "bank_returns", "return_id, payment_id") == rows_before

    # the member's card is re-issued before February
    new_card = "6222999999999999"
    member = failed["member_id"]
    rows = [
        (
            f"M{i}",
            NAMES[i],
            person_id(i),
            new_card if f"M{i}" == member else f"62220000000000{i:02d}",
            f"U{i % 2}",
            "在职",
            "2020-01-01",
            None,
        )
        for i in range(len(NAMES))
    ]
    r2 = write_csv(tmp_path / "roster2.csv", ROSTER_HEADER, rows)
    feb = run(ws, "2024-02", write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2)), r2)
    assert feb.exit_code == 0, feb.output
    summary = json.loads(feb.output)["summary"]
    assert summary["balance"]["balanced"] is True
    assert summary["balance"]["retries"] == 1
    assert Decimal(summary["balance"]["retries_total"]) == Decimal(failed["amount"])
    payouts = read(ws / "reports" / "2024-02" / "payouts.csv")
    retry = [p for p in payouts if p["retry_of"]]
    assert len(retry) == 1
    assert retry[0]["retry_of"] == failed["payment_id"]
    assert retry[0]["card_no"] == new_card and retry[0]["amount"] == failed["amount"]
    assert retry[0]["payment_id"] == f"2024-02-{member}-R1"
    regular = [p for p in payouts if not p["retry_of"]]
    lines = sum(Decimal(x["payout"]) for x in read(ws / "reports" / "2024-02" / "payout_lines.csv"))
    assert sum(Decimal(p["amount"]) for p in regular) == lines  # to the fen

    ret2 = bank_return(tmp_path / "ret2.csv", payouts, set())
    assert cli("reconcile", "-w", ws, "--bank-return", ret2).exit_code == 0
    # a March run issues no second retry of a payment that went through
    r3 = run(ws, "2024-03", write_csv(tmp_path / "s3.csv", SETTLEMENT_HEADER, month_rows(3)), r2)
    assert not [p for p in read(ws / "reports" / "2024-03" / "payouts.csv") if p["retry_of"]]
    assert r3.exit_code == 0


def test_unknown_mismatched_and_missing_payments_are_discrepancies(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    r = roster(tmp_path / "roster.csv")
    assert (
        run(
            ws, "2024-01", write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1)), r
        ).exit_code
        == 0
    )
    jan = read(ws / "reports" / "2024-01" / "payouts.csv")
    rows = [(p["payment_id"], p["card_no"], p["amount"], "success", "") for p in jan[1:]]
    rows[0] = (rows[0][0], rows[0][1], "0.01", "success", "")
    rows.append(("2024-01-NOBODY", "1", "5.00", "success", ""))
    ret = write_csv(
        tmp_path / "ret.csv", ("payment_id", "card_no", "amount", "status", "reason"), rows
    )
    result = cli("reconcile", "-w", ws, "--bank-return", ret, "--json")
    assert result.exit_code == 3
    counts = json.loads(result.output[: result.output.rindex("}") + 1])["counts"]
    assert counts["amount_mismatch"] == 1
    assert counts["unknown_payment"] == 1
    assert counts["no_return_row"] == 1


def test_simulate_with_the_same_rules_changes_nothing(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    r = roster(tmp_path / "roster.csv")
    for m in (1, 2, 3):
        assert (
            run(
                ws,
                f"2024-{m:02d}",
                write_csv(tmp_path / f"s{m}.csv", SETTLEMENT_HEADER, month_rows(m)),
                r,
            ).exit_code
            == 0
        )
    result = cli("simulate", "-w", ws, "--year", 2024, "--rules", ws / "rules", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["total"][0]["change"] == "0.00"
    assert report["total"][0]["actual"] == report["total"][0]["simulated"]
    assert report["members"]["gain"] == report["members"]["lose"] == 0


def test_simulate_other_rules_equals_running_the_year_under_them(tmp_path: Path) -> None:
    changed = SIMPLE_RULE.replace("deductible = 1000\nratio = 0.5", "deductible = 800\nratio = 0.6")
    assert changed != SIMPLE_RULE
    actual = init_workspace(tmp_path / "actual", {"t.toml": SIMPLE_RULE})
    other = init_workspace(tmp_path / "other", {"t.toml": changed})
    r = roster(tmp_path / "roster.csv")
    p0 = person_id(0)
    extra = [("RV", p0, NAMES[0], "门诊", "2024-03-20", None, "-1", "-1", "S2024010" + "00")]
    for m in (1, 2, 3):
        rows = month_rows(m) + (extra if m == 3 else [])
        s = write_csv(tmp_path / f"s{m}.csv", SETTLEMENT_HEADER, rows)
        for ws in (actual, other):
            assert run(ws, f"2024-{m:02d}", s, r).exit_code == 0
    (tmp_path / "new_rules").mkdir()
    (tmp_path / "new_rules" / "t.toml").write_text(changed, encoding="utf-8")
    report = json.loads(
        cli(
            "simulate", "-w", actual, "--year", 2024, "--rules", tmp_path / "new_rules", "--json"
        ).output
    )
    other_total = sum(
        Decimal(str(row[0])) for row in ledger_rows(other, "(SELECT payout FROM lines)", "1")
    )
    actual_total = sum(
        Decimal(str(row[0])) for row in ledger_rows(actual, "(SELECT payout FROM lines)", "1")
    )
    assert Decimal(report["total"][0]["actual"]) == actual_total
    assert Decimal(report["total"][0]["simulated"]) == other_total
    assert other_total > actual_total
    assert report["members"]["gain"] > 0
    human = cli("simulate", "-w", actual, "--year", 2024, "--rules", tmp_path / "new_rules")
    assert human.exit_code == 0 and "actual vs simulated" in human.output
