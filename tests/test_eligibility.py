"""Per-scheme eligibility (spec 5) with two schemes, one of which requires an
enrollment: each scheme's stage and reason land in the ledger under that
scheme, a row is adjudicated under every scheme that passes, and a row no
scheme passes carries the furthest stage and every scheme's reason in scheme
order. Checked against values worked out by hand from the rules below."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from helpers import ROSTER_HEADER, SETTLEMENT_HEADER, cli, init_workspace, person_id, write_csv

A_PLAN = """
scheme = "a-plan"
title = "a: everyone in service, no enrollment"
version = "a1"
effective_from = 2020-01-01
categories = ["in_service"]
base = "self_pay_1"

[outpatient]
deductible = 0
ratio = 0.5

[inpatient]
deductible = 0
ratio = 0.5
"""

B_PLAN = """
scheme = "b-plan"
title = "b: hospital only, enrolled members, 30 days' wait"
version = "b1"
effective_from = 2020-01-01
enrollment = "required"
categories = ["in_service", "retired"]
base = "self_pay_1"
waiting_days = 30

[inpatient]
deductible = 0
ratio = 0.2
"""

# person n: (category, visit type, enrolled in b-plan: by ID number / member_id, from)
PEOPLE = {
    1: ("in_service", "住院", "id", "2023-06-01"),  # passes both
    2: ("in_service", "住院", None, None),  # a only: no enrollment for b
    3: ("retired", "住院", "id", "2024-01-01"),  # a: category; b: waiting to 2024-01-30
    4: ("in_service", "门诊", "id", "2023-06-01"),  # a only: b does not cover outpatient
    5: ("retired", "住院", "member", "2023-06-01"),  # b only, enrolled by member_id
}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("elig")
    ws = init_workspace(root / "ws", {"a.toml": A_PLAN, "b.toml": B_PLAN})
    roster = write_csv(
        root / "roster.csv",
        ROSTER_HEADER,
        [
            (f"M{n}", f"会员{n}", person_id(n), f"62220{n:05d}", "U1", cat, "2023-01-01", None)
            for n, (cat, *_rest) in PEOPLE.items()
        ],
    )
    settlements = write_csv(
        root / "settlements.csv",
        SETTLEMENT_HEADER,
        [
            (f"S{n}", person_id(n), f"会员{n}", visit, "2024-01-10",
             "2024-01-08" if visit == "住院" else None, "1100.00", "1000.00", None)
            for n, (_cat, visit, *_rest) in PEOPLE.items()
        ],
    )  # fmt: skip
    enrollments = write_csv(
        root / "enrollments.csv",
        ("id_number", "member_id", "scheme", "valid_from", "valid_to"),
        [
            (person_id(n) if by == "id" else None, f"M{n}" if by == "member" else None,
             "b-plan", start, "2024-12-31")
            for n, (_c, _v, by, start) in PEOPLE.items() if by
        ],
    )  # fmt: skip
    result = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, "--enrollments", enrollments,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return ws / "twopay.duckdb"


def rows(ledger: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(ledger), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_each_scheme_keeps_its_own_stage_and_reason(ledger: Path) -> None:
    got = rows(
        ledger,
        "SELECT s.settlement_id, e.scheme, e.version, e.stage, e.why_not "
        "FROM eligibility_schemes e JOIN settlements s USING (row_key) ORDER BY 1, 2",
    )
    assert got == [
        ("S1", "a-plan", "a1", 4, None),
        ("S1", "b-plan", "b1", 4, None),
        ("S2", "a-plan", "a1", 4, None),
        ("S2", "b-plan", "b1", 1, "b-plan: no enrollment in force on 2024-01-10"),
        ("S3", "a-plan", "a1", 1, "a-plan: category retired not covered"),
        ("S3", "b-plan", "b1", 2, "b-plan: waiting period of 30 days from 2024-01-01 runs to 2024-01-30"),
        ("S4", "a-plan", "a1", 4, None),
        ("S4", "b-plan", "b1", 1, "b-plan: outpatient not covered"),
        ("S5", "a-plan", "a1", 1, "a-plan: category retired not covered"),
        ("S5", "b-plan", "b1", 4, None),
    ]  # fmt: skip


def test_a_row_is_paid_under_every_scheme_it_passes(ledger: Path) -> None:
    got = rows(
        ledger,
        "SELECT settlement_id, scheme, rule_version, payout FROM lines ORDER BY 1, 2",
    )
    assert [(s, scheme, v, str(p)) for s, scheme, v, p in got] == [
        ("S1", "a-plan", "a1", "500.00"),
        ("S1", "b-plan", "b1", "200.00"),
        ("S2", "a-plan", "a1", "500.00"),
        ("S4", "a-plan", "a1", "500.00"),
        ("S5", "b-plan", "b1", "200.00"),
    ]


def test_no_scheme_passing_gives_the_furthest_stage_and_every_reason(ledger: Path) -> None:
    got = rows(
        ledger,
        "SELECT settlement_id, outcome, code, detail FROM outcomes ORDER BY settlement_id",
    )
    assert got == [
        ("S1", "adjudicated", None, None),
        ("S2", "adjudicated", None, None),
        ("S3", "rejected", "waiting_period",
         "a-plan: category retired not covered; "
         "b-plan: waiting period of 30 days from 2024-01-01 runs to 2024-01-30"),
        ("S4", "adjudicated", None, None),
        ("S5", "adjudicated", None, None),
    ]  # fmt: skip


def test_an_enrollment_must_say_whose_it_is_and_run_forwards(tmp_path: Path) -> None:
    """Spec 2.3: an enrollment names its member by id_number or member_id. A
    file with neither column is an input-schema error (exit 2) before
    anything is written; a row with both empty, or that ends before it
    starts, is quarantined with its line, not silently ignored."""
    ws = init_workspace(tmp_path / "ws", {"a.toml": A_PLAN, "b.toml": B_PLAN})
    roster = write_csv(
        tmp_path / "roster.csv",
        ROSTER_HEADER,
        [("M1", "会员1", person_id(1), "6222000001", "U1", "in_service", "2023-01-01", None)],
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("S1", person_id(1), "会员1", "住院", "2024-01-10", "2024-01-08", "1100", "1000", None)],
    )

    def run(enrollments: Path, period: str) -> object:
        return cli(
            "run", "-w", ws, "--period", period, "--settlements", settlements,
            "--roster", roster, "--enrollments", enrollments,
        )  # fmt: skip

    nobody = write_csv(
        tmp_path / "e0.csv",
        ("scheme", "valid_from", "valid_to"),
        [("b-plan", "2023-01-01", "2024-12-31")],
    )
    refused = run(nobody, "2024-01")
    assert refused.exit_code == 2  # type: ignore[attr-defined]
    message = refused.output  # type: ignore[attr-defined]
    assert "e0.csv" in message and "'id_number'" in message and "'member_id'" in message
    assert not (ws / "reports" / "2024-01").exists()

    odd = write_csv(
        tmp_path / "e1.csv",
        ("id_number", "member_id", "scheme", "valid_from", "valid_to"),
        [
            (None, None, "b-plan", "2023-01-01", "2024-12-31"),
            (person_id(1), None, "b-plan", "2024-12-31", "2023-01-01"),
        ],
    )
    done = run(odd, "2024-01")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    quarantine = (ws / "reports" / "2024-01" / "quarantine.csv").read_text(encoding="utf-8")
    assert "e1.csv,2,missing_field,columns id_number and member_id are both empty" in quarantine
    assert "e1.csv,3,bad_date,valid_to '2023-01-01' is before valid_from '2024-12-31'" in (
        quarantine
    )
    # neither counts as an enrollment: b-plan does not pay S1
    assert rows(ws / "twopay.duckdb", "SELECT scheme FROM lines") == [("a-plan",)]


def test_the_boundaries_of_the_waiting_period_and_of_a_version(tmp_path: Path) -> None:
    """Spec 5: waiting when service_date < start + waiting_days, so the day
    after the wait is covered. Spec 4: effective_to is inclusive, so a
    version's last day is its own, not 'no version in force'."""
    v1 = (
        'scheme = "w"\ntitle = "w"\nversion = "v1"\neffective_from = 2024-01-01\n'
        "effective_to = 2024-06-30\nwaiting_days = 30\n"
        "[outpatient]\ndeductible = 0\nratio = 0.5\n"
    )
    v2 = (
        v1.replace('version = "v1"', 'version = "v2"')
        .replace(
            "effective_from = 2024-01-01\neffective_to = 2024-06-30", "effective_from = 2024-07-01"
        )
        .replace("ratio = 0.5", "ratio = 0.8")
    )
    ws = init_workspace(tmp_path / "ws", {"v1.toml": v1, "v2.toml": v2})
    roster = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [("M1", "会员1", person_id(1), "C1", "U1", "in_service", "2024-01-01", None)],
    )
    visits = [
        ("W1", "2024-01-30"),
        ("W2", "2024-01-31"),
        ("E1", "2024-06-30"),
        ("E2", "2024-07-01"),
    ]
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [
            (sid, person_id(1), "会员1", "门诊", day, None, "100", "100", None)
            for sid, day in visits
        ],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-07", "--settlements", settlements, "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    db = ws / "twopay.duckdb"
    assert rows(db, "SELECT settlement_id, code FROM outcomes WHERE code IS NOT NULL") == [
        ("W1", "waiting_period")
    ]
    assert rows(db, "SELECT settlement_id, rule_version, payout FROM lines ORDER BY 1") == [
        ("E1", "v1", Decimal("50.00")),
        ("E2", "v2", Decimal("80.00")),
        ("W2", "v1", Decimal("50.00")),
    ]


REQUIRED_PLAN = """
scheme = "req"
version = "1"
effective_from = 2024-01-01
enrollment = "required"
categories = ["in_service", "retired"]
base = "self_pay_1"

[inpatient]
deductible = 0
ratio = 0.5
"""


def test_an_enrollment_by_member_id_follows_its_person_to_a_new_member_id(
    tmp_path: Path,
) -> None:
    """Spec 2.3: an enrollment names its member by id_number or member_id;
    a member_id names one person. Enrolled as A1 for the year, the person's
    card was re-issued under A2 in April: the May claim was rejected
    no_coverage, though the same enrollment by ID number paid it."""
    ws = init_workspace(tmp_path / "ws", {"req.toml": REQUIRED_PLAN})
    pid = person_id(1)
    roster = write_csv(
        tmp_path / "roster.csv",
        ROSTER_HEADER,
        [
            ("A1", "王一", pid, "CA1", "U1", "retired", "2020-01-01", "2024-04-05"),
            ("A2", "王一", pid, "CA2", "U1", "retired", "2024-04-06", None),
            # 1.10105E+17 is many people: B1's enrollment is not B2's
            ("B1", "李二", "1.10105E+17", "CB1", "U1", "retired", "2020-01-01", None),
            ("B2", "李二", "1.10105E+17", "CB2", "U2", "retired", "2020-01-01", None),
        ],
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [
            ("T01", pid, "王一", "住院", "2024-03-10", "2024-03-01", "100", "100", None),
            ("T02", pid, "王一", "住院", "2024-05-10", "2024-05-01", "100", "100", None),
        ],
    )
    enrollments = write_csv(
        tmp_path / "e.csv",
        ("id_number", "member_id", "scheme", "valid_from", "valid_to"),
        [(None, "A1", "req", "2024-01-01", "2024-12-31")],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-05", "--settlements", settlements,
        "--roster", roster, "--enrollments", enrollments,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert rows(
        ws / "twopay.duckdb", "SELECT settlement_id, member_id, payout FROM lines ORDER BY 1"
    ) == [("T01", "A1", Decimal("50.00")), ("T02", "A2", Decimal("50.00"))]


def test_two_people_whose_ids_excel_mangled_alike_do_not_stop_the_run(tmp_path: Path) -> None:
    """Two roster rows of different people whose ID numbers Excel turned
    into 1.10105E+17 are not one person's records overlapping in time: the
    run refused everyone's claims (exit 2) and told the unit to end one
    record. Such records never match (spec 3); the rest are paid."""
    ws = init_workspace(tmp_path / "ws", {"a.toml": A_PLAN})
    roster = write_csv(
        tmp_path / "roster.csv",
        ROSTER_HEADER,
        [
            ("M1", "会员1", person_id(1), "C1", "U1", "in_service", "2020-01-01", None),
            ("M2", "会员2", "1.10105E+17", "C2", "U1", "in_service", "2020-01-01", None),
            ("M3", "会员3", "1.10105E+17", "C3", "U2", "in_service", "2021-01-01", None),
        ],
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("S1", person_id(1), "会员1", "门诊", "2024-01-10", None, "100", "80", None)],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert rows(ws / "twopay.duckdb", "SELECT settlement_id, payout FROM lines") == [
        ("S1", Decimal("40.00"))
    ]
    # one person's overlapping records are still refused
    roster.write_text(
        roster.read_text(encoding="utf-8")
        + f"M1,会员1,{person_id(1)},C9,U1,in_service,2023-01-01,\n",
        encoding="utf-8",
    )
    refused = cli(
        "run", "-w", ws, "--period", "2024-02", "--settlements", settlements,
        "--roster", roster,
    )  # fmt: skip
    assert refused.exit_code == 2 and "overlap" in refused.output


def required_plan_claim(
    tmp_path: Path, rules: dict[str, str], *extra: object
) -> tuple[Path, object]:
    """One member (会员1) and one inpatient claim of 2024-01-10 under ``rules``:
    the run's workspace and result."""
    ws = init_workspace(tmp_path / "ws", rules)
    roster = write_csv(
        tmp_path / "roster.csv",
        ROSTER_HEADER,
        [("M1", "会员1", person_id(1), "C1", "U1", "in_service", "2020-01-01", None)],
    )
    settlements = write_csv(
        tmp_path / "s.csv",
        SETTLEMENT_HEADER,
        [("S1", person_id(1), "会员1", "住院", "2024-01-10", "2024-01-08", "100", "80", None)],
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", settlements,
        "--roster", roster, *extra,
    )  # fmt: skip
    return ws, done


def test_a_run_without_enrollments_says_so_in_the_detail(tmp_path: Path) -> None:
    """A scheme that requires enrollment, run without --enrollments: every
    claim fails it. The detail blamed each member ('no enrollment in force');
    it names the missing file."""
    ws, done = required_plan_claim(tmp_path, {"req.toml": REQUIRED_PLAN})
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    assert rows(ws / "twopay.duckdb", "SELECT code, detail FROM outcomes") == [
        (
            "no_coverage",
            "req: no enrollment in force on 2024-01-10 (the run was given no --enrollments file)",
        )
    ]


def test_an_enrollment_naming_no_scheme_of_the_rules_is_exit_2_naming_the_line(
    tmp_path: Path,
) -> None:
    """An enrollment that names its scheme by title (or in another case) was
    never read: the member was rejected no_coverage "no enrollment in force",
    and, the file fixed, the claim re-sent was a duplicate."""
    enrollments = write_csv(
        tmp_path / "e.csv",
        ("id_number", "member_id", "scheme", "valid_from", "valid_to"),
        [
            (person_id(1), None, "req", "2024-01-01", "2024-12-31"),
            (person_id(1), None, "REQ", "2024-01-01", "2024-12-31"),
        ],
    )
    rules = {"req.toml": REQUIRED_PLAN, "a.toml": A_PLAN}
    ws, done = required_plan_claim(tmp_path, rules, "--enrollments", enrollments)
    assert done.exit_code == 2, done.output  # type: ignore[attr-defined]
    assert "e.csv: line 3: scheme 'REQ' is not a scheme of the rules" in done.output
    assert "expected one of: a-plan, req" in done.output
    assert rows(ws / "twopay.duckdb", "SELECT count(*) FROM batches") == [(0,)]


def test_an_id_number_in_the_scheme_or_decision_column_is_masked_in_the_error(
    tmp_path: Path,
) -> None:
    """An ID pasted one column to the left, into the scheme of an enrollment
    or the decision of an override, was printed in full in the error."""
    pid = person_id(1)
    masked = f"{pid[:6]}********{pid[-4:]}"
    enrollments = write_csv(
        tmp_path / "e.csv",
        ("id_number", "member_id", "scheme", "valid_from", "valid_to"),
        [(pid, None, pid, "2024-01-01", "2024-12-31")],
    )
    rules = {"req.toml": REQUIRED_PLAN}
    _ws, done = required_plan_claim(tmp_path / "a", rules, "--enrollments", enrollments)
    assert done.exit_code == 2, done.output  # type: ignore[attr-defined]
    assert pid not in done.output and f"scheme '{masked}'" in done.output  # type: ignore[attr-defined]

    ws = init_workspace(tmp_path / "b" / "ws", {"req.toml": REQUIRED_PLAN})
    (ws / "overrides.csv").write_text(
        f"settlement_id,decision,member_id,note,decided_by\nS1,{pid},M1,checked,me\n",
        encoding="utf-8",
    )
    done = cli(
        "run", "-w", ws, "--period", "2024-01", "--settlements", tmp_path / "a" / "s.csv",
        "--roster", tmp_path / "a" / "roster.csv",
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert pid not in done.output and masked in done.output
