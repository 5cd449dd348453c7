"""Broken and hostile settlement files (issue 9): each gives its documented exit
code and one sentence naming the file, or reads with every row accounted for.
The files are in tests/corpus/; each runs through the real CLI in a real
workspace, and a refused run commits nothing."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from helpers import (
    ROSTER_HEADER,
    SETTLEMENT_HEADER,
    SIMPLE_RULE,
    cli,
    init_workspace,
    make_id,
    one_member,
    person_id,
    write_csv,
)

CORPUS = Path(__file__).parent / "corpus"
ROSTER = Path(__file__).resolve().parents[1] / "sample_data" / "roster.csv"

# file -> (exit code, phrase of the error) for refused files
REFUSED = {
    "empty.csv": (2, "the file is empty"),
    "garbage.csv": (2, "cannot be read as"),
    "roster_as_settlements.csv": (2, "has no column 'settlement_id'"),
    "dup_header.csv": (2, "both mean 'name'"),
    "mixed_enc.csv": (2, "pass --encoding"),
    # a row pasted from a GBK export into a UTF-8 file: read whole as GB18030
    # (which decodes it), every name turned to mojibake and was rejected
    "utf8_with_a_gbk_row.csv": (2, "line 5 holds a byte that is not UTF-8"),
}
# file -> (rows in, quarantined {line: code}) for files that read
READ = {
    "header_only.csv": (0, {}),
    "truncated.csv": (2, {}),
    "repeated_header_totals.csv": (4, {3: "bad_visit_type", 5: "missing_field"}),
    "serial_date.csv": (1, {}),
    "crlf.csv": (1, {}),
    "utf16.csv": (1, {}),
    "really_xlsx.csv": (2, {}),
    "huge_cell.csv": (2, {}),
    "tab.csv": (1, {}),
    "semicolon.csv": (1, {}),
    "stray_quote.csv": (2, {}),
    "quoted_newline_money.csv": (2, {}),
}


def one_claim(
    tmp_path: Path, roster: Path | list[tuple[object, ...]], day: str = "2024-01-09", *extra: object
) -> tuple[Path, object]:
    """A workspace with the simple rule; a run of one outpatient claim of
    张三 (person_id(1)) on ``day`` against ``roster`` (rows, or a file)."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    if not isinstance(roster, Path):
        roster = write_csv(tmp_path / "r.csv", ROSTER_HEADER, roster)
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("Q1", person_id(1), "张三", "门诊", day, None, 3000, 3000, None)],
    )
    done = cli(
        "run", "-w", ws, "--period", day[:7], "--settlements", settlements,
        "--roster", roster, *extra,
    )  # fmt: skip
    return ws, done


def batches(ws: Path) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    try:
        return con.execute("SELECT period FROM batches").fetchall()
    finally:
        con.close()


def test_the_corpus_is_all_listed() -> None:
    assert {p.name for p in CORPUS.iterdir()} == set(REFUSED) | set(READ)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_files_are_one_sentence_and_commit_nothing(name: str, tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    code, phrase = REFUSED[name]
    result = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", CORPUS / name, "--roster", ROSTER
    )
    assert result.exit_code == code, result.output
    assert phrase in result.output and name in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert batches(ws) == []


@pytest.mark.parametrize("name", sorted(READ))
def test_readable_files_account_for_every_row(name: str, tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    rows_in, quarantined = READ[name]
    result = cli(
        "run",
        "-w",
        ws,
        "--period",
        "2024-01",
        "--settlements",
        CORPUS / name,
        "--roster",
        ROSTER,
        "--max-quarantine-rate",
        "1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    balance = json.loads(result.output)["summary"]["balance"]
    assert balance["rows_in"] == rows_in and balance["balanced"] is True
    placed = balance["quarantined"] + balance["rejected"] + balance["held"] + balance["adjudicated"]
    assert placed == rows_in
    lines = (
        (ws / "reports" / "2024-01" / "quarantine.csv").read_text(encoding="utf-8").splitlines()[1:]
    )
    got = {int(line.split(",")[1]): line.split(",")[2] for line in lines}
    assert got == quarantined


def test_repeated_headers_and_totals_rows_say_what_they_are(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    cli(
        "run",
        "-w",
        ws,
        "--period",
        "2024-01",
        "--settlements",
        CORPUS / "repeated_header_totals.csv",
        "--roster",
        ROSTER,
        "--max-quarantine-rate",
        "1",
    )
    text = (ws / "reports" / "2024-01" / "quarantine.csv").read_text(encoding="utf-8")
    assert "repeated header row" in text and "totals row" in text


def test_excel_serial_dates_in_csv_are_dates(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    cli(
        "run",
        "-w",
        ws,
        "--period",
        "2024-01",
        "--settlements",
        CORPUS / "serial_date.csv",
        "--roster",
        ROSTER,
    )
    lines = (ws / "reports" / "2024-01" / "payout_lines.csv").read_text(encoding="utf-8")
    assert ",2024-01-15," in lines  # 45306 is 2024-01-15


@pytest.mark.parametrize(
    "edit,key",
    [
        ("ratio = 0.5", "ratio = 1.5"),
        ("ratio = 0.5", "ratio = -0.1"),
        ("ratio = 0.5", 'ratio = "half"'),
        ("deductible = 1800", "deductible = -1"),
        ("scheme =", "unknown_key = 1\nscheme ="),
    ],
)
def test_broken_rule_files_are_exit_2_naming_file_and_key(
    edit: str, key: str, tmp_path: Path
) -> None:
    ws = init_workspace(tmp_path / "ws")
    target = next(
        p for p in sorted((ws / "rules").glob("*.toml")) if edit in p.read_text(encoding="utf-8")
    )
    target.write_text(target.read_text(encoding="utf-8").replace(edit, key, 1), encoding="utf-8")
    result = cli("rules", "check", "-w", ws)
    assert result.exit_code == 2
    assert target.name in result.output and "key `" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("threads", "shown"), [(0, "all cores"), (1, "1")])
def test_running_out_of_memory_is_one_sentence_and_commits_nothing(
    tmp_path: Path, threads: int, shown: str
) -> None:
    ws = init_workspace(tmp_path / "ws")
    config = ws / "twopay.toml"
    text = config.read_text().replace('memory_limit = "2GB"', 'memory_limit = "1MB"')
    config.write_text(text.replace("threads = 0", f"threads = {threads}"))
    sample = ROSTER.parent
    result = cli(
        "run",
        "-w",
        ws,
        "--period",
        "2024-01",
        "--settlements",
        sample / "settlements_2024-01.csv",
        "--roster",
        ROSTER,
    )
    assert result.exit_code == 1
    error = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output, result.output
    # where it stopped, the settings it ran under, and what to change
    assert "ran out of memory while preparing the batch" in error[0], error[0]
    assert f"(memory_limit 1MB, threads {shown})" in error[0]
    assert "nothing was committed" in error[0]
    assert "[duckdb] memory_limit" in error[0] and "temp_directory" in error[0]
    # fewer threads is advice only to a run that had more than one
    assert ("[duckdb] threads = 1" in error[0]) is (threads != 1), error[0]
    assert batches(ws) == []


@pytest.mark.parametrize(
    ("name", "header"),
    [("settlements[jan].csv", "a,b"), ("settlements.csv", "[/],b"), ("[bold]x.csv", "[red]a,b")],
)
def test_brackets_in_a_file_name_or_header_are_printed_as_they_are(
    tmp_path: Path, name: str, header: str
) -> None:
    """The error quotes file names and headers from the inputs: square
    brackets in them are text, not rich markup (which ate "[jan]" and, on
    "[/]", raised: a traceback instead of the sentence)."""
    ws = init_workspace(tmp_path / "ws")
    path = tmp_path / name
    path.write_text(f"{header}\n1,2\n", encoding="utf-8")
    result = cli("run", "-w", ws, "--period", "2024-01", "--settlements", path, "--roster", ROSTER)
    assert result.exit_code == 2, result.output
    error = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output, result.output
    assert name in error[0] and header.replace(",", ", ") in error[0], error[0]


SETTLEMENT_COLUMNS = "settlement_id,id_number,name,visit_type,service_date,total_cost,self_pay_1"


def run_one_member(
    tmp_path: Path, settlements: str, *, valid_from: str = "2020-01-01", period: str = "2024-01"
) -> tuple[Path, Result]:
    """A run of ``settlements`` (CSV text under its header line) against a
    roster of one member, 张伟, person 1, quarantining as much as it must."""
    ws, roster, _pid = one_member(tmp_path, valid_from)
    (tmp_path / "s.csv").write_text(settlements, encoding="utf-8")
    done = cli(
        "run", "-w", ws, "--period", period, "--settlements", tmp_path / "s.csv",
        "--roster", roster, "--max-quarantine-rate", "1",
    )  # fmt: skip
    return ws, done


def test_inconsistent_amounts_name_the_amount_that_breaks_the_rule(tmp_path: Path) -> None:
    """The detail of an inconsistent_amounts row says which amount is wrong,
    not a rule it does not break (a negative self_pay_2 was reported as
    'self_pay_1 (100.00) <= total_cost (100.00)')."""
    pid = person_id(1)
    ws, done = run_one_member(
        tmp_path,
        f"{SETTLEMENT_COLUMNS},self_pay_2,reverses\n"
        f"N1,{pid},张伟,门诊,2024-01-05,100,100,-5,\n"
        f"N2,{pid},张伟,门诊,2024-01-05,100,150,,\n"
        f"R1,{pid},张伟,门诊,2024-01-05,-100,20,,N0\n",
    )
    assert done.exit_code == 0, done.output
    with (ws / "reports" / "2024-01" / "quarantine.csv").open(encoding="utf-8") as fh:
        details = {row["raw"][:2]: row["detail"] for row in csv.DictReader(fh)}
    assert details == {
        "N1": "self_pay_2 (-5.00) is negative; a settlement's amounts are zero or more "
        "(a reversal names the settlement it reverses)",
        "N2": "self_pay_1 (150.00) is more than total_cost (100.00)",
        "R1": "self_pay_1 (20.00) is positive; a reversal's amounts are zero or negative",
    }


@pytest.mark.parametrize(
    "cell,read",
    [
        ("1,234.50", "1234.50"),
        ("¥1,234.50元", "1234.50"),
        ("-¥5", None),  # read (-5.00), but a normal row's amount is never negative
        ("12,34", None),  # a decimal comma, or a stray one: not a thousands separator
        ("100,00", None),
        ("1,2,3", None),
        ("12¥34", None),
        ("1 234", None),
        ("999,999,999,999,999.00", None),  # 15 digits: past what money holds, grouped or not
        ("9,999,999,999,999.99", "9999999999999.99"),
    ],
)
def test_a_comma_is_a_thousands_separator_only_where_one_goes(
    tmp_path: Path, cell: str, read: str | None
) -> None:
    """Spec 2: money is exact; '12,34' read as 1234 would pay a hundred times
    the claim."""
    ws, done = run_one_member(
        tmp_path, f'{SETTLEMENT_COLUMNS}\nS1,{person_id(1)},张伟,门诊,2024-01-05,"{cell}",1\n'
    )
    assert done.exit_code == 0, done.output
    got = (
        duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
        .execute("SELECT total_cost FROM settlements")
        .fetchall()
    )
    if read is None:
        quarantine = (ws / "reports" / "2024-01" / "quarantine.csv").read_text(encoding="utf-8")
        assert "S1" in quarantine
    else:
        assert got == [(Decimal(read),)]


@pytest.mark.parametrize("cell", ["24-03-05", "0024-03-05", "24/3/5"])
def test_a_year_has_four_digits(tmp_path: Path, cell: str) -> None:
    """'24-03-05' is not a date of the year 24: it is bad_date, not a claim
    rejected as membership_inactive on 0024-03-05."""
    ws, _done = run_one_member(
        tmp_path, f"{SETTLEMENT_COLUMNS}\nS1,{person_id(1)},张伟,门诊,{cell},100,50\n"
    )
    quarantine = (ws / "reports" / "2024-01" / "quarantine.csv").read_text(encoding="utf-8")
    assert f"bad_date,service_date '{cell}' is not a date" in quarantine


def test_a_five_digit_excel_serial_from_1954_to_1982_is_a_date_too(tmp_path: Path) -> None:
    """A date cell exported as its number (spec 2: native Excel dates):
    25000 is 1968-06-11, though it starts like a four-digit year."""
    ws, done = run_one_member(
        tmp_path,
        f"{SETTLEMENT_COLUMNS}\nS1,{person_id(1)},张伟,门诊,45352,100,50\n",
        valid_from="25000",
        period="2024-03",
    )
    assert done.exit_code == 0, done.output
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    assert con.execute("SELECT valid_from::VARCHAR FROM roster_records").fetchall() == [
        ("1968-06-11",)
    ]


def test_copies_equal_after_normalisation_are_one_settlement_paid_once(tmp_path: Path) -> None:
    """Spec 5: a settlement repeated "identically (same values after
    normalisation)" is duplicate_settlement for the later copy, the first
    paid. A lower-case x, the legacy 15-digit form of the same ID or a
    full stop for the middle dot, or the name in Traditional characters, are
    not other content (all copies were rejected conflicting_duplicate and
    nobody was paid); another name is."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    x_id = make_id("11010519750505005")  # check character X
    assert x_id.endswith("X")
    legacy = person_id(2)
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [
            ("M1", "钱七", x_id, "C1", "U1", "在职", "2020-01-01", None),
            ("M2", "张三", legacy, "C2", "U1", "在职", "2020-01-01", None),
            ("M3", "阿不都·热合曼", person_id(3), "C3", "U1", "在职", "2020-01-01", None),
            ("M4", "张伟", person_id(4), "C4", "U1", "在职", "2020-01-01", None),
        ],
    )
    copies = {
        "a.csv": [
            ("D1", x_id, "钱七"),
            ("D2", legacy, "张三"),
            ("D3", person_id(3), "阿不都·热合曼"),
            ("D4", person_id(3), "阿不都·热合曼"),
            ("D5", person_id(4), "张伟"),
        ],
        "b.csv": [
            ("D1", x_id.lower(), "钱七"),
            ("D2", legacy[:6] + legacy[8:17], "张三"),  # the 15-digit form
            ("D3", person_id(3), "阿不都.热合曼"),
            ("D4", person_id(3), "热合曼"),
            ("D5", person_id(4), "張偉"),
        ],
    }
    files: list[object] = []
    for name, rows in copies.items():
        path = write_csv(
            tmp_path / name,
            SETTLEMENT_HEADER,
            [(s, i, n, "门诊", "2024-01-09", None, 3000, 3000, None) for s, i, n in rows],
        )
        files += ["--settlements", path]
    done = cli("run", "-w", ws, "--period", "2024-01", *files, "--roster", roster, "--lang", "en")
    assert done.exit_code == 0, done.output
    out = ws / "reports" / "2024-01"
    with (out / "rejections.csv").open(encoding="utf-8") as fh:
        rejected = sorted(
            (r["settlement_id"], r["reason_code"], r["detail"]) for r in csv.DictReader(fh)
        )
    conflict = "2 rows carry this settlement_id with different content (a.csv line 5, b.csv line 5)"
    assert rejected == [
        ("D1", "duplicate_settlement", "identical copy of line 2 of a.csv"),
        ("D2", "duplicate_settlement", "identical copy of line 3 of a.csv"),
        ("D3", "duplicate_settlement", "identical copy of line 4 of a.csv"),
        ("D4", "conflicting_duplicate", conflict),
        ("D4", "conflicting_duplicate", conflict),
        ("D5", "duplicate_settlement", "identical copy of line 6 of a.csv"),
    ]
    with (out / "payout_lines.csv").open(encoding="utf-8") as fh:
        paid = sorted((r["settlement_id"], r["payout"]) for r in csv.DictReader(fh))
    assert paid == [("D1", "1000.00"), ("D2", "1000.00"), ("D3", "1000.00"), ("D5", "1000.00")]


def test_a_rejection_caused_by_an_unreadable_record_names_that_record(tmp_path: Path) -> None:
    """A member whose only roster record cannot be read, or whose unit's row
    in the units file cannot be read, is still rejected (not_a_member,
    unit_dues_unpaid), but the detail says which record could not be read
    rather than "not in the roster" / "not in the units file", which sent the
    officer looking for a record that is there; summary.json counts them."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [
            ("M1", "张三", person_id(1), "C1", "U1", "临时工", "2020-01-01", None),
            ("M2", "李四", person_id(2), "C2", "U5", "在职", "2020-01-01", None),
        ],
    )
    units = tmp_path / "u.csv"
    units.write_text("unit_code,dues_paid_through\nU1,2024-12-31\nU5,2024-12-3l\n", "utf-8")
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [
            ("Q1", person_id(1), "张三", "门诊", "2024-01-09", None, 3000, 3000, None),
            ("Q2", person_id(2), "李四", "门诊", "2024-01-09", None, 3000, 3000, None),
            ("Q3", person_id(2), "李四", "门诊", "2024-01-0x", None, 3000, 3000, None),
        ],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, "--units", units, "--lang", "en", "--max-quarantine-rate", "1",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    out = ws / "reports" / "2024-01"
    with (out / "rejections.csv").open(encoding="utf-8") as fh:
        details = {r["settlement_id"]: (r["reason_code"], r["detail"]) for r in csv.DictReader(fh)}
    masked = person_id(1)[:6] + "********" + person_id(1)[-4:]
    assert details == {
        "Q1": (
            "not_a_member",
            f"ID {masked} is on roster line 2, which could not be read "
            "(missing_field; see quarantine.csv).",
        ),
        "Q2": (
            "unit_dues_unpaid",
            "unit U5: its row in the units file (line 3) could not be read; see quarantine.csv",
        ),
    }
    # quarantine.csv: the settlements first, then the roster, then the units
    with (out / "quarantine.csv").open(encoding="utf-8") as fh:
        files = [r["source_file"] for r in csv.DictReader(fh)]
    assert files == ["s.csv", "r.csv", "u.csv"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["balance"]["other_records_quarantined"] == {"roster": 1, "units": 1}
    assert summary["balance"]["balanced"] is True


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("unit_code,dues_paid_through\n", "it has no rows under its header"),
        (
            "unit_code,dues_paid_through\nU1,2024-12-3l\nU5,\n",
            "none of its rows can be read (line 2: ",
        ),
    ],
)
def test_a_units_file_with_no_readable_unit_is_exit_2_not_every_row_rejected(
    tmp_path: Path, text: str, why: str
) -> None:
    """Every settlement would be rejected unit_dues_unpaid, and for good (a
    settlement re-sent later is a duplicate): the file is refused instead,
    naming it and its first unreadable line, and nothing is committed."""
    units = tmp_path / "u.csv"
    units.write_text(text, "utf-8")
    member = ("M1", "张三", person_id(1), "C1", "U1", "在职", "2020-01-01", None)
    ws, done = one_claim(tmp_path, [member], "2024-01-09", "--units", units)
    assert done.exit_code == 2, done.output  # type: ignore[attr-defined]
    assert f"{units}: the units file has no unit, {why}" in done.output
    assert "run without --units" in done.output
    assert not (ws / "reports" / "2024-01").exists()


def test_a_roster_id_excel_turned_into_a_number_is_named_in_the_rejection(
    tmp_path: Path,
) -> None:
    """An ID typed as a number in the roster's workbook keeps 15 digits and
    zeroes the rest: never guessed (spec 3), so the member's claim is
    rejected not_a_member, but not as "valid but not in the roster": the
    detail names the roster line and what to do."""
    import xlsxwriter

    pid = person_id(7)
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    roster = tmp_path / "r.xlsx"
    wb = xlsxwriter.Workbook(str(roster))
    sheet = wb.add_worksheet()
    sheet.write_row(0, 0, ["member_id", "name", "id_number", "card_no", "unit_code", "valid_from"])
    sheet.write_row(1, 0, ["M1", "金三"])
    sheet.write_number(1, 2, int(pid[:17] + "0"))  # a number: Excel keeps 15 digits
    sheet.write_row(1, 3, ["C1", "U1", "2010-01-01"])
    wb.close()
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("S1", pid, "金三", "门诊", "2024-03-05", None, 3000, 2000, None)],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-03", "--settlements", settlements,
        "--roster", roster, "--lang", "en",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    with (ws / "reports" / "2024-03" / "rejections.csv").open(encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["reason_code"] == "not_a_member"
    assert row["detail"] == (
        f"ID {pid[:6]}********{pid[-4:]} is not in the roster; roster line 2 (member M1) has an "
        "ID number Excel turned into a number with the same first 15 digits: export the "
        "roster's ID column as text."
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (",".join(ROSTER_HEADER) + "\n", "it has no rows under its header"),
        (
            ",".join(ROSTER_HEADER) + f"\nM1,张三,{person_id(1)},C1,U1,在职,2020-13-45,\n",
            "none of its rows can be read (line 2: ",
        ),
    ],
)
def test_a_roster_with_no_readable_member_is_exit_2_not_every_row_rejected(
    tmp_path: Path, text: str, why: str
) -> None:
    """Every settlement was rejected not_a_member (exit 0), for good once a
    later batch was committed."""
    roster = tmp_path / "r.csv"
    roster.write_text(text, "utf-8")
    ws, done = one_claim(tmp_path, roster)
    assert done.exit_code == 2, done.output  # type: ignore[attr-defined]
    assert f"{roster}: the roster has no member, {why}" in done.output
    assert batches(ws) == []


@pytest.mark.parametrize("end", ["9999-12-31", "9999/12/31", "99991231", "9999年12月31日"])
def test_a_valid_to_of_9999_is_open_ended_not_unreadable(tmp_path: Path, end: str) -> None:
    """9999-12-31, the usual "no end" of HR exports, was not a date: the
    record was quarantined and its member's claims rejected not_a_member."""
    ws, done = one_claim(
        tmp_path, [("M1", "张三", person_id(1), "C1", "U1", "在职", "2020-01-01", end)]
    )
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    with (ws / "reports" / "2024-01" / "payout_lines.csv").open(encoding="utf-8") as fh:
        assert [(r["settlement_id"], r["payout"]) for r in csv.DictReader(fh)] == [
            ("Q1", "1000.00")
        ]


def test_membership_inactive_names_the_persons_unreadable_record(tmp_path: Path) -> None:
    """A card re-issued: the new record (from 2024) has no card number and
    cannot be read, the old one ended in 2023. The claim is rejected
    membership_inactive, and the detail named only the old record's dates,
    not the line the unit must fix."""
    records = [
        ("M1", "张三", person_id(1), "C1", "U1", "在职", "2020-01-01", "2023-12-31"),
        ("M1b", "张三", person_id(1), None, "U1", "在职", "2024-01-01", None),
    ]
    ws, done = one_claim(tmp_path, records, "2024-03-10")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    with (ws / "reports" / "2024-03" / "rejections.csv").open(encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["reason_code"], row["detail"]) == (
        "membership_inactive",
        "member M1 record valid 2020-01-01 to 2023-12-31; service date 2024-03-10; "
        "roster line 3 of this ID number could not be read (see quarantine.csv)",
    )
