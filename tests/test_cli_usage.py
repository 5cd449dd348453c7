"""What the CLI says to an analyst who asks it something, or gets something
wrong (spec 8): one clear sentence naming the option, file or row, exit 2,
no traceback, and nothing committed."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from helpers import ROSTER_HEADER, SETTLEMENT_HEADER, cli, init_workspace, person_id, write_csv

SHIPPED_RULES = Path(__file__).resolve().parents[1] / "config" / "rules"


def batches(ws: Path) -> int:
    path = ws / "twopay.duckdb"
    if not path.exists():
        return 0
    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM batches").fetchall()[0][0])
    finally:
        con.close()


def inputs(tmp_path: Path, roster_rows: list[tuple[object, ...]]) -> tuple[Path, Path]:
    roster = write_csv(tmp_path / "roster.csv", ROSTER_HEADER, roster_rows)
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("S1", person_id(1), "张伟", "outpatient", "2024-01-10", None, "3000", "2500", None)],
    )
    return roster, settlements


def one_member(valid_from: str = "2020-01-01", valid_to: str | None = None) -> tuple[object, ...]:
    return ("M1", "张伟", person_id(1), "6222000000000001", "U1", "在职", valid_from, valid_to)


def test_rules_check_shows_every_version_and_when_it_is_in_force(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    shown = cli("rules", "check", "-w", ws, "--json")
    assert shown.exit_code == 0, shown.output
    versions = json.loads(shown.output)["versions"]
    assert {v["file"] for v in versions} == {p.name for p in SHIPPED_RULES.glob("*.toml")}
    for v in versions:
        assert v["scheme"] and v["version"] and v["from"] <= (v["to"] if v["to"] != "open" else "9")
    table = cli("rules", "check", "-w", ws)
    assert table.exit_code == 0 and "valid" in table.output
    assert all(v["scheme"][:8] in table.output for v in versions)
    # at 80 columns (a pipe) the dates the table is for are whole, not "2024-0…"
    assert all(v["from"] in table.output for v in versions)


def test_a_rule_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Windows Notepad saves UTF-8 with a BOM: the file was refused as 'not
    valid TOML (line 1, column 1)', naming no key and no cause."""
    rule = (
        'scheme = "bj-inservice-supplementary"\nversion = "2024-first-half-revised"\n'
        "effective_from = 2024-01-01\neffective_to = 2024-06-30\n"
        "[outpatient]\nratio = 0.5\n[inpatient]\nratio = 0.5\n"
    )
    ws = init_workspace(tmp_path / "ws", {})
    path = ws / "rules" / "bj-inservice-supplementary-2024-first-half-revised.toml"
    path.write_bytes(b"\xef\xbb\xbf" + rule.encode())
    shown = cli("rules", "check", "-w", ws, "--json")
    assert shown.exit_code == 0, shown.output
    # long names fold; the dates the table is for stay whole at 80 columns
    table = cli("rules", "check", "-w", ws)
    assert "2024-01-01" in table.output and "2024-06-30" in table.output, table.output


def test_a_period_that_is_not_a_month_is_exit_2(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    roster, settlements = inputs(tmp_path, [one_member()])
    for period in ("2024-13", "202401", "2024-1"):
        done = cli("run", "-w", ws, "--period", period, "--settlements", settlements,
                   "--roster", roster)  # fmt: skip
        assert done.exit_code == 2, (period, done.output)
        assert "--period" in done.output and "YYYY-MM" in done.output
        assert "Traceback" not in done.output
    assert batches(ws) == 0


def test_a_missing_input_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    roster, _ = inputs(tmp_path, [one_member()])
    missing = tmp_path / "no-such-month.csv"
    done = cli("run", "-w", ws, "--period", "2024-01", "--settlements", missing, "--roster", roster)
    assert done.exit_code == 2
    assert "no-such-month.csv" in done.output and "Traceback" not in done.output
    assert batches(ws) == 0


def test_an_overrides_file_that_is_a_folder_is_exit_2_saying_so(tmp_path: Path) -> None:
    """overrides.csv is not an option: the message named `--overrides`, which
    does not exist, and said "no such file" of a folder that is there."""
    ws = init_workspace(tmp_path / "ws")
    (ws / "overrides.csv").unlink()
    (ws / "overrides.csv").mkdir()
    roster, settlements = inputs(tmp_path, [one_member()])
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements, "--roster", roster
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "overrides.csv: is a folder, not a file (the workspace's review decisions)." in (
        done.output
    )
    assert batches(ws) == 0


def test_an_out_folder_that_cannot_be_made_is_exit_2_before_the_commit(tmp_path: Path) -> None:
    """--out under a file: the run committed its batch and then failed making
    the folder (exit 1, no reports), which read as nothing committed."""
    ws = init_workspace(tmp_path / "ws")
    roster, settlements = inputs(tmp_path, [one_member()])
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, "--out", blocker / "sub",
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert f"{blocker} is a file, so the folder cannot be made" in done.output
    assert batches(ws) == 0
    ok = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements, "--roster", roster
    )
    assert ok.exit_code == 0, ok.output
    notices = cli("notices", "-w", ws, "--period", "2024-01", "--out", blocker / "sub")
    assert notices.exit_code == 2 and "cannot be made" in notices.output


def test_a_workspace_path_with_brackets_gets_its_reports(tmp_path: Path) -> None:
    """`工资[2024]/ws`: polars read the report CSVs back for the workbook as a
    glob pattern, so every run committed and then failed (exit 1, no reports)."""
    ws = init_workspace(tmp_path / "工资[2024]" / "ws")
    roster, settlements = inputs(tmp_path, [one_member()])
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements, "--roster", roster
    )
    assert done.exit_code == 0, done.output
    assert (ws / "reports" / "2024-01" / "report.xlsx").is_file()


def test_a_period_in_full_width_digits_is_exit_2(tmp_path: Path) -> None:
    """`--period ２０２４-01` (a Chinese keyboard) made a period apart from
    2024-01, with payment_ids in full-width digits in the bank file."""
    ws = init_workspace(tmp_path / "ws")
    roster, settlements = inputs(tmp_path, [one_member()])
    done = cli(
        "run", "-w", ws, "--period", "２０２４-01", "--settlements", settlements,
        "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert batches(ws) == 0


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ('memory_limit = "2 gigs"', "memory_limit"),
        ('temp_directory = "twopay.toml/tmp"', "temp_directory"),
    ],
)
def test_bad_duckdb_settings_are_exit_2_naming_the_key(
    tmp_path: Path, setting: str, says: str
) -> None:
    ws = init_workspace(tmp_path / "ws")
    config = ws / "twopay.toml"
    key = setting.split(" =")[0]
    lines = [
        setting if line.startswith(f"{key} =") else line
        for line in config.read_text("utf-8").splitlines()
    ]
    config.write_text("\n".join(lines) + "\n", "utf-8")
    roster, settlements = inputs(tmp_path, [one_member()])
    for args in (
        ["run", "-w", ws, "--period", "2024-01", "--settlements", settlements, "--roster", roster],
        ["query", "-w", ws, "select 1"],
    ):
        done = cli(*args)
        assert done.exit_code == 2, done.output
        assert says in done.output and "internal error" not in done.output


def test_overlapping_records_of_one_person_are_exit_2_naming_both_lines(tmp_path: Path) -> None:
    """Spec 2.1: a person's membership records must not overlap in time."""
    ws = init_workspace(tmp_path / "ws")
    other = ("M2", "王芳", person_id(2), "6222000000000002", "U1", "在职", "2020-01-01", None)
    roster, settlements = inputs(
        tmp_path,
        [
            one_member("2020-01-01", "2023-12-31"),  # line 2
            other,  # line 3
            ("M1b", "张伟", person_id(1), "6222000000000009", "U2", "在职", "2023-06-01", None),
        ],
    )
    done = cli("run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
               "--roster", roster)  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "roster.csv" in done.output and "lines 2 and 4" in done.output
    assert "overlap" in done.output and "Traceback" not in done.output
    assert batches(ws) == 0
    # the same records end to end are one person's membership, and the run goes through
    roster, settlements = inputs(
        tmp_path,
        [
            one_member("2020-01-01", "2023-05-31"),
            other,
            ("M1b", "张伟", person_id(1), "6222000000000009", "U2", "在职", "2023-06-01", None),
        ],
    )
    done = cli("run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
               "--roster", roster)  # fmt: skip
    assert done.exit_code == 0, done.output
    assert batches(ws) == 1


def test_one_member_id_under_two_id_numbers_is_exit_2_naming_both_lines(tmp_path: Path) -> None:
    """Payments go per member_id to the card of its latest record: M1 under
    two ID numbers would pay 张伟's claims to 王芳's card."""
    ws = init_workspace(tmp_path / "ws")
    roster, settlements = inputs(
        tmp_path,
        [
            one_member("2020-01-01", None),  # line 2: M1 张伟
            ("M2", "李娜", person_id(3), "6222000000000003", "U1", "在职", "2020-01-01", None),
            ("M1", "王芳", person_id(2), "6222000000000002", "U1", "在职", "2020-01-01", None),
        ],
    )
    done = cli("run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
               "--roster", roster)  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "roster.csv: lines 2 and 4 give member_id M1 to two different ID numbers" in (
        done.output
    )
    assert "Traceback" not in done.output and batches(ws) == 0


def test_init_and_demo_take_the_workspace_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec 8: every command takes --workspace (default: $TWOPAY_WORKSPACE or
    the current folder). init's own DIR argument wins over the environment."""
    assert cli("init", "--workspace", tmp_path / "by-option").exit_code == 0
    monkeypatch.setenv("TWOPAY_WORKSPACE", str(tmp_path / "by-env"))
    assert cli("init").exit_code == 0
    assert cli("init", tmp_path / "by-arg").exit_code == 0
    for name in ("by-option", "by-env", "by-arg"):
        assert (tmp_path / name / "twopay.toml").is_file(), name
    both = cli("init", tmp_path / "x", "-w", tmp_path / "y")
    assert both.exit_code == 2 and "give one" in both.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    monkeypatch.delenv("TWOPAY_WORKSPACE")
    demo = cli("demo", "--workspace", tmp_path / "demo", "--json")
    assert demo.exit_code == 0, demo.output
    assert (tmp_path / "demo" / "reports" / "2024-02" / "payouts.csv").is_file()


@pytest.mark.parametrize(
    ("aliases", "says"),
    [
        # a typo in the key: the 住院日期 column was kept as an extra, and every
        # inpatient line lost its allowance (note no_admission_date), exit 0
        ('admision_date = ["住院日期"]', "`admision_date` is not a column twopay reads"),
        ('self_pay_2 = ["自付一"]', "already names the column `self_pay_1`"),
        ('name = [" "]', "the alias of `name` is empty"),
    ],
)
def test_a_header_alias_that_cannot_work_is_exit_2_naming_it(
    tmp_path: Path, aliases: str, says: str
) -> None:
    ws = init_workspace(tmp_path / "ws")
    config = ws / "twopay.toml"
    config.write_text(config.read_text("utf-8").replace("[aliases]", f"[aliases]\n{aliases}"))
    done = cli("query", "-w", ws, "select 1")
    assert done.exit_code == 2, done.output
    assert says in done.output and "key `aliases`" in done.output


@pytest.mark.parametrize("saved", ["utf-8-sig", "gbk"])
def test_a_settings_file_saved_by_notepad_is_read_or_named(tmp_path: Path, saved: str) -> None:
    """With a BOM it was "not valid TOML at line 1"; in GBK ("ANSI") an
    internal error (exit 1)."""
    ws = init_workspace(tmp_path / "ws")
    config = ws / "twopay.toml"
    text = config.read_text("utf-8").replace("[aliases]", '[aliases]\nsettlement_id = ["流水号"]')
    config.write_bytes(text.encode(saved))
    done = cli("query", "-w", ws, "select 1")
    if saved == "utf-8-sig":
        assert done.exit_code == 0, done.output
    else:
        assert done.exit_code == 2, done.output
        assert "twopay.toml: byte" in done.output and "save the settings file as UTF-8" in (
            done.output
        )


def test_an_encoding_that_needs_a_byte_order_mark_is_exit_2_naming_the_file(
    tmp_path: Path,
) -> None:
    """`--encoding utf-16` on a file without a BOM was an internal error."""
    ws = init_workspace(tmp_path / "ws")
    roster, settlements = inputs(tmp_path, [one_member()])
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, "--encoding", "utf-16",
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "cannot be read as utf-16" in done.output and "internal error" not in done.output
    assert batches(ws) == 0


def test_a_quarantine_rate_of_nan_is_refused(tmp_path: Path) -> None:
    """FloatRange lets nan through, and no rate is ever above nan: the
    quarantine gate was off."""
    ws = init_workspace(tmp_path / "ws")
    roster, settlements = inputs(tmp_path, [one_member()])
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, "--max-quarantine-rate", "nan",
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "--max-quarantine-rate" in done.output
    assert batches(ws) == 0


def test_init_or_sample_where_nothing_can_be_made_is_exit_2(tmp_path: Path) -> None:
    """A workspace or sample folder under a file, or a sample year before
    1900, was an internal error (exit 1) with the exception's text."""
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    for args in (
        ("init", afile / "ws"),
        ("sample", "--out", afile / "s", "--members", 10, "--settlements", 10),
        ("sample", "--out", tmp_path / "s", "--year", 1),
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "internal error" not in result.output and "Traceback" not in result.output
