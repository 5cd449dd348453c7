"""Report files are in their stated order however many threads write them
(spec 7: the same inputs give byte-identical reports). A few hundred thousand
rows make DuckDB sort and write on several threads; an ORDER BY that the
writer does not own came out as interleaved runs of 2,048 rows."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

from helpers import ROSTER_HEADER, SETTLEMENT_HEADER, cli, init_workspace, person_id
from helpers import write_csv as write_rows
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


BAND_RULE = """
scheme = "flat"
title = "pays self_pay_1 whole"
version = "v1"
effective_from = 2020-01-01
categories = ["in_service", "retired"]
base = "self_pay_1"

[outpatient]
deductible = 0
ratio = 1
"""


def band_run(tmp_path: Path, bands: str) -> tuple[Path, Any]:
    ws = init_workspace(tmp_path / "ws", {"flat.toml": BAND_RULE})
    config = ws / "twopay.toml"
    config.write_text(
        re.sub(r"(?m)^bands = .*$", f"bands = {bands}", config.read_text("utf-8")), "utf-8"
    )
    amounts = ["2999.99", "3000.00", "10000.00", "10000.01"]
    roster = write_rows(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [
            (f"M{i}", "张三", person_id(i), f"C{i}", "U1", "在职", "2020-01-01", None)
            for i in range(4)
        ],
    )
    settlements = write_rows(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [
            (f"S{i}", person_id(i), "张三", "门诊", "2024-01-05", None, a, a, None)
            for i, a in enumerate(amounts)
        ],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements, "--roster", roster,
    )  # fmt: skip
    return ws, done


def test_subsidy_bands_hold_both_edges_of_the_middle_band(tmp_path: Path) -> None:
    """Spec 7's default bands "< 3000, 3000-10000, > 10000": 3000.00 and
    10000.00 are both in 3000-10000 (10000.00 was counted > 10000)."""
    ws, done = band_run(tmp_path, "[3000, 10000]")
    assert done.exit_code == 0, done.output
    summary = json.loads((ws / "reports" / "2024-01" / "summary.json").read_text("utf-8"))
    assert summary["bands"] == [
        {"band": "< 3000", "person_times": 1, "amount": "2999.99"},
        {"band": "3000-10000", "person_times": 2, "amount": "13000.00"},
        {"band": "> 10000", "person_times": 1, "amount": "10000.01"},
    ]


@pytest.mark.parametrize("bands", ["[]", "[10000, 3000]", "[0, 3000]", "[3000, 3000]"])
def test_bands_that_are_not_ascending_edges_are_exit_2_before_anything_is_committed(
    tmp_path: Path, bands: str
) -> None:
    """`bands = []` committed the batch and then failed writing its reports
    (internal error, exit 1, no payment file); `[10000, 3000]` made a band
    "10000-3000". twopay.toml is checked first: exit 2 naming run.bands."""
    ws, done = band_run(tmp_path, bands)
    assert done.exit_code == 2, done.output
    assert "twopay.toml" in done.output and "bands" in done.output
    assert not (ws / "reports" / "2024-01").exists()
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM batches").fetchall() == [(0,)]
    finally:
        con.close()
