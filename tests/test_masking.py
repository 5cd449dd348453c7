"""Safety of what twopay writes (spec 7): no full ID number or bank account in
any report, notice or command output unless --unmask, and no text from an
input file that a spreadsheet would run as a formula.

Every output file of real runs is scanned: CSVs cell by cell, xlsx files both
as the cells a reader sees (fastexcel) and as the raw XML inside the zip.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import fastexcel
import pytest
from stdnum.cn import ric

from fixtures.reports.workspace import FIXTURES, build_workspace, run_month
from helpers import (
    ROSTER_HEADER,
    SETTLEMENT_HEADER,
    SIMPLE_RULE,
    cli,
    init_workspace,
    person_id,
    write_csv,
)
from twopay.identity.idnumber import mask_id

# 18 characters, not part of a longer run of digits; validity (region, birth
# date, check character) is checked by python-stdnum, not by our own code.
ID_CANDIDATE = re.compile(r"(?<![0-9])[1-9][0-9]{16}[0-9Xx](?![0-9Xx])")
BANK_ACCOUNT = "6217000011112222333"  # M001's, from the roster fixture
NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def full_ids(text: str) -> list[str]:
    return [m for m in ID_CANDIDATE.findall(text) if ric.is_valid(m.upper())]


def formula_like(value: str) -> bool:
    """A cell a spreadsheet would evaluate: '=', '+', '@' or a '-' that is not
    simply a negative amount (our own money columns)."""
    if not value:
        return False
    if value[0] in "=+@\t\r":
        return True
    return value[0] == "-" and not NUMBER.match(value)


def csv_cells(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.reader(fh):
            yield from row


def xlsx_cells(path: Path) -> Iterator[str]:
    book = fastexcel.read_excel(path)
    for name in book.sheet_names:
        frame = book.load_sheet(name, header_row=None).to_polars()
        for row in frame.iter_rows():
            yield from (v for v in row if isinstance(v, str))


def xlsx_xml(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return "".join(z.read(n).decode("utf-8") for n in z.namelist() if n.endswith(".xml"))


def output_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = build_workspace(tmp_path_factory.mktemp("masking"))
    for period in ("2024-01", "2024-02"):
        result = cli("notices", "-w", ws, "--period", period)
        assert result.exit_code == 0, result.output
    return ws


def test_the_scanner_finds_what_it_looks_for(tmp_path: Path) -> None:
    assert full_ids("id 110105198001010016, masked 110105********0016") == ["110105198001010016"]
    assert full_ids("11010519800101018x") == ["11010519800101018x"]
    assert full_ids("110105198001010017") == []  # wrong check character
    assert full_ids("6222000000000001 1.10105E+17") == []
    assert formula_like('=HYPERLINK("x")') and formula_like("@SUM(1)") and formula_like("-2+3")
    assert not formula_like("-100.00") and not formula_like("'=HYPERLINK")


def test_no_output_file_holds_a_full_id_number_or_account(ws: Path) -> None:
    files = output_files(ws / "reports")
    kinds = {p.suffix for p in files}
    assert {".csv", ".json", ".xlsx"} <= kinds
    assert any("notices" in p.parts for p in files)
    for path in files:
        text = xlsx_xml(path) if path.suffix == ".xlsx" else path.read_text(encoding="utf-8-sig")
        cells = "\n".join(xlsx_cells(path)) if path.suffix == ".xlsx" else text
        for blob in (text, cells):
            assert full_ids(blob) == [], path
            assert BANK_ACCOUNT not in blob, path


def test_no_cell_from_input_text_is_a_live_formula(ws: Path) -> None:
    checked = 0
    for path in output_files(ws / "reports"):
        if path.suffix == ".csv":
            cells = list(csv_cells(path))
        elif path.suffix == ".xlsx":
            cells = list(xlsx_cells(path))
            assert "<f>" not in xlsx_xml(path), path
        else:
            continue
        bad = [c for c in cells if formula_like(c)]
        assert bad == [], (path, bad)
        checked += len(cells)
    assert checked > 500
    # the hostile names did reach the outputs, neutralised
    payouts = (ws / "reports" / "2024-01" / "payouts.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in payouts
    rejections = (ws / "reports" / "2024-01" / "rejections.csv").read_text(encoding="utf-8")
    assert "'@SUM(1)" in rejections
    assert "'=1+2+3**+5+6" in rejections and "'+赵六" in rejections  # an ID cell and a name


def test_command_output_is_masked(ws: Path) -> None:
    outputs = [
        run_month(ws, "2024-02").output,  # type: ignore[attr-defined]
        cli(
            "run",
            "-w",
            ws,
            "--period",
            "2024-01",
            "--settlements",
            FIXTURES / "settlements_2024-01.csv",
            "--roster",
            FIXTURES / "roster.csv",
            "--units",
            FIXTURES / "units.csv",
        ).output,
        cli("why", "-w", ws, "M001").output,
        cli("why", "-w", ws, "M001", "--json").output,
        cli("why", "-w", ws, "110105198001010999").output,  # not a member
        cli("why", "-w", ws, "张伟", "--json").output,
        cli("why", "-w", ws, "110105198001010000").output,  # unknown: the error echoes it
        cli("notices", "-w", ws, "--period", "2024-01", "--json").output,
    ]
    for out in outputs:
        assert full_ids(out) == [], out
        assert BANK_ACCOUNT not in out


def test_unmask_gives_the_full_numbers(ws: Path, tmp_path: Path) -> None:
    run_month(ws, "2024-01", "--unmask", "--out", tmp_path / "full")
    rejections = (tmp_path / "full" / "rejections.csv").read_text(encoding="utf-8")
    assert "110105198001010040" in full_ids(rejections)
    # the ledger keeps the full values: the sentences that name an ID too
    with (tmp_path / "full" / "rejections.csv").open(encoding="utf-8", newline="") as fh:
        details = {r["settlement_id"]: r["detail"] for r in csv.DictReader(fh)}
    assert "110105198001010040" in details["JAN-004"]
    t = json.loads(cli("why", "-w", ws, "JAN-004", "--json", "--unmask").stdout)
    assert t["settlements"][0]["id_number"] == "110105198001010040"
    notice = cli("notices", "-w", ws, "--period", "2024-01", "--unmask", "--out", tmp_path / "n")
    assert notice.exit_code == 0
    assert full_ids((tmp_path / "n" / "unit-U02.csv").read_text(encoding="utf-8-sig"))


def test_quarantined_raw_text_is_masked(ws: Path) -> None:
    text = (ws / "reports" / "2024-01" / "quarantine.csv").read_text(encoding="utf-8")
    assert "JAN-012" in text and "110105********0016" in text
    assert "110105198001010016" not in text


def test_ids_typed_with_spaces_hyphens_or_full_width_digits_are_masked_too(
    tmp_path: Path,
) -> None:
    """Spec 2 reads an ID number written with full-width digits, spaces or
    hyphens; spec 7 masks it wherever it appears. The raw text of a
    quarantined row keeps the row as it was typed, so the masking must find
    the ID there in every shape it is accepted in; `why` likewise."""

    ws = init_workspace(tmp_path / "ws", {"test-plan.toml": SIMPLE_RULE})
    pid = person_id(7)  # 18 ASCII digits
    wide = pid.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    shapes = {
        "Q1": wide,
        "Q2": f"{pid[:6]}-{pid[6:14]}-{pid[14:]}",
        "Q3": " ".join(pid[i : i + 4] for i in range(0, 18, 4)),
        "Q4": f"{pid[:6]}\u3000{pid[6:14]}\u3000{pid[14:]}",
    }
    # each row is quarantined (bad_amount) with its ID in the raw text
    rows = [
        (sid, v, "张伟", "门诊", "2024-01-05", None, "abc", "1", None) for sid, v in shapes.items()
    ]
    # and one readable row whose ID is spaced: `why` shows it
    rows.append(("OK1", shapes["Q3"], "张伟", "门诊", "2024-01-06", None, "100", "50", None))
    account = "6217 0000 1111 2222 007"
    roster = tmp_path / "roster.csv"
    write_csv(
        roster,
        (*ROSTER_HEADER, "bank_account"),
        [
            ("M7", "张伟", pid, "C7", "U1", "在职", "2020-01-01", None, account),
            ("M8", "王芳", person_id(8), "C8", "U1", "在职", "bad date", None, account),
        ],
    )
    settlements = write_csv(tmp_path / "s.csv", SETTLEMENT_HEADER, rows)
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, "--max-quarantine-rate", "1",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    text = (ws / "reports" / "2024-01" / "quarantine.csv").read_text(encoding="utf-8")
    assert text.count("********") == 6  # four settlement rows, the roster row's ID and account
    for shape in (*shapes.values(), account, person_id(8)):
        assert shape not in text
    assert f"{pid[:6]}********-{pid[14:]}" in text  # first 6 and last 4 kept, as typed
    assert f"{wide[:6]}********{wide[-4:]}" in text
    why = cli("why", "-w", ws, "OK1", "--json").output
    assert shapes["Q3"] not in why and account not in why
    assert mask_id(shapes["Q3"]) in why  # a whole ID field: first 6 and last 4 characters


def test_an_id_that_does_not_look_like_one_is_masked_where_a_detail_names_it(
    tmp_path: Path,
) -> None:
    """The ledger keeps identity details whole (spec 7); what shows them masks
    the ID a detail names by position, whatever it holds: a letter O typed for
    a zero, slashes. A tab-separated raw line keeps its columns."""

    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    pid = person_id(4)
    odd = {"W1": pid[:9] + "O" + pid[10:], "W2": f"{pid[:6]}/{pid[6:14]}/{pid[14:]}"}
    (tmp_path / "s.tsv").write_text(
        "settlement_id\tid_number\tname\tvisit_type\tservice_date\thospital_code\t"
        "total_cost\tself_pay_1\n"
        + "".join(f"{k}\t{v}\t张伟\t门诊\t20240105\t11011400033\t100\t50\n" for k, v in odd.items())
        + f"Q1\t{pid}\t张伟\t门诊\t20240105\t11011400033\tabc\t50\n"
        # a quarantined row's raw text: the letter O split the run of digits
        + f"Q2\t{odd['W1']}\t张伟\t门诊\t20240105\t11011400033\tabc\t50\n",
        encoding="utf-8",
    )
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [("M4", "张伟", pid, "C4", "U1", "在职", "2020-01-01", None)],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", tmp_path / "s.tsv",
        "--roster", roster, "--max-quarantine-rate", "1",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    reports = ws / "reports" / "2024-01"
    shown = (reports / "review.csv").read_text(encoding="utf-8") + (
        reports / "rejections.csv"
    ).read_text(encoding="utf-8")
    assert cli("notices", "-w", ws, "--period", "2024-01").exit_code == 0
    shown += "".join(p.read_text(encoding="utf-8-sig") for p in (reports / "notices").glob("*.csv"))
    for w in ("W1", "W2"):
        shown += cli("why", "-w", ws, w, "--json").output
    for value in (*odd.values(), pid):
        assert value not in shown
    assert f"ID {mask_id(odd['W1'])} " in shown
    quarantine = (reports / "quarantine.csv").read_text(encoding="utf-8")
    assert f"Q1\t{mask_id(pid)}\t张伟\t门诊\t20240105\t11011400033\tabc\t50" in quarantine
    assert odd["W1"] not in quarantine
    assert f"Q2\t{mask_id(odd['W1'])}\t张伟" in quarantine


def test_an_input_without_its_header_row_is_named_with_its_first_row_masked(
    tmp_path: Path,
) -> None:
    """A file saved without its header row: the error shows what stands where
    the header should be, its first data row, with the ID number and bank
    account masked (spec 7: masked in logs; they were printed in full)."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    roster = tmp_path / "r.csv"
    roster.write_text(
        f"M1,张三,{person_id(1)},C1,U1,在职,2020-01-01,,6217000011112222333\n", "utf-8"
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("S1", person_id(1), "张三", "门诊", "2024-01-05", None, 100, 50, None)],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 2
    assert "r.csv" in done.output and mask_id(person_id(1)) in done.output
    assert person_id(1) not in done.output and "6217000011112222333" not in done.output
    assert re.search(r"621700\*+2333", done.output)


def test_a_short_id_number_is_starred_whole_in_every_report(tmp_path: Path) -> None:
    """An ID cell of 10 characters or fewer (a truncated number): six plus
    four of it would be all of it, so rejections.csv stars it whole, as its
    detail does (the id_number column showed it in clear)."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [("M1", "张三", person_id(1), "C1", "U1", "在职", "2020-01-01", None)],
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("Y1", "1101051990", "赵六", "门诊", "2024-01-05", None, 100, 50, None)],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, "--lang", "en",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    out = ws / "reports" / "2024-01"
    with (out / "rejections.csv").open(encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["id_number"] == "**********"
    assert "1101051990" not in (out / "rejections.csv").read_text(encoding="utf-8")
    notices = cli("notices", "-w", ws, "--period", "2024-01")
    assert notices.exit_code == 0, notices.output
    for path in (out / "notices").rglob("*.csv"):
        assert "1101051990" not in path.read_text(encoding="utf-8-sig"), path


@pytest.mark.parametrize(
    "text",
    [
        "roster member M1 has 1101051990030400X7 (digits 17 and 18 are swapped)",
        "S1,1101051990030400X7,周凯,outpatient",
        "110105199003040X07",
        # a letter typed for a digit among the first six
        "roster member R1 李娜 has 11O105198001011238",
        "has 1101l5198101011235 (digit 5 differs)",
    ],
)
def test_an_id_with_an_x_inside_shows_six_and_four_characters(text: str) -> None:
    """A run of digits stops at an X inside the ID: masking the run first
    showed its last five characters (110105********400X7)."""
    from twopay.identity.idnumber import mask_text, mask_text_sql

    token = next(t for t in text.replace(",", " ").split() if len(t) == 18)
    expected = text.replace(token, token[:6] + "********" + token[-4:])
    assert mask_text(text) == expected
    con = duckdb.connect()
    got = con.execute(f"SELECT {mask_text_sql('t')} FROM (SELECT ? AS t)", [text]).fetchone()
    assert got == (expected,)
