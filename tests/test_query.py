"""`twopay query`: read-only SQL over the ledger through the documented views
(spec 8), as a table, CSV or JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fixtures.reports.workspace import build_workspace
from helpers import cli


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("query"))


def query(ws: Path, sql: str, *args: str) -> tuple[int, str, str]:
    result = cli("query", "-w", ws, sql, *args)
    return result.exit_code, result.stdout, result.stderr


def test_csv_output(ws: Path) -> None:
    code, out, _ = query(
        ws,
        "SELECT period, settlement_id, payout, status FROM v_lines ORDER BY period, settlement_id",
        "--format",
        "csv",
    )
    assert code == 0
    assert out.splitlines() == [
        "period,settlement_id,payout,status",
        "2024-01,JAN-001,250.00,paid",
        "2024-01,JAN-002,0.00,zero",
        "2024-01,JAN-003,100.00,paid",
        "2024-02,FEB-001,750.00,paid",
        "2024-02,FEB-002,1500.00,paid",
        "2024-02,FEB-003,-100.00,clawback",
    ]


@pytest.mark.parametrize("flag", [["--format", "json"], ["--json"]])
def test_json_output(ws: Path, flag: list[str]) -> None:
    code, out, _ = query(
        ws,
        "SELECT reason_code, count(*) AS n FROM v_rejections GROUP BY ALL ORDER BY 1",
        *flag,
    )
    assert code == 0
    assert json.loads(out) == [
        {"reason_code": "invalid_id_number", "n": 2},
        {"reason_code": "membership_inactive", "n": 1},
        {"reason_code": "name_mismatch", "n": 1},
        {"reason_code": "not_a_member", "n": 1},
        {"reason_code": "unit_dues_unpaid", "n": 1},
        {"reason_code": "waiting_period", "n": 1},
    ]


def test_the_documented_views(ws: Path) -> None:
    code, out, _ = query(
        ws,
        "SELECT period, payment_id, amount FROM v_payments ORDER BY payment_id",
        "--json",
    )
    assert code == 0
    assert json.loads(out) == [
        {"period": "2024-01", "payment_id": "2024-01-M001", "amount": "250.00"},
        {"period": "2024-01", "payment_id": "2024-01-M003", "amount": "100.00"},
        {"period": "2024-02", "payment_id": "2024-02-M001", "amount": "750.00"},
        {"period": "2024-02", "payment_id": "2024-02-M005", "amount": "1500.00"},
    ]
    code, out, _ = query(ws, "SELECT count(*) AS members FROM v_members", "--json")
    assert json.loads(out) == [{"members": 12}]
    # the views leave out bank accounts
    code, out, _ = query(ws, "SELECT * FROM v_members LIMIT 1", "--format", "csv")
    assert "bank_account" not in out.splitlines()[0]


def test_a_table_on_the_terminal(ws: Path) -> None:
    code, out, _ = query(ws, "SELECT settlement_id, payout FROM v_lines WHERE payout > 1000")
    assert code == 0
    assert "FEB-002" in out and "1500.00" in out and "settlement_id" in out


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO batches SELECT * FROM batches",
        "UPDATE lines SET payout = 0",
        "DELETE FROM payments",
        "CREATE TABLE mine (a INTEGER)",
        "DROP VIEW v_lines",
        "ALTER TABLE lines ADD COLUMN x INTEGER",
    ],
)
def test_a_write_fails_clearly_and_changes_nothing(ws: Path, sql: str) -> None:
    ledger = ws / "twopay.duckdb"
    before = hashlib.sha256(ledger.read_bytes()).hexdigest()
    code, out, err = query(ws, sql)
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "error: the ledger is read-only in `twopay query`; it cannot be changed."
    ]
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before
    code, out, _ = query(ws, "SELECT sum(payout) AS total FROM v_lines", "--json")
    assert json.loads(out) == [{"total": "2500.00"}]


def test_bad_sql_is_one_sentence(ws: Path) -> None:
    code, out, err = query(ws, "SELEC nonsense")
    assert code == 2 and out == ""
    assert err.startswith("error: query failed:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("sql", ["", "  ;  ", "/* only a comment */"])
def test_an_empty_query_is_one_sentence(ws: Path, sql: str) -> None:
    code, out, err = query(ws, sql)
    assert code == 2 and out == ""
    assert err.startswith("error: the query") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT * FROM settlements) TO '{out}'",
        "SELECT * FROM read_csv('{out}')",
        "SET enable_external_access = true",
    ],
)
def test_query_cannot_reach_other_files(ws: Path, tmp_path: Path, sql: str) -> None:
    out = tmp_path / "leak.csv"
    if "read_csv" in sql:
        out.write_text("a\n1\n")
    result = cli("query", "-w", ws, sql.format(out=out))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    if "COPY" in sql:
        assert not out.exists()


def test_table_cells_are_text_not_markup(ws: Path) -> None:
    """A value from the ledger is printed as it is: brackets in it are not
    rich styles (a cell '[/]' raised a MarkupError, '[red]x' lost its tag)."""
    code, out, err = query(ws, "SELECT '[/]' AS a, '[red]x' AS b, 'S[jan]-1' AS c")
    assert code == 0, err
    assert "[/]" in out and "[red]x" in out and "S[jan]-1" in out


def test_several_statements_are_a_usage_error(ws: Path) -> None:
    """Only the last result was shown, the others dropped without a word."""
    code, _, err = query(ws, "SELECT 'first' AS a; SELECT 'second' AS b")
    assert code == 2
    assert "2 SQL statements; give one" in err


def test_json_output_is_strict_json_and_keeps_every_column(ws: Path) -> None:
    """--json wrote Infinity and NaN (which strict parsers refuse), a join's
    second member_id overwrote the first, and a MAP keyed by DECIMAL was an
    internal error."""
    code, out, _ = query(
        ws,
        "SELECT 1.0 / 0 AS inf, 'nan'::DOUBLE AS nan, 'M1' AS member_id, 'M2' AS member_id, "
        "MAP {1.5: 'a'} AS m",
        "--json",
    )
    assert code == 0
    rows = json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert rows == [
        {"inf": None, "nan": None, "member_id": "M1", "member_id_2": "M2", "m": {"1.5": "a"}}
    ]
