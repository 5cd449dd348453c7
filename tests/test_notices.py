"""`twopay notices`: one .xlsx and .csv per unit of what its officers must fix
(spec 8), on a workspace built by real runs (tests/fixtures/reports)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import fastexcel
import polars as pl
import pytest

from fixtures.reports.workspace import build_workspace
from helpers import (
    ROSTER_HEADER,
    SETTLEMENT_HEADER,
    SIMPLE_RULE,
    cli,
    init_workspace,
    person_id,
    write_csv,
)
from twopay.reports.notices import unit_file_stem
from twopay.reports.reasons import FIXES

FILES_2024_01 = {"unit-U01", "unit-U02", "unit-U03", "unit-U04", "unassigned"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("notices"))


def notices(ws: Path, *args: object) -> dict[str, object]:
    result = cli("notices", "-w", ws, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def read_notice(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


def by_settlement(frame: pl.DataFrame, column: str = "结算流水号") -> dict[str, dict[str, str]]:
    return {row[column]: row for row in frame.iter_rows(named=True)}


def test_each_unit_gets_what_its_officers_must_fix(ws: Path) -> None:
    out = notices(ws, "--period", "2024-01")
    folder = ws / "reports" / "2024-01" / "notices"
    assert Path(str(out["out"])) == folder
    assert {p.stem for p in folder.iterdir()} == FILES_2024_01
    assert {p.suffix for p in folder.iterdir()} == {".csv", ".xlsx"}

    u02 = by_settlement(read_notice(folder / "unit-U02.csv"))
    assert set(u02) == {"JAN-004", "JAN-006"}
    mismatch = u02["JAN-004"]
    assert mismatch["类别"] == "拒付"
    assert mismatch["原因代码"] == "name_mismatch"
    assert mismatch["原因"] == "姓名与会员名册不符"
    assert mismatch["处理办法"] == FIXES["name_mismatch"][0]
    assert mismatch["会员编号"] == "M004"
    assert mismatch["身份证号"] == "110105********0040"
    assert mismatch["姓名"] == "'@SUM(1)"  # neutralised: no live formula for the officer
    assert mismatch["自付一"] == "400.00"
    inactive = u02["JAN-006"]
    assert inactive["原因代码"] == "membership_inactive" and "2023-12-31" in inactive["详情"]

    u04 = by_settlement(read_notice(folder / "unit-U04.csv"))
    assert [r["原因代码"] for r in u04.values()] == ["unit_dues_unpaid"]
    assert u04["JAN-007"]["处理办法"] == "补缴单位互助金"

    # held for review: the candidate's unit must confirm the ID number
    u01 = by_settlement(read_notice(folder / "unit-U01.csv"))
    assert set(u01) == {"JAN-005"}
    assert u01["JAN-005"]["原因代码"] == "probable_id_typo"
    assert u01["JAN-005"]["类别"] == "待复核" and u01["JAN-005"]["挂起期次"] == "2024-01"
    u03 = by_settlement(read_notice(folder / "unit-U03.csv"))
    assert [r["原因代码"] for r in u03.values()] == ["probable_name_typo"]

    # IDs in nobody's roster: no unit can be known
    unassigned = by_settlement(read_notice(folder / "unassigned.csv"))
    assert {k: v["原因代码"] for k, v in unassigned.items()} == {
        "JAN-010": "not_a_member",
        "JAN-011": "invalid_id_number",
        "JAN-013": "invalid_id_number",
    }
    assert (
        unassigned["JAN-013"]["身份证号"] == "'=1+2+3**+5+6"
        and unassigned["JAN-013"]["姓名"] == "'+赵六"
    )
    # waiting_period is not something a unit can fix; paid rows are not listed
    everything = "".join(p.read_text(encoding="utf-8-sig") for p in folder.glob("*.csv"))
    for sid in ("JAN-001", "JAN-002", "JAN-003", "JAN-008", "JAN-012"):
        assert sid not in everything

    counts = {u["unit_code"]: u["counts"] for u in out["units"]}  # type: ignore[union-attr]
    assert counts["U02"] == {"rejection": 2}
    assert counts[None] == {"rejection": 3}


def test_the_xlsx_matches_the_csv(ws: Path) -> None:
    notices(ws, "--period", "2024-01")
    folder = ws / "reports" / "2024-01" / "notices"
    for csv_path in folder.glob("*.csv"):
        book = fastexcel.read_excel(folder / f"{csv_path.stem}.xlsx")
        (sheet_name,) = book.sheet_names
        title = book.load_sheet(0, header_row=None, n_rows=1).to_polars()
        assert "需处理事项" in str(title.row(0)[0]) and "2024-01" in str(title.row(0)[0])
        sheet = book.load_sheet(0, header_row=1).to_polars()
        frame = read_notice(csv_path)
        assert sheet.columns == frame.columns
        assert sheet.height == frame.height
        assert sheet["结算流水号"].to_list() == frame["结算流水号"].to_list()
        money = sheet["自付一"].drop_nulls()
        assert money.dtype == pl.Float64
        assert money.cast(pl.String).to_list() == [
            str(float(v)) for v in frame["自付一"].drop_nulls().to_list()
        ]


def test_pending_reviews_are_listed_until_decided(ws: Path) -> None:
    out = notices(ws, "--period", "2024-02")
    folder = ws / "reports" / "2024-02" / "notices"
    assert {p.stem for p in folder.iterdir()} == {"unit-U01", "unit-U03"}
    u01 = by_settlement(read_notice(folder / "unit-U01.csv"))
    assert u01["JAN-005"]["挂起期次"] == "2024-01"
    assert [u["unit_code"] for u in out["units"]] == ["U01", "U03"]  # type: ignore[union-attr]


def test_english_out_folder_and_unmask(ws: Path, tmp_path: Path) -> None:
    out = notices(ws, "--period", "2024-01", "--lang", "en", "--out", tmp_path / "n", "--unmask")
    assert Path(str(out["out"])) == tmp_path / "n"
    frame = read_notice(tmp_path / "n" / "unit-U02.csv")
    assert "reason code" in frame.columns and "what to do" in frame.columns
    row = by_settlement(frame, "settlement id")["JAN-004"]
    assert row["what to do"] == FIXES["name_mismatch"][1]
    assert row["ID number"] == "110105198001010040"


def test_stale_notices_go_and_other_files_stay(ws: Path) -> None:
    folder = ws / "reports" / "2024-02" / "notices"
    notices(ws, "--period", "2024-02")
    (folder / "unit-OLD.csv").write_text("stale", encoding="utf-8")
    (folder / "keep-me.txt").write_text("mine", encoding="utf-8")
    notices(ws, "--period", "2024-02")
    assert not (folder / "unit-OLD.csv").exists()
    assert (folder / "keep-me.txt").read_text(encoding="utf-8") == "mine"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_the_human_output(ws: Path) -> None:
    result = cli("notices", "-w", ws, "--period", "2024-01")
    assert result.exit_code == 0, result.output
    assert "U02" in result.stdout and "unassigned" in result.stdout


@pytest.mark.parametrize(
    ("period", "message"),
    [("2024-13", "expected YYYY-MM"), ("2023-12", "no batch for period 2023-12")],
)
def test_a_bad_period_is_exit_2(ws: Path, period: str, message: str) -> None:
    result = cli("notices", "-w", ws, "--period", period)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "code",
    [
        "../../etc/passwd",
        "..",
        "a/b",
        "a\\b",
        "C:x",
        ".hidden",
        "U 01",
        "CON",
        "单位/一",
        "x" * 300,
        # four bytes each in UTF-8: 280 bytes, over a file name's 255
        pytest.param("\U00020000" * 70, id="70-astral-characters"),
    ],
)
def test_file_names_are_safe_from_any_unit_code(code: str, tmp_path: Path) -> None:
    stem = unit_file_stem(code, set())
    assert stem.startswith("unit-")
    assert "/" not in stem and "\\" not in stem and ".." not in stem and ":" not in stem
    assert "." not in stem and " " not in stem and len(stem) <= 80
    (tmp_path / f"{stem}.csv").write_text("ok", encoding="utf-8")  # a real, single file
    assert [p.name for p in tmp_path.iterdir()] == [f"{stem}.csv"]


def test_codes_that_clean_alike_or_differ_in_case_stay_apart() -> None:
    taken: set[str] = set()
    stems = [unit_file_stem(c, taken) for c in ("U01", "u01", "a/b", "a_b", "a:b", "东区")]
    assert len({s.lower() for s in stems}) == len(stems)
    assert stems[0] == "unit-U01" and stems[5] == "unit-东区"
    assert unit_file_stem(None, set()) == "unassigned"


def test_a_unit_coded_like_another_units_cleaned_name_does_not_take_its_file() -> None:
    """ "A~B" cleans to "A_B" plus its hash; a unit literally coded so, read
    first, must not leave the two units one file (the second would overwrite
    the first's notice)."""
    taken: set[str] = set()
    hashed = unit_file_stem("A~B", set())
    literal = hashed.removeprefix("unit-")
    stems = [unit_file_stem(c, taken) for c in (literal, "A~B")]
    assert stems[0] == hashed and stems[1] != hashed
    assert len({s.lower() for s in stems}) == 2


def test_failed_payments_reach_the_unit(tmp_path: Path) -> None:
    from twopay.cli import main

    if "reconcile" not in main.commands:
        pytest.skip("`twopay reconcile` is not there yet: the bank_returns table stays empty")
    ws = build_workspace(tmp_path)
    bank = tmp_path / "bank_return.csv"
    bank.write_text(
        "payment_id,card_no,amount,status,reason\n"
        "2024-02-M001,6222000000000001,750.00,failed,卡号已注销\n"
        "2024-02-M005,6222000000000005,1500.00,success,\n",
        encoding="utf-8",
    )
    done = cli("reconcile", "-w", ws, "--bank-return", bank)
    assert done.exit_code in (0, 3), done.output  # 3: a discrepancy was found
    out = notices(ws, "--period", "2024-02")
    folder = ws / "reports" / "2024-02" / "notices"
    failed = {
        r["支付编号"]: r
        for r in read_notice(folder / "unit-U01.csv").iter_rows(named=True)
        if r["支付编号"]
    }
    assert set(failed) == {"2024-02-M001"}
    row = failed["2024-02-M001"]
    assert (row["类别"], row["原因代码"], row["金额(元)"]) == (
        "支付失败",
        "payment_failed",
        "750.00",
    )
    assert row["处理办法"] == FIXES["payment_failed"][0]
    assert row["服务卡号"] == "622200******0001" and "卡号已注销" in row["详情"]
    counts = {u["unit_code"]: u["counts"] for u in out["units"]}  # type: ignore[union-attr]
    assert counts["U01"] == {"review": 1, "payment_failed": 1}
    assert "U03" in counts and "unit-U03.csv" in {p.name for p in folder.iterdir()}


def test_a_roster_record_that_cannot_be_read_reaches_its_unit(tmp_path: Path) -> None:
    """Spec 8: notices list the card and identity errors a unit's officers
    must fix. A roster record with no card number is quarantined, and its
    member's claims are rejected: the unit named on the record is told."""

    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [
            ("M1", "张伟", person_id(1), "C1", "U1", "在职", "2020-01-01", None),
            ("M5", "王芳", person_id(5), "", "U3", "在职", "2020-01-01", None),  # no card
        ],
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [
            ("S1", person_id(1), "张伟", "门诊", "2024-01-05", None, "100", "50", None),
            # M5's claim, rejected not_a_member for want of a readable record,
            # goes to U3 too (it went to unassigned)
            ("S5", person_id(5), "王芳", "门诊", "2024-01-05", None, "100", "50", None),
        ],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    out = notices(ws, "--period", "2024-01")
    counts = {u["unit_code"]: u["counts"] for u in out["units"]}  # type: ignore[union-attr]
    assert counts == {"U3": {"rejection": 1, "roster_record": 1}}
    rows = read_notice(ws / "reports" / "2024-01" / "notices" / "unit-U3.csv")
    rejected = by_settlement(rows.filter(pl.col("结算流水号").is_not_null()))
    assert rejected["S5"]["会员编号"] == "M5"
    assert "roster line 3, which could not be read" in rejected["S5"]["详情"]
    (row,) = rows.filter(pl.col("结算流水号").is_null()).iter_rows(named=True)
    assert (row["类别"], row["会员编号"], row["原因代码"]) == ("名册记录", "M5", "roster_record")
    assert row["详情"] == "roster line 3: missing_field: column card_no is empty"
    assert row["处理办法"] == FIXES["roster_record"][0]
    assert row["身份证号"] == "110105********" + person_id(5)[-4:]


def test_rejections_and_the_notice_agree_on_the_unit_of_a_name_mismatch(ws: Path) -> None:
    """Spec 7: rejections.csv gives unit_code 'when known'. A name that does
    not match its ID's roster record is not accepted as that member, but the
    record's unit is known: the notice sends the row there, and the
    rejection says so too."""
    notices(ws, "--period", "2024-01")
    u02 = by_settlement(read_notice(ws / "reports" / "2024-01" / "notices" / "unit-U02.csv"))
    assert u02["JAN-004"]["原因代码"] == "name_mismatch"
    with (ws / "reports" / "2024-01" / "rejections.csv").open(encoding="utf-8") as fh:
        units = {r["settlement_id"]: r["unit_code"] for r in csv.DictReader(fh)}
    assert units["JAN-004"] == "U02"
    assert units["JAN-010"] == ""  # an ID in nobody's roster: no unit is known


def test_a_name_mismatch_goes_to_the_unit_of_the_record_valid_that_day(tmp_path: Path) -> None:
    """Spec 5: identity uses the roster record valid on the service date. A
    member who moved from U1 to U2 after the visit, and a card re-issued
    under a new member_id in U3: their January name mismatches belong to U1,
    under the member_id of that day (the notice sent them to the latest
    record's unit while rejections.csv said U1)."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [
            ("M1", "李明", person_id(1), "C11", "U1", "在职", "2015-01-01", "2024-02-14"),
            ("M1", "李明", person_id(1), "C12", "U2", "在职", "2024-02-15", None),
            ("M2A", "王芳", person_id(2), "C21", "U1", "在职", "2015-01-01", "2024-01-31"),
            ("M2B", "王芳", person_id(2), "C22", "U3", "在职", "2024-02-01", None),
        ],
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [
            ("X1", person_id(1), "完全不同", "门诊", "2024-01-20", None, "3000", "3000", None),
            ("X2", person_id(2), "另一个人", "门诊", "2024-01-22", None, "3000", "3000", None),
        ],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-03", "--settlements", settlements, "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    out = notices(ws, "--period", "2024-03")
    assert [u["unit_code"] for u in out["units"]] == ["U1"]  # type: ignore[union-attr]
    u1 = by_settlement(read_notice(ws / "reports" / "2024-03" / "notices" / "unit-U1.csv"))
    assert {k: v["会员编号"] for k, v in u1.items()} == {"X1": "M1", "X2": "M2A"}
    with (ws / "reports" / "2024-03" / "rejections.csv").open(encoding="utf-8") as fh:
        assert {r["settlement_id"]: r["unit_code"] for r in csv.DictReader(fh)} == {
            "X1": "U1",
            "X2": "U1",
        }


def test_a_card_number_excel_converted_reaches_its_unit(tmp_path: Path) -> None:
    """A roster whose card numbers were typed into Excel as numbers holds
    6.22202E+18: the record is read and the claim paid, but the bank cannot
    pay into that card; the unit's officers are told before the bank says so."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [
            ("M1", "张伟", person_id(1), "C1", "U1", "在职", "2020-01-01", None),
            ("M5", "王芳", person_id(5), "6.22202E+18", "U3", "在职", "2020-01-01", None),
        ],
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("S5", person_id(5), "王芳", "门诊", "2024-01-05", None, "100", "50", None)],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["summary"]["balance"]["adjudicated"] == 1
    out = notices(ws, "--period", "2024-01")
    counts = {u["unit_code"]: u["counts"] for u in out["units"]}  # type: ignore[union-attr]
    assert counts == {"U3": {"roster_record": 1}}
    (row,) = read_notice(ws / "reports" / "2024-01" / "notices" / "unit-U3.csv").iter_rows(
        named=True
    )
    assert (row["会员编号"], row["原因代码"]) == ("M5", "roster_record")
    assert row["详情"] == (
        "roster line 3: card_no 6.22202E+18 looks like a number Excel converted; "
        "the bank cannot pay into it"
    )


def test_an_id_excel_mangled_names_no_unit_whatever_the_roster_order(tmp_path: Path) -> None:
    """Two people whose roster IDs Excel turned into 1.10105E+17, and a claim
    under that value (invalid_id_number, never guessed): its notice went to
    the unit of whichever of them the roster listed first, naming them."""
    for order in ("ab", "ba"):
        ws = init_workspace(tmp_path / order, {"t.toml": SIMPLE_RULE})
        people = {
            "a": ("M1", "张三", "1.10105E+17", "C1", "UA", "在职", "2020-01-01", None),
            "b": ("M2", "李四", "1.10105E+17", "C2", "UB", "在职", "2020-01-01", None),
        }
        roster = write_csv(tmp_path / f"{order}-r.csv", ROSTER_HEADER, [people[k] for k in order])
        settlements = write_csv(
            tmp_path / f"{order}-s.csv",
            SETTLEMENT_HEADER,
            [("S1", "1.10105E+17", "张三", "门诊", "2024-03-01", None, "9000", "5000", None)],
        )
        done = cli(
            "run", "-w", ws, "--period", "2024-03", "--settlements", settlements,
            "--roster", roster,
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        out = notices(ws, "--period", "2024-03")
        counts = {u["unit_code"]: u["counts"] for u in out["units"]}  # type: ignore[union-attr]
        assert counts == {None: {"rejection": 1}}, (order, counts)


def test_a_replaced_batch_takes_its_notices_with_it(tmp_path: Path) -> None:
    """Notices written for a batch that --replace then replaced asked units
    to fix rows the period no longer holds; an analyst's own file stays."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [("M1", "张伟", person_id(1), "C1", "U1", "在职", "2020-01-01", None)],
    )
    wrong = write_csv(
        tmp_path / "s1.csv",
        SETTLEMENT_HEADER,
        [("S1", person_id(1), "王芳", "门诊", "2024-01-05", None, "100", "50", None)],
    )
    right = write_csv(
        tmp_path / "s2.csv",
        SETTLEMENT_HEADER,
        [("S1", person_id(1), "张伟", "门诊", "2024-01-05", None, "100", "50", None)],
    )

    def run(settlements: Path, *extra: str) -> None:
        done = cli(
            "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
            "--roster", roster, *extra,
        )  # fmt: skip
        assert done.exit_code == 0, done.output

    run(wrong)
    notices(ws, "--period", "2024-01")
    folder = ws / "reports" / "2024-01" / "notices"
    assert {p.name for p in folder.iterdir()} == {"unit-U1.csv", "unit-U1.xlsx"}
    (folder / "called U1.txt").write_text("phoned them on Monday", encoding="utf-8")
    run(wrong)  # the same inputs: nothing changes, the notices stand
    assert (folder / "unit-U1.csv").exists()
    run(right, "--replace")
    assert {p.name for p in folder.iterdir()} == {"called U1.txt"}

    # a --replace killed while it writes its reports (after its commit), then
    # the same command again, as the error says: the re-run is a no-op, and
    # the notices of the batch replaced were left behind
    run(wrong, "--replace")
    notices(ws, "--period", "2024-01")
    assert (folder / "unit-U1.csv").exists()
    killed = subprocess.run(
        [str(Path(sys.executable).with_name("twopay")), "run", "-w", str(ws), "--period",
         "2024-01", "--settlements", str(right), "--roster", str(roster), "--replace"],
        env={**os.environ, "TWOPAY_FAULT_AT": "reports"}, capture_output=True, check=False,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    run(right, "--replace")
    assert {p.name for p in folder.iterdir()} == {"called U1.txt"}
