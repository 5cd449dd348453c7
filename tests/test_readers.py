"""Reading every input form of spec section 2 into typed rows, on real files."""

from __future__ import annotations

import csv
import json
import re
import zipfile
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import (
    ROSTER_HEADER,
    SETTLEMENT_HEADER,
    SIMPLE_RULE,
    cli,
    init_workspace,
    one_member,
    person_id,
    write_csv,
)
from twopay.errors import InputSchemaError, UsageError
from twopay.io.readers import CHUNK, blank_lines, detect_encoding, excel_number_text, load_input
from twopay.io.schemas import SETTLEMENTS
from twopay.pipeline.validate import install_macros, typed_settlements_sql

FIX = Path(__file__).parent / "fixtures" / "io"


def read_typed(
    path: Path, tmp_path: Path, *, lazy: bool = False, **kw: object
) -> list[dict[str, object]]:
    """Typed rows of ``path``; ``lazy`` reads it as a run does (a view, raw text
    and the file's own types taken from its cells where they are used)."""
    con = duckdb.connect()
    loaded = load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp_path, lazy=lazy, **kw)  # type: ignore[arg-type]
    con.execute(
        "CREATE TEMP TABLE raw AS SELECT row_number() OVER (ORDER BY line_number) AS row_key, * FROM raw0"
    )
    install_macros(con)
    con.execute(
        typed_settlements_sql("raw", "typed", SETTLEMENTS, raw=loaded.raw_sql, typed=loaded.typed)
    )
    cur = con.execute("SELECT * FROM typed ORDER BY line_number")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


@pytest.mark.parametrize(
    "name",
    [
        "settlements_en_utf8.csv",
        "settlements_en_bom.csv",
        "settlements_zh_gb18030.csv",
        "settlements_zh_tab.tsv",
        "settlements_zh_semicolon.csv",
        "settlements_zh.xlsx",
        "settlements.parquet",
    ],
)
def test_every_format_reads_the_same_values(name: str, tmp_path: Path) -> None:
    rows = read_typed(FIX / name, tmp_path)
    assert len(rows) == 2
    first, second = rows
    assert first["q_code"] is None and second["q_code"] is None
    assert first["visit_type"] == "outpatient"
    assert first["service_date"] == date(2024, 3, 5)
    assert second["visit_type"] == "inpatient"
    assert second["service_date"] == date(2024, 3, 20)
    assert second["admission_date"] == date(2024, 3, 10)
    assert second["total_cost"] == Decimal("1234.50")
    assert second["self_pay_1"] == Decimal("1000.00")
    # full-width digits become half-width (NFKC)
    assert second["id_number"] == "110105199001011234"
    assert first["line_number"] == 2 and second["line_number"] == 3


BAD_ROWS = (
    HEAD_BAD := "settlement_id,id_number,name,visit_type,service_date,total_cost,self_pay_1\n"
) + (
    'A1,110105199001011234,"张\n伟",outpatient,2024-03-05,100,80\n'
    "A2,110105199001011234,张伟,outpatient,2024-03-05,100\n"
    'A3,"unterminated,outpatient,2024-03-05,100,80\n'
)


@pytest.mark.parametrize(
    "name",
    [
        "settlements_en_utf8.csv",
        "settlements_zh_gb18030.csv",
        "settlements_zh_tab.tsv",
        "settlements_bad.csv",
        "settlements_zh.xlsx",
        "settlements.parquet",
        "quoted_and_broken.csv",
    ],
)
def test_a_lazy_read_gives_the_rows_an_eager_read_gives(name: str, tmp_path: Path) -> None:
    """A run reads lazily: raw text is joined from the cells only for the rows
    that keep it. Every value, raw included, is what the eager read gives."""
    path = FIX / name
    if name == "quoted_and_broken.csv":
        path = tmp_path / name
        path.write_text(BAD_ROWS, encoding="utf-8")
    eager = read_typed(path, tmp_path)
    lazy = read_typed(path, tmp_path, lazy=True)
    assert lazy == eager
    kept = [r["raw"] for r in eager if r["q_code"] is not None]
    assert all(kept), "every quarantined row keeps its raw text"
    assert bool(kept) == ("bad" in name or "broken" in name)
    assert all(r["raw"] is None for r in eager if r["q_code"] is None)


MONEY_TYPES = ["DECIMAL(18,2)", "DECIMAL(18,3)", "DECIMAL(38,0)", "BIGINT", "DOUBLE"]


@settings(max_examples=25, deadline=None)
@given(
    money_type=st.sampled_from(MONEY_TYPES),
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.decimals(-(10**15), 10**15, places=3, allow_nan=False)),
            st.one_of(st.none(), st.decimals(0, 10**4, places=2, allow_nan=False)),
            st.one_of(st.none(), st.dates(date(1900, 1, 1), date(2199, 12, 31))),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_typed_parquet_reads_as_its_text_form(tmp_path_factory, money_type, rows) -> None:
    """A Parquet DATE or DECIMAL column is taken as typed, without parsing its
    text: every row reads (or is quarantined, with the same raw text) exactly
    as the same file with every column written as text."""
    tmp = tmp_path_factory.mktemp("pq")
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t (settlement_id VARCHAR, id_number VARCHAR, name VARCHAR, "
        f"visit_type VARCHAR, service_date DATE, total_cost {money_type}, self_pay_1 {money_type})"
    )
    for i, (cost, pay, day) in enumerate(rows):
        con.execute(
            "INSERT INTO t VALUES (?, '110105199001011234', '张伟', '门诊', ?, "
            f"TRY_CAST(? AS {money_type}), TRY_CAST(? AS {money_type}))",
            [f"S{i}", day, cost, pay],
        )
    typed_path, text_path = tmp / "typed.parquet", tmp / "text.parquet"
    con.execute(f"COPY t TO '{typed_path}' (FORMAT parquet)")
    # a DOUBLE reads as Excel shows it, at 15 significant digits
    text = (
        "printf('%.15g', COLUMNS(['total_cost', 'self_pay_1']))"
        if money_type == "DOUBLE"
        else "COLUMNS(['total_cost', 'self_pay_1'])::VARCHAR"
    )
    con.execute(
        f"COPY (SELECT COLUMNS(* EXCLUDE (total_cost, self_pay_1))::VARCHAR, {text} FROM t) "
        f"TO '{text_path}' (FORMAT parquet)"
    )
    typed = load_input(duckdb.connect(), typed_path, SETTLEMENTS, "x", workdir=tmp, lazy=True).typed
    assert "service_date" in typed
    assert ("total_cost" in typed) == (money_type not in ("DOUBLE", "DECIMAL(18,3)"))
    as_typed = read_typed(typed_path, tmp, lazy=True)
    as_text = read_typed(text_path, tmp, lazy=True)
    for r in as_typed + as_text:
        r.pop("source_file")
    assert as_typed == as_text


def test_gb18030_is_detected_and_forcing_the_wrong_encoding_fails(tmp_path: Path) -> None:
    path = FIX / "settlements_zh_gb18030.csv"
    assert detect_encoding(path) == "gb18030"
    assert detect_encoding(FIX / "settlements_en_bom.csv") == "utf-8-sig"
    with pytest.raises(UsageError, match="cannot be read as utf-8"):
        read_typed(path, tmp_path, encoding="utf-8")
    assert len(read_typed(path, tmp_path, encoding="gb18030")) == 2


def test_each_quarantine_code_with_its_line(tmp_path: Path) -> None:
    rows = {
        r["settlement_id"] or f"line{r['line_number']}": r
        for r in read_typed(FIX / "settlements_bad.csv", tmp_path)
    }
    codes = {k: (r["q_code"], r["line_number"]) for k, r in rows.items()}
    assert codes["Q1"] == ("missing_field", 2)
    assert codes["Q2"] == ("bad_visit_type", 3)
    assert codes["Q3"] == ("bad_date", 4)
    assert codes["Q4"] == ("bad_amount", 5)
    assert codes["Q5"] == ("inconsistent_amounts", 6)
    assert codes["Q6"] == ("bad_date", 7)  # an unreadable optional admission_date
    assert codes["line8"] == ("missing_field", 8)  # one field too many
    assert codes["OK1"] == ("bad_amount", 9)
    assert "12.345" in rows["Q4"]["q_detail"]
    assert rows["line8"]["raw"].startswith("Q7,")


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    with pytest.raises(InputSchemaError) as info:
        read_typed(FIX / "settlements_no_self_pay.csv", tmp_path)
    assert info.value.exit_code == 2
    assert "settlements_no_self_pay.csv" in info.value.message
    assert "'self_pay_1'" in info.value.message and "自付一" in info.value.message


def test_workspace_aliases_extend_the_headers(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        (FIX / "settlements_en_utf8.csv").read_text().replace("settlement_id", "流水号", 1),
        encoding="utf-8",
    )
    with pytest.raises(InputSchemaError):
        read_typed(path, tmp_path)
    rows = read_typed(path, tmp_path, aliases={"settlement_id": ["流水号"]})
    assert [r["settlement_id"] for r in rows] == ["A1", "A2"]


def test_quoted_newlines_keep_editor_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        "settlement_id,id_number,name,visit_type,service_date,total_cost,self_pay_1\n"
        'A1,110105199001011234,"张\n伟",outpatient,2024-03-05,100,80\n'
        "A2,110105199001011234,张伟,outpatient,2024-03-05,100\n"
        "A3,110105199001011234,张伟,outpatient,2024-03-05,100,80\n",
        encoding="utf-8",
    )
    rows = read_typed(path, tmp_path)
    assert [(r["line_number"], r["q_code"]) for r in rows] == [
        (2, None),
        (4, "missing_field"),
        (5, None),
    ]
    assert rows[0]["name"] == "张 伟"  # inner white space collapsed


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty"),
        (b"\x00\x01\x02garbage\x00" * 10, "binary"),
        (b"\n\n", "first line is empty"),
    ],
)
def test_unreadable_files_are_one_sentence(content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        read_typed(path, tmp_path)


ROW = "门诊,2024-01-05,100,80\n"
HEAD = "settlement_id,id_number,name,visit_type,service_date,total_cost,self_pay_1\n"


@pytest.mark.parametrize(
    "body",
    [
        # empty lines between records, one and several
        f"S1,1,a,{ROW}\nS2,1,a,{ROW}\n\n\nS3,1,a,{ROW}",
        # an empty line inside a quoted cell is the cell's, not a skipped line
        f'S1,1,"a\n\nb",{ROW}\nS2,1,a,{ROW}',
        # a row with too few fields after an empty line
        f"S1,1,a,{ROW}\nS2,1\nS3,1,a,{ROW}\n",
        # Windows line ends
        f"S1,1,a,{ROW}\nS2,1,a,{ROW}".replace("\n", "\r\n"),
        # empty lines at the end move nothing
        f"S1,1,a,{ROW}S2,1,a,{ROW}\n\n",
        # one row added in a Windows editor to a file of LF line ends (and
        # so a CRLF header): DuckDB refuses the mix; its LF copy is read
        f"S1,1,a,{ROW}\nS2,1,a,{ROW}".replace("\n", "\r\n", 1) + f"\nS3,1,a,{ROW}",
    ],
    ids=["between", "quoted", "bad_row", "crlf", "trailing", "mixed"],
)
def test_line_numbers_count_empty_lines_as_an_editor_does(body: str, tmp_path: Path) -> None:
    """Spec 7: quarantine.line_number is the line a text editor shows; DuckDB
    skips empty lines, which must not move later rows up."""
    text = (HEAD.replace("\n", "\r\n") if "\r\n" in body else HEAD) + body
    path = tmp_path / "s.csv"
    path.write_bytes(text.encode())
    con = duckdb.connect()
    load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp_path)
    got = dict(con.execute("SELECT coalesce(settlement_id, raw), line_number FROM raw0").fetchall())
    editor = text.replace("\r\n", "\n").split("\n")
    want = {}
    for sid in ("S1", "S2", "S3"):
        hits = [i + 1 for i, line in enumerate(editor) if line.startswith(sid + ",")]
        if hits:
            want[sid if sid in got else next(k for k in got if k.startswith(sid))] = hits[0]
    assert got == want


def _blank_lines_line_by_line(data: bytes) -> list[int]:
    """The obvious definition: walk the lines, track whether a quoted cell is open."""
    blanks, in_quote = [], False
    # a file's lines end at \n only (bytes.splitlines would also split at \r)
    lines = data.split(b"\n")
    lines = [ln + b"\n" for ln in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    for number, line in enumerate(lines, start=1):
        if not in_quote and not line.strip(b"\r\n"):
            blanks.append(number)
        if line.count(b'"') % 2:
            in_quote = not in_quote
    return blanks


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b",", b'"', b"\n", b"\r", b"\r\n", b"x,y"]), max_size=40))
def test_blank_lines_matches_the_line_by_line_definition(tmp_path_factory, parts) -> None:
    data = b"".join(parts)
    path = tmp_path_factory.mktemp("blank") / "f.csv"
    path.write_bytes(data)
    assert blank_lines(path) == _blank_lines_line_by_line(data)


def test_blank_lines_counts_across_blocks(tmp_path: Path) -> None:
    # quotes and line breaks before an empty line span several read blocks
    body = (b'1,"a\nb"\n' * (CHUNK // 8 + 3)) + b"\n" + b'2,"\n\n"\n' + b"\r\n3,c\n"
    path = tmp_path / "big.csv"
    path.write_bytes(body)
    assert blank_lines(path) == _blank_lines_line_by_line(body)
    assert blank_lines(path)  # the file has empty lines outside quotes


def test_line_numbers_hold_across_a_large_file_read_in_parallel(tmp_path: Path) -> None:
    """A file of many read buffers (8 MB each), scanned on every core: each
    good record and each unreadable one keeps the line an editor shows, with
    quoted line breaks, rows of the wrong width and empty lines scattered."""
    import random

    rng = random.Random(11)
    lines = [HEAD.rstrip("\n")]
    want: dict[str, int] = {}
    bad: dict[int, str] = {}
    for i in range(400_000):
        sid = f"S{i:07d}"
        kind = rng.random()
        if kind < 0.0005:
            lines.append("")  # an empty line: not a record
        if kind > 0.9995:
            bad[len(lines) + 1] = sid
            lines.append(f"{sid},1,a,门诊,2024-01-05,100")  # a field short
            continue
        want[sid] = len(lines) + 1
        name = '"张\n伟"' if rng.random() < 0.001 else "张伟"
        lines.append(f"{sid},110105199001011234,{name},{ROW.rstrip()}")
        if "\n" in name:
            lines[-1:] = lines[-1].split("\n")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size > 2 * 8_000_000  # three buffers at least
    con = duckdb.connect()
    con.execute("SET threads = 2")
    load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp_path)
    got = dict(
        con.execute(
            "SELECT settlement_id, line_number FROM raw0 WHERE parse_error IS NULL"
        ).fetchall()
    )
    assert got == want
    rejected = {
        n: r.split(",")[0]
        for n, r in con.execute(
            "SELECT line_number, raw FROM raw0 WHERE parse_error IS NOT NULL"
        ).fetchall()
    }
    assert bad and rejected == bad


# -- Excel number cells ----------------------------------------------------------

TRUE_ID = "110105199001011005"  # valid; Excel keeps 15 digits: 110105199001011000
BOOK_HEADER = ("settlement_id", "id_number", "name", "visit_type", "service_date",
               "total_cost", "self_pay_1", "hospital_code")  # fmt: skip


def write_settlement_book(path: Path, rows: list[tuple[object, ...]]) -> Path:
    """An .xlsx settlement export (columns BOOK_HEADER) as Excel writes one:
    a number is a number cell, a date or datetime a date cell, anything else
    a text cell."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet()
    day = wb.add_format({"num_format": "yyyy-mm-dd"})
    stamp = wb.add_format({"num_format": "yyyy/m/d h:mm"})
    ws.write_row(0, 0, BOOK_HEADER)
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row):
            if isinstance(value, datetime):
                ws.write_datetime(r, c, value, stamp)
            elif isinstance(value, date):
                ws.write_datetime(r, c, datetime(value.year, value.month, value.day), day)
            elif isinstance(value, int | float):
                ws.write_number(r, c, value)
            elif value is not None:
                ws.write_string(r, c, str(value))
    wb.close()
    return path


def rewrite_sheet(path: Path, edit: Callable[[bytes], bytes]) -> None:
    """Apply ``edit`` to the XML of the first sheet of the workbook ``path``."""
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet] = edit(parts[sheet])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in parts.items():
            z.writestr(name, body)


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_an_id_number_excel_stored_as_a_number_is_invalid_not_a_typo(tmp_path: Path) -> None:
    """Spec 3: 110105199001011005 typed into Excel as a number is held as
    1.10105199001011E+17; the run rejects it invalid_id_number as Excel-mangled
    and does not offer the roster member with the true number as a typo."""
    ws = init_workspace(tmp_path / "ws", {"test.toml": SIMPLE_RULE})
    book = write_settlement_book(
        tmp_path / "结算明细.xlsx",
        [
            ("X1", int(TRUE_ID), "张伟", "门诊", date(2024, 3, 5), 3000, 2000),
            ("X2", person_id(2), "李娜", "门诊", date(2024, 3, 6), 3000, 2000),
        ],
    )
    roster = write_csv(
        tmp_path / "roster.csv",
        ROSTER_HEADER,
        [
            ("M1", "张伟", TRUE_ID, "C1", "U1", "in_service", "2020-01-01", ""),
            ("M2", "李娜", person_id(2), "C2", "U1", "in_service", "2020-01-01", ""),
        ],
    )
    done = cli("run", "-w", ws, "--period", "2024-03", "--settlements", book,
               "--roster", roster, "--unmask")  # fmt: skip
    assert done.exit_code == 0, done.output
    reports = ws / "reports" / "2024-03"
    rejected = {r["settlement_id"]: r for r in report_rows(reports / "rejections.csv")}
    held = {r["settlement_id"] for r in report_rows(reports / "review.csv")}
    assert "X1" not in held
    assert rejected["X1"]["reason_code"] == "invalid_id_number"
    assert rejected["X1"]["id_number"] == "110105199001011000"  # what Excel holds
    assert "Excel converted" in rejected["X1"]["detail"]
    assert "X2" not in rejected and "X2" not in held  # a text cell is read exactly


def number_cells_book(path: Path) -> Path:
    write_settlement_book(
        path,
        [
            # an ID as a number; money with a float artefact and one in the
            # hundreds of millions; a numeric hospital code
            ("N1", int(TRUE_ID), "张伟", "门诊", date(2024, 3, 5), 100000000.07, 0.1 + 0.2, 1001),
            # the same ID as text, read exactly; a date cell in a text column
            (12, TRUE_ID, "张伟", "住院", "2024-03-20", 1234.5, 1000, datetime(2024, 3, 5, 13)),
        ],
    )
    # xlsxwriter writes 16 significant digits; Excel the double's shortest form
    rewrite_sheet(path, lambda x: x.replace(b"<v>0.3</v>", b"<v>0.30000000000000004</v>"))
    return path


def check_number_cells(rows: list[dict[str, object]]) -> None:
    first, second = rows
    assert first["id_number"] == "110105199001011000"
    assert first["total_cost"] == Decimal("100000000.07")
    assert first["self_pay_1"] == Decimal("0.30")
    assert first["hospital_code"] == "1001"
    assert first["service_date"] == date(2024, 3, 5)  # a date cell stays a date
    assert first["q_code"] is None
    assert second["settlement_id"] == "12"
    assert second["id_number"] == TRUE_ID
    assert second["total_cost"] == Decimal("1234.50")
    assert second["service_date"] == date(2024, 3, 20)
    assert second["hospital_code"] == "2024-03-05 13:00:00"  # as fastexcel writes a date


def test_xlsx_number_cells_read_as_excel_shows_them(tmp_path: Path) -> None:
    """A number cell is the number Excel holds and shows: at most 15
    significant digits, not its binary value written out in full."""
    book = number_cells_book(tmp_path / "n.xlsx")
    eager = read_typed(book, tmp_path)
    check_number_cells(eager)
    assert read_typed(book, tmp_path, lazy=True) == eager


@pytest.mark.parametrize("form", ["no cell references", "namespace prefix"])
def test_xlsx_number_cells_in_other_xml_forms_read_the_same(form: str, tmp_path: Path) -> None:
    """Writers other than Excel may leave out the (optional) cell references
    or put the sheet's elements under a namespace prefix: the same cells."""
    book = number_cells_book(tmp_path / "n.xlsx")
    if form == "no cell references":
        rewrite_sheet(book, lambda x: re.sub(rb'<c r="[A-Z]+[0-9]+"', b"<c", x))
    else:
        rewrite_sheet(
            book,
            lambda x: re.sub(rb"<(/?)(?=[a-zA-Z])", rb"<\1x:", x.split(b"?>", 1)[1]).replace(
                b"xmlns=", b"xmlns:x="
            ),
        )
    check_number_cells(read_typed(book, tmp_path))


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("1.10105199001011E+17", "110105199001011000"),
        ("110105199001011005", "110105199001011000"),
        ("0.30000000000000004", "0.3"),
        ("9365.889999999999", "9365.89"),
        ("1234.5", "1234.5"),
        ("100000000.07", "100000000.07"),
        ("99999999999999.99", "100000000000000"),
        ("1E-10", "0.0000000001"),
        ("-0", "0"),
        ("1e400", None),
        ("NaN", None),
        ("abc", None),
    ],
)
def test_excel_number_text(stored: str, shown: str | None) -> None:
    assert excel_number_text(stored) == shown


FINITE = st.floats(allow_nan=False, allow_infinity=False)
CENTS = st.decimals(-(10**9), 10**9, places=2, allow_nan=False).map(float)


@settings(max_examples=15, deadline=None)
@example(values=[110105199001011005.0, 8388608.61, 100000000.07, 0.1 + 0.2, 9365.889999999999])
@given(
    values=st.lists(
        st.one_of(
            FINITE,
            CENTS,
            st.tuples(CENTS, st.sampled_from([0.1, 0.3, 0.7, 1 / 3, 1.1])).map(
                lambda t: t[0] * t[1]  # a float artefact (9365.889999999999)
            ),
            st.integers(10**14, 10**18).map(float),  # an ID or account as a number
            st.floats(-1e7, 1e7).map(lambda v: round(v, 10)),
        ).filter(lambda v: v != 0),  # (Excel stores no -0)
        min_size=1,
        max_size=40,
    )
)
def test_every_number_cell_reads_as_excel_shows_it(
    values: list[float], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each number cell of a text column, stored as Excel stores it (the
    double's shortest form), reads as excel_number_text says Excel shows it,
    whether or not the reader had to take it from the XML."""
    tmp = tmp_path_factory.mktemp("xn")
    rows = [(f"S{i}", TRUE_ID, "张伟", "门诊", "2024-03-05", 1, 1, v) for i, v in enumerate(values)]
    book = write_settlement_book(tmp / "n.xlsx", rows)
    stored = {str(i + 2): repr(v).upper() for i, v in enumerate(values)}  # 1.5E+17, as Excel
    rewrite_sheet(
        book,
        lambda x: re.sub(
            rb'(<c r="H([2-9]|[1-9][0-9]+)"><v>)[^<]*',  # the number cells below the header
            lambda m: m[1] + stored[m[2].decode()].encode(),
            x,
        ),
    )
    got = [r["hospital_code"] for r in read_typed(book, tmp)]
    assert got == [excel_number_text(stored[str(i + 2)]) for i in range(len(values))]


@pytest.mark.parametrize("encoding", ["foo", "base64"])
def test_an_unknown_encoding_is_a_usage_error(encoding: str, tmp_path: Path) -> None:
    """--encoding names no text encoding: exit 2, one sentence naming it."""
    ws = init_workspace(tmp_path / "ws")
    settlements = write_csv(tmp_path / "s.csv", SETTLEMENT_HEADER, [])
    roster = write_csv(tmp_path / "r.csv", ROSTER_HEADER, [])
    done = cli("run", "-w", ws, "--period", "2024-03", "--settlements", settlements,
               "--roster", roster, "--encoding", encoding)  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "internal error" not in done.output
    assert len(done.output.strip().splitlines()) == 1 and repr(encoding) in done.output
    bank = write_csv(tmp_path / "b.csv", ("payment_id", "card_no", "amount", "status"), [])
    done = cli("reconcile", "-w", ws, "--bank-return", bank, "--encoding", encoding)
    assert done.exit_code == 2 and repr(encoding) in done.output, done.output
    assert len(done.output.strip().splitlines()) == 1


def test_a_quote_never_closed_is_exit_2_not_the_rest_of_the_file_in_one_cell(
    tmp_path: Path,
) -> None:
    """A stray quote made every row after it one quarantined cell: 99 of 1000
    settlements vanished into quarantine.csv's raw text while the books
    'balanced' (they counted parsed records) and the run exited 0."""
    ws, roster, pid = one_member(tmp_path)
    header = (
        "settlement_id,id_number,name,visit_type,service_date,total_cost,self_pay_1,hospital_code\n"
    )
    rows = [f"S{i},{pid},张伟,门诊,2024-01-05,100.00,50.00,H{i}\n" for i in range(1, 21)]
    stray = rows.copy()
    stray[9] = stray[9].replace(",H10", ',"H10')  # line 11
    (tmp_path / "s.csv").write_text(header + "".join(stray), encoding="utf-8")
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", tmp_path / "s.csv",
        "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "s.csv: line 11 opens a quote that is never closed, so the 10 line(s)" in done.output
    assert not (ws / "reports" / "2024-01").exists()
    # thousands of lines after it: counted in the file (DuckDB keeps a cut
    # text of the record, and 3,000 lines were told as 153)
    many = [f"S{i},{pid},张伟,门诊,2024-01-05,100.00,50.00,H{i}\n" for i in range(1, 3003)]
    many[0] = many[0].replace(",H1", ',"H1')  # line 2
    (tmp_path / "m.csv").write_text(header + "".join(many), encoding="utf-8")
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", tmp_path / "m.csv",
        "--roster", roster,
    )  # fmt: skip
    assert "m.csv: line 2 opens a quote that is never closed, so the 3001 line(s)" in done.output
    # on the last line it holds nothing else: that row is quarantined, the rest read
    last = rows.copy()
    last[-1] = last[-1].replace(",H20", ',"H20')
    # the same with Windows line ends (CRLF): a rejected record's text then
    # starts with the line break before it, which is not a line it swallowed
    (tmp_path / "s2.csv").write_bytes((header + "".join(last)).replace("\n", "\r\n").encode())
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", tmp_path / "s2.csv",
        "--roster", roster, "--max-quarantine-rate", "1", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    balance = json.loads(done.output)["summary"]["balance"]
    assert (balance["rows_in"], balance["quarantined"], balance["balanced"]) == (20, 1, True)
    (tmp_path / "s3.csv").write_bytes((header + "".join(stray)).replace("\n", "\r\n").encode())
    done = cli(
        "run", "-w", ws, "--period", "2024-02", "--settlements", tmp_path / "s3.csv",
        "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 2 and "so the 10 line(s)" in done.output, done.output


def test_a_tab_or_line_break_at_a_cells_edge_is_trimmed(tmp_path: Path) -> None:
    """Spec 2 trims every text cell: 'S1<tab>' is S1 (a duplicate, not a
    second claim paid twice) and '门诊<tab>' is outpatient."""
    ws, roster, pid = one_member(tmp_path)
    (tmp_path / "s.tsv").write_text(
        "settlement_id\tid_number\tname\tvisit_type\tservice_date\ttotal_cost\tself_pay_1\n"
        f"S1\t{pid}\t张伟\t门诊\t2024-01-05\t3000\t3000\n"
        f'"S1\t"\t{pid}\t张伟\t"门诊\n"\t2024-01-05\t3000\t3000\n',
        encoding="utf-8",
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", tmp_path / "s.tsv",
        "--roster", roster, "--max-quarantine-rate", "1", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    rejections = (ws / "reports" / "2024-01" / "rejections.csv").read_text(encoding="utf-8")
    assert "S1," in rejections and "duplicate_settlement" in rejections
    balance = json.loads(done.output)["summary"]["balance"]
    assert (balance["adjudicated"], balance["rejected"], balance["quarantined"]) == (1, 1, 0)


def test_line_numbers_count_the_line_breaks_of_rejected_rows_and_of_the_header(
    tmp_path: Path,
) -> None:
    """Spec 7: line_number as a text editor shows it. A row that cannot be
    parsed, written over two lines, and a header cell written over two lines,
    move every later row down a line."""
    ws, roster, pid = one_member(tmp_path)
    head = "settlement_id,id_number,name,visit_type,service_date,total_cost,self_pay_1"
    good = f"{pid},张伟,门诊,2024-01-05,100,50"
    (tmp_path / "a.csv").write_text(
        f'{head}\nS1,{pid},"张\n伟",门诊,2024-01-05,100,50,EXTRA\nS2,{pid},张伟,门诊,bad,100,50\n'
        f"S3,{good}\n",
        encoding="utf-8",
    )
    (tmp_path / "b.csv").write_text(
        head.replace("total_cost", '"total_\ncost"') + f"\nT1,{pid},张伟,门诊,bad,100,50\n",
        encoding="utf-8",
    )
    for name in ("a.csv", "b.csv"):
        done = cli(
            "run", "-w", ws, "--period", "2024-01", "--settlements", tmp_path / name,
            "--roster", roster, "--max-quarantine-rate", "1", "--replace",
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        with (ws / "reports" / "2024-01" / "quarantine.csv").open(encoding="utf-8") as fh:
            got = [(r["line_number"], r["error_code"]) for r in csv.DictReader(fh)]
        want = {"a.csv": [("2", "missing_field"), ("4", "bad_date")], "b.csv": [("3", "bad_date")]}
        assert got == want[name], name


@pytest.mark.parametrize(
    "sql_type,value",
    [
        ("TIMESTAMPTZ", "2024-03-05 00:30:00+08"),  # 2024-03-04 16:30 UTC
        ("TIMESTAMP", "2024-03-05 10:15:00.250"),
        ("TIMESTAMP_NS", "2024-03-05 10:00:00.123456789"),
    ],
)
def test_a_parquet_timestamp_is_a_date_on_its_day_in_china(
    tmp_path: Path, sql_type: str, value: str
) -> None:
    con = duckdb.connect()
    path = tmp_path / "s.parquet"
    con.execute(
        f"COPY (SELECT 'S1' AS settlement_id, '{person_id(1)}' AS id_number, '张伟' AS name, "
        f"'门诊' AS visit_type, '{value}'::{sql_type} AS service_date, 100 AS total_cost, "
        f"50 AS self_pay_1) TO '{path}' (FORMAT parquet)"
    )
    rows = read_typed(path, tmp_path, lazy=True)  # as a run reads it
    assert (rows[0]["q_code"], rows[0]["service_date"]) == (None, date(2024, 3, 5))


def test_rows_of_empty_cells_are_not_rows_as_in_xlsx(tmp_path: Path) -> None:
    """A spreadsheet saved as CSV leaves ',,,,,,' rows below its table: they
    are no settlements (an empty .xlsx row is none either), not quarantined
    rows that push a clean file over --max-quarantine-rate."""
    ws, roster, pid = one_member(tmp_path)
    head = "settlement_id,id_number,name,visit_type,service_date,total_cost,self_pay_1\n"
    body = "".join(f"S{i},{pid},张伟,门诊,2024-01-05,100,50\n" for i in range(10))
    (tmp_path / "s.csv").write_text(head + body + ",,,,,,\n" * 3 + "S10,bad\n", encoding="utf-8")
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", tmp_path / "s.csv",
        "--roster", roster, "--max-quarantine-rate", "0.1", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    balance = json.loads(done.output)["summary"]["balance"]
    assert (balance["rows_in"], balance["quarantined"]) == (11, 1)
    quarantine = (ws / "reports" / "2024-01" / "quarantine.csv").read_text(encoding="utf-8")
    assert "s.csv,15,missing_field" in quarantine  # still its own line number


def test_parquet_timestamps_in_units_and_enrollments_are_dates_too(tmp_path: Path) -> None:
    """The units file's dues_paid_through as a TIMESTAMPTZ column: a date, not
    text that fails to parse (every unit then 'not in the units file')."""
    ws, roster, pid = one_member(tmp_path)
    con = duckdb.connect()
    units = tmp_path / "units.parquet"
    con.execute(
        "COPY (SELECT 'U1' AS unit_code, TIMESTAMPTZ '2024-12-31 00:00:00+08' AS dues_paid_through)"
        f" TO '{units}' (FORMAT parquet)"
    )
    (tmp_path / "s.csv").write_text(
        "settlement_id,id_number,name,visit_type,service_date,total_cost,self_pay_1\n"
        f"S1,{pid},张伟,门诊,2024-12-31,3000,3000\n",
        encoding="utf-8",
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-12", "--settlements", tmp_path / "s.csv",
        "--roster", roster, "--units", units, "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["summary"]["balance"]["adjudicated"] == 1


def test_a_file_of_lf_lines_with_one_crlf_row_is_read_whole(tmp_path: Path) -> None:
    """A settlement export of LF line ends whose last row was added in a
    Windows editor (CRLF): DuckDB's reader refused the whole file ("state
    machine reached an invalid state", exit 2, no line named). Every row is
    read, at the line an editor shows."""
    path = tmp_path / "s.csv"
    path.write_bytes((HEAD + f"A1,1,a,{ROW}" + f"A2,1,b,{ROW}".replace("\n", "\r\n")).encode())
    con = duckdb.connect()
    load_input(con, path, SETTLEMENTS, "raw0", workdir=tmp_path)
    rows = con.execute(
        "SELECT settlement_id, name, self_pay_1, line_number FROM raw0 ORDER BY 4"
    ).fetchall()
    assert rows == [("A1", "a", "80", 2), ("A2", "b", "80", 3)]


@pytest.mark.parametrize(
    ("cell", "read"),
    [
        ("20240123", date(2024, 1, 23)),
        ("2024123", None),  # 1-23 or 12-3: not guessed (it was 2024-12-03)
        ("2024111", None),
        ("45296", date(2024, 1, 5)),  # an Excel serial
        ("45296.4375", date(2024, 1, 5)),  # a date-time serial: its day
        ("2024/1/5 10:30", date(2024, 1, 5)),  # a date-time as Excel shows it
        ("2024-01-05 9:05", date(2024, 1, 5)),
        ("2024-01-05 10:30:00.000", date(2024, 1, 5)),
        ("2024/01/05 10:30:00.5", date(2024, 1, 5)),
        ("2024-01-05 10:30 x", None),
    ],
)
def test_dates_without_separators_need_eight_digits(
    cell: str, read: date | None, tmp_path: Path
) -> None:
    path = tmp_path / "s.csv"
    path.write_text(HEAD + f"S1,1,a,门诊,{cell},100,80\n", encoding="utf-8")
    (row,) = read_typed(path, tmp_path)
    assert row["service_date"] == read
    assert row["q_code"] == (None if read else "bad_date")


def test_an_xlsx_date_cell_in_a_chinese_format_of_a_1904_workbook(tmp_path: Path) -> None:
    """Chinese Excel's 长日期 is built-in format 31, which calamine does not
    know as a date: the cell arrives as its serial. With a time part it was
    bad_date; in a workbook counting from 1904 it was read four years early
    (2020-01-04 for 2024-01-05) and paid."""
    import xlsxwriter

    for date1904 in (False, True):
        path = tmp_path / f"s{int(date1904)}.xlsx"
        wb = xlsxwriter.Workbook(str(path), {"date_1904": date1904})
        sheet = wb.add_worksheet()
        sheet.write_row(0, 0, HEAD.strip().split(","))
        long_date = wb.add_format({"num_format": 31})  # yyyy"年"m"月"d"日"
        for i, when in enumerate((datetime(2024, 1, 5), datetime(2024, 1, 5, 10, 30))):
            sheet.write_row(i + 1, 0, [f"S{i}", "1", "a", "门诊"])
            sheet.write_datetime(i + 1, 4, when, long_date)
            sheet.write_row(i + 1, 5, [100, 80])
        wb.close()
        rows = read_typed(path, tmp_path)
        assert [(r["service_date"], r["q_code"]) for r in rows] == [
            (date(2024, 1, 5), None),
            (date(2024, 1, 5), None),
        ], date1904


def test_parquet_floats_bytes_and_nested_columns_read_as_a_person_would(tmp_path: Path) -> None:
    """pandas writes a mostly-empty integer column as float64: `reverses`
    240100002.0 did not link to settlement 240100002, and 20240102.0 was a
    bad admission_date. Strings written as bytes (old Hive/Spark writers)
    read as b'\\xE5...'. A list column beside the table was an internal
    error. Floats read as Excel shows them (15 significant digits)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "settlement_id": pa.array(["240100002", "S2"]),
            "id_number": pa.array(["1", "1"]),
            "name": pa.array(["张三".encode(), "李四".encode()], pa.binary()),
            "visit_type": pa.array(["住院", "住院"]),
            "service_date": pa.array(["2024-01-05", "2024-01-05"]),
            "admission_date": pa.array([20240102.0, None], pa.float64()),
            "total_cost": pa.array([100.0, -(0.1 + 0.2)], pa.float64()),
            "self_pay_1": pa.array([80.0, -(0.1 + 0.2)], pa.float64()),
            "reverses": pa.array([None, 240100002.0], pa.float64()),
            "tags": pa.array([["a"], []], pa.list_(pa.string())),
        }
    )
    path = tmp_path / "s.parquet"
    pq.write_table(table, path)
    rows = read_typed(path, tmp_path)
    got = [
        (r["name"], r["admission_date"], r["self_pay_1"], r["reverses"], r["q_code"]) for r in rows
    ]
    assert got == [
        ("张三", date(2024, 1, 2), Decimal("80.00"), None, None),
        ("李四", None, Decimal("-0.30"), "240100002", None),
    ]


def test_a_corrupt_parquet_page_is_exit_2_naming_the_file(tmp_path: Path) -> None:
    """The pages of a Parquet file are read by the statement that types them,
    outside the reader's own checks: a corrupt one was an internal error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ws, roster, pid = one_member(tmp_path)
    n = 5000
    table = pa.table(
        {
            "settlement_id": [f"S{i}" for i in range(n)],
            "id_number": [pid] * n,
            "name": ["张伟"] * n,
            "visit_type": ["门诊"] * n,
            "service_date": ["2024-01-05"] * n,
            "total_cost": [f"{i}.00" for i in range(n)],
            "self_pay_1": [f"{i}.00" for i in range(n)],
        }
    )
    path = tmp_path / "s.parquet"
    pq.write_table(table, path, compression="snappy")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64  # inside a column chunk's pages
    path.write_bytes(bytes(data))
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", path, "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert f"{path}: cannot be read" in done.output and "internal error" not in done.output


@pytest.mark.parametrize("ends", ["\r\n", "\n"])
def test_a_header_cell_wrapped_in_excel_keeps_every_row(ends: str, tmp_path: Path) -> None:
    """Excel saves CRLF row ends and a bare LF inside a cell wrapped with
    Alt+Enter: with such a header ("医疗费<LF>总额") DuckDB read no record and
    no error, so every settlement vanished with the books 'balanced'."""
    path = tmp_path / "s.csv"
    head = 'settlement_id,id_number,name,visit_type,service_date,"医疗费\n总额",自付一'
    rows = [head, "S1,1,a," + ROW.strip(), "S2,1,b," + ROW.strip()]
    path.write_bytes((ends.join(rows) + ends).encode())
    got = [
        (r["settlement_id"], r["total_cost"], r["line_number"]) for r in read_typed(path, tmp_path)
    ]
    assert got == [("S1", Decimal("100"), 3), ("S2", Decimal("100"), 4)]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_title_above_the_header_is_named_with_the_line_of_the_header(
    fmt: str, tmp_path: Path
) -> None:
    """Exports put a title and a date line above the table: the error showed
    the title as 'its header' and left the analyst to guess why."""
    import xlsxwriter

    ws, roster, pid = one_member(tmp_path)
    title = ["北京市职工医疗互助结算明细表"]
    rows = [title, ["导出日期：2024-03-31"], HEAD.strip().split(","),
            ["S1", pid, "张伟", "门诊", "2024-01-05", "100", "80"]]  # fmt: skip
    path = tmp_path / f"s.{fmt}"
    if fmt == "csv":
        path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    else:
        book = xlsxwriter.Workbook(str(path))
        sheet = book.add_worksheet()
        for i, r in enumerate(rows):
            sheet.write_row(i, 0, r)
        book.close()
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", path, "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 2
    assert "its header is: 北京市职工医疗互助结算明细表." in done.output
    assert "The header looks to be on line 3: delete the line(s) above it" in done.output


def test_a_gbk_file_whose_first_name_reads_as_utf8_chinese_is_gbk(tmp_path: Path) -> None:
    """濮峰安 in GBK is valid UTF-8 (姷尲): with English headers the refusal of
    UTF-8 files holding a GBK row took a plain GBK file for one."""
    from twopay.io.readers import detect_encoding

    path = tmp_path / "s.csv"
    text = "settlement_id,name,visit_type\nS1,濮峰安,住院\nS2,张三,门诊\n"
    path.write_bytes(text.encode("gbk"))
    assert detect_encoding(path) == "gb18030"
    mixed = tmp_path / "m.csv"
    head = "settlement_id,name,visit_type\nS1,张三,门诊\nS2,欧阳娜娜,门诊\n".encode()
    mixed.write_bytes(head + "S3,李四,住院\n".encode("gbk"))
    with pytest.raises(UsageError, match="line 4 holds a byte that is not UTF-8"):
        detect_encoding(mixed)


def test_xlsx_cells_read_as_excel_shows_them_padded_codes_and_chinese_dates(
    tmp_path: Path,
) -> None:
    """A code Excel made a number, kept its leading zeros by the format
    "0000000000" (a card 0000123456), was read 123456: a wrong card in the
    bank file. A date in the Chinese built-in format 31 before 1954-10-03 or
    at 9999-12-31 (the usual "no end") arrives as its serial, outside the
    range date_sql reads a serial in, and was bad_date."""
    import xlsxwriter

    path = tmp_path / "s.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    sheet = wb.add_worksheet()
    sheet.write_row(0, 0, BOOK_HEADER)
    padded = wb.add_format({"num_format": "0000000000"})
    long_date = wb.add_format({"num_format": 31})  # yyyy"年"m"月"d"日"
    for r, day in enumerate((datetime(1953, 1, 5), datetime(9999, 12, 31), datetime(2024, 1, 5))):
        sheet.write_number(r + 1, 0, 123456 + r, padded)
        sheet.write_row(r + 1, 1, [TRUE_ID, "张三", "门诊"])
        sheet.write_datetime(r + 1, 4, day, long_date)
        sheet.write_row(r + 1, 5, [100, 80])
        sheet.write_number(r + 1, 7, 42, padded)
    # a plain number in a text column keeps its digits
    sheet.write_row(4, 0, [7, TRUE_ID, "张三", "门诊", "2024-01-05", 100, 80, 42])
    wb.close()

    def as_excel_saves_it(xml: bytes) -> bytes:
        # rows 3 and 4 filled down from row 2 (a shared formula has a t of its
        # own, not the cell's), and a 19-digit number written whole, as
        # openpyxl writes a Python int (no serial: it must not stop the read)
        for cell in (b"A3", b"A4", b"E3", b"E4"):
            xml = re.sub(
                rb'(<c r="' + cell + rb'" s="[0-9]+"[^>]*>)', rb'\1<f t="shared" si="0"/>', xml
            )
        return re.sub(rb'(<c r="H5"[^>]*><v>)42(</v>)', rb"\g<1>9558801234567890123\2", xml)

    rewrite_sheet(path, as_excel_saves_it)
    rows = read_typed(path, tmp_path)
    assert [
        (r["settlement_id"], r["hospital_code"], r["service_date"], r["q_code"]) for r in rows
    ] == [
        ("0000123456", "0000000042", date(1953, 1, 5), None),
        ("0000123457", "0000000042", date(9999, 12, 31), None),
        ("0000123458", "0000000042", date(2024, 1, 5), None),
        ("7", "9558801234567890000", date(2024, 1, 5), None),  # 15 digits, as Excel shows it
    ]


def test_xlsx_rows_of_formulas_that_show_nothing_are_blank_rows(tmp_path: Path) -> None:
    """A formula such as =IF(A3="","",F3-G3) filled down below the table is
    saved with an empty text result: its rows were read as data, quarantined
    missing_field (and a batch refused over the quarantine rate), where the
    same sheet saved as CSV has blank rows, skipped."""
    path = write_settlement_book(
        tmp_path / "s.xlsx", [("S1", TRUE_ID, "张三", "门诊", "2024-01-05", 100, 80, None)]
    )

    def formulas_below(xml: bytes) -> bytes:
        cells = "".join(
            f'<row r="{r}"><c r="H{r}" t="str"><f>IF(A{r}="","",F{r}-G{r})</f><v></v></c></row>'
            for r in range(3, 13)
        )
        return xml.replace(b"</sheetData>", cells.encode() + b"</sheetData>")

    rewrite_sheet(path, formulas_below)
    rows = read_typed(path, tmp_path)
    assert [(r["settlement_id"], r["q_code"]) for r in rows] == [("S1", None)]
