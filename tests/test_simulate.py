"""`twopay simulate` on real ledgers through the real CLI (spec 4.1, 8).

Three oracles: the ledger itself (the same rules give every line back to the
fen), a hand computation (a small year whose every figure is worked out
below), and running the year for real under the other rules.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path

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
from test_ledger import NAMES, ledger_rows, month_rows, roster, run
from twopay.ledger.workspace import open_workspace
from twopay.rules.loader import load_rules
from twopay.simulate import replay

# Outpatient ratio 0.5 -> 0.6; inpatient deductible 500 -> 300.
CHANGED_RULE = SIMPLE_RULE.replace(
    "deductible = 1000\nratio = 0.5", "deductible = 1000\nratio = 0.6"
).replace("deductible = 500\n", "deductible = 300\n")


def simulate(ws: Path, rules: Path, year: int = 2024) -> dict:  # type: ignore[type-arg]
    result = cli("simulate", "-w", ws, "--year", year, "--rules", rules, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def rules_dir(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "t.toml").write_text(text, encoding="utf-8")
    return path


def run_months(ws: Path, tmp: Path, months: dict[int, list[tuple[object, ...]]]) -> None:
    r = roster(tmp / "roster.csv")
    for m, rows in months.items():
        s = write_csv(tmp / f"{ws.name}-s{m}.csv", SETTLEMENT_HEADER, rows)
        result = run(ws, f"2024-{m:02d}", s, r)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# A small year, worked by hand. A = M0 (unit U0), B = M1 (U1), C = M2 (U0).
#   A1 out  800      : below the deductible 1000              -> 0     | 0
#   A2 out 1200      : ytd 2000, 1000 above it x 0.5 | x 0.6  -> 500   | 600
#   A3 in  1500, 5 d : 1000 | 1200 above 500 | 300, x 0.5; +5 x 20 -> 600 | 700
#   A4 out  600      : ytd 2600, 600 more above               -> 300   | 360
#   B1 out 3000      : 2000 above                             -> 1000  | 1200
#   RB reverses B1 (March): claws back what B1 paid            -> -1000 | -1200
#   B2 out 1500      : after RB the ytd base is 0 again: 500   -> 250   | 300
#   C1 in   400, 2 d : below 500 | 100 above 300 x 0.5; +2 x 20 -> 40   | 90
HAND_MONTHS: dict[int, list[tuple[object, ...]]] = {
    1: [
        ("A1", person_id(0), NAMES[0], "门诊", "2024-01-10", None, "820.00", "800.00", None),
        ("A2", person_id(0), NAMES[0], "门诊", "2024-01-20", None, "1300.00", "1200.00", None),
        ("B1", person_id(1), NAMES[1], "门诊", "2024-01-15", None, "3100.00", "3000.00", None),
    ],
    2: [
        ("A3", person_id(0), NAMES[0], "住院", "2024-02-10", "2024-02-05", "2000", "1500", None),
        ("C1", person_id(2), NAMES[2], "住院", "2024-02-20", "2024-02-18", "500", "400", None),
    ],
    3: [
        ("A4", person_id(0), NAMES[0], "门诊", "2024-03-05", None, "700.00", "600.00", None),
        ("RB", person_id(1), NAMES[1], "门诊", "2024-03-10", None, "-3100", "-3000", "B1"),
        ("B2", person_id(1), NAMES[1], "门诊", "2024-03-12", None, "1600.00", "1500.00", None),
    ],
}


@pytest.fixture
def hand_ws(tmp_path: Path) -> Path:
    ws = init_workspace(tmp_path / "hand", {"t.toml": SIMPLE_RULE})
    config = ws / "twopay.toml"
    config.write_text(
        config.read_text("utf-8").replace("bands = [3000, 10000]", "bands = [500, 1000]"), "utf-8"
    )
    run_months(ws, tmp_path, HAND_MONTHS)
    return ws


def test_the_same_rules_give_every_line_back_to_the_fen(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    months = {m: month_rows(m) for m in (1, 2, 3, 4)}
    # a reversal in April of a March visit, and a late January claim in April
    march = months[3][0]
    months[4] += [
        ("R-late", march[1], march[2], march[3], "2024-04-02", None, "-1", "-1", march[0]),
        ("S-late", person_id(5), NAMES[5], "门诊", "2024-01-30", None, "2500", "2400", None),
    ]
    run_months(ws, tmp_path, months)
    before = digest(ws / "twopay.duckdb")

    report = simulate(ws, ws / "rules")
    assert report["total"]["change"] == "0.00" and report["total"]["change_pct"] == "0.00"
    for key in ("by_visit_type", "by_scheme", "by_band", "by_unit", "largest_changes"):
        assert all(row["change"] == "0.00" for row in report[key]), key
    assert report["largest_changes"] == []
    assert report["members"]["gain"] == {"count": 0, "amount": "0.00"}
    assert report["members"]["lose"] == {"count": 0, "amount": "0.00"}
    assert report["members"]["same"]["count"] == len(NAMES)
    assert report["batches"] == 4
    for band in report["by_band"]:
        assert band["actual_person_times"] == band["simulated_person_times"]
    # the ledger was only read
    assert digest(ws / "twopay.duckdb") == before

    # line by line: every amount of every line, clawbacks included
    w = open_workspace(ws)
    con = w.connect(read_only=True)
    try:
        batches = [
            r[0] for r in con.execute("SELECT DISTINCT batch_id FROM lines ORDER BY 1").fetchall()
        ]
        replay(con, load_rules(w.rules_dir), 2024, batches)
        diff = con.execute(
            """
            SELECT count(*), count(*) FILTER (s.line_key IS NULL OR (l.base_amount, l.ratio_part,
                l.allowance, l.allowance_days, l.payout, l.status, l.rule_version)
                IS DISTINCT FROM (s.base_amount, s.ratio_part, s.allowance, s.allowance_days,
                s.payout, s.status, s.rule_version))
            FROM lines l LEFT JOIN sim_lines s USING (line_key)
            """
        ).fetchall()[0]
        kinds = con.execute("SELECT count(DISTINCT kind) FROM lines").fetchall()[0][0]
    finally:
        con.close()
    assert diff[0] > 90 and diff[1] == 0
    assert kinds == 2  # the replay covered clawbacks too


def test_a_changed_ratio_and_deductible_give_the_hand_computed_figures(
    hand_ws: Path, tmp_path: Path
) -> None:
    # the ledger holds the hand figures of the actual rules
    lines = {
        r[0]: Decimal(str(r[1]))
        for r in ledger_rows(hand_ws, "(SELECT settlement_id, payout FROM lines)", "1")
    }
    assert lines == {
        "A1": 0,
        "A2": 500,
        "A3": 600,
        "A4": 300,
        "B1": 1000,
        "RB": -1000,
        "B2": 250,
        "C1": 40,
    }
    report = simulate(hand_ws, rules_dir(tmp_path / "changed", CHANGED_RULE))
    assert report["total"] == {
        "lines": 8,
        "settlements": 8,
        "members": 3,
        "actual": "1690.00",
        "simulated": "2050.00",
        "change": "360.00",
        "change_pct": "21.30",
    }
    assert report["by_visit_type"] == [
        {
            "visit_type": "outpatient",
            "actual": "1050.00",
            "simulated": "1260.00",
            "change": "210.00",
        },
        {"visit_type": "inpatient", "actual": "640.00", "simulated": "790.00", "change": "150.00"},
    ]
    assert report["by_unit"] == [
        {"unit_code": "U0", "actual": "1440.00", "simulated": "1750.00", "change": "310.00"},
        {"unit_code": "U1", "actual": "250.00", "simulated": "300.00", "change": "50.00"},
    ]
    assert report["by_scheme"] == [
        {"scheme": "test-plan", "actual": "1690.00", "simulated": "2050.00", "change": "360.00"}
    ]
    # bands [500, 1000] per person-time, paid lines only, each side by its own amounts:
    # (spec 7's "3000-10000" holds both its edges: 1000.00 is in 500-1000)
    # actual    < 500: A4 300, B2 250, C1 40 | 500-1000: A2 500, A3 600, B1 1000
    # simulated < 500: A4 360, B2 300, C1 90 | 500-1000: A2 600, A3 700 | > 1000: B1 1200
    assert [
        (
            b["band"],
            b["actual_person_times"],
            b["actual"],
            b["simulated_person_times"],
            b["simulated"],
        )
        for b in report["by_band"]
    ] == [
        ("< 500", 3, "590.00", 3, "750.00"),
        ("500-1000", 3, "2100.00", 2, "1300.00"),
        ("> 1000", 0, "0.00", 1, "1200.00"),
    ]
    assert report["members"] == {
        "gain": {"count": 3, "amount": "360.00"},
        "lose": {"count": 0, "amount": "0.00"},
        "same": {"count": 0},
    }
    assert [
        (m["member_id"], m["name"], m["unit_code"], m["actual"], m["simulated"], m["change"])
        for m in report["largest_changes"]
    ] == [  # largest change first; equal changes by member_id
        ("M0", NAMES[0], "U0", "1400.00", "1660.00", "260.00"),
        ("M1", NAMES[1], "U1", "250.00", "300.00", "50.00"),
        ("M2", NAMES[2], "U0", "40.00", "90.00", "50.00"),
    ]
    assert [v["version"] for v in report["rules"]] == ["v1"]


def test_a_lower_ratio_shows_who_loses(hand_ws: Path, tmp_path: Path) -> None:
    # outpatient ratio 0.5 -> 0.4: A2 400, A4 240, B1 800 / RB -800, B2 200; inpatient as is
    lower = SIMPLE_RULE.replace("deductible = 1000\nratio = 0.5", "deductible = 1000\nratio = 0.4")
    report = simulate(hand_ws, rules_dir(tmp_path / "lower", lower))
    assert (report["total"]["simulated"], report["total"]["change"]) == ("1480.00", "-210.00")
    assert report["members"] == {
        "gain": {"count": 0, "amount": "0.00"},
        "lose": {"count": 2, "amount": "-210.00"},
        "same": {"count": 1},
    }
    assert [(m["member_id"], m["change"]) for m in report["largest_changes"]] == [
        ("M0", "-160.00"),
        ("M1", "-50.00"),
    ]


def test_simulate_equals_running_the_year_under_the_other_rules(tmp_path: Path) -> None:
    actual = init_workspace(tmp_path / "actual", {"t.toml": SIMPLE_RULE})
    other = init_workspace(tmp_path / "other", {"t.toml": CHANGED_RULE})
    months = {m: month_rows(m) for m in (1, 2, 3)}
    months[3] = [
        *months[3],
        ("RV", person_id(0), NAMES[0], "门诊", "2024-03-20", None, "-1", "-1", "S202401000"),
    ]
    run_months(actual, tmp_path, months)
    run_months(other, tmp_path, months)
    report = simulate(actual, rules_dir(tmp_path / "changed", CHANGED_RULE))

    def payouts(ws: Path, group: str) -> dict[str, Decimal]:
        rows = ledger_rows(ws, f"(SELECT {group}, sum(payout) FROM lines GROUP BY 1)", "1")
        return {str(g): Decimal(str(a)) for g, a in rows}

    assert Decimal(report["total"]["actual"]) == sum(payouts(actual, "1").values())
    assert Decimal(report["total"]["simulated"]) == sum(payouts(other, "1").values())
    assert report["total"]["change"] != "0.00"
    simulated_by_member = {
        m["member_id"]: Decimal(m["simulated"]) for m in report["largest_changes"]
    }
    real = payouts(other, "member_id")
    assert simulated_by_member and all(real[m] == v for m, v in simulated_by_member.items())
    for row in report["by_visit_type"]:
        assert Decimal(row["simulated"]) == payouts(other, "visit_type")[row["visit_type"]]

    human = cli("simulate", "-w", actual, "--year", 2024, "--rules", tmp_path / "changed")
    assert human.exit_code == 0
    for title in ("actual vs simulated", "by visit type", "by band", "largest changes"):
        assert title in human.output


def test_a_year_without_lines_or_bad_rules_is_a_usage_error(hand_ws: Path, tmp_path: Path) -> None:
    none = cli("simulate", "-w", hand_ws, "--year", 2023, "--rules", hand_ws / "rules")
    assert none.exit_code == 2 and "2023" in none.output
    bad = rules_dir(tmp_path / "bad", SIMPLE_RULE.replace("ratio = 0.5", "ratio = 'half'"))
    wrong = cli("simulate", "-w", hand_ws, "--year", 2024, "--rules", bad)
    assert wrong.exit_code == 2 and "t.toml" in wrong.output


def test_a_scheme_out_of_force_under_the_other_rules_pays_nothing(
    hand_ws: Path, tmp_path: Path
) -> None:
    # the other rule set starts in March: January and February's lines pay 0,
    # March's outpatient lines see a year-to-date base of zero, and the
    # reversal claws back the zero that B1 paid in the simulation.
    late = SIMPLE_RULE.replace("effective_from = 2020-01-01", "effective_from = 2024-03-01")
    report = simulate(hand_ws, rules_dir(tmp_path / "late", late))
    # A4: 600 below 1000 -> 0; RB -> 0; B2: 1500 -> 250
    assert report["total"]["simulated"] == "250.00"


def test_who_gains_or_loses_is_a_person_whatever_member_ids_they_had(tmp_path: Path) -> None:
    """Spec 4.1: the accumulators are a person's, whatever member_id they had.
    A person who moved from M1 to M1b in February and loses overall is one
    loser, not a loser and a gainer."""
    ws = init_workspace(tmp_path / "ws", {"t.toml": SIMPLE_RULE})
    p = person_id(1)
    r = write_csv(
        tmp_path / "r.csv",
        ROSTER_HEADER,
        [
            ("M1", "张伟", p, "C1", "U1", "在职", "2020-01-01", "2024-02-14"),
            ("M1b", "张伟", p, "C2", "U2", "在职", "2024-02-15", None),
        ],
    )
    rows = [
        ("S1", p, "张伟", "门诊", "2024-01-10", None, "3000", "3000", None),  # M1: 1000
        ("S2", p, "张伟", "门诊", "2024-03-10", None, "5000", "5000", None),  # M1b: 2000 (cap)
    ]
    s = write_csv(tmp_path / "s.csv", SETTLEMENT_HEADER, rows)
    assert run(ws, "2024-03", s, r).exit_code == 0  # type: ignore[attr-defined]
    # ratio 0.6 with an outpatient cap of 1500: S1 pays 1200, S2 only 300
    capped = CHANGED_RULE.replace("annual_cap = 3000", "annual_cap = 1500")
    report = simulate(ws, rules_dir(tmp_path / "other", capped))
    assert report["total"]["members"] == 1
    assert report["members"]["gain"]["count"] == 0
    assert report["members"]["lose"] == {"count": 1, "amount": "-1500.00"}
    assert [(m["member_id"], m["member_ids"], m["change"]) for m in report["largest_changes"]] == [
        ("M1b", ["M1", "M1b"], "-1500.00")
    ]


def test_other_rules_that_change_who_is_covered_say_the_replay_leaves_it_out(
    hand_ws: Path, tmp_path: Path
) -> None:
    """The replay recomputes the lines actually adjudicated; it does not
    decide eligibility again. A 36600-day wait reported 'change 0.00' where
    a run under it pays nothing: the report now says what it leaves out.
    Rules that change only the money say nothing."""
    waiting = SIMPLE_RULE.replace(
        'base = "self_pay_1"', 'base = "self_pay_1"\nwaiting_days = 36600'
    )
    report = simulate(hand_ws, rules_dir(tmp_path / "wait", waiting))
    (warning,) = report["warnings"]
    assert "test-plan" in warning and "does not re-decide eligibility" in warning
    text = cli("simulate", "-w", hand_ws, "--year", 2024, "--rules", tmp_path / "wait")
    assert text.exit_code == 0 and "warning: the other rules change who is covered" in text.output
    assert simulate(hand_ws, rules_dir(tmp_path / "money", CHANGED_RULE))["warnings"] == []


def test_a_member_is_named_by_their_latest_record_whatever_the_roster_order(
    tmp_path: Path,
) -> None:
    """One member_id, two records: 王芳 to 2023, 王晓芳 from 2024. The name
    shown was whichever record came last in the roster file."""
    p = person_id(1)
    records = [
        ("M1", "王晓芳", p, "C1", "U1", "在职", "2024-01-01", None),
        ("M1", "王芳", p, "C1", "U1", "在职", "2020-01-01", "2023-12-31"),
    ]
    rows = [("S1", p, "王晓芳", "门诊", "2024-03-10", None, "3000", "3000", None)]
    for order, listed in (("new-first", records), ("old-first", records[::-1])):
        ws = init_workspace(tmp_path / order, {"t.toml": SIMPLE_RULE})
        r = write_csv(tmp_path / f"{order}-r.csv", ROSTER_HEADER, listed)
        s = write_csv(tmp_path / f"{order}-s.csv", SETTLEMENT_HEADER, rows)
        assert run(ws, "2024-03", s, r).exit_code == 0  # type: ignore[attr-defined]
        report = simulate(ws, rules_dir(tmp_path / f"{order}-other", CHANGED_RULE))
        assert [m["name"] for m in report["largest_changes"]] == ["王晓芳"], order


def test_a_version_split_at_a_date_changes_the_money_not_who_is_covered(
    hand_ws: Path, tmp_path: Path
) -> None:
    """The other rules split the one version at July 1st with a new ratio
    from then on: the same people are covered on every day, yet the report
    warned that the rules changed who is covered. A gap between the two
    halves does change it."""
    first = SIMPLE_RULE.replace(
        "effective_from = 2020-01-01", "effective_from = 2020-01-01\neffective_to = 2024-06-30"
    )
    for name, second_from in (("split", "2024-07-01"), ("gap", "2024-07-02")):
        folder = rules_dir(tmp_path / name, first)
        (folder / "t2.toml").write_text(
            CHANGED_RULE.replace('version = "v1"', 'version = "v2"').replace(
                "effective_from = 2020-01-01", f"effective_from = {second_from}"
            ),
            encoding="utf-8",
        )
        warnings = simulate(hand_ws, folder)["warnings"]
        assert len(warnings) == (name == "gap"), warnings
