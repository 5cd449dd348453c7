"""Bank returns through the real CLI on real workspaces (spec 2.3, 7, 8).

Every test runs `twopay run` and `twopay reconcile` on real files in a real
DuckDB ledger; the money is checked to the fen against payout_lines.csv.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from helpers import ROSTER_HEADER, SETTLEMENT_HEADER, SIMPLE_RULE, cli, init_workspace, write_csv
from test_ledger import NAMES, ledger_rows, month_rows, person_id, run

BANK_HEADER = ("payment_id", "card_no", "amount", "status", "reason")
BANK_HEADER_ZH = ("支付编号", "服务卡号", "金额", "状态", "失败原因")


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def card(i: int) -> str:
    return f"62220000000000{i:02d}"


def roster_file(
    path: Path, *, new_card: dict[str, str] | None = None, without: set[str] | None = None
) -> Path:
    """The test roster; a member in ``new_card`` had their card re-issued on
    2024-02-01 (two records that do not overlap); members in ``without`` are
    left out."""
    rows: list[tuple[object, ...]] = []
    for i, name in enumerate(NAMES):
        member = f"M{i}"
        if member in (without or set()):
            continue
        base = (member, name, person_id(i))
        if member in (new_card or {}):
            rows.append((*base, card(i), f"U{i % 2}", "在职", "2020-01-01", "2024-01-31"))
            rows.append((*base, new_card[member], f"U{i % 2}", "在职", "2024-02-01", None))  # type: ignore[index]
        else:
            rows.append((*base, card(i), f"U{i % 2}", "在职", "2020-01-01", None))
    return write_csv(path, ROSTER_HEADER, rows)


def month(ws: Path, tmp: Path, m: int, roster: Path) -> list[dict[str, str]]:
    """Run the batch of month ``m`` of 2024 and return its payouts.csv."""
    s = write_csv(tmp / f"s{m}.csv", SETTLEMENT_HEADER, month_rows(m))
    result = run(ws, f"2024-{m:02d}", s, roster)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    return read(ws / "reports" / f"2024-{m:02d}" / "payouts.csv")


def bank_return(
    path: Path,
    payouts: list[dict[str, str]],
    failed: frozenset[str] | set[str] = frozenset(),
    *,
    zh: bool = False,
    card: Callable[[str], str] = lambda c: c,
) -> Path:
    """What the bank sends back: one row per payment, ``failed`` ones failed;
    ``card`` is how the bank writes the card number."""
    rows = [
        (
            p["payment_id"],
            card(p["card_no"]),
            p["amount"],
            ("失败" if zh else "failed")
            if p["payment_id"] in failed
            else ("成功" if zh else "success"),
            "卡号已注销" if p["payment_id"] in failed else "",
        )
        for p in payouts
    ]
    if zh:  # Chinese headers, GB18030, amounts as the bank writes them
        rows = [(a, b, f"¥{Decimal(c):,.2f}", d, e) for a, b, c, d, e in rows]
        return write_csv(path, BANK_HEADER_ZH, rows, encoding="gb18030")
    return write_csv(path, BANK_HEADER, rows)


def reconcile(ws: Path, path: Path) -> tuple[int, dict[str, object]]:
    result = cli("reconcile", "-w", ws, "--bank-return", path, "--json")
    # with --json stdout is the JSON; an exit-3 sentence follows it on stderr
    out = result.output
    return result.exit_code, json.loads(out[: out.rindex("}") + 1])


def total(rows: list[dict[str, str]], col: str = "amount") -> Decimal:
    return sum((Decimal(r[col]) for r in rows), Decimal(0))


def lines_total(ws: Path, period: str) -> Decimal:
    return total(read(ws / "reports" / period / "payout_lines.csv"), "payout")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return init_workspace(tmp_path / "ws", {"test-plan.toml": SIMPLE_RULE})


def test_full_cycle_reissues_failures_to_the_current_card_and_balances_to_the_fen(
    ws: Path, tmp_path: Path
) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    assert len(jan) >= 4 and not any(p["retry_of"] for p in jan)
    failed = jan[1]
    member = failed["member_id"]

    # January's return: one payment failed; the bank writes cards in groups
    # of four, and masks the middle with a number of stars of its own
    def banks_card(c: str) -> str:
        if c == failed["card_no"]:
            return c[:6] + "****" + c[-4:]
        return "-".join(c[i : i + 4] for i in range(0, len(c), 4))

    ret1 = bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]}, card=banks_card)
    code, out = reconcile(ws, ret1)
    assert code == 3
    assert out["counts"] == {"success": len(jan) - 1, "failed": 1}
    assert out["periods"] == ["2024-01"] and out["already_recorded"] is False
    assert [(p["payment_id"], p["result"], p["reason"]) for p in out["problems"]] == [  # type: ignore[attr-defined]
        (failed["payment_id"], "failed", "卡号已注销")
    ]
    assert out["amounts"]["failed"] == failed["amount"]  # type: ignore[index]

    # the same file again (under another name): recorded once, same answer, exit 3 again
    recorded = ledger_rows(ws, "bank_returns", "return_id, line_number")
    copy = tmp_path / "ret1-again.csv"
    copy.write_bytes(ret1.read_bytes())
    code, again = reconcile(ws, copy)
    assert code == 3 and again["already_recorded"] is True
    assert again["counts"] == out["counts"] and again["return_id"] == out["return_id"]
    human = cli("reconcile", "-w", ws, "--bank-return", ret1)
    assert human.exit_code == 3 and "already reconciled" in human.output
    assert "nothing changed" in human.output
    assert ledger_rows(ws, "bank_returns", "return_id, line_number") == recorded

    # February: the member's card was re-issued on 2024-02-01
    new_card = "6222999999999999"
    r2 = roster_file(tmp_path / "r2.csv", new_card={member: new_card})
    feb = month(ws, tmp_path, 2, r2)
    retries = [p for p in feb if p["retry_of"]]
    assert retries == [
        {
            "payment_id": f"2024-02-{member}-R1",
            "member_id": member,
            "name": failed["name"],
            "card_no": new_card,
            "unit_code": failed["unit_code"],
            "amount": failed["amount"],
            "lines": "0",
            "retry_of": failed["payment_id"],
        }
    ]
    regular = [p for p in feb if not p["retry_of"]]
    assert f"2024-02-{member}" in {p["payment_id"] for p in regular}  # no collision
    # why: each of the member's February lines once, paid by the regular payment
    trace = json.loads(cli("why", "-w", ws, member, "--json").stdout)
    feb_lines = [
        (s["settlement_id"], ln["scheme"], ln["payment_id"])
        for s in trace["settlements"]
        for ln in s["lines"]
        if ln["period"] == "2024-02"
    ]
    assert feb_lines and len(feb_lines) == len(set(feb_lines))
    assert {pid for _s, _sc, pid in feb_lines} == {f"2024-02-{member}"}
    summary = json.loads((ws / "reports" / "2024-02" / "summary.json").read_text("utf-8"))
    balance = summary["balance"]
    assert balance["balanced"] is True
    assert (balance["retries"], balance["retries_total"]) == (1, failed["amount"])
    # lines = regular payments (no clawbacks here), to the fen; retries apart
    assert total(regular) == lines_total(ws, "2024-02") == Decimal(balance["payments_total"])
    assert total(feb) == lines_total(ws, "2024-02") + Decimal(failed["amount"])

    # February's return: the retry fails again (Chinese headers, GB18030, ¥1,234.50)
    ret2 = bank_return(tmp_path / "ret2.csv", feb, {f"2024-02-{member}-R1"}, zh=True)
    code, out2 = reconcile(ws, ret2)
    assert code == 3 and out2["counts"] == {"success": len(feb) - 1, "failed": 1}

    # March re-issues the retry, naming it
    mar = month(ws, tmp_path, 3, r2)
    assert [
        (p["payment_id"], p["retry_of"], p["card_no"], p["amount"]) for p in mar if p["retry_of"]
    ] == [(f"2024-03-{member}-R1", f"2024-02-{member}-R1", new_card, failed["amount"])]
    code, out3 = reconcile(ws, bank_return(tmp_path / "ret3.csv", mar))
    assert code == 0 and out3["counts"] == {"success": len(mar)} and out3["problems"] == []
    clean = cli("reconcile", "-w", ws, "--bank-return", bank_return(tmp_path / "r3b.csv", mar[:1]))
    assert clean.exit_code == 0  # a subset already answered raises no missing rows

    # April: nothing left to re-issue
    apr = month(ws, tmp_path, 4, r2)
    assert not [p for p in apr if p["retry_of"]]

    # Every fen adjudicated in January to March reached a card exactly once.
    paid = ledger_rows(
        ws,
        """(SELECT sum(p.amount) FROM payments p JOIN (
               SELECT payment_id, result FROM bank_returns WHERE line_number IS NOT NULL
               QUALIFY row_number() OVER (PARTITION BY payment_id ORDER BY return_id DESC) = 1
           ) b USING (payment_id) WHERE b.result = 'success')""",
        "1",
    )[0][0]
    adjudicated = sum(lines_total(ws, f"2024-0{m}") for m in (1, 2, 3))
    assert Decimal(str(paid)) == adjudicated


def test_every_kind_of_discrepancy_exits_3_and_is_listed(ws: Path, tmp_path: Path) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    missing, mismatched, doubled = jan[0], jan[1], jan[2]
    rows = [
        (p["payment_id"], p["card_no"], p["amount"], "success", "") for p in jan if p is not missing
    ]
    rows[0] = (mismatched["payment_id"], mismatched["card_no"], "0.01", "success", "")
    rows.append((doubled["payment_id"], doubled["card_no"], doubled["amount"], "failed", "x"))
    rows.append(("2024-01-NOBODY", "1", "5.00", "success", ""))
    rows.append((jan[3]["payment_id"], "", "12.3.4", "success", ""))  # not an amount
    rows.append(("2024-01-M9", "", "1.00", "maybe", ""))  # not a status
    # paid, says the bank, but to another card; the same card masked or
    # spaced by the bank is the issued card
    elsewhere, masked, spaced = (rows[i] for i in (1, 2, 3))
    rows[1] = (*elsewhere[:1], "6299999999999999", *elsewhere[2:])
    rows[2] = (
        *masked[:1],
        masked[1][:6] + "*" * (len(masked[1]) - 10) + masked[1][-4:],
        *masked[2:],
    )
    rows[3] = (
        *spaced[:1],
        " ".join(spaced[1][i : i + 4] for i in range(0, len(spaced[1]), 4)),
        *spaced[2:],
    )
    ret = write_csv(tmp_path / "ret.csv", BANK_HEADER, rows)
    code, out = reconcile(ws, ret)
    assert code == 3
    assert out["counts"] == {
        "success": len(jan) - 3,
        "amount_mismatch": 1,
        "card_mismatch": 1,
        "duplicate_row": 1,
        "unknown_payment": 1,
        "unreadable": 2,
        "no_return_row": 1,
    }
    results = {(p["payment_id"], p["result"]) for p in out["problems"]}  # type: ignore[attr-defined]
    assert (missing["payment_id"], "no_return_row") in results
    assert (mismatched["payment_id"], "amount_mismatch") in results
    assert (elsewhere[0], "card_mismatch") in results
    assert (doubled["payment_id"], "duplicate_row") in results  # the first row counts
    mism = next(p for p in out["problems"] if p["result"] == "amount_mismatch")  # type: ignore[attr-defined]
    assert (mism["amount"], mism["issued_amount"]) == ("0.01", mismatched["amount"])
    unreadable = [p for p in out["problems"] if p["result"] == "unreadable"]  # type: ignore[attr-defined]
    assert [p["line_number"] for p in unreadable] == [len(rows), len(rows) + 1]
    assert "12.3.4" in unreadable[0]["reason"] and "maybe" in unreadable[1]["reason"]

    human = cli("reconcile", "-w", ws, "--bank-return", ret)
    assert human.exit_code == 3
    assert "amount_mismatch" in human.output and "2024-01-NOBODY" in human.output
    assert "error:" in human.output and "discrepancies" in human.output
    # nothing of this is re-issued: only a clear 'failed' is
    feb = month(ws, tmp_path, 2, roster_file(tmp_path / "r1b.csv"))
    assert not [p for p in feb if p["retry_of"]]


def test_a_batch_answered_in_two_files_raises_no_false_missing_rows(
    ws: Path, tmp_path: Path
) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    half = len(jan) // 2
    code, first = reconcile(ws, bank_return(tmp_path / "a.csv", jan[:half]))
    assert code == 3 and first["counts"] == {"success": half, "no_return_row": len(jan) - half}
    failed = jan[-1]["payment_id"]
    code, second = reconcile(ws, bank_return(tmp_path / "b.csv", jan[half:], {failed}))
    assert code == 3 and second["counts"] == {"success": len(jan) - half - 1, "failed": 1}
    feb = month(ws, tmp_path, 2, roster_file(tmp_path / "r2.csv"))
    assert [p["retry_of"] for p in feb if p["retry_of"]] == [failed]


def test_a_retry_waits_for_a_roster_that_lists_the_member(ws: Path, tmp_path: Path) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    failed = jan[0]
    reconcile(ws, bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]}))
    feb = month(ws, tmp_path, 2, roster_file(tmp_path / "r2.csv", without={failed["member_id"]}))
    assert not [p for p in feb if p["retry_of"]]  # no card to pay to
    # ... and February says what it could not re-issue (it said nothing)
    summary = json.loads((ws / "reports" / "2024-02" / "summary.json").read_text("utf-8"))
    assert summary["balance"]["retries_waiting"] == 1
    assert summary["balance"]["retries_waiting_total"] == failed["amount"]
    assert summary["balance"]["retries_waiting_payment_ids"] == [failed["payment_id"]]
    mar = month(ws, tmp_path, 3, roster_file(tmp_path / "r3.csv"))
    assert [(p["payment_id"], p["retry_of"]) for p in mar if p["retry_of"]] == [
        (f"2024-03-{failed['member_id']}-R1", failed["payment_id"])
    ]


def test_success_reported_after_a_reissue_is_a_discrepancy(ws: Path, tmp_path: Path) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    failed = jan[0]
    reconcile(ws, bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]}))
    month(ws, tmp_path, 2, roster_file(tmp_path / "r2.csv"))
    # the bank now says the January payment went through after all
    code, out = reconcile(ws, bank_return(tmp_path / "late.csv", [failed]))
    assert code == 3 and out["counts"] == {"paid_after_reissue": 1}


def test_why_shows_the_payments_and_what_the_bank_answered(ws: Path, tmp_path: Path) -> None:
    """A failed payment, its re-issue, and the bank saying afterwards that
    the original went through: `why` showed only the line's payment_id, and
    nothing of the failure or of the member being paid twice."""
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    failed = jan[0]
    reconcile(ws, bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]}))
    month(ws, tmp_path, 2, roster_file(tmp_path / "r2.csv"))
    reconcile(ws, bank_return(tmp_path / "late.csv", [failed]))
    result = cli("why", "-w", ws, failed["member_id"], "--json")
    assert result.exit_code == 0, result.output
    got = [
        (p["payment_id"], p["retry_of"], p["bank_result"], p["bank_reason"])
        for p in json.loads(result.stdout)["payments"]
    ]
    reissue = f"2024-02-{failed['member_id']}-R1"
    # the late answer's own (blank) reason, not the failure's
    assert (failed["payment_id"], None, "paid_after_reissue", None) in got
    assert (reissue, failed["payment_id"], None, None) in got
    # the table as a terminal wide enough for its columns shows it
    wide = subprocess.run(
        [str(Path(sys.executable).with_name("twopay")), "why", "-w", str(ws),
         failed["member_id"], "--lang", "en"],
        capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert "payments and bank answers" in wide.stdout
    assert "paid_after_reissue" in wide.stdout and reissue in wide.stdout


@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
def test_excel_and_parquet_returns_read_like_csv(ws: Path, tmp_path: Path, fmt: str) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    frame = pl.DataFrame(
        {
            "支付编号": [p["payment_id"] for p in jan],
            "卡号": [p["card_no"] for p in jan],
            "金额": [p["amount"] for p in jan],
            "状态": ["失败"] + ["成功"] * (len(jan) - 1),
            "原因": ["账户冻结"] + [""] * (len(jan) - 1),
        }
    )
    path = tmp_path / f"ret.{fmt}"
    if fmt == "xlsx":
        frame.write_excel(path)
    else:
        frame.write_parquet(path)
    code, out = reconcile(ws, path)
    assert code == 3 and out["counts"] == {"success": len(jan) - 1, "failed": 1}
    assert out["problems"][0]["reason"] == "账户冻结"  # type: ignore[index]


def test_a_missing_column_is_a_usage_error_and_records_nothing(ws: Path, tmp_path: Path) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    ret = write_csv(
        tmp_path / "ret.csv",
        ("payment_id", "card_no", "status"),
        [(p["payment_id"], p["card_no"], "success") for p in jan],
    )
    result = cli("reconcile", "-w", ws, "--bank-return", ret)
    assert result.exit_code == 2 and "amount" in result.output and "ret.csv" in result.output
    assert ledger_rows(ws, "bank_returns", "1") == []


def test_reconcile_waits_for_the_workspace_lock(ws: Path, tmp_path: Path) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    lock = ws / "twopay.lock"
    lock.write_text(
        json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "command": "run --period 2024-02"}
        )
    )
    try:
        result = cli("reconcile", "-w", ws, "--bank-return", bank_return(tmp_path / "r.csv", jan))
        assert result.exit_code == 5 and "run --period 2024-02" in result.output
    finally:
        lock.unlink()
    assert ledger_rows(ws, "bank_returns", "1") == []


def test_a_batch_the_bank_has_answered_cannot_be_replaced(ws: Path, tmp_path: Path) -> None:
    """Replacing a batch issues payments of the same payment_id: the bank's
    answers to the old ones would attach to the new ones (a 'failed' re-issued
    beside a new payment of the same money). Once answered, a batch is past
    replacing (exit 4); before, it can be."""
    r = roster_file(tmp_path / "r1.csv")
    jan = month(ws, tmp_path, 1, r)
    fewer = write_csv(tmp_path / "s1b.csv", SETTLEMENT_HEADER, month_rows(1)[:-1])
    assert run(ws, "2024-01", fewer, r, "--replace").exit_code == 0  # type: ignore[attr-defined]
    jan = read(ws / "reports" / "2024-01" / "payouts.csv")
    code, _out = reconcile(ws, bank_return(tmp_path / "ret.csv", jan, {jan[0]["payment_id"]}))
    assert code == 3
    before = ledger_rows(ws, "payments", "payment_id")
    again = write_csv(tmp_path / "s1c.csv", SETTLEMENT_HEADER, month_rows(1)[:-2])
    refused = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", again, "--roster", r, "--replace"
    )
    assert refused.exit_code == 4
    assert "the bank has answered" in refused.output and "next period" in refused.output
    assert ledger_rows(ws, "payments", "payment_id") == before


def test_a_bank_return_that_is_not_a_file_is_exit_2_naming_it(ws: Path, tmp_path: Path) -> None:
    """A mistyped --bank-return was an internal error (FileNotFoundError, exit 1)."""
    path = tmp_path / "nope.csv"
    result = cli("reconcile", "-w", ws, "--bank-return", path)
    assert result.exit_code == 2, result.output
    assert f"{path}: no such file" in result.output and "Traceback" not in result.output


def test_the_banks_reason_is_masked_where_twopay_shows_it(ws: Path, tmp_path: Path) -> None:
    """The bank's free text may quote the card or the member's ID number:
    reconcile's table and --json mask it as notices do (spec 7); the
    ledger keeps it whole."""
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    failed = jan[0]
    path = bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]})
    text = path.read_text("utf-8").replace(
        "卡号已注销", f"卡 {failed['card_no']} 已冻结 持卡人身份证 {person_id(0)}"
    )
    path.write_text(text, "utf-8")
    code, report = reconcile(ws, path)
    assert code == 3
    shown = json.dumps(report, ensure_ascii=False)
    assert failed["card_no"] not in shown and person_id(0) not in shown
    assert f"持卡人身份证 {person_id(0)[:6]}********{person_id(0)[-4:]}" in shown
    table = cli("reconcile", "-w", ws, "--bank-return", path)
    assert failed["card_no"] not in table.output and person_id(0) not in table.output


def test_a_bank_return_of_a_header_only_is_exit_2(ws: Path, tmp_path: Path) -> None:
    """A return with no rows said "clean" (exit 0): no batch is matched by it."""
    month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    path = write_csv(tmp_path / "empty.csv", BANK_HEADER, [])
    result = cli("reconcile", "-w", ws, "--bank-return", path)
    assert result.exit_code == 2, result.output
    assert "empty.csv: the bank return has no rows" in result.output


def test_a_retry_is_not_paid_to_whoever_holds_the_member_id_now(ws: Path, tmp_path: Path) -> None:
    """January's payment to M0 fails; February's roster gives member_id M0 to
    another person. The re-issue went to the newcomer's card (the payment
    still named the first person): it waits for a roster that lists the
    person it is owed to, under that member_id."""
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    (failed,) = [p for p in jan if p["member_id"] == "M0"]
    reconcile(ws, bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]}))
    roster = roster_file(tmp_path / "r2.csv", without={"M0"})
    with roster.open("a", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerow(
            ("M0", "孙新", person_id(99), card(99), "U0", "在职", "2024-02-01", "")
        )
    feb = month(ws, tmp_path, 2, roster)
    assert not [p for p in feb if p["retry_of"]]
    assert card(99) not in {p["card_no"] for p in feb}
    summary = json.loads((ws / "reports" / "2024-02" / "summary.json").read_text("utf-8"))
    assert summary["balance"]["retries_waiting_payment_ids"] == [failed["payment_id"]]
    assert summary["balance"]["retries_waiting_total"] == failed["amount"]


def test_the_notice_and_the_next_run_read_a_repeated_return_row_alike(
    ws: Path, tmp_path: Path
) -> None:
    """A bank return listing one payment twice: reconcile counts the first
    row and flags the second duplicate_row, and the next run re-issues by the
    first. The notice read the second: it told a unit of a failure that would
    never be re-issued, and kept quiet about one that would."""
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    first, second = jan[0], jan[1]
    rows = [(p["payment_id"], p["card_no"], p["amount"], "success", "") for p in jan[2:]] + [
        (first["payment_id"], first["card_no"], first["amount"], "failed", "卡号已注销"),
        (first["payment_id"], first["card_no"], first["amount"], "success", ""),
        (second["payment_id"], second["card_no"], second["amount"], "success", ""),
        (second["payment_id"], second["card_no"], second["amount"], "failed", "卡号已注销"),
    ]
    code, _ = reconcile(ws, write_csv(tmp_path / "ret.csv", BANK_HEADER, rows))
    assert code == 3  # the repeated rows are discrepancies
    done = cli("notices", "-w", ws, "--period", "2024-01", "--json")
    assert done.exit_code == 0, done.output
    noticed = set()
    for path in (ws / "reports" / "2024-01" / "notices").glob("*.csv"):
        with path.open(encoding="utf-8-sig") as fh:
            noticed |= {r["支付编号"] for r in csv.DictReader(fh) if r["类别"] == "支付失败"}
    assert noticed == {first["payment_id"]}
    feb = month(ws, tmp_path, 2, roster_file(tmp_path / "r2.csv"))
    assert {p["retry_of"] for p in feb if p["retry_of"]} == noticed


def test_a_member_id_given_to_another_person_nets_each_person_apart(
    ws: Path, tmp_path: Path
) -> None:
    """M1 was person A's in January (paid for S1), and is person B's in
    February, when A's S1 is reversed and B claims S2. The clawback was
    netted against B's payment under M1: B was not paid and A's debt
    vanished, with the books 'balanced' at 0."""
    a, b = person_id(1), person_id(2)
    head = ROSTER_HEADER
    r1 = write_csv(
        tmp_path / "r1.csv", head, [("M1", "张三", a, "CA", "U1", "在职", "2020-01-01", None)]
    )
    r2 = write_csv(
        tmp_path / "r2.csv", head, [("M1", "李四", b, "CB", "U1", "在职", "2020-01-01", None)]
    )
    s1 = write_csv(
        tmp_path / "s1.csv",
        SETTLEMENT_HEADER,
        [("S1", a, "张三", "门诊", "2024-01-10", None, "5000", "3000", None)],
    )
    s2 = write_csv(
        tmp_path / "s2.csv",
        SETTLEMENT_HEADER,
        [
            ("R1", a, "张三", "门诊", "2024-02-05", None, "-5000", "-3000", "S1"),
            ("S2", b, "李四", "门诊", "2024-02-06", None, "5000", "3000", None),
        ],
    )
    assert run(ws, "2024-01", s1, r1).exit_code == 0  # type: ignore[attr-defined]
    assert read(ws / "reports" / "2024-01" / "payouts.csv")[0]["amount"] == "1000.00"
    assert run(ws, "2024-02", s2, r2).exit_code == 0  # type: ignore[attr-defined]
    feb = ws / "reports" / "2024-02"
    assert [(p["member_id"], p["card_no"], p["amount"]) for p in read(feb / "payouts.csv")] == [
        ("M1", "CB", "1000.00")
    ]
    assert [
        (r["member_id"], r["amount"], r["settlement_ids"]) for r in read(feb / "recoveries.csv")
    ] == [("M1", "1000.00", "R1")]


def notice_payment_ids(ws: Path, period: str) -> set[str]:
    """The payment_ids the period's unit notices list as failed."""
    done = cli("notices", "-w", ws, "--period", period)
    assert done.exit_code == 0, done.output
    ids: set[str] = set()
    for path in (ws / "reports" / period / "notices").glob("*.csv"):
        ids |= {r["支付编号"] for r in read(path) if r["支付编号"]}
    return ids


def test_a_failed_reissue_of_a_payment_the_bank_paid_after_all_is_not_reissued_again(
    ws: Path, tmp_path: Path
) -> None:
    """January's payment fails and February re-issues it; then the bank says
    January's went through after all, and February's re-issue failed. The
    member has the money: March re-issued the re-issue and paid them twice."""
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    failed = jan[0]
    reconcile(ws, bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]}))
    feb = month(ws, tmp_path, 2, roster_file(tmp_path / "r2.csv"))
    (retry,) = [p for p in feb if p["retry_of"]]
    late = bank_return(tmp_path / "late.csv", [failed, retry], {retry["payment_id"]})
    code, out = reconcile(ws, late)
    counts = out["counts"]
    assert code == 3 and (counts["failed"], counts["paid_after_reissue"]) == (1, 1)  # type: ignore[index]
    assert retry["payment_id"] not in notice_payment_ids(ws, "2024-02")  # nothing to fix
    mar = month(ws, tmp_path, 3, roster_file(tmp_path / "r3.csv"))
    assert not [p for p in mar if p["retry_of"]]
    summary = json.loads((ws / "reports" / "2024-03" / "summary.json").read_text("utf-8"))
    assert summary["balance"]["retries"] == 0 and summary["balance"]["retries_waiting"] == 0


def test_a_failed_row_with_another_amount_is_a_failure_reissued_in_full(
    ws: Path, tmp_path: Path
) -> None:
    """Many banks write 0.00 on a failed row (the amount moved): it was an
    amount_mismatch, never re-issued and in no notice."""
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    failed = jan[0]
    path = bank_return(tmp_path / "ret1.csv", jan, {failed["payment_id"]})
    text = path.read_text("utf-8").replace(f",{failed['amount']},failed", ",0.00,failed")
    path.write_text(text, "utf-8")
    code, out = reconcile(ws, path)
    assert code == 3 and out["counts"] == {"success": len(jan) - 1, "failed": 1}
    assert failed["payment_id"] in notice_payment_ids(ws, "2024-01")
    feb = month(ws, tmp_path, 2, roster_file(tmp_path / "r2.csv"))
    assert [(p["retry_of"], p["amount"]) for p in feb if p["retry_of"]] == [
        (failed["payment_id"], failed["amount"])
    ]


def test_a_return_given_before_its_run_is_read_again_after_it(ws: Path, tmp_path: Path) -> None:
    """Reconciled before the run that issued its payments, every row was
    unknown_payment; given again after the run it was "already reconciled",
    and its failure was never re-issued."""
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    early_ws = init_workspace(tmp_path / "other", {"test-plan.toml": SIMPLE_RULE})
    assert run(early_ws, "2024-01", s, roster_file(tmp_path / "r0.csv")).exit_code == 0  # type: ignore[attr-defined]
    jan_elsewhere = read(early_ws / "reports" / "2024-01" / "payouts.csv")
    path = bank_return(tmp_path / "ret1.csv", jan_elsewhere, {jan_elsewhere[0]["payment_id"]})
    code, out = reconcile(ws, path)  # this workspace has no payment yet
    assert code == 3 and set(out["counts"]) == {"unknown_payment"}
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    code, out = reconcile(ws, path)
    assert code == 3 and out["counts"] == {"success": len(jan) - 1, "failed": 1}
    code, again = reconcile(ws, path)  # now a plain repeat: nothing new
    assert again["return_id"] == out["return_id"]
    feb = month(ws, tmp_path, 2, roster_file(tmp_path / "r2.csv"))
    assert [p["retry_of"] for p in feb if p["retry_of"]] == [jan[0]["payment_id"]]


def test_an_unknown_payment_id_that_is_an_id_number_is_masked(ws: Path, tmp_path: Path) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    stray = {**jan[0], "payment_id": person_id(3)}
    code, out = reconcile(ws, bank_return(tmp_path / "ret1.csv", [*jan, stray]))
    assert code == 3 and out["counts"]["unknown_payment"] == 1
    shown = json.dumps(out, ensure_ascii=False)
    assert person_id(3) not in shown and f"{person_id(3)[:6]}********" in shown
    table = cli("reconcile", "-w", ws, "--bank-return", tmp_path / "ret1.csv")
    assert person_id(3) not in table.output


def test_an_unreadable_row_keeps_why_beside_the_banks_reason(ws: Path, tmp_path: Path) -> None:
    jan = month(ws, tmp_path, 1, roster_file(tmp_path / "r1.csv"))
    path = bank_return(tmp_path / "ret1.csv", jan, {jan[0]["payment_id"]})
    text = path.read_text("utf-8").replace(f",{jan[0]['amount']},failed", ",75O.00,failed")
    path.write_text(text, "utf-8")
    code, out = reconcile(ws, path)
    assert code == 3
    (row,) = [p for p in out["problems"] if p["result"] == "unreadable"]  # type: ignore[attr-defined]
    assert row["reason"] == "amount '75O.00' is not an amount (bank: 卡号已注销)"


def test_a_retry_follows_its_member_when_the_unit_corrects_the_id_number(
    ws: Path, tmp_path: Path
) -> None:
    """M1's roster ID had a typo: the claim was held, accepted by review, paid,
    and failed at the bank. The unit then corrected the ID (same member_id,
    name and card): the re-issue waited for ever, "not in the roster"."""
    true_id = person_id(1)
    typo = true_id[:10] + "9" + true_id[11:]  # month 91: invalid, one digit away
    members = [("M1", "张三", typo, card(1), "U1", "在职", "2020-01-01", None)]
    r1 = write_csv(tmp_path / "r1.csv", ROSTER_HEADER, members)
    jan = [("S1", true_id, "张三", "门诊", "2024-01-05", None, "3000", "3000", None)]
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, jan)
    assert run(ws, "2024-01", s1, r1).exit_code == 0  # type: ignore[attr-defined]
    assert [r["reason_code"] for r in read(ws / "reports" / "2024-01" / "review.csv")] == [
        "probable_id_typo"
    ]
    (ws / "overrides.csv").write_text(
        "settlement_id,decision,member_id,note,decided_by\nS1,accept,M1,roster typo,审核\n",
        encoding="utf-8",
    )
    empty = write_csv(tmp_path / "empty.csv", SETTLEMENT_HEADER, [])
    assert run(ws, "2024-02", empty, r1).exit_code == 0  # type: ignore[attr-defined]
    feb = read(ws / "reports" / "2024-02" / "payouts.csv")
    assert [(p["member_id"], p["amount"]) for p in feb] == [("M1", "1000.00")]
    reconcile(ws, bank_return(tmp_path / "ret.csv", feb, {feb[0]["payment_id"]}))
    fixed = [("M1", "张三", true_id, card(1), "U1", "在职", "2020-01-01", None)]
    r2 = write_csv(tmp_path / "r2.csv", ROSTER_HEADER, fixed)
    assert run(ws, "2024-03", empty, r2).exit_code == 0  # type: ignore[attr-defined]
    mar = read(ws / "reports" / "2024-03" / "payouts.csv")
    assert [(p["member_id"], p["amount"], p["retry_of"]) for p in mar] == [
        ("M1", "1000.00", feb[0]["payment_id"])
    ]


def test_a_debt_follows_its_member_when_the_unit_corrects_the_id_number(
    ws: Path, tmp_path: Path
) -> None:
    """M1's roster ID had a typo; a claim accepted by review was paid, then
    reversed: M1 owed it back under the mistyped ID. The unit corrected the
    ID, and M1's next payment was made in full: the debt was never offset."""
    true_id = person_id(1)
    typo = true_id[:10] + "9" + true_id[11:]  # month 91: invalid, one digit away
    member = ("M1", "张三", typo, card(1), "U1", "在职", "2020-01-01", None)
    r1 = write_csv(tmp_path / "r1.csv", ROSTER_HEADER, [member])
    r2 = write_csv(tmp_path / "r2.csv", ROSTER_HEADER, [(*member[:2], true_id, *member[3:])])
    months = {
        "2024-01": [("S1", true_id, "张三", "门诊", "2024-01-05", None, "3000", "3000", None)],
        "2024-02": [],
        "2024-03": [("R1", true_id, "张三", "门诊", "2024-03-03", None, "-3000", "-3000", "S1")],
        "2024-04": [("S3", true_id, "张三", "门诊", "2024-04-04", None, "3000", "1600", None)],
    }
    for period, rows in months.items():
        s = write_csv(tmp_path / f"{period}.csv", SETTLEMENT_HEADER, rows)
        done = run(ws, period, s, r2 if period == "2024-04" else r1)
        assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
        if period == "2024-01":  # held probable_id_typo: accepted by review
            (ws / "overrides.csv").write_text(
                "settlement_id,decision,member_id,note,decided_by\nS1,accept,M1,typo,审核\n",
                encoding="utf-8",
            )
    feb = read(ws / "reports" / "2024-02" / "payouts.csv")
    assert [(p["member_id"], p["amount"]) for p in feb] == [("M1", "1000.00")]
    assert lines_total(ws, "2024-04") == Decimal("300.00")
    # 300 earned in April, 1000 owed: all of it offset, nothing paid
    assert read(ws / "reports" / "2024-04" / "payouts.csv") == []
    summary = json.loads((ws / "reports" / "2024-04" / "summary.json").read_text("utf-8"))
    assert summary["balance"]["balanced"] is True
    assert summary["balance"]["recoveries_net"] == "-300.00"


def test_a_retry_owed_under_a_mangled_id_is_not_paid_to_the_member_ids_next_holder(
    ws: Path, tmp_path: Path
) -> None:
    """张三's roster ID was mangled by Excel; a reviewer accepted his claim and
    the payment failed. M1 then went to 李四 (a valid ID of his own): the
    re-issue went to 李四's card. It waits for 张三."""
    mangled = person_id(1)[:15] + "000"
    r1 = write_csv(
        tmp_path / "r1.csv",
        ROSTER_HEADER,
        [("M1", "张三", mangled, card(1), "U1", "在职", "2020-01-01", None)],
    )
    jan = [("S1", person_id(1), "张三", "门诊", "2024-01-05", None, "3000", "3000", None)]
    (ws / "overrides.csv").write_text(
        "settlement_id,decision,member_id,note,decided_by\nS1,accept,M1,mangled,审核\n",
        encoding="utf-8",
    )
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, jan)
    assert run(ws, "2024-01", s1, r1).exit_code == 0  # type: ignore[attr-defined]
    paid = read(ws / "reports" / "2024-01" / "payouts.csv")
    assert [p["member_id"] for p in paid] == ["M1"]
    reconcile(ws, bank_return(tmp_path / "ret.csv", paid, {paid[0]["payment_id"]}))
    r2 = write_csv(
        tmp_path / "r2.csv",
        ROSTER_HEADER,
        [("M1", "李四", person_id(7), card(7), "U1", "在职", "2024-02-01", None)],
    )
    empty = write_csv(tmp_path / "empty.csv", SETTLEMENT_HEADER, [])
    assert run(ws, "2024-02", empty, r2).exit_code == 0  # type: ignore[attr-defined]
    assert read(ws / "reports" / "2024-02" / "payouts.csv") == []
    summary = json.loads((ws / "reports" / "2024-02" / "summary.json").read_text("utf-8"))
    assert summary["balance"]["retries_waiting_payment_ids"] == [paid[0]["payment_id"]]
