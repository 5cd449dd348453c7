"""Fuzzing the readers and a whole run with near-valid and random files (issue 9):
never an unhandled exception, never a row neither read nor quarantined, never
a committed batch that does not balance."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import xlsxwriter
from hypothesis import event, given, settings
from hypothesis import strategies as st

from helpers import cli, init_workspace
from twopay.errors import InputSchemaError, TwopayError
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


# -- Excel workbooks -----------------------------------------------------------
#
# A near-valid settlement workbook: Chinese or English headers in any order,
# maybe below blank rows and right of a blank column; cells written as text
# (formula-looking text too), numbers, real Excel dates, formulas with their
# cached value (error values such as #DIV/0! among them), booleans, or
# nothing; blank rows; now and then a stray cell far below the table, a
# missing required column or two columns meaning the same thing. Then the
# same workbooks truncated or corrupted.

XLSX_HEADERS = {
    "settlement_id": ["结算流水号", "结算编号", "settlement_id"],
    "id_number": ["身份证号", "公民身份号码", "id_number"],
    "name": ["姓名", "name"],
    "visit_type": ["就诊类型", "医疗类别", "visit_type"],
    "service_date": ["结算日期", "就诊日期", "出院日期", "service_date"],
    "total_cost": ["医疗费总额", "total_cost"],
    "self_pay_1": ["自付一", "self_pay_1"],
    "admission_date": ["入院日期", "admission_date"],
    "self_pay_2": ["自付二", "self_pay_2"],
    "reverses": ["原结算流水号", "reverses"],
}
XLSX_REQUIRED = ["settlement_id", "id_number", "name", "visit_type", "service_date",
                 "total_cost", "self_pay_1"]  # fmt: skip
XLSX_EXTRA = ["备注", "医院名称", "", "Unnamed: 3"]
XLSX_TEXT = {
    "settlement_id": [
        "S1",
        "S2",
        "S3",
        "S1 ",
        "ＳＴ１",
        "\u3000S4\u3000",
        "合计",
        "结算流水号",
        "=cmd",
    ],
    "id_number": ["110105199804090173", "1.10105E+17", "１１０１０５１９９８０４０９０１７３", "x"],
    "name": ["刘洋", "劉洋", "刘 洋", '刘"洋', "a\nb", "@SUM(1)"],
    "visit_type": ["门诊", "住院", "outpatient", "体检", "INPATIENT", "急诊"],
    "service_date": ["2024-01-15", "2024/1/5", "20240230", "45306", "soon", "2024年1月12日"],
    "admission_date": ["2024-01-10", "2024-13-01"],
    "total_cost": ["100", "1,234.50", "¥88.00", "12.345", "-5", "abc", "300元"],
    "self_pay_1": ["80", "0", "100.10", "5000", "-5"],
    "self_pay_2": ["0", "1.5", "n/a"],
    "reverses": ["S1", "S9"],
}
XLSX_FORMULA_TEXT = ["=SUM(A1:A3)", "+86 10", "-1-1", "@x", "   "]
MONEY = ("total_cost", "self_pay_1", "self_pay_2")
DATES = ("service_date", "admission_date")
NUMBERS = {
    "total_cost": [100, 88, 1234.5, 100.1, 12.345, 0, -5, 0.1 + 0.2, 1e20, 3000],
    "self_pay_1": [80, 0, 50.5, 5000, -5],
    "self_pay_2": [0, 1.5],
    "service_date": [45306, 45306.5, 45292, 1, 2958466],  # serials; 2958466 is past 9999-12-31
    "admission_date": [45301],
    "id_number": [110105199804090173, 1.10105e17, 42],
}
EXCEL_ERRORS = ["#DIV/0!", "#N/A", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!"]
EXCEL_DATES = [
    dt.datetime(2024, 1, 15),
    dt.datetime(2024, 1, 10, 13, 30),
    dt.datetime(2023, 12, 31),
]

Cell = tuple[str, object]  # (kind, value); kind "empty" writes nothing


# Cells a settlement row of the sample roster's 刘洋 can be read from.
GOOD: dict[str | None, list[Cell]] = {
    "settlement_id": [("text", f"S{i}") for i in range(1, 9)],
    "id_number": [("text", "110105199804090173")],
    "name": [("text", "刘洋")],
    "visit_type": [("text", "门诊"), ("text", "住院")],
    "service_date": [("date", dt.datetime(2024, 1, 15)), ("text", "2024-01-15")],
    "total_cost": [("number", 100), ("text", "1,234.50"), ("number", 3000)],
    "self_pay_1": [("number", 80), ("text", "80")],
    "admission_date": [("empty", None), ("date", dt.datetime(2024, 1, 10))],
    "self_pay_2": [("empty", None), ("number", 0)],
    "reverses": [("empty", None)],
    None: [("empty", None), ("text", "备注")],
}


def near_valid(col: str | None) -> st.SearchStrategy[Cell]:
    """A good cell, or one time in four anything at all."""
    return st.integers(0, 3).flatmap(lambda n: cells(col) if n == 0 else st.sampled_from(GOOD[col]))


def cells(col: str | None) -> st.SearchStrategy[Cell]:
    texts = [*XLSX_TEXT.get(col or "", ["备注", "x"]), *XLSX_FORMULA_TEXT]
    kinds: list[st.SearchStrategy[Cell]] = [
        st.sampled_from(texts).map(lambda v: ("text", v)),
        st.sampled_from(NUMBERS.get(col or "", [1, 2.5, -3, 1e300])).map(lambda v: ("number", v)),
        st.just(("empty", None)),
        st.sampled_from(EXCEL_ERRORS).map(lambda v: ("error", v)),
        st.booleans().map(lambda v: ("bool", v)),
        st.sampled_from([("=1+1", 2), ('="门诊"', "门诊"), ('="S5"', "S5")]).map(
            lambda v: ("formula", v)
        ),
    ]
    if col in DATES:
        kinds.insert(0, st.sampled_from(EXCEL_DATES).map(lambda v: ("date", v)))
    return st.one_of(kinds)


@dataclass(frozen=True)
class Sheet:
    cols: list[str | None]  # canonical column of each header cell, None for an extra column
    header: list[str]
    rows: list[list[Cell]]
    top: int  # blank rows above the header
    left: int  # blank columns left of the table
    stray: tuple[int, int] | None  # (rows below the table, column) of a stray cell
    bad_header: str | None  # the column a refused header is refused for

    def line(self, i: int) -> int:
        """The sheet row number of data row i (the header is on row top + 1)."""
        return self.top + 2 + i

    def data_lines(self) -> dict[int, list[Cell]]:
        """Every row with at least one cell, by sheet row number."""
        lines = {
            self.line(i): r for i, r in enumerate(self.rows) if any(k != "empty" for k, _ in r)
        }
        if self.stray is not None:
            lines[self.line(len(self.rows) + self.stray[0])] = [("text", "stray")]
        return lines

    def cell(self, line: int, col: str) -> Cell:
        i = line - self.line(0)
        if col not in self.cols or i >= len(self.rows):
            return ("empty", None)
        return self.rows[i][self.cols.index(col)]


@st.composite
def sheets(draw: st.DrawFn) -> Sheet:
    optional = draw(
        st.lists(st.sampled_from(["admission_date", "self_pay_2", "reverses"]), unique=True)
    )
    extra = draw(st.lists(st.sampled_from(XLSX_EXTRA), max_size=2))
    named: list[str] = [*XLSX_REQUIRED, *optional]
    bad_header = None
    trouble = draw(st.integers(0, 19))  # (hypothesis favours the ends of a range)
    if trouble == 5:  # a required column is missing
        bad_header = draw(st.sampled_from(XLSX_REQUIRED))
        named.remove(bad_header)
    cols: list[str | None] = draw(st.permutations([*named, *[None] * len(extra)]))
    extras = iter(extra)
    header = [draw(st.sampled_from(XLSX_HEADERS[c])) if c else next(extras) for c in cols]
    if trouble == 6:  # two columns mean the same thing
        bad_header = draw(st.sampled_from(named))
        cols.append(None)  # the reader refuses it, so what it would mean does not matter
        header.append(XLSX_HEADERS[bad_header][0])
    rows = draw(
        st.lists(
            st.one_of(
                st.tuples(*[near_valid(c) for c in cols]).map(list),
                st.just([("empty", None)] * len(cols)),  # a blank row
            ),
            max_size=10,
        )
    )
    stray = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3000), st.integers(0, 30))))
    return Sheet(
        cols, header, rows, draw(st.integers(0, 2)), draw(st.integers(0, 1)), stray, bad_header
    )


def write_xlsx(sheet: Sheet) -> bytes:
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    wb.set_properties({"created": dt.datetime(2024, 2, 1)})  # the same bytes every time
    ws = wb.add_worksheet("结算明细")
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    stamp_fmt = wb.add_format({"num_format": "yyyy/m/d h:mm"})
    for j, h in enumerate(sheet.header):
        if h:
            ws.write_string(sheet.top, sheet.left + j, h)
    for i, row in enumerate(sheet.rows):
        r, c0 = sheet.line(i) - 1, sheet.left
        for j, (kind, v) in enumerate(row):
            if kind == "text":
                ws.write_string(r, c0 + j, v)  # type: ignore[arg-type]
            elif kind == "number":
                ws.write_number(r, c0 + j, v)  # type: ignore[arg-type]
            elif kind == "date":
                ws.write_datetime(r, c0 + j, v, stamp_fmt if v.hour else date_fmt)  # type: ignore[arg-type,union-attr]
            elif kind == "error":
                ws.write_formula(r, c0 + j, "=1/0", None, v)
            elif kind == "bool":
                ws.write_boolean(r, c0 + j, v)  # type: ignore[arg-type]
            elif kind == "formula":
                ws.write_formula(r, c0 + j, v[0], None, v[1])  # type: ignore[index]
    if sheet.stray is not None:
        ws.write_string(sheet.line(len(sheet.rows) + sheet.stray[0]) - 1, sheet.stray[1], "stray")
    wb.close()
    return buf.getvalue()


# Corruptions of one part of the workbook's zip, on the raw XML.
XML_MUTATIONS: list[tuple[bytes, bytes]] = [
    (rb' r="[A-Z]+[0-9]+"', b' r="A0"'),
    (rb' r="[A-Z]+[0-9]+"', b' r="A1048577"'),
    (rb' r="[A-Z]+[0-9]+"', b' r="XFE1"'),
    (rb' r="[A-Z]+[0-9]+"', b' r="AAAA1"'),
    (rb' r="[A-Z]+[0-9]+"', b' r="1A"'),
    (rb"</row>", b'<c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>'),
    (rb"</row>", b'<c r="B500000"><v>1</v></c></row>'),
    (rb' t="s"', b' t="n"'),
    (rb"<v>[0-9]+</v>", b"<v>999999</v>"),
    (rb"<v>[^<]*</v>", b"<v>1e400</v>"),
    (rb"<v>[^<]*</v>", b"<v>NaN</v>"),
    (rb"<v>[^<]*</v>", b"<v>-1e10</v>"),
    (rb"<v>[^<]*</v>", b"<v>abc</v>"),
    (rb' t="str"', b' t="d"'),
    (rb' t="str"', b' t="b"'),
    (rb'numFmtId="[0-9]+"', b'numFmtId="14"'),
    (rb"</sheetData>", b""),
    (rb"<sheet ", b"<sheet x "),
    (rb"<si>", b"<si><si>"),
]


@st.composite
def broken_workbooks(draw: st.DrawFn) -> bytes:
    data = write_xlsx(draw(sheets()))
    how = draw(st.sampled_from(["truncate", "flip", "part"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        out = bytearray(data)
        for at in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            out[at] ^= draw(st.integers(1, 255))
        return bytes(out)
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        parts = {n: src.read(n) for n in src.namelist()}
    sheet_xml = "xl/worksheets/sheet1.xml"  # where the cells are: half of the corruptions
    target = draw(st.one_of(st.just(sheet_xml), st.sampled_from(sorted(parts))))
    change = draw(st.sampled_from(["cut", "drop", *range(len(XML_MUTATIONS))]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, body in parts.items():
            if name == target and change == "drop":
                continue
            if name == target and change == "cut":
                body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
            elif name == target:
                pattern, repl = XML_MUTATIONS[change]  # type: ignore[index]
                body = re.sub(pattern, repl, body, count=draw(st.integers(0, 3)))
            dst.writestr(name, body)
    return buf.getvalue()


def norm(text: str) -> str | None:
    """Spec 2's text-cell normalisation, for the values this file writes."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip() or None


def typed_rows(con: duckdb.DuckDBPyConnection) -> dict[int, dict[str, object]]:
    con.execute("CREATE TEMP TABLE raw AS SELECT line_number AS row_key, * FROM raw0")
    install_macros(con)
    con.execute(typed_settlements_sql("raw", "typed", SETTLEMENTS))
    cur = con.execute("SELECT * FROM typed")
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    by_line = {int(r["line_number"]): r for r in rows}  # type: ignore[call-overload]
    assert len(by_line) == len(rows), "two rows with one line number"
    return by_line


@settings(max_examples=40, deadline=None)
@given(sheet=sheets())
def test_near_valid_xlsx_every_row_is_read_or_quarantined(
    sheet: Sheet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("fzx")
    path = tmp / "s.xlsx"
    path.write_bytes(write_xlsx(sheet))
    con = duckdb.connect()
    if sheet.bad_header:
        with pytest.raises(InputSchemaError, match=f"'{sheet.bad_header}'"):
            load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp)
        return
    loaded = load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp)
    got = typed_rows(con)
    want = sheet.data_lines()
    event(f"rows read: {'0' if not got else '1-5' if len(got) <= 5 else '6+'}")
    event(f"some rows quarantined: {any(r['q_code'] for r in got.values())}")
    event(f"some rows clean: {any(not r['q_code'] for r in got.values())}")
    # every row with a cell is there, at its sheet row number; nothing else is
    assert sorted(got) == sorted(want) and loaded.rows == len(want)
    for line, row in got.items():
        errors = [c for c in sheet.cols if c and sheet.cell(line, c)[0] == "error"]
        if errors:  # an Excel error value is not an empty cell: the row is quarantined
            assert row["q_code"] is not None, (line, errors, row)
        kind, value = sheet.cell(line, "settlement_id")
        if kind == "text" and not errors:
            assert row["settlement_id"] == norm(value), (line, value, row)  # type: ignore[arg-type]
        if row["q_code"] is not None:
            continue
        kind, value = sheet.cell(line, "service_date")
        if kind == "date":  # a real Excel date cell is that date
            assert row["service_date"] == value.date(), (line, value, row)  # type: ignore[union-attr]
        for col in MONEY:
            kind, value = sheet.cell(line, col)
            if kind == "number":  # a number cell is the amount Excel shows
                assert row[col] == Decimal(f"{value:.15g}"), (line, col, value, row)


@settings(max_examples=40, deadline=None)
@given(data=broken_workbooks())
def test_broken_workbooks_never_crash_the_reader(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("fzxb")
    path = tmp / "s.xlsx"
    path.write_bytes(data)
    con = duckdb.connect()
    try:
        loaded = load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp)
    except TwopayError as exc:
        assert "\n" not in exc.message and str(path) in exc.message
        event("refused")
        return
    event("read")
    assert len(typed_rows(con)) == loaded.rows


@settings(max_examples=20, deadline=None)
@given(
    book=st.integers(0, 2).flatmap(  # two near-valid workbooks for one broken one
        lambda n: (
            broken_workbooks().map(lambda b: (b, None))
            if n == 0
            else sheets().map(lambda s: (write_xlsx(s), s))
        )
    ),
    max_rate=st.sampled_from(["1", "0.05"]),
)
def test_whole_runs_on_workbooks_balance_or_commit_nothing(
    book: tuple[bytes, Sheet | None], max_rate: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data, sheet = book
    tmp = tmp_path_factory.mktemp("fzxr")
    ws = init_workspace(tmp / "ws")
    path = tmp / "结算明细.xlsx"
    path.write_bytes(data)
    result = cli("run", "-w", ws, "--period", "2024-01", "--settlements", path,
                 "--roster", ROSTER, "--max-quarantine-rate", max_rate, "--json")  # fmt: skip
    assert result.exit_code in (0, 2, 3), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    event(f"{'near-valid' if sheet else 'broken'} workbook: exit {result.exit_code}")
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    try:
        committed = con.execute("SELECT count(*) FROM batches WHERE period = '2024-01'").fetchall()
    finally:
        con.close()
    if sheet is not None and sheet.bad_header:
        assert result.exit_code == 2 and sheet.bad_header in result.output
    if result.exit_code != 0:  # one sentence, and nothing committed
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert committed == [(0,)]
        return
    assert committed == [(1,)]
    printed = json.loads(result.output)["summary"]["balance"]
    balance = json.loads((ws / "reports" / "2024-01" / "summary.json").read_text("utf-8"))[
        "balance"
    ]
    assert balance == printed and balance["balanced"] is True
    placed = balance["quarantined"] + balance["rejected"] + balance["held"] + balance["adjudicated"]
    assert placed == balance["rows_in"]
    if sheet is not None:
        assert balance["rows_in"] == len(sheet.data_lines())


def test_a_workbook_whose_workbook_part_is_cut_short_is_refused_not_a_crash(
    tmp_path: Path,
) -> None:
    """Found by the fuzz above: a local header of xl/workbook.xml that claims
    more bytes than follow made the 1904-date check raise EOFError (exit 1)."""
    import xlsxwriter

    path = tmp_path / "s.xlsx"
    book = xlsxwriter.Workbook(str(path))
    book.add_worksheet().write_row(0, 0, ["settlement_id"])
    book.close()
    data = bytearray(path.read_bytes())
    at = data.index(b"xl/workbook.xml") - 30  # its local header
    assert data[at : at + 4] == b"PK\x03\x04"
    data[at + 28 : at + 30] = (0x1000).to_bytes(2, "little")  # extra field past the data
    path.write_bytes(bytes(data))
    with pytest.raises(TwopayError) as refused:
        load_input(duckdb.connect(), path, SETTLEMENTS, "raw0", workdir=tmp_path)
    assert str(path) in refused.value.message and "\n" not in refused.value.message
