"""`twopay sample` (the generator) and the shipped sample_data folder."""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from stdnum import luhn
from stdnum.cn import ric

from twopay.sample import RATE, check_char, generate

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
ROSTER_HEADER = ["member_id", "name", "id_number", "card_no", "unit_code", "unit_name",
                 "category", "valid_from", "valid_to", "bank_account"]  # fmt: skip
SETTLEMENT_HEADER = ["settlement_id", "id_number", "name", "visit_type", "service_date",
                     "admission_date", "hospital_code", "total_cost", "self_pay_1", "self_pay_2",
                     "out_of_pocket", "reverses"]  # fmt: skip


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def read(path: Path, encoding: str = "utf-8") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding=encoding))))


def valid_id(ident: str) -> bool:
    return len(ident) == 18 and ident[:17].isdigit() and check_char(ident[:17]) == ident[17]


@pytest.fixture(scope="module")
def two_months(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("sample")
    return generate(out, members=20_000, settlements=60_000, seed=11, months=2, unit_count=40)


@pytest.fixture(scope="module")
def roster(two_months: dict[str, Path]) -> list[dict[str, str]]:
    return read(two_months["roster"])


@pytest.fixture(scope="module")
def settlements(two_months: dict[str, Path]) -> list[dict[str, str]]:
    return read(two_months["settlements_2024-01"]) + read(two_months["settlements_2024-02"])


# -- the generator --------------------------------------------------------------------


def test_returns_the_files_it_wrote(two_months: dict[str, Path]) -> None:
    assert sorted(two_months) == [
        "enrollments", "roster", "settlements_2024-01", "settlements_2024-02", "units",
    ]  # fmt: skip
    for path in two_months.values():
        assert path.is_file() and path.suffix == ".csv"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, fmt: str) -> None:
    for folder, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / folder, members=3000, settlements=5000, seed=seed, fmt=fmt, months=2)
    a, b, c = (digests(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 5
    for name in a:
        if not name.startswith("units"):  # the few units may by chance all be paid up
            assert a[name] != c[name], name


def test_bytes_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    # DuckDB runs the generator on every core it has; the files must not care.
    generate(tmp_path / "many", members=3000, settlements=5000, seed=5)
    generate(tmp_path / "one", members=3000, settlements=5000, seed=5, threads=1)
    assert digests(tmp_path / "many") == digests(tmp_path / "one")


def test_headers_are_the_canonical_english_names(two_months: dict[str, Path]) -> None:
    first = {k: p.read_text(encoding="utf-8").splitlines()[0] for k, p in two_months.items()}
    assert first["roster"] == ",".join(ROSTER_HEADER)
    assert first["settlements_2024-01"] == ",".join(SETTLEMENT_HEADER)
    assert first["units"] == "unit_code,unit_name,dues_paid_through"
    assert first["enrollments"] == "id_number,scheme,valid_from,valid_to"


def test_row_counts(
    two_months: dict[str, Path], roster: list[dict[str, str]], settlements: list[dict[str, str]]
) -> None:
    assert len(settlements) == 60_000
    assert len({r["member_id"] for r in roster}) == 20_000
    movers = len(roster) - 20_000
    assert 0.5 * RATE["mover"] * 20_000 < movers < 2 * RATE["mover"] * 20_000
    assert len(read(two_months["units"])) == 40
    enrolled = len(read(two_months["enrollments"]))
    assert 0.25 * 20_000 < enrolled < 0.35 * 20_000


def test_every_roster_id_is_valid_and_unique(roster: list[dict[str, str]]) -> None:
    ids = {r["member_id"]: r["id_number"] for r in roster}
    assert len(set(ids.values())) == len(ids)
    assert all(valid_id(i) for i in ids.values())
    # python-stdnum checks more: a real birth date and a place code valid in that year.
    assert all(ric.is_valid(i) for i in ids.values())


def test_settlement_ids_valid_but_for_the_deliberate_typos(
    settlements: list[dict[str, str]],
) -> None:
    invalid = [s for s in settlements if not valid_id(s["id_number"])]
    assert 0 < len(invalid) < 3 * RATE["id_typo"] * len(settlements)


def test_cards_and_members(roster: list[dict[str, str]]) -> None:
    cards = [r["card_no"] for r in roster]
    assert len(set(cards)) == len(cards)
    assert all(len(c) == 19 and luhn.is_valid(c) for c in cards)
    assert all(len(r["member_id"]) == 9 and r["member_id"].startswith("M") for r in roster)
    assert {r["category"] for r in roster} == {"in_service", "retired"}
    retired = sum(r["category"] == "retired" for r in roster) / len(roster)
    assert 0.08 < retired < 0.25


def test_records_of_one_person_do_not_overlap(roster: list[dict[str, str]]) -> None:
    by_id: dict[str, list[dict[str, str]]] = {}
    for r in roster:
        by_id.setdefault(r["id_number"], []).append(r)
    moved = [rs for rs in by_id.values() if len(rs) > 1]
    assert moved
    for first, second in moved:
        assert first["member_id"] == second["member_id"]
        assert first["unit_code"] != second["unit_code"]
        # Moved on: the old record ends the day before the new one starts.
        end = date.fromisoformat(first["valid_to"])
        assert date.fromisoformat(second["valid_from"]) == end + timedelta(days=1)
        assert date.fromisoformat(first["valid_from"]) <= end


def test_amounts_are_consistent(settlements: list[dict[str, str]]) -> None:
    reversals = [s for s in settlements if s["reverses"]]
    normal = [s for s in settlements if not s["reverses"]]
    money = ("total_cost", "self_pay_1", "self_pay_2", "out_of_pocket")
    for s in reversals:
        assert all(Decimal(s[k]) <= 0 for k in money)
    for s in normal:
        assert all(Decimal(s[k]) >= 0 for k in money)
    inconsistent = [s for s in normal if Decimal(s["self_pay_1"]) > Decimal(s["total_cost"])]
    # Only the rows made unreadable on purpose (inconsistent_amounts) break it.
    assert len(inconsistent) < 3 * RATE["inconsistent"] * len(settlements)
    consistent = [s for s in normal if s not in inconsistent]
    assert all(
        Decimal(s["total_cost"]) >= sum(Decimal(s[k]) for k in money[1:]) for s in consistent
    )
    outpatient = [Decimal(s["self_pay_1"]) for s in consistent if s["visit_type"] == "outpatient"]
    inpatient = [Decimal(s["self_pay_1"]) for s in consistent if s["visit_type"] == "inpatient"]
    assert max(outpatient) <= 3000 and min(inpatient) >= 2000 and max(inpatient) <= 80000
    assert 0.12 < len(inpatient) / len(settlements) < 0.18


def test_settlements_shape(two_months: dict[str, Path], settlements: list[dict[str, str]]) -> None:
    for month in (1, 2):
        rows = read(two_months[f"settlements_2024-{month:02d}"])
        days = [date.fromisoformat(s["service_date"]) for s in rows]
        assert days == sorted(days)  # in date order, as exports come
        assert all(d.year == 2024 and d.month == month for d in days)
    inpatient = [s for s in settlements if s["visit_type"] == "inpatient"]
    with_admission = [s for s in inpatient if s["admission_date"]]
    assert 0.9 < len(with_admission) / len(inpatient) < 1
    assert all(s["admission_date"] < s["service_date"] for s in with_admission)
    assert not any(s["admission_date"] for s in settlements if s["visit_type"] == "outpatient")
    ids = [s["settlement_id"] for s in settlements]
    seen: set[str] = set()
    for s in settlements:  # a reversal points at an earlier settlement
        if s["reverses"]:
            assert s["reverses"] in seen
        seen.add(s["settlement_id"])
    repeats = len(ids) - len(set(ids))  # duplicates, exact or conflicting
    assert 0 < repeats < 3 * (RATE["duplicate"] + RATE["conflicting_duplicate"]) * len(ids)


def test_settlement_people_are_roster_members_mostly(
    roster: list[dict[str, str]], settlements: list[dict[str, str]]
) -> None:
    names = {r["id_number"]: r["name"] for r in roster}
    outside = [s for s in settlements if s["id_number"] not in names]
    assert 0.01 < len(outside) / len(settlements) < 0.03
    inside = [s for s in settlements if s["id_number"] in names]
    other_name = [s for s in inside if s["name"] != names[s["id_number"]]]
    # the deliberate name typos and missing names only
    assert len(other_name) < 3 * (RATE["name_typo"] + RATE["missing_name"]) * len(settlements)


def test_parquet_holds_the_same_rows_as_csv(tmp_path: Path) -> None:
    csv_paths = generate(tmp_path / "c", members=2000, settlements=3000, seed=9)
    pq_paths = generate(tmp_path / "p", members=2000, settlements=3000, seed=9, fmt="parquet")
    con = duckdb.connect()
    for kind in csv_paths:
        a = con.sql("SELECT * FROM read_csv(?, all_varchar = true)", params=[str(csv_paths[kind])])
        b = con.sql("SELECT COLUMNS(*)::VARCHAR FROM read_parquet(?)", params=[str(pq_paths[kind])])
        assert a.fetchall() == b.fetchall(), kind


def test_size_per_row(tmp_path: Path) -> None:
    """Timing-free guard for the benchmark's inputs: plausible bytes per row."""
    paths = generate(tmp_path, members=10_000, settlements=20_000, seed=1)
    per_roster_row = paths["roster"].stat().st_size / 10_000
    per_settlement_row = paths["settlements"].stat().st_size / 20_000
    assert 120 < per_roster_row < 200
    assert 80 < per_settlement_row < 130


def test_small_and_empty_runs(tmp_path: Path) -> None:
    paths = generate(tmp_path, members=1, settlements=0, seed=1)
    assert len(read(paths["roster"])) >= 1
    assert read(paths["settlements"]) == []
    with pytest.raises(ValueError, match="format"):
        generate(tmp_path, members=1, settlements=1, seed=1, fmt="xlsx")
    with pytest.raises(ValueError, match="months"):
        generate(tmp_path, members=1, settlements=1, seed=1, months=13)


def test_cli_sample(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from twopay.cli import main

    result = CliRunner().invoke(
        main, ["sample", "--members", "500", "--settlements", "800", "--out", str(tmp_path),
               "--seed", "3", "--months", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "settlements_2024-02.csv").is_file()
    assert (
        len(read(tmp_path / "settlements_2024-01.csv"))
        + len(read(tmp_path / "settlements_2024-02.csv"))
        == 800
    )


# -- the shipped sample_data ---------------------------------------------------------


def test_sample_data_is_what_make_sample_makes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SAMPLE / "make_sample.py"), str(tmp_path)], check=True, timeout=60
    )
    made = digests(tmp_path)
    shipped = {k: v for k, v in digests(SAMPLE).items() if k in made}
    assert made == shipped


def test_sample_files_decode_as_stated() -> None:
    january = (SAMPLE / "settlements_2024-01.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        january.decode("utf-8")
    header = january.decode("gb18030").splitlines()[0]
    assert header.split(",") == [
        "结算流水号", "身份证号", "姓名", "就诊类型", "结算日期", "入院日期", "医院编码",
        "医疗费总额", "自付一", "自付二", "自费", "原结算流水号",
    ]  # fmt: skip
    february = (SAMPLE / "settlements_2024-02.csv").read_bytes()
    assert not february.startswith(b"\xef\xbb\xbf")
    assert february.decode("utf-8").splitlines()[0] == ",".join(SETTLEMENT_HEADER)
    assert (SAMPLE / "roster.csv").read_text(encoding="utf-8").splitlines()[0] == ",".join(
        ROSTER_HEADER
    )
    text = january.decode("gb18030")
    for form in ("¥", "元", "年", "/", "１", "门诊", "急诊", "住院", "1.10105E+17", "体检"):
        assert form in text, form


def test_sample_roster_cases() -> None:
    roster = read(SAMPLE / "roster.csv")
    assert 200 <= len(roster) <= 400
    assert len({r["unit_code"] for r in roster}) == 6
    ids = [r["id_number"] for r in roster]
    assert any(len(i) == 15 for i in ids)  # a legacy number
    assert all(valid_id(i) for i in ids if len(i) == 18)
    assert any("·" in r["name"] for r in roster)
    assert {r["category"] for r in roster} == {"在职", "退休"}
    twice = [i for i in set(ids) if ids.count(i) == 2]
    assert len(twice) == 1
    first, second = (r for r in roster if r["id_number"] == twice[0])
    end = date.fromisoformat(first["valid_to"])
    assert date.fromisoformat(second["valid_from"]) == end + timedelta(days=1)
    units = read(SAMPLE / "units.csv")
    assert sum(u["dues_paid_through"] < "2024-01-01" for u in units) == 1
    enrollments = read(SAMPLE / "enrollments.csv")
    assert {e["scheme"] for e in enrollments} == {"wh-hospital"}
    assert {e["id_number"] for e in enrollments} <= set(ids)


def test_readme_names_rows_that_exist() -> None:
    """Every settlement_id in the README's tables is in the month it is listed under."""
    readme = (SAMPLE / "README.md").read_text(encoding="utf-8")
    sections = readme.split("## settlements_")[1:]
    assert len(sections) == 2
    for section in sections:
        name = "settlements_" + section.split()[0]
        section = section.split("\n## ")[0]
        encoding = "gb18030" if name.endswith("01.csv") else "utf-8"
        lines = (SAMPLE / name).read_text(encoding=encoding).splitlines()
        table = [row.split("|") for row in section.splitlines() if row.startswith("| ")][1:]
        assert len(table) >= 20
        assert 150 <= len(lines) - 1 <= 300
        # The default --max-quarantine-rate is 5 %: the demo must stay under it.
        quarantined = [c for c in table if c[5].strip().startswith("quarantined")]
        assert 0 < len(quarantined) < 0.05 * (len(lines) - 1)
        for cells in table:
            line, sid = int(cells[1]), cells[2].strip()
            text = lines[line - 1]
            assert text.startswith(sid + ",") or (sid == "(empty)" and text.startswith(","))
