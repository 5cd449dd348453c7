"""Fuzzing the readers and a whole run with near-valid and random files (issue 9):
never an unhandled exception, never a row neither read nor quarantined, never
a committed batch that does not balance."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import cli, init_workspace
from twopay.errors import TwopayError
from twopay.io.readers import load_input
from twopay.io.schemas import SETTLEMENTS
from twopay.pipeline.validate import install_macros, typed_settlements_sql

ROSTER = Path(__file__).resolve().parents[1] / "sample_data" / "roster.csv"
HEADER = ["settlement_id", "id_number", "name", "visit_type", "service_date", "admission_date",
          "total_cost", "self_pay_1", "reverses"]  # fmt: skip

CELLS = {
    "settlement_id": st.sampled_from(["S1", "S2", "S3", "", "合计", "S1 ", "=cmd"]),
    "id_number": st.sampled_from(
        [
            "110105199804090173",
            "1.10105E+17",
            "１１０１０５１９９８０４０９０１７３",
            "110105660312021",
            "x",
            "",
        ]
    ),
    "name": st.sampled_from(["刘洋", "劉洋", "刘 洋", "", '刘"洋', "a\nb", "@SUM(1)"]),
    "visit_type": st.sampled_from(["门诊", "住院", "outpatient", "体检", "", "INPATIENT"]),
    "service_date": st.sampled_from(["2024-01-15", "2024/1/5", "20240230", "45306", "", "soon"]),
    "admission_date": st.sampled_from(["", "2024-01-10", "2024-13-01"]),
    "total_cost": st.sampled_from(
        ["100", "1,234.50", "¥88.00", "12.345", "-5", "", "abc", "300元"]
    ),
    "self_pay_1": st.sampled_from(["80", "0", "100.10", "5000", "-5", ""]),
    "reverses": st.sampled_from(["", "", "", "S1", "S9"]),
}
row = st.fixed_dictionaries(CELLS).map(lambda d: [d[h] for h in HEADER])


def write(rows: list[list[str]], delimiter: str, encoding: str, crlf: bool) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n").writerows(
        [HEADER, *rows]
    )
    return buf.getvalue().encode(encoding)


@settings(max_examples=60)
@given(
    rows=st.lists(row, max_size=12),
    delimiter=st.sampled_from([",", "\t", ";"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]),
    crlf=st.booleans(),
)
def test_near_valid_csv_every_row_is_read_or_quarantined(
    rows: list[list[str]], delimiter: str, encoding: str, crlf: bool, tmp_path_factory: object
) -> None:
    tmp = tmp_path_factory.mktemp("fz")  # type: ignore[attr-defined]
    path = tmp / "s.csv"
    path.write_bytes(write(rows, delimiter, encoding, crlf))
    con = duckdb.connect()
    try:
        load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp)
    except TwopayError:
        return
    con.execute("CREATE TEMP TABLE raw AS SELECT line_number AS row_key, * FROM raw0")
    install_macros(con)
    con.execute(typed_settlements_sql("raw", "typed", SETTLEMENTS))
    assert con.execute("SELECT count(*) FROM typed").fetchall()[0][0] == len(rows)


@settings(max_examples=40)
@given(data=st.binary(max_size=400))
def test_random_bytes_never_crash_the_reader(data: bytes, tmp_path_factory: object) -> None:
    tmp = tmp_path_factory.mktemp("fzb")  # type: ignore[attr-defined]
    path = tmp / "s.csv"
    path.write_bytes(data)
    con = duckdb.connect()
    try:
        load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp)
    except TwopayError:
        pass


@settings(max_examples=15)
@given(rows=st.lists(row, min_size=1, max_size=10))
def test_whole_runs_balance_or_commit_nothing(
    rows: list[list[str]], tmp_path_factory: object
) -> None:
    tmp = tmp_path_factory.mktemp("fzr")  # type: ignore[attr-defined]
    ws = init_workspace(tmp / "ws")
    path = tmp / "s.csv"
    path.write_bytes(write(rows, ",", "utf-8", False))
    result = cli(
        "run",
        "-w",
        ws,
        "--period",
        "2024-01",
        "--settlements",
        path,
        "--roster",
        ROSTER,
        "--max-quarantine-rate",
        "1",
        "--json",
    )
    assert result.exit_code in (0, 2, 3), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    if result.exit_code == 0:
        balance = json.loads(result.output)["summary"]["balance"]
        assert balance["balanced"] is True and balance["rows_in"] == len(rows)
