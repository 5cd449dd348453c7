"""Report files are in their stated order however many threads write them
(spec 7: the same inputs give byte-identical reports). A few hundred thousand
rows make DuckDB sort and write on several threads; an ORDER BY that the
writer does not own came out as interleaved runs of 2,048 rows."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest

from twopay.ledger.schema import ensure_schema
from twopay.reports.render import report_queries, write_csv

N = 300_000


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    path = tmp_path_factory.mktemp("order") / "twopay.duckdb"
    con = duckdb.connect(str(path), config={"preserve_insertion_order": False, "threads": 4})
    ensure_schema(con)
    # batch 1's rows are its stage 1's (ledger.schema.STAGED)
    con.execute(
        "INSERT INTO batches (batch_id, period, fingerprint, inputs, rules, twopay_version, "
        "started_at, finished_at, summary, stage_id) "
        "VALUES (1, '2024-01', '', '[]', '[]', '0', now(), now(), '{}', 1)"
    )
    # keys that arrive scrambled: line i is settlement (i * 7919) mod N
    con.execute(
        f"""
        INSERT INTO line_rows (stage_id, line_key, row_batch_id, row_key, settlement_id, scheme,
                           member_id, visit_type, payout, status, note, match)
        SELECT 1, range, 1, range, 'S' || lpad(((range * 7919) % {N})::VARCHAR, 9, '0'),
               CASE WHEN range % 3 = 0 THEN 'b' ELSE 'a' END,
               CASE WHEN range % 5 = 0 THEN '=M' ELSE 'M' END || range::VARCHAR,
               'outpatient', 1.00, 'paid', '', 'exact'
        FROM range({N})
        """
    )
    con.execute(
        f"""
        INSERT INTO outcome_rows (stage_id, row_batch_id, row_key, settlement_id, carried, outcome,
                              code, detail)
        SELECT 1, 1, (range * 7919) % {N}, 'S' || range::VARCHAR, false, 'rejected',
               'not_a_member', 'detail ' || range::VARCHAR
        FROM range({N})
        """
    )
    yield con
    con.close()


def written(ledger: duckdb.DuckDBPyConnection, tmp_path: Path, report: str) -> list[dict[str, str]]:
    """The rows of one report as write_csv writes it (all N of them)."""
    query, order = report_queries("en", unmask=False)[report]
    out = tmp_path / f"{report}.csv"
    assert write_csv(ledger, query, order, out, 1) == N
    with out.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_payout_lines_come_out_in_settlement_order(
    ledger: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    rows = written(ledger, tmp_path, "payout_lines")
    keys = [(r["settlement_id"], r["scheme"]) for r in rows]
    assert keys == sorted(keys)
    # the ordering column is not written; the text is still neutralised
    assert "_line_key" not in rows[0]
    assert any(r["member_id"].startswith("'=") for r in rows)
    assert not any(r["member_id"].startswith("=") for r in rows)


def test_rejections_come_out_in_row_order(
    ledger: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    rows = written(ledger, tmp_path, "rejections")
    # row_key k belongs to the settlement written at position k of the input
    expected = {(i * 7919) % N: f"S{i}" for i in range(N)}
    assert [r["settlement_id"] for r in rows] == [expected[k] for k in range(N)]
    assert "_row_key" not in rows[0]
