"""Batches that continue each other and survive crashes and mistakes (spec 5, 6).

Every test runs the real CLI on real files in a real workspace; the crash
tests kill a real `twopay` process with SIGKILL at a known stage.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from helpers import (
    ROSTER_HEADER,
    SETTLEMENT_HEADER,
    SIMPLE_RULE,
    cli,
    init_workspace,
    person_id,
    write_csv,
)
from twopay.ledger.schema import SCHEMA_VERSION, STAGED
from twopay.ledger.workspace import open_workspace

NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇"]


def roster(path: Path) -> Path:
    rows = [
        (
            f"M{i}",
            NAMES[i],
            person_id(i),
            f"62220000000000{i:02d}",
            f"U{i % 2}",
            "在职",
            "2020-01-01",
            None,
        )
        for i in range(len(NAMES))
    ]
    return write_csv(path, ROSTER_HEADER, rows)


def month_rows(month: int, year: int = 2024) -> list[tuple[object, ...]]:
    """A deterministic month: every person has a few visits, some inpatient."""
    rows: list[tuple[object, ...]] = []
    for i, name in enumerate(NAMES):
        for k in range(3):
            day = date(year, month, 1 + (i * 3 + k * 7) % 27)
            sid = f"S{year}{month:02d}{i}{k}"
            if (i + k + month) % 4 == 0:
                adm = day - timedelta(days=(i + k) % 6)
                sp1 = Decimal(800 + 137 * ((i * 7 + k * 11 + month) % 13)) + Decimal("0.45")
                rows.append((sid, person_id(i), name, "住院", day, adm, sp1 + 500, sp1, None))
            else:
                sp1 = Decimal(90 + 61 * ((i * 5 + k * 3 + month) % 17)) + Decimal("0.55")
                rows.append((sid, person_id(i), name, "门诊", day, None, sp1 + 20, sp1, None))
    return rows


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return init_workspace(tmp_path / "ws", {"test-plan.toml": SIMPLE_RULE})


def run(ws: Path, period: str, settlements: Path, roster_path: Path, *extra: object) -> object:
    return cli(
        "run",
        "-w",
        ws,
        "--period",
        period,
        "--settlements",
        settlements,
        "--roster",
        roster_path,
        "--json",
        *extra,
    )


def ledger_rows(ws: Path, table: str, order: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    finally:
        con.close()


def test_rerun_with_same_inputs_is_a_noop_with_identical_reports(ws: Path, tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    first = run(ws, "2024-01", s, r)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["noop"] is False
    reports = ws / "reports" / "2024-01"
    before = {p.name: p.read_bytes() for p in reports.iterdir()}
    lines_before = ledger_rows(ws, "lines", "line_key")
    again = run(ws, "2024-01", s, r)
    assert again.exit_code == 0
    assert json.loads(again.output)["noop"] is True
    assert {p.name: p.read_bytes() for p in reports.iterdir()} == before
    assert ledger_rows(ws, "lines", "line_key") == lines_before
    human = cli("run", "-w", ws, "--period", "2024-01", "--settlements", s, "--roster", r)
    assert "already committed: no change" in human.output


def test_the_same_settlement_files_in_another_order_are_the_same_inputs(
    ws: Path, tmp_path: Path
) -> None:
    """January was run from two files, a then b; February followed; then
    January's reports were lost. Re-run with b then a, it was refused as
    'other inputs' (exit 4), and --replace is not allowed on an earlier batch:
    the reports could not come back unless the order was guessed."""
    r = roster(tmp_path / "roster.csv")
    rows = month_rows(1)
    a = write_csv(tmp_path / "a.csv", SETTLEMENT_HEADER, rows[: len(rows) // 2])
    b = write_csv(tmp_path / "b.csv", SETTLEMENT_HEADER, rows[len(rows) // 2 :])
    assert run(ws, "2024-01", a, r, "--settlements", b).exit_code == 0
    reports = ws / "reports" / "2024-01"
    before = {p.name: p.read_bytes() for p in reports.iterdir()}
    s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2))
    assert run(ws, "2024-02", s2, r).exit_code == 0
    shutil.rmtree(reports)
    again = run(ws, "2024-01", b, r, "--settlements", a)
    assert again.exit_code == 0, again.output  # type: ignore[attr-defined]
    assert json.loads(again.output)["noop"] is True  # type: ignore[attr-defined]
    assert {p.name: p.read_bytes() for p in reports.iterdir()} == before
    # the same file twice is not the two files
    twice = run(ws, "2024-01", a, r, "--settlements", a)
    assert twice.exit_code == 4, twice.output  # type: ignore[attr-defined]


def test_other_inputs_are_refused_unless_replacing_the_latest(ws: Path, tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    s1b = write_csv(tmp_path / "s1b.csv", SETTLEMENT_HEADER, month_rows(1)[:-1])
    s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2))
    assert run(ws, "2024-01", s1, r).exit_code == 0
    conflict = cli("run", "-w", ws, "--period", "2024-01", "--settlements", s1b, "--roster", r)
    assert conflict.exit_code == 4
    assert "already committed" in conflict.output and "--replace" in conflict.output
    assert "(settlements differ)" in conflict.output  # what changed, by role
    assert run(ws, "2024-01", s1b, r, "--replace").exit_code == 0
    rows = ledger_rows(ws, "settlements", "row_key")
    assert len(rows) == len(month_rows(1)) - 1  # the replaced batch's rows are gone
    assert run(ws, "2024-02", s2, r).exit_code == 0
    refused = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", s1, "--roster", r, "--replace"
    )
    assert refused.exit_code == 4 and "not the latest batch" in refused.output


def test_a_replaced_batch_leaves_the_ledger_a_fresh_run_would(ws: Path, tmp_path: Path) -> None:
    """Every row of the replaced batch goes, eligibility checks included, and
    the new batch's rows are those of a workspace that only ever ran it."""
    r = roster(tmp_path / "roster.csv")
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    s1b = write_csv(tmp_path / "s1b.csv", SETTLEMENT_HEADER, month_rows(1)[:-2])
    assert run(ws, "2024-01", s1, r).exit_code == 0
    assert run(ws, "2024-01", s1b, r, "--replace").exit_code == 0
    fresh = init_workspace(tmp_path / "fresh", {"test-plan.toml": SIMPLE_RULE})
    assert run(fresh, "2024-01", s1b, r).exit_code == 0
    replaced, clean = comparable_ledger(ws), comparable_ledger(fresh)
    assert replaced["eligibility_members"]  # the comparison is not of empty tables
    assert replaced == clean


def test_every_identified_row_keeps_its_identity_evidence(ws: Path, tmp_path: Path) -> None:
    """A plain exact match's evidence is spelled out late (as it goes to the
    ledger): it must still be there, naming the roster record."""
    r = roster(tmp_path / "roster.csv")
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    assert run(ws, "2024-01", s, r).exit_code == 0
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT o.identity, o.member_id, rr.member_id FROM outcomes o "
            "LEFT JOIN roster_records rr ON rr.batch_id = o.batch_id "
            "AND rr.record_key = TRY_CAST(json_extract(o.identity, '$.record_key') AS BIGINT) "
            "WHERE o.outcome = 'adjudicated' AND o.code IS NULL"
        ).fetchall()
    finally:
        con.close()
    assert rows
    for identity, member, record_member in rows:
        ev = json.loads(identity)
        assert ev["rule"] == "3.1" and ev["roster_member"] == member == record_member


def test_a_held_lock_is_exit_5_naming_the_holder(ws: Path, tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    with open_workspace(ws).lock("test holder"):
        locked = cli("run", "-w", ws, "--period", "2024-01", "--settlements", s, "--roster", r)
    assert locked.exit_code == 5
    assert f"pid {os.getpid()}" in locked.output and "test holder" in locked.output
    assert not (ws / "reports" / "2024-01").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(ws: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (ws / "twopay.lock").write_text(
        json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "x", "command": "run"})
    )
    r = roster(tmp_path / "roster.csv")
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    assert run(ws, "2024-01", s, r).exit_code == 0
    assert not (ws / "twopay.lock").exists()


def test_a_lock_held_by_a_killed_unreaped_process_is_taken_over(ws: Path, tmp_path: Path) -> None:
    """A process killed but not yet waited for (a zombie) holds nothing."""
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed.kill()
        time.sleep(0.2)  # dead, not reaped
        (ws / "twopay.lock").write_text(
            json.dumps(
                {"pid": killed.pid, "host": os.uname().nodename, "started": "x", "command": "run"}
            )
        )
        r = roster(tmp_path / "roster.csv")
        s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
        done = run(ws, "2024-01", s, r)
        assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    finally:
        killed.wait()


def test_an_empty_lock_file_says_which_file_to_delete(ws: Path, tmp_path: Path) -> None:
    (ws / "twopay.lock").write_text("")
    r = roster(tmp_path / "roster.csv")
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    done = cli("run", "-w", ws, "--period", "2024-01", "--settlements", s, "--roster", r)
    assert done.exit_code == 5
    assert "twopay.lock names no process" in done.output and "delete it" in done.output


def test_a_ledger_open_in_a_reader_is_exit_5_naming_no_run(ws: Path, tmp_path: Path) -> None:
    """The run holds the workspace lock when it finds the ledger open
    elsewhere: the message must not name the run itself as the holder."""
    r = roster(tmp_path / "roster.csv")
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    assert run(ws, "2024-01", s1, r).exit_code == 0  # type: ignore[attr-defined]
    reader = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
         "print('open', flush=True); time.sleep(60)", str(ws / "twopay.duckdb")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "open"
        s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2))
        done = cli("run", "-w", ws, "--period", "2024-02", "--settlements", s2, "--roster", r)
        assert done.exit_code == 5, done.output
        assert "open in another process" in done.output and "reader" in done.output
        assert f"pid {os.getpid()}" not in done.output
    finally:
        reader.kill()
        reader.wait()


def twopay_exe() -> str:
    exe = shutil.which("twopay", path=str(Path(sys.executable).parent))
    assert exe, "the twopay entry point is installed beside the interpreter"
    return exe


def run_process(
    ws: Path, period: str, s: Path, r: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            twopay_exe(),
            "run",
            "-w",
            str(ws),
            "--period",
            period,
            "--settlements",
            str(s),
            "--roster",
            str(r),
        ],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def comparable_ledger(ws: Path) -> dict[str, list[tuple[object, ...]]]:
    """The ledger's content without the wall-clock times of the runs."""
    out = {}
    for table, order in (
        ("settlements", "batch_id, row_key"),
        ("outcomes", "batch_id, row_batch_id, row_key"),
        ("lines", "line_key"),
        ("payments", "payment_id"),
        ("recoveries", "batch_id, person_key, kind"),
        ("quarantine", "batch_id, source_file, line_number"),
        ("roster_records", "batch_id, record_key"),
        ("eligibility_members", "batch_id, row_batch_id, row_key"),
        ("eligibility_schemes", "batch_id, row_batch_id, row_key, scheme"),
    ):
        out[table] = ledger_rows(ws, table, order)
    out["batches"] = [r[:3] for r in ledger_rows(ws, "batches", "batch_id")]
    return out


def comparable_reports(folder: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(folder.iterdir()):
        if p.name == "summary.json":
            data = json.loads(p.read_text())
            data.pop("started_at"), data.pop("finished_at")
            out[p.name] = json.dumps(data, sort_keys=True).encode()
        elif p.suffix == ".csv":
            out[p.name] = p.read_bytes()
    return out


@pytest.mark.parametrize("stage", ["load", "adjudicate", "commit", "reports"])
def test_sigkill_at_any_stage_then_rerun_equals_an_uninterrupted_run(
    stage: str, tmp_path: Path
) -> None:
    r = roster(tmp_path / "roster.csv")
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2))
    clean = init_workspace(tmp_path / "clean", {"t.toml": SIMPLE_RULE})
    crashed = init_workspace(tmp_path / "crashed", {"t.toml": SIMPLE_RULE})
    for ws_ in (clean, crashed):
        assert run(ws_, "2024-01", s1, r).exit_code == 0
    assert run(clean, "2024-02", s2, r).exit_code == 0

    killed = run_process(crashed, "2024-02", s2, r, {"TWOPAY_FAULT_AT": stage})
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    committed = [b[1] for b in ledger_rows(crashed, "batches", "batch_id")]
    assert committed == (["2024-01", "2024-02"] if stage == "reports" else ["2024-01"])

    again = run_process(crashed, "2024-02", s2, r)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert comparable_ledger(crashed) == comparable_ledger(clean)
    assert comparable_reports(crashed / "reports" / "2024-02") == comparable_reports(
        clean / "reports" / "2024-02"
    )


def stage_rows(ws: Path) -> dict[str, tuple[int, int]]:
    """Per stage table: (rows of committed stages, rows of stages no batch names)."""
    con = duckdb.connect(str(ws / "twopay.duckdb"), read_only=True)
    try:
        return {
            table: con.execute(
                f"SELECT count(*) FILTER (WHERE stage_id IN (SELECT stage_id FROM batches)), "
                f"count(*) FILTER (WHERE stage_id NOT IN (SELECT stage_id FROM batches)) "
                f"FROM {table}"
            ).fetchall()[0]
            for table in STAGED.values()
        }
    finally:
        con.close()


def test_a_killed_run_leaves_rows_no_view_shows_and_the_next_run_deletes_them(
    ws: Path, tmp_path: Path
) -> None:
    """A batch writes its large tables as it goes (ledger.schema.STAGED); until
    its batches row names them they are not in the ledger."""
    r = roster(tmp_path / "roster.csv")
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2))
    assert run(ws, "2024-01", s1, r).exit_code == 0
    before = {view: ledger_rows(ws, view, "ALL") for view in STAGED}
    killed = run_process(ws, "2024-02", s2, r, {"TWOPAY_FAULT_AT": "adjudicate"})
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    orphans = stage_rows(ws)
    # the killed run had written its settlements, outcomes and eligibility
    # checks (its roster is batch 1's, reused)
    for table in ("settlement_rows", "outcome_rows", "eligibility_member_rows"):
        assert orphans[table][1] > 0, table
    assert {view: ledger_rows(ws, view, "ALL") for view in STAGED} == before
    assert run(ws, "2024-02", s2, r).exit_code == 0
    after = stage_rows(ws)
    assert all(uncommitted == 0 for _committed, uncommitted in after.values()), after
    assert after["settlement_rows"][0] == len(month_rows(1)) + len(month_rows(2))


def test_an_unchanged_roster_is_stored_once_for_every_batch_that_reads_it(
    ws: Path, tmp_path: Path
) -> None:
    r = roster(tmp_path / "roster.csv")
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2))
    s2b = write_csv(tmp_path / "s2b.csv", SETTLEMENT_HEADER, month_rows(2)[:-1])
    s3 = write_csv(tmp_path / "s3.csv", SETTLEMENT_HEADER, month_rows(3))
    # the same bytes under another name are the same roster
    again = tmp_path / "roster_2024-02.csv"
    shutil.copy(r, again)
    assert run(ws, "2024-01", s1, r).exit_code == 0
    assert run(ws, "2024-02", s2, again).exit_code == 0
    assert stage_rows(ws)["roster_rows"] == (len(NAMES), 0)
    records = ledger_rows(ws, "roster_records", "batch_id, record_key")
    assert [row[0] for row in records] == [1] * len(NAMES) + [2] * len(NAMES)
    assert [row[1:] for row in records[: len(NAMES)]] == [row[1:] for row in records[len(NAMES) :]]
    # replacing the batch that reused it keeps the records of the batch that read it
    assert run(ws, "2024-02", s2b, again, "--replace").exit_code == 0
    assert stage_rows(ws)["roster_rows"] == (len(NAMES), 0)
    assert len(ledger_rows(ws, "roster_records", "ALL")) == 2 * len(NAMES)
    # a changed roster is read and stored
    new_cards = [
        (f"M{i}", NAMES[i], person_id(i), f"62229999999999{i:02d}", f"U{i % 2}", "在职",
         "2020-01-01", None)
        for i in range(len(NAMES))
    ]  # fmt: skip
    changed = write_csv(tmp_path / "roster3.csv", ROSTER_HEADER, new_cards)
    assert run(ws, "2024-03", s3, changed).exit_code == 0
    assert stage_rows(ws)["roster_rows"] == (2 * len(NAMES), 0)
    cards = ledger_rows(ws, "roster_records", "batch_id, record_key")
    assert {row[6] for row in cards if row[0] == 3} == {
        f"62229999999999{i:02d}" for i in range(len(NAMES))
    }


def test_a_refused_run_leaves_no_stage_rows(ws: Path, tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")
    rows = month_rows(1)
    bad = [(*row[:6], "lots", *row[7:]) for row in rows[:3]]
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, bad + rows[3:])
    assert run(ws, "2024-01", s, r).exit_code == 3
    assert all(n == (0, 0) for n in stage_rows(ws).values())


# The ledger as twopay 0.1 schema version 1 made it: every table a base table.
V1_TABLES = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE batches (
    batch_id INTEGER PRIMARY KEY, period VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL,
    inputs VARCHAR NOT NULL, rules VARCHAR NOT NULL, twopay_version VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP NOT NULL, summary VARCHAR NOT NULL
);
CREATE TABLE settlements (
    batch_id INTEGER, row_key BIGINT, source_file VARCHAR, line_number BIGINT, raw VARCHAR,
    settlement_id VARCHAR, id_number VARCHAR, name VARCHAR, visit_type VARCHAR,
    service_date DATE, admission_date DATE, hospital_code VARCHAR,
    total_cost DECIMAL(18,2), self_pay_1 DECIMAL(18,2), self_pay_2 DECIMAL(18,2),
    out_of_pocket DECIMAL(18,2), reverses VARCHAR, content_hash UBIGINT
);
CREATE TABLE roster_records (
    batch_id INTEGER, record_key BIGINT, member_id VARCHAR, name VARCHAR, id_number VARCHAR,
    person_key VARCHAR, card_no VARCHAR, unit_code VARCHAR, unit_name VARCHAR,
    category VARCHAR, valid_from DATE, valid_to DATE, bank_account VARCHAR
);
CREATE TABLE outcomes (
    batch_id INTEGER, row_batch_id INTEGER, row_key BIGINT, settlement_id VARCHAR,
    carried BOOLEAN, outcome VARCHAR, code VARCHAR, detail VARCHAR,
    person_key VARCHAR, member_id VARCHAR, unit_code VARCHAR, match VARCHAR,
    candidate_member_id VARCHAR, identity VARCHAR, eligibility VARCHAR
);
CREATE TABLE eligibility_members (
    batch_id INTEGER, row_batch_id INTEGER, row_key BIGINT, member_id VARCHAR,
    unit_code VARCHAR, category VARCHAR, valid_from DATE, valid_to DATE, run_start DATE,
    dues_paid_through DATE
);
CREATE TABLE eligibility_schemes (
    batch_id INTEGER, row_batch_id INTEGER, row_key BIGINT, scheme VARCHAR, version VARCHAR,
    stage INTEGER, why_not VARCHAR
);
CREATE TABLE lines (
    batch_id INTEGER, line_key BIGINT, row_batch_id INTEGER, row_key BIGINT,
    settlement_id VARCHAR, scheme VARCHAR, rule_version VARCHAR, kind VARCHAR,
    reverses_line BIGINT, person_key VARCHAR, member_id VARCHAR, unit_code VARCHAR,
    plan_year INTEGER, visit_type VARCHAR, service_date DATE, match VARCHAR,
    base_amount DECIMAL(18,2), deductible_applied DECIMAL(18,2), computed DECIMAL(18,2),
    ratio_part DECIMAL(18,2), allowance DECIMAL(18,2), allowance_days INTEGER,
    payout DECIMAL(18,2), status VARCHAR, note VARCHAR,
    base_ytd_before DECIMAL(18,2), base_ytd_after DECIMAL(18,2),
    paid_type_before DECIMAL(18,2), paid_type_after DECIMAL(18,2),
    paid_total_before DECIMAL(18,2), paid_total_after DECIMAL(18,2),
    days_before INTEGER, days_after INTEGER
);
"""


def test_a_version_1_ledger_is_upgraded_in_place(ws: Path) -> None:
    """Its rows are kept, read through the views under the same names."""
    (ws / "twopay.duckdb").unlink(missing_ok=True)
    con = duckdb.connect(str(ws / "twopay.duckdb"))
    con.execute(V1_TABLES)
    con.execute(
        "INSERT INTO batches VALUES (1, '2024-01', 'f', '[]', '[]', '0.1.0', "
        "'2024-02-01 08:00', '2024-02-01 08:01', '{}')"
    )
    con.execute(
        "INSERT INTO settlements (batch_id, row_key, settlement_id, id_number) "
        "VALUES (1, 2, 'S1', '110105199001011234')"
    )
    con.execute(
        "INSERT INTO lines (batch_id, line_key, row_batch_id, row_key, settlement_id, payout) "
        "VALUES (1, 1, 1, 2, 'S1', 12.34)"
    )
    con.close()
    con = open_workspace(ws).connect()
    try:
        assert con.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
        assert con.execute("SELECT batch_id, stage_id FROM batches").fetchall() == [(1, 1)]
        assert con.execute(
            "SELECT batch_id, row_key, settlement_id, id_number FROM settlements"
        ).fetchall() == [(1, 2, "S1", "110105199001011234")]
        assert con.execute("SELECT batch_id, line_key, payout FROM lines").fetchall() == [
            (1, 1, Decimal("12.34"))
        ]
        # the old tables are gone; their names are the views now
        kinds = dict(
            con.execute(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_name IN ('settlements', 'lines', 'line_rows')"
            ).fetchall()
        )
        assert kinds == {"settlements": "VIEW", "lines": "VIEW", "line_rows": "BASE TABLE"}
    finally:
        con.close()


def test_a_second_run_while_one_is_running_gets_exit_5(ws: Path, tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    first = run_process(
        ws, "2024-01", s, r, {"TWOPAY_FAULT_AT": "sleep:adjudicate", "TWOPAY_FAULT_SLEEP": "8"}
    )
    deadline = time.time() + 30
    while not (ws / "twopay.lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run_process(ws, "2024-01", s, r)
    _, err2 = second.communicate(timeout=60)
    _, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert second.returncode == 5
    assert f"pid {first.pid}" in err2
    assert "Traceback" not in err2


def test_a_year_month_by_month_equals_the_year_in_one_batch(tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")
    monthly = init_workspace(tmp_path / "monthly", {"t.toml": SIMPLE_RULE})
    yearly = init_workspace(tmp_path / "yearly", {"t.toml": SIMPLE_RULE})
    all_rows = []
    for m in range(1, 13):
        rows = month_rows(m)
        all_rows += rows
        s = write_csv(tmp_path / f"m{m}.csv", SETTLEMENT_HEADER, rows)
        result = run(monthly, f"2024-{m:02d}", s, r)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["summary"]["balance"]["balanced"] is True
    whole = write_csv(tmp_path / "year.csv", SETTLEMENT_HEADER, all_rows)
    assert run(yearly, "2024-12", whole, r).exit_code == 0

    def payouts(ws: Path) -> dict[str, tuple[object, ...]]:
        return {
            row[0]: row[1:]
            for row in ledger_rows(
                ws,
                "(SELECT settlement_id, sum(payout), sum(ratio_part), sum(allowance), "
                "string_agg(note, '|') FROM lines GROUP BY settlement_id)",
                "settlement_id",
            )
        }

    month_by_month = payouts(monthly)
    assert month_by_month == payouts(yearly)
    # the caps really bind somewhere in this year, so the test means something
    notes = " ".join(str(v[3]) for v in month_by_month.values())
    assert "cap_reached" in notes and "below_deductible" in notes


def test_too_many_unreadable_rows_commit_nothing_and_exit_3(ws: Path, tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")
    rows = month_rows(1)
    bad = [(*row[:6], "lots", *row[7:]) for row in rows[:3]]
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, bad + rows[3:])
    result = cli("run", "-w", ws, "--period", "2024-01", "--settlements", s, "--roster", r)
    assert result.exit_code == 3
    assert "nothing was committed" in result.output
    quarantine = (ws / "reports" / "2024-01" / "quarantine.csv").read_text()
    assert quarantine.count("bad_amount") == 3
    assert ledger_rows(ws, "batches", "batch_id") == []
    ok = cli(
        "run",
        "-w",
        ws,
        "--period",
        "2024-01",
        "--settlements",
        s,
        "--roster",
        r,
        "--max-quarantine-rate",
        "0.2",
    )
    assert ok.exit_code == 0


def test_duplicates_reversals_and_late_arrivals_across_batches(ws: Path, tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")
    p0 = person_id(0)
    jan = [
        (
            "A1",
            p0,
            "张伟",
            "门诊",
            "2024-01-10",
            None,
            "3000",
            "2500",
            None,
        ),  # pays (2500-1000)*0.5 = 750
        ("A2", p0, "张伟", "门诊", "2024-01-20", None, "500", "400", None),  # pays 200
    ]
    feb = [
        ("A1", p0, "张伟", "门诊", "2024-01-10", None, "3000", "2500", None),  # seen in January
        (
            "B1",
            p0,
            "张伟",
            "门诊",
            "2024-01-15",
            None,
            "300",
            "200",
            None,
        ),  # late arrival: after A2
        ("R1", p0, "张伟", "门诊", "2024-02-01", None, "-3000", "-2500", "A1"),  # claws back 750
        ("B2", p0, "张伟", "门诊", "2024-02-02", None, "100", "100", None),
        ("R9", p0, "张伟", "门诊", "2024-02-03", None, "-1", "-1", "NOPE"),
        ("D1", p0, "张伟", "门诊", "2024-02-04", None, "50", "50", None),
        ("D2", p0, "张伟", "门诊", "2024-02-05", None, "-50", "-50", "D1"),
        ("D3", p0, "张伟", "门诊", "2024-02-06", None, "-50", "-50", "D1"),  # reversed twice
    ]
    assert (
        run(ws, "2024-01", write_csv(tmp_path / "j.csv", SETTLEMENT_HEADER, jan), r).exit_code == 0
    )
    result = run(ws, "2024-02", write_csv(tmp_path / "f.csv", SETTLEMENT_HEADER, feb), r)
    assert result.exit_code == 0, result.output
    lines = {
        row[0]: row[1:]
        for row in ledger_rows(
            ws,
            "(SELECT settlement_id, payout, status, base_ytd_before FROM lines WHERE batch_id = 2)",
            "settlement_id",
        )
    }
    # B1 (Jan 15) comes after January's lines: base before = 2500 + 400
    assert lines["B1"] == (Decimal("100.00"), "paid", Decimal("2900.00"))
    assert lines["R1"][:2] == (Decimal("-750.00"), "clawback")
    # after the clawback the base is 3100 - 2500 = 600: B2 is below the deductible
    assert lines["B2"] == (Decimal("0.00"), "zero", Decimal("600.00"))
    rejections = (ws / "reports" / "2024-02" / "rejections.csv").read_text()
    assert "A1," in rejections and "duplicate_settlement" in rejections
    assert "R9," in rejections and "reversal_unmatched" in rejections
    assert [
        line.split(",")[4] for line in rejections.splitlines() if line[:3] in ("D1,", "D2,", "D3,")
    ] == ["reversed"] * 3
    recoveries = (ws / "reports" / "2024-02" / "recoveries.csv").read_text().splitlines()
    assert recoveries[1].startswith("M0,650.00,")  # 100 - 750
    # March: the 650 owed is offset against the next positive payment
    mar = [("C1", p0, "张伟", "住院", "2024-03-05", "2024-03-01", "5000", "2500", None)]
    result = run(ws, "2024-03", write_csv(tmp_path / "m.csv", SETTLEMENT_HEADER, mar), r)
    payouts = (ws / "reports" / "2024-03" / "payouts.csv").read_text().splitlines()
    # inpatient: (2500-500): 2000*0.5 + 0 = 1000 ratio part, allowance 4 days * 20 = 80
    assert payouts[1].split(",")[5] == f"{Decimal(1080) - Decimal(650):.2f}"


def test_a_paid_settlement_is_clawed_back_once_however_often_it_is_reversed(
    ws: Path, tmp_path: Path
) -> None:
    """Spec 4.1: a reversal claws back what the original's lines paid. A second
    reversal of the same original, in a later batch or beside the first in one
    batch, finds nothing left to claw back: it is rejected `reversed`, and the
    accumulators never go below what the year really paid. A reversal of a
    reversal has nothing to claw back either."""
    r = roster(tmp_path / "roster.csv")
    p0 = person_id(0)
    month = {
        # A1 pays (2500 - 1000) * 0.5 = 750, A9 then 100 * 0.5 = 50
        "2024-01": [
            ("A1", p0, "张伟", "门诊", "2024-01-10", None, "3000", "2500", None),
            ("A9", p0, "张伟", "门诊", "2024-01-11", None, "100", "100", None),
            # an identical copy: rejected duplicate_settlement; A1 is still the paid one
            ("A1", p0, "张伟", "门诊", "2024-01-10", None, "3000", "2500", None),
        ],
        "2024-02": [("R1", p0, "张伟", "门诊", "2024-02-01", None, "-3000", "-2500", "A1")],
        "2024-03": [
            ("R2", p0, "张伟", "门诊", "2024-03-01", None, "-3000", "-2500", "A1"),  # again
            ("RR", p0, "张伟", "门诊", "2024-03-02", None, "0", "0", "R1"),  # of R1
        ],
        # two reversals of A9 in one batch: the first in the file claws back
        "2024-04": [
            ("R4", p0, "张伟", "门诊", "2024-04-01", None, "-100", "-100", "A9"),
            ("R3", p0, "张伟", "门诊", "2024-04-01", None, "-100", "-100", "A9"),
            ("B1", p0, "张伟", "门诊", "2024-04-02", None, "3000", "2500", None),
        ],
    }
    for period, rows in month.items():
        done = run(ws, period, write_csv(tmp_path / f"{period}.csv", SETTLEMENT_HEADER, rows), r)
        assert done.exit_code == 0, done.output
    lines = ledger_rows(
        ws,
        "(SELECT batch_id, settlement_id, kind, payout, base_ytd_before, paid_type_after "
        "FROM lines)",
        "batch_id, settlement_id",
    )
    assert lines == [
        (1, "A1", "normal", Decimal("750.00"), Decimal("0.00"), Decimal("750.00")),
        (1, "A9", "normal", Decimal("50.00"), Decimal("2500.00"), Decimal("800.00")),
        (2, "R1", "clawback", Decimal("-750.00"), Decimal("2600.00"), Decimal("50.00")),
        # after both clawbacks the year has nothing: B1 starts from zero
        (4, "B1", "normal", Decimal("750.00"), Decimal("0.00"), Decimal("750.00")),
        (4, "R4", "clawback", Decimal("-50.00"), Decimal("100.00"), Decimal("0.00")),
    ]
    rejected = {
        (period, row[0]): (row[4], row[6])
        for period in ("2024-03", "2024-04")
        for row in csv.reader(
            (ws / "reports" / period / "rejections.csv")
            .read_text(encoding="utf-8")
            .splitlines()[1:]
        )
    }
    assert rejected == {
        ("2024-03", "R2"): ("reversed", "settlement A1 was already reversed by R1 in batch 2"),
        ("2024-03", "RR"): ("reversed", "R1 is itself a reversal; it cannot be reversed"),
        ("2024-04", "R3"): ("reversed", "settlement A9 is reversed by R4 in this batch"),
    }


def test_a_held_row_paid_after_review_is_clawed_back_by_its_reversal(
    ws: Path, tmp_path: Path
) -> None:
    """A held row adjudicated in a later run (an override accepted it) is an
    original adjudicated in an earlier batch: its reversal claws it back."""
    r = roster(tmp_path / "roster.csv")
    p0 = person_id(0)
    jan = [("H1", p0, "张强", "门诊", "2024-01-10", None, "3000", "2500", None)]  # name typo
    done = run(ws, "2024-01", write_csv(tmp_path / "j.csv", SETTLEMENT_HEADER, jan), r)
    assert done.exit_code == 0, done.output
    assert "probable_name_typo" in (ws / "reports" / "2024-01" / "review.csv").read_text()
    (ws / "overrides.csv").write_text(
        "settlement_id,decision,member_id,note,decided_by\nH1,accept,M0,checked,王\n",
        encoding="utf-8",
    )
    feb = [("X1", p0, "张伟", "门诊", "2024-02-01", None, "10", "10", None)]
    done = run(ws, "2024-02", write_csv(tmp_path / "f.csv", SETTLEMENT_HEADER, feb), r)
    assert done.exit_code == 0, done.output
    mar = [("R1", p0, "张伟", "门诊", "2024-03-01", None, "-3000", "-2500", "H1")]
    done = run(ws, "2024-03", write_csv(tmp_path / "m.csv", SETTLEMENT_HEADER, mar), r)
    assert done.exit_code == 0, done.output
    lines = ledger_rows(
        ws, "(SELECT batch_id, settlement_id, kind, payout FROM lines)", "batch_id, settlement_id"
    )
    assert lines == [
        (2, "H1", "normal", Decimal("750.00")),
        (2, "X1", "normal", Decimal("5.00")),
        (3, "R1", "clawback", Decimal("-750.00")),
    ]
    assert "R1," not in (ws / "reports" / "2024-03" / "rejections.csv").read_text()
    recoveries = (ws / "reports" / "2024-03" / "recoveries.csv").read_text().splitlines()
    assert recoveries[1].startswith("M0,750.00,")
    # sent again: a duplicate, told how it stands now
    apr = [("H1", p0, "张强", "门诊", "2024-01-10", None, "3000", "2500", None)]
    done = run(ws, "2024-04", write_csv(tmp_path / "a.csv", SETTLEMENT_HEADER, apr), r)
    assert done.exit_code == 0, done.output
    with (ws / "reports" / "2024-04" / "rejections.csv").open(encoding="utf-8") as fh:
        (row,) = csv.DictReader(fh)
    assert (row["reason_code"], row["detail"]) == (
        "duplicate_settlement",
        "already processed in batch 1 (held, then adjudicated in batch 2)",
    )


def test_a_run_replaces_its_own_report_files_and_nothing_else(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec 6: a re-run with the same inputs "changes nothing and rewrites the
    same reports". The period's notices and an analyst's own files in the
    folder survive it; a refused --replace (exit 3) leaves the committed set
    whole and puts what it could not read beside it; '--out .' works."""
    r = roster(tmp_path / "roster.csv")
    # a name that does not match the roster: a notice for unit U1's officers
    typo = ("N1", person_id(1), "王五", "门诊", "2024-01-09", None, "100", "50", None)
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, [*month_rows(1), typo])
    assert run(ws, "2024-01", s, r).exit_code == 0
    reports = ws / "reports" / "2024-01"
    assert cli("notices", "-w", ws, "--period", "2024-01").exit_code == 0
    notices = sorted(p.name for p in (reports / "notices").iterdir())
    assert notices
    (reports / "my-notes.txt").write_text("checked by 王\n", encoding="utf-8")
    committed = {p.name: p.read_bytes() for p in reports.glob("*.csv")}
    assert json.loads(run(ws, "2024-01", s, r).output)["noop"] is True
    assert sorted(p.name for p in (reports / "notices").iterdir()) == notices
    assert (reports / "my-notes.txt").read_text(encoding="utf-8") == "checked by 王\n"
    assert reports.stat().st_mode & 0o777 == 0o777 & ~_umask()

    rows = month_rows(1)
    bad = [(*row[:6], "lots", *row[7:]) for row in rows[:5]]
    s_bad = write_csv(tmp_path / "s1bad.csv", SETTLEMENT_HEADER, bad + rows[5:])
    refused = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", s_bad, "--roster", r, "--replace"
    )
    assert refused.exit_code == 3
    assert "quarantine-refused.csv" in refused.output
    assert {p.name: p.read_bytes() for p in reports.glob("*.csv") if p.name in committed} == (
        committed
    )
    assert (reports / "quarantine-refused.csv").read_text().count("bad_amount") == 5
    # the next committed set replaces what the refused run left
    assert run(ws, "2024-01", s, r, "--replace").exit_code == 0
    assert not (reports / "quarantine-refused.csv").exists()
    assert (reports / "my-notes.txt").exists()

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2))
    done = run(ws, "2024-02", s2, r, "--out", ".")
    assert done.exit_code == 0, done.output
    assert (here / "payouts.csv").exists() and (here / "summary.json").exists()
    # the workspace itself as --out: its files stay where they are, in the
    # same folder (the ledger is open while the reports go into place)
    monkeypatch.chdir(ws)
    inode, hidden = ws.stat().st_ino, set(ws.glob(".*"))
    s3 = write_csv(tmp_path / "s3.csv", SETTLEMENT_HEADER, month_rows(3))
    done = run(ws, "2024-03", s3, r, "--out", ".")
    assert done.exit_code == 0, done.output
    assert ws.stat().st_ino == inode and Path(".").resolve() == ws.resolve()
    assert (ws / "twopay.duckdb").is_file() and (ws / "payouts.csv").is_file()
    assert set(ws.glob(".*")) == hidden  # no report temp folder left behind


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_copy_in_another_settlements_file_names_that_file(ws: Path, tmp_path: Path) -> None:
    r = roster(tmp_path / "roster.csv")

    def details(period: str, *files: Path) -> list[str]:
        given = [arg for f in files for arg in ("--settlements", f)]
        done = cli("run", "-w", ws, "--period", period, *given, "--roster", r)
        assert done.exit_code == 0, done.output
        with (ws / "reports" / period / "rejections.csv").open(encoding="utf-8") as fh:
            return [row["detail"] for row in csv.DictReader(fh)]

    first = month_rows(1)
    a = write_csv(tmp_path / "part-a.csv", SETTLEMENT_HEADER, first)
    b = write_csv(tmp_path / "part-b.csv", SETTLEMENT_HEADER, [first[2], first[2]])
    assert details("2024-01", a, b) == ["identical copy of line 4 of part-a.csv"] * 2
    # two files of one name, from two folders: the file's place says which
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a2 = write_csv(tmp_path / "x" / "part.csv", SETTLEMENT_HEADER, month_rows(2)[:3])
    b2 = write_csv(tmp_path / "y" / "part.csv", SETTLEMENT_HEADER, [month_rows(2)[1]])
    assert details("2024-02", a2, b2) == [
        "identical copy of line 3 of part.csv (--settlements file 1)"
    ]


def test_a_clawback_in_a_later_year_reduces_the_original_year(ws: Path, tmp_path: Path) -> None:
    """Spec 4.1: 'The clawback reduces the plan year of the original, even
    when the reversal falls in a later year' -- through a real run, not only
    in the engine: the new year's visit starts from nothing."""
    r = roster(tmp_path / "roster.csv")
    p0 = person_id(0)
    dec = [("A1", p0, "张伟", "门诊", "2024-12-10", None, "3000", "2500", None)]
    jan = [
        ("R1", p0, "张伟", "门诊", "2025-01-05", None, "-3000", "-2500", "A1"),
        ("B1", p0, "张伟", "门诊", "2025-01-10", None, "3000", "2500", None),
    ]
    assert (
        run(ws, "2024-12", write_csv(tmp_path / "d.csv", SETTLEMENT_HEADER, dec), r).exit_code == 0
    )  # type: ignore[attr-defined]
    assert (
        run(ws, "2025-01", write_csv(tmp_path / "j.csv", SETTLEMENT_HEADER, jan), r).exit_code == 0
    )  # type: ignore[attr-defined]
    got = ledger_rows(
        ws,
        "(SELECT settlement_id, plan_year, payout, base_ytd_before FROM lines)",
        "settlement_id",
    )
    assert got == [
        ("A1", 2024, Decimal("750.00"), Decimal("0.00")),
        ("B1", 2025, Decimal("750.00"), Decimal("0.00")),
        ("R1", 2024, Decimal("-750.00"), Decimal("2500.00")),
    ]


def test_line_keys_follow_the_order_lines_are_taken_in(ws: Path, tmp_path: Path) -> None:
    """Spec 4.1 takes a batch's lines by (service_date, settlement_id); the
    ledger's line_key follows that order (why's year-to-date reads the latest
    line by it), whatever the settlement_ids sort as."""
    r = roster(tmp_path / "roster.csv")
    p0 = person_id(0)
    rows = [
        ("S2", p0, "张伟", "门诊", "2024-01-05", None, "3000", "2500", None),
        ("S1", p0, "张伟", "门诊", "2024-01-20", None, "500", "400", None),
    ]
    assert (
        run(ws, "2024-01", write_csv(tmp_path / "s.csv", SETTLEMENT_HEADER, rows), r).exit_code == 0
    )  # type: ignore[attr-defined]
    keyed = ledger_rows(ws, "(SELECT settlement_id, line_key FROM lines)", "line_key")
    assert [sid for sid, _key in keyed] == ["S2", "S1"]
    trace = json.loads(cli("why", "-w", ws, p0, "--json").stdout)
    (year,) = trace["year_to_date"]
    assert (year["paid_total"], year["by_visit_type"][0]["base_ytd"]) == ("950.00", "2900.00")


def test_a_header_alias_added_then_replace_redoes_the_batch(ws: Path, tmp_path: Path) -> None:
    """The export named its admission date 入院时间, which twopay did not know:
    no allowance. Adding the alias to twopay.toml and running with --replace
    printed "already committed: no change" and kept the unpaid allowance (the
    fingerprint held only the files' hashes and the rules)."""
    r = roster(tmp_path / "roster.csv")
    header = tuple("入院时间" if c == "admission_date" else c for c in SETTLEMENT_HEADER)
    rows = [row for row in month_rows(1) if row[3] == "住院"][:1]
    s = write_csv(tmp_path / "s1.csv", header, rows)
    assert run(ws, "2024-01", s, r).exit_code == 0

    def allowance() -> str:
        with (ws / "reports" / "2024-01" / "payout_lines.csv").open(encoding="utf-8") as fh:
            (line,) = list(csv.DictReader(fh))
        return line["allowance"]

    assert allowance() == "0.00"
    config = ws / "twopay.toml"
    config.write_text(
        config.read_text("utf-8").replace("[aliases]", '[aliases]\nadmission_date = ["入院时间"]'),
        "utf-8",
    )
    conflict = run(ws, "2024-01", s, r)
    assert conflict.exit_code == 4  # type: ignore[attr-defined]
    assert "the reading settings" in conflict.output  # type: ignore[attr-defined]
    redone = run(ws, "2024-01", s, r, "--replace")
    assert redone.exit_code == 0, redone.output  # type: ignore[attr-defined]
    assert json.loads(redone.output)["noop"] is False  # type: ignore[attr-defined]
    assert allowance() != "0.00"


def test_a_decided_review_does_not_lock_earlier_periods(ws: Path, tmp_path: Path) -> None:
    """Deciding a review in overrides.csv and running the next month is the
    workflow; afterwards the re-run of January with its very files was exit
    4 (other inputs), and --replace refused (not the latest): its reports
    could never be rewritten. They are, as committed."""
    r = roster(tmp_path / "roster.csv")
    s1 = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    s2 = write_csv(tmp_path / "s2.csv", SETTLEMENT_HEADER, month_rows(2))
    assert run(ws, "2024-01", s1, r).exit_code == 0
    reports = ws / "reports" / "2024-01"
    before = {p.name: p.read_bytes() for p in reports.iterdir() if p.name != "summary.json"}
    (ws / "overrides.csv").write_text(
        "settlement_id,decision,member_id,note,decided_by\nS2024010,reject,,not ours,王\n",
        "utf-8",
    )
    assert run(ws, "2024-02", s2, r).exit_code == 0
    again = run(ws, "2024-01", s1, r)
    assert again.exit_code == 0, again.output  # type: ignore[attr-defined]
    assert json.loads(again.output)["noop"] is True  # type: ignore[attr-defined]
    after = {p.name: p.read_bytes() for p in reports.iterdir() if p.name != "summary.json"}
    assert after == before
    # the latest batch, though, is redone only on --replace
    (ws / "overrides.csv").write_text("settlement_id,decision,member_id,note,decided_by\n", "utf-8")
    conflict = run(ws, "2024-02", s2, r)
    assert conflict.exit_code == 4 and "(overrides differ)" in conflict.output  # type: ignore[attr-defined]


def test_ctrl_c_after_the_commit_says_the_batch_is_in(ws: Path, tmp_path: Path) -> None:
    """Ctrl-C while the reports were written said "nothing was committed",
    though the batch was in the ledger: the analyst who then fixed the
    inputs and ran again got exit 4. The message says it is committed, and
    the same command writes the reports."""
    import signal

    r = roster(tmp_path / "roster.csv")
    s = write_csv(tmp_path / "s1.csv", SETTLEMENT_HEADER, month_rows(1))
    proc = run_process(
        ws, "2024-01", s, r, {"TWOPAY_FAULT_AT": "sleep:reports", "TWOPAY_FAULT_SLEEP": "20"}
    )
    deadline = time.time() + 60
    while not list((ws / "reports").glob(".twopay-*/report.xlsx")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "the batch is committed" in err and "Traceback" not in err
    again = run(ws, "2024-01", s, r)
    assert again.exit_code == 0  # type: ignore[attr-defined]
    assert json.loads(again.output)["noop"] is True  # type: ignore[attr-defined]
    assert (ws / "reports" / "2024-01" / "payouts.csv").is_file()


def test_a_reversal_of_an_original_quarantined_earlier_says_it_could_not_be_read(
    ws: Path, tmp_path: Path
) -> None:
    """reversal_unmatched, but the detail said "no settlement A1 in this or
    an earlier batch" of a row that is in batch 1's quarantine.csv."""
    r = roster(tmp_path / "r.csv")
    p0 = person_id(0)
    jan = [
        ("A1", p0, "张伟", "门诊", "2024-01-3x", None, "3000", "2500", None),
        ("A2", p0, "张伟", "门诊", "2024-01-05", None, "3000", "2500", None),
    ]
    feb = [
        ("R1", p0, "张伟", "门诊", "2024-02-05", None, "-3000", "-2500", "A1"),
        ("R2", p0, "张伟", "门诊", "2024-02-05", None, "-3000", "-2500", "A9"),
    ]
    args = ("--max-quarantine-rate", "1")
    done = run(ws, "2024-01", write_csv(tmp_path / "j.csv", SETTLEMENT_HEADER, jan), r, *args)
    assert done.exit_code == 0, done.output
    done = run(ws, "2024-02", write_csv(tmp_path / "f.csv", SETTLEMENT_HEADER, feb), r)
    assert done.exit_code == 0, done.output
    with (ws / "reports" / "2024-02" / "rejections.csv").open(encoding="utf-8") as fh:
        details = {
            row["settlement_id"]: (row["reason_code"], row["detail"]) for row in csv.DictReader(fh)
        }
    assert details == {
        "R1": ("reversal_unmatched", "the original A1 could not be read (quarantined)"),
        "R2": ("reversal_unmatched", "no settlement A9 in this or an earlier batch"),
    }
