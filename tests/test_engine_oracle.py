"""The set-based SQL engine against the sequential oracle (spec 4.1), to the fen.

Two kinds of test:

* hand-computed cases, one per rule feature, each run through both the oracle
  and the engine, with the arithmetic in comments;
* hypothesis properties over random rule sets, line streams and openings:
  engine == oracle on every column; one batch == the same lines in monthly
  batches; payouts within every cap; the books of each group balance.

Profiles: "engine-ci" (default, well under 3 minutes on 2 cores) and
"engine-thorough"; HYPOTHESIS_PROFILE=thorough picks the second.
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from oracle import closing_balances, oracle_adjudicate
from twopay.ledger.tables import drop_temporaries, insert_rows
from twopay.rules.compile import all_sql
from twopay.rules.dialect import DIALECT
from twopay.rules.engine import WALK_CHUNK_ROWS, adjudicate, load_params
from twopay.rules.loader import LoadedVersion, RuleSet
from twopay.rules.models import RuleVersion

settings.register_profile(
    "engine-ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "engine-thorough",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ENGINE_PROFILE = settings.get_profile(
    "engine-thorough" if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else "engine-ci"
)
# The monthly split runs the engine once per month: half as many examples.
MONTHLY_PROFILE = settings(ENGINE_PROFILE, max_examples=ENGINE_PROFILE.max_examples // 2)

D = Decimal

# -- running the engine on the contract tables ---------------------------------

LINE_COLUMNS = (
    "line_key",
    "person_key",
    "scheme",
    "plan_year",
    "visit_type",
    "service_date",
    "settlement_id",
    "admission_date",
    "total_cost",
    "self_pay_1",
    "self_pay_2",
    "out_of_pocket",
    "kind",
    "orig_rule_version",
    "orig_base_amount",
    "orig_ratio_part",
    "orig_allowance",
    "orig_allowance_days",
)
OPENING_COLUMNS = (
    "person_key",
    "scheme",
    "plan_year",
    "base_outpatient",
    "base_inpatient",
    "paid_outpatient",
    "paid_inpatient",
    "paid_total",
    "allowance_days",
)
RESULT_COLUMNS = (
    "line_key",
    "rule_version",
    "base_amount",
    "deductible_applied",
    "computed",
    "ratio_part",
    "allowance",
    "allowance_days",
    "payout",
    "status",
    "note",
    "base_ytd_before",
    "base_ytd_after",
    "paid_type_before",
    "paid_type_after",
    "paid_total_before",
    "paid_total_after",
    "days_before",
    "days_after",
)

# The input tables exactly as the engine's contract states them.
CONTRACT_DDL = (
    """
    CREATE TEMP TABLE adj_lines (
        line_key BIGINT, person_key VARCHAR, scheme VARCHAR, plan_year INTEGER,
        visit_type VARCHAR, service_date DATE, settlement_id VARCHAR, admission_date DATE,
        total_cost DECIMAL(18,2), self_pay_1 DECIMAL(18,2), self_pay_2 DECIMAL(18,2),
        out_of_pocket DECIMAL(18,2), kind VARCHAR, orig_rule_version VARCHAR,
        orig_base_amount DECIMAL(18,2), orig_ratio_part DECIMAL(18,2),
        orig_allowance DECIMAL(18,2), orig_allowance_days INTEGER)
    """,
    """
    CREATE TEMP TABLE adj_opening (
        person_key VARCHAR, scheme VARCHAR, plan_year INTEGER,
        base_outpatient DECIMAL(18,2), base_inpatient DECIMAL(18,2),
        paid_outpatient DECIMAL(18,2), paid_inpatient DECIMAL(18,2),
        paid_total DECIMAL(18,2), allowance_days INTEGER)
    """,
)


@functools.cache
def _connection() -> duckdb.DuckDBPyConnection:
    # one in-memory database for every example: a new connection costs ~30 ms,
    # a third of an example; each call leaves no table behind (see below)
    return duckdb.connect()


def engine_adjudicate(
    rules: RuleSet,
    lines: list[dict],
    opening: list[dict],
    walk_chunk_rows: int = WALK_CHUNK_ROWS,
) -> dict[int, dict]:
    """Run twopay.rules.engine.adjudicate on an empty in-memory DuckDB."""
    con = _connection()
    try:
        for ddl in CONTRACT_DDL:
            con.execute(ddl)
        insert_rows(con, "adj_lines", [tuple(ln.get(c) for c in LINE_COLUMNS) for ln in lines])
        insert_rows(con, "adj_opening", [tuple(o[c] for c in OPENING_COLUMNS) for o in opening])
        adjudicate(con, rules, walk_chunk_rows)
        rows = con.execute(f"SELECT {', '.join(RESULT_COLUMNS)} FROM adj_result").fetchall()
    finally:
        drop_temporaries(con)
    return {row[0]: dict(zip(RESULT_COLUMNS, row, strict=True)) for row in rows}


def compiled_steps_connection(rules: RuleSet, lines: list[dict]) -> duckdb.DuckDBPyConnection:
    """A fresh DuckDB holding the contract tables, the lines and the rule
    parameters: ready for compile.all_sql's steps, run one by one."""
    con = duckdb.connect()
    for ddl in CONTRACT_DDL:
        con.execute(ddl)
    insert_rows(con, "adj_lines", [tuple(ln.get(c) for c in LINE_COLUMNS) for ln in lines])
    for stmt in DIALECT.setup_sql():
        con.execute(stmt)
    load_params(con, rules)
    return con


IMPLEMENTATIONS = {
    "oracle": oracle_adjudicate,
    "engine": engine_adjudicate,
    # every group where a cap binds walked by a recursive CTE of its own
    "engine-chunked": functools.partial(engine_adjudicate, walk_chunk_rows=1),
}


def differences(lines: list[dict], got: dict[int, dict], want: dict[int, dict]) -> list[str]:
    """Every column where the engine and the oracle differ, described."""
    out = []
    if set(got) != set(want):
        out.append(f"line keys differ: engine {sorted(got)} oracle {sorted(want)}")
    by_key = {ln["line_key"]: ln for ln in lines}
    for key in sorted(set(got) & set(want)):
        for col in RESULT_COLUMNS:
            if got[key][col] != want[key][col]:
                out.append(
                    f"line {key} {col}: engine {got[key][col]!r} oracle {want[key][col]!r}"
                    f" (line {by_key[key]})"
                )
    return out


# -- building rules and lines by hand ----------------------------------------------


def ruleset(*versions: dict) -> RuleSet:
    loaded = [
        LoadedVersion(
            rule=RuleVersion.model_validate(v),
            path=Path(f"{v['scheme']}-{v['version']}.toml"),
            sha256="",
        )
        for v in versions
    ]
    loaded.sort(key=lambda v: (v.rule.scheme, v.rule.effective_from))
    return RuleSet(versions=tuple(loaded), schemes=tuple(sorted({v.rule.scheme for v in loaded})))


def version(**kw: object) -> dict:
    base: dict = {
        "scheme": "s",
        "version": "v1",
        "effective_from": date(2024, 1, 1),
        "categories": ["in_service"],
    }
    base.update(kw)
    return base


def line(
    key: int,
    day: str,
    visit_type: str,
    amount: str,
    *,
    person: str = "p1",
    scheme: str = "s",
    admitted: str | None = None,
    settlement: str | None = None,
) -> dict:
    service_date = date.fromisoformat(day)
    return {
        "line_key": key,
        "person_key": person,
        "scheme": scheme,
        "plan_year": service_date.year,
        "visit_type": visit_type,
        "service_date": service_date,
        "settlement_id": settlement or f"S{key:04d}",
        "admission_date": date.fromisoformat(admitted) if admitted else None,
        "total_cost": D(amount) * 2,
        "self_pay_1": D(amount),
        "self_pay_2": D(0),
        "out_of_pocket": D(0),
        "kind": "normal",
        "orig_rule_version": None,
        "orig_base_amount": None,
        "orig_ratio_part": None,
        "orig_allowance": None,
        "orig_allowance_days": None,
    }


def clawback(key: int, day: str, original: dict, result: dict, settlement: str) -> dict:
    """The reversal of ``original`` (adjudicated earlier as ``result``)."""
    return {
        **original,
        "line_key": key,
        "service_date": date.fromisoformat(day),
        "settlement_id": settlement,
        "admission_date": None,
        "total_cost": None,
        "self_pay_1": None,
        "self_pay_2": None,
        "out_of_pocket": None,
        "kind": "clawback",
        "orig_rule_version": result["rule_version"],
        "orig_base_amount": result["base_amount"],
        "orig_ratio_part": result["ratio_part"],
        "orig_allowance": result["allowance"],
        "orig_allowance_days": result["allowance_days"],
    }


MONEY_COLUMNS = frozenset(
    c
    for c in RESULT_COLUMNS
    if c not in ("line_key", "rule_version", "status", "note")
    and not c.startswith("days")
    and c != "allowance_days"
)


def check(got: dict, **expected: object) -> None:
    """Compare the named columns; amounts are given as strings."""
    for col, want in expected.items():
        want_v = D(want) if col in MONEY_COLUMNS else want  # type: ignore[arg-type]
        assert got[col] == want_v, f"{col}: got {got[col]!r}, want {want_v!r}"


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def run(request: pytest.FixtureRequest):
    return IMPLEMENTATIONS[request.param]


# -- hand-computed cases: one per rule feature ------------------------------------


def test_year_deductible_crossing(run) -> None:
    rules = ruleset(version(outpatient={"deductible": 1800, "ratio": "0.5"}))
    lines = [
        line(1, "2024-01-10", "outpatient", "1000"),
        line(2, "2024-02-10", "outpatient", "1500"),
        line(3, "2024-03-10", "outpatient", "600"),
    ]
    r = run(rules, lines, [])
    # 1000 all under the deductible 1800: nothing, below_deductible.
    check(
        r[1],
        deductible_applied="1000",
        computed="0",
        payout="0",
        status="zero",
        note="below_deductible",
        base_ytd_before="0",
        base_ytd_after="1000",
    )
    # base 1000 -> 2500: 800 absorbed, 700 above it at 50 % = 350.
    check(
        r[2],
        deductible_applied="800",
        computed="350",
        payout="350",
        status="paid",
        note="",
        base_ytd_before="1000",
        base_ytd_after="2500",
    )
    # all 600 above the deductible: 300.
    check(r[3], deductible_applied="0", computed="300", payout="300", paid_type_after="650")


def test_episode_deductible(run) -> None:
    rules = ruleset(
        version(outpatient={"deductible": 500, "deductible_scope": "episode", "ratio": "0.6"})
    )
    lines = [
        line(1, "2024-01-10", "outpatient", "400"),
        line(2, "2024-02-10", "outpatient", "1200"),
        line(3, "2024-03-10", "outpatient", "1200"),
    ]
    r = run(rules, lines, [])
    # each settlement pays its own deductible: 400 < 500 -> nothing
    check(r[1], deductible_applied="400", computed="0", note="below_deductible")
    # (1200 - 500) * 0.6 = 420, and again for the next one (no year-to-date effect)
    check(r[2], deductible_applied="500", computed="420", payout="420")
    check(r[3], deductible_applied="500", computed="420", payout="420", base_ytd_after="2800")


def test_tiers_crossing_two_boundaries(run) -> None:
    tiers = [{"up_to": 10000, "ratio": "0.5"}, {"up_to": 50000, "ratio": "0.6"}, {"ratio": "0.7"}]
    rules = ruleset(version(inpatient={"deductible": 1300, "tiers": tiers}))
    lines = [
        line(1, "2024-01-10", "inpatient", "6300"),
        line(2, "2024-05-10", "inpatient", "50000"),
    ]
    r = run(rules, lines, [])
    # x = 6300 - 1300 = 5000 above the deductible, all in tier 1: 2500
    check(r[1], deductible_applied="1300", computed="2500")
    # x goes 5000 -> 55000: F(55000) = 10000*.5 + 40000*.6 + 5000*.7 = 32500;
    # minus F(5000) = 2500 -> 30000 (crosses 10000 and 50000)
    check(r[2], deductible_applied="0", computed="30000", payout="30000")


def test_bounded_last_tier_pays_nothing_above_it(run) -> None:
    tiers = [{"up_to": 1000, "ratio": "0.5"}, {"up_to": 2000, "ratio": "0.8"}]
    rules = ruleset(version(outpatient={"deductible": 0, "tiers": tiers}))
    lines = [line(1, "2024-01-10", "outpatient", "2500"), line(2, "2024-02-10", "outpatient", "9")]
    r = run(rules, lines, [])
    # 1000*.5 + 1000*.8 = 1300; the 500 above 2000 gets nothing
    check(r[1], computed="1300", payout="1300", note="")
    # already above the last tier: computed 0, which the spec notes as below_deductible
    check(r[2], computed="0", payout="0", status="zero", note="below_deductible")


def test_per_episode_cap(run) -> None:
    rules = ruleset(version(outpatient={"ratio": "0.5", "per_episode_cap": 1000}))
    lines = [
        line(1, "2024-01-10", "outpatient", "3000"),
        line(2, "2024-02-10", "outpatient", "1000"),
    ]
    r = run(rules, lines, [])
    # 3000 * .5 = 1500 > 1000 per episode
    check(r[1], computed="1500", ratio_part="1000", payout="1000", note="cap_reached")
    # 1000 * .5 = 500 under the cap
    check(r[2], computed="500", ratio_part="500", note="", paid_type_after="1500")


def test_per_type_annual_cap(run) -> None:
    rules = ruleset(
        version(outpatient={"ratio": "0.5", "annual_cap": 1000}, inpatient={"ratio": "0.5"})
    )
    lines = [
        line(1, "2024-01-10", "outpatient", "1200"),
        line(2, "2024-02-10", "outpatient", "1200"),
        line(3, "2024-03-10", "outpatient", "1200"),
        line(4, "2024-04-10", "inpatient", "1000"),
    ]
    r = run(rules, lines, [])
    check(r[1], computed="600", payout="600", note="")
    # 600 more would reach 1200 > 1000: only 400
    check(r[2], computed="600", ratio_part="400", note="cap_reached", paid_type_after="1000")
    # no room left: zero, and it says why (computed is not 0, so not below_deductible)
    check(r[3], computed="600", payout="0", status="zero", note="cap_reached")
    # the inpatient year is its own: 500, and paid_total now 1500
    check(
        r[4],
        computed="500",
        payout="500",
        note="",
        paid_type_before="0",
        paid_total_before="1000",
        paid_total_after="1500",
    )


def test_scheme_cap_shared_by_types_and_allowance(run) -> None:
    rules = ruleset(
        version(
            annual_cap=1000,
            outpatient={"ratio": "0.5"},
            inpatient={"ratio": "0.5", "allowance": {"per_day": 100, "max_days": 30}},
        )
    )
    lines = [
        line(1, "2024-01-10", "outpatient", "800"),
        line(2, "2024-02-10", "inpatient", "600", admitted="2024-02-06"),
        line(3, "2024-03-10", "outpatient", "200"),
    ]
    r = run(rules, lines, [])
    check(r[1], ratio_part="400", paid_total_after="400")
    # ratio 600*.5 = 300 (total 700); allowance 4 days * 100 = 400 but only 300 left
    check(
        r[2],
        ratio_part="300",
        allowance="300",
        allowance_days=4,
        payout="600",
        note="cap_reached",
        paid_total_after="1000",
    )
    # computed 100, the scheme cap is used up
    check(r[3], computed="100", ratio_part="0", payout="0", status="zero", note="cap_reached")


def test_allowance_max_days_across_lines(run) -> None:
    rules = ruleset(
        version(
            inpatient={
                "deductible": 100000,
                "ratio": "0.5",
                "allowance": {"per_day": 50, "max_days": 10},
            }
        )
    )
    lines = [
        line(1, "2024-01-07", "inpatient", "100", admitted="2024-01-01"),
        line(2, "2024-02-08", "inpatient", "100", admitted="2024-02-01"),
        line(3, "2024-03-01", "inpatient", "100", admitted="2024-03-01"),
    ]
    r = run(rules, lines, [])
    # 6 days * 50 = 300; the ratio part is 0 (under the deductible)
    check(
        r[1],
        allowance="300",
        allowance_days=6,
        payout="300",
        status="paid",
        note="below_deductible",
        days_after=6,
    )
    # 7 days asked, 10 - 6 = 4 left: 200
    check(
        r[2],
        allowance="200",
        allowance_days=4,
        note="below_deductible;cap_reached",
        days_before=6,
        days_after=10,
    )
    # same-day discharge counts as 1 day; none left
    check(r[3], allowance="0", allowance_days=0, status="zero", note="below_deductible;cap_reached")


def test_missing_admission_date(run) -> None:
    rules = ruleset(
        version(
            outpatient={"ratio": "0.5"},
            inpatient={"ratio": "0.5", "allowance": {"per_day": 50, "max_days": 10}},
        )
    )
    lines = [
        line(1, "2024-01-07", "inpatient", "100"),
        line(2, "2024-01-08", "outpatient", "100"),
    ]
    r = run(rules, lines, [])
    # the ratio part is paid; the allowance cannot be computed and the note says so
    check(
        r[1],
        ratio_part="50",
        allowance="0",
        allowance_days=0,
        payout="50",
        note="no_admission_date",
    )
    check(r[2], payout="50", note="")


def test_version_change_mid_year_carries_accumulators(run) -> None:
    rules = ruleset(
        version(
            version="2024a",
            effective_to=date(2024, 6, 30),
            outpatient={"deductible": 1800, "ratio": "0.5", "annual_cap": 20000},
        ),
        version(
            version="2024b",
            effective_from=date(2024, 7, 1),
            outpatient={"deductible": 1000, "ratio": "0.6", "annual_cap": 1500},
        ),
    )
    lines = [
        line(1, "2024-03-01", "outpatient", "2000"),
        line(2, "2024-08-01", "outpatient", "1000"),
        line(3, "2024-09-01", "outpatient", "3000"),
    ]
    r = run(rules, lines, [])
    # 2024a: 2000 - 1800 = 200 at .5 = 100
    check(r[1], rule_version="2024a", computed="100")
    # 2024b with base_ytd 2000 carried: already past its 1000 deductible, 1000 * .6
    check(
        r[2],
        rule_version="2024b",
        base_ytd_before="2000",
        deductible_applied="0",
        computed="600",
        paid_type_before="100",
        paid_type_after="700",
    )
    # 3000 * .6 = 1800, but 2024b's outpatient cap 1500 - 700 paid = 800
    check(r[3], computed="1800", ratio_part="800", note="cap_reached", paid_type_after="1500")


def test_half_up_rounding(run) -> None:
    rules = ruleset(
        version(outpatient={"ratio": "0.5"}, inpatient={"ratio": "0.333333"}),
    )
    lines = [
        line(1, "2024-01-10", "outpatient", "100.01"),
        line(2, "2024-01-11", "outpatient", "0.01"),
        line(3, "2024-01-12", "outpatient", "0.01"),
        line(4, "2024-01-13", "inpatient", "100"),
    ]
    r = run(rules, lines, [])
    # 100.01 * .5 = 50.005 -> 50.01 (half-up, not half-even's 50.00)
    check(r[1], computed="50.01")
    # F(100.02) - F(100.01) = 0.005 -> 0.01, each time (rounded after subtracting)
    check(r[2], computed="0.01")
    check(r[3], computed="0.01", base_ytd_after="100.03")
    # 100 * .333333 = 33.3333 -> 33.33
    check(r[4], computed="33.33")


def test_clawback_restores_room_under_the_cap(run) -> None:
    rules = ruleset(version(outpatient={"ratio": "0.5", "annual_cap": 1000}))
    first = [line(1, "2024-01-10", "outpatient", "2000")]
    r1 = run(rules, first, [])
    check(r1[1], computed="1000", ratio_part="1000", note="")  # exactly at the cap: not reduced
    opening = closing_balances([], r1, first)
    lines = [
        line(2, "2024-02-01", "outpatient", "600"),
        clawback(3, "2024-03-01", first[0], r1[1], "R0001"),
        line(4, "2024-04-01", "outpatient", "600"),
    ]
    r = run(rules, lines, opening)
    # before the reversal the cap is used up: 300 computed, nothing paid
    check(r[2], base_ytd_before="2000", computed="300", payout="0", note="cap_reached")
    # the reversal removes what line 1 added, at its place in the order
    check(
        r[3],
        status="clawback",
        rule_version="v1",
        base_amount="-2000",
        computed="0",
        ratio_part="-1000",
        allowance="0",
        allowance_days=0,
        payout="-1000",
        note="",
        base_ytd_after="600",
        paid_type_after="0",
        paid_total_after="0",
    )
    # base_ytd is 600 again: 600 more at .5 = 300, and there is room now
    check(r[4], base_ytd_before="600", computed="300", payout="300", note="")


def test_clawback_of_allowance_days(run) -> None:
    rules = ruleset(
        version(inpatient={"ratio": "0.5", "allowance": {"per_day": 10, "max_days": 5}}),
    )
    first = [line(1, "2024-01-10", "inpatient", "100", admitted="2024-01-06")]
    r1 = run(rules, first, [])
    check(r1[1], ratio_part="50", allowance="40", allowance_days=4, payout="90")
    lines = [
        clawback(2, "2024-02-01", first[0], r1[1], "R0001"),
        line(3, "2024-03-10", "inpatient", "0", admitted="2024-03-01"),
    ]
    r = run(rules, lines, closing_balances([], r1, first))
    check(
        r[2], payout="-90", allowance="-40", allowance_days=-4, days_after=0, paid_total_after="0"
    )
    # 9 days asked, all 5 days available again after the clawback
    check(r[3], allowance="50", allowance_days=5, note="below_deductible;cap_reached")


def test_clawback_in_a_later_year_reduces_the_original_year(run) -> None:
    rules = ruleset(version(outpatient={"ratio": "0.5", "annual_cap": 1000}))
    first = [line(1, "2024-12-20", "outpatient", "2000")]
    r1 = run(rules, first, [])
    back = clawback(2, "2025-01-05", first[0], r1[1], "R0001")  # plan_year stays 2024
    r = run(
        rules, [back, line(3, "2025-01-06", "outpatient", "100")], closing_balances([], r1, first)
    )
    check(r[2], paid_type_before="1000", paid_type_after="0", payout="-1000")
    check(r[3], paid_type_before="0", payout="50")  # 2025 starts from zero


def test_ties_are_ordered_by_settlement_then_line_key(run) -> None:
    rules = ruleset(version(outpatient={"ratio": "1", "annual_cap": 100}))
    lines = [
        line(5, "2024-01-10", "outpatient", "80", settlement="B"),
        line(6, "2024-01-10", "outpatient", "80", settlement="A"),
        line(2, "2024-01-10", "outpatient", "80", settlement="C"),
        line(1, "2024-01-10", "outpatient", "80", settlement="C"),
    ]
    r = run(rules, lines, [])
    # order: A (6), B (5), C by line key (1, then 2)
    check(r[6], payout="80")
    check(r[5], payout="20", note="cap_reached")
    check(r[1], payout="0")
    check(r[2], payout="0")


def test_opening_balance_counts(run) -> None:
    rules = ruleset(version(outpatient={"deductible": 1800, "ratio": "0.5", "annual_cap": 500}))
    opening = [
        {
            "person_key": "p1",
            "scheme": "s",
            "plan_year": 2024,
            "base_outpatient": D("1700"),
            "base_inpatient": D("0"),
            "paid_outpatient": D("300"),
            "paid_inpatient": D("0"),
            "paid_total": D("300"),
            "allowance_days": 0,
        }
    ]
    r = run(rules, [line(1, "2024-05-01", "outpatient", "1000")], opening)
    # 1700 -> 2700: 100 absorbed, 900 * .5 = 450, but only 500 - 300 = 200 room
    check(r[1], deductible_applied="100", computed="450", ratio_part="200", note="cap_reached")


def test_engine_and_oracle_agree_on_the_hand_cases() -> None:
    """A quick cross-check beside the property tests: one mixed stream."""
    rules = ruleset(
        version(
            annual_cap=5000,
            outpatient={"deductible": 1800, "ratio": "0.5", "annual_cap": 2000},
            inpatient={
                "deductible": 1300,
                "tiers": [{"up_to": 10000, "ratio": "0.5"}, {"ratio": "0.7"}],
                "allowance": {"per_day": 50, "max_days": 10},
            },
        )
    )
    lines = [
        line(1, "2024-01-10", "outpatient", "2500.55"),
        line(2, "2024-02-10", "inpatient", "12345.67", admitted="2024-02-01"),
        line(3, "2024-03-10", "inpatient", "1000", admitted="2024-03-05"),
        line(4, "2024-03-10", "outpatient", "3333.33", person="p2"),
    ]
    got = engine_adjudicate(rules, lines, [])
    want = oracle_adjudicate(rules, lines, [])
    assert differences(lines, got, want) == []


def test_the_walk_starts_at_each_groups_first_binding_line_in_chunks_of_bounded_size() -> None:
    """What the chunked walk is handed: only the groups where a cap binds, each
    from its first binding line; chunk k holds the groups whose walk starts
    within lines [k * walk_chunk_rows, (k + 1) * walk_chunk_rows) of the
    residue, so a chunk is at most walk_chunk_rows lines plus one group."""
    rules = ruleset(version(outpatient={"ratio": "0.5", "annual_cap": 1000}))
    lines = [
        # p1: binds on its 2nd line (600 + 600 > 1000); three lines to walk
        line(1, "2024-01-10", "outpatient", "1200"),
        line(2, "2024-02-10", "outpatient", "1200"),
        line(3, "2024-03-10", "outpatient", "100"),
        line(4, "2024-04-10", "outpatient", "100"),
        # p2: never binds, not walked
        line(5, "2024-01-10", "outpatient", "100", person="p2"),
        # p3, p4: bind on their first line
        line(6, "2024-01-10", "outpatient", "3000", person="p3"),
        line(7, "2024-01-10", "outpatient", "3000", person="p4"),
        line(8, "2024-02-10", "outpatient", "10", person="p4"),
    ]

    def walked(chunk_rows: int) -> tuple[list[tuple], list[tuple]]:
        con = compiled_steps_connection(rules, lines)
        for name, sql in all_sql(rules):
            if name == "adj_walked":
                break
            con.execute(sql, {"chunk_rows": chunk_rows} if name == "adj_residue" else None)
        starts = con.execute(
            "SELECT grp, chunk, rn, paid_out FROM adj_walk_start ORDER BY grp"
        ).fetchall()
        walk = con.execute(
            "SELECT chunk, line_key FROM adj_residue WHERE rn >= first_rn ORDER BY line_key"
        ).fetchall()
        return starts, walk

    starts, walk = walked(3)
    # p1 starts after its first line (600 paid), p3 and p4 at their first;
    # a group is named by its first line's key
    assert starts == [(1, 0, 1, D("600.00")), (6, 1, 0, D(0)), (7, 1, 0, D(0))]
    assert walk == [(0, 2), (0, 3), (0, 4), (1, 6), (1, 7), (1, 8)]
    starts, walk = walked(1)
    # the groups start at residue lines 0, 3 and 4
    assert [s[1] for s in starts] == [0, 3, 4]
    starts, walk = walked(WALK_CHUNK_ROWS)
    assert {c for c, _ in walk} == {0}


# -- hypothesis strategies -----------------------------------------------------------

FIRST_DAY = date(2023, 1, 1)
LAST_DAY = date(2024, 12, 31)
SPAN = (LAST_DAY - FIRST_DAY).days
PERSONS = ("p1", "p1", "p1", "p2", "p3")


def money(max_yuan: int) -> st.SearchStrategy[Decimal]:
    return st.integers(0, max_yuan * 100).map(lambda cents: D(cents).scaleb(-2))


def caps() -> st.SearchStrategy[Decimal | None]:
    # small caps so that they bind often
    return st.one_of(st.none(), money(50), money(3000), money(60000))


ratios = st.one_of(
    st.sampled_from(["0.5", "0.6", "0.7", "1", "0", "0.25", "0.333333", "0.05"]).map(D),
    st.integers(0, 1_000_000).map(lambda n: D(n).scaleb(-6)),
)


@st.composite
def visit_rules(draw: st.DrawFn, inpatient: bool) -> dict:
    rule: dict = {
        "deductible": draw(st.one_of(st.just(D(0)), money(3000))),
        "deductible_scope": draw(st.sampled_from(["year", "episode"])),
    }
    if draw(st.booleans()):
        rule["ratio"] = draw(ratios)
    else:
        n = draw(st.integers(1, 4))
        bounded_last = draw(st.booleans())
        n_bounds = n if bounded_last else n - 1
        bounds = sorted(
            draw(st.sets(st.integers(1, 3_000_000), min_size=n_bounds, max_size=n_bounds))
        )
        tiers = [{"up_to": D(b).scaleb(-2), "ratio": draw(ratios)} for b in bounds]
        if not bounded_last:
            tiers.append({"ratio": draw(ratios)})
        rule["tiers"] = tiers
    for cap in ("annual_cap", "per_episode_cap"):
        value = draw(caps())
        if value is not None:
            rule[cap] = value
    if inpatient and draw(st.booleans()):
        rule["allowance"] = {"per_day": draw(money(300)), "max_days": draw(st.integers(0, 12))}
    return rule


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    versions = []
    for s in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 3))
        cuts = sorted(draw(st.sets(st.integers(1, SPAN), min_size=n - 1, max_size=n - 1)))
        starts = [FIRST_DAY] + [FIRST_DAY + timedelta(days=c) for c in cuts]
        open_ended = draw(st.booleans())
        for i, start in enumerate(starts):
            if i + 1 < len(starts):
                end: date | None = starts[i + 1] - timedelta(days=1)
            else:
                end = None if open_ended else LAST_DAY + timedelta(days=400)
            types = draw(
                st.sampled_from(
                    [("outpatient", "inpatient")] * 3 + [("outpatient",), ("inpatient",)]
                )
            )
            v: dict = {
                "scheme": f"s{s}",
                "version": f"s{s}-v{i}",
                "effective_from": start,
                "effective_to": end,
                "base": draw(st.sampled_from(["self_pay_1"] * 4 + ["total_cost", "self_pay_2"])),
            }
            scheme_cap = draw(caps())
            if scheme_cap is not None:
                v["annual_cap"] = scheme_cap
            for t in types:
                v[t] = draw(visit_rules(t == "inpatient"))
            versions.append(v)
    return ruleset(*versions)


@st.composite
def normal_lines(
    draw: st.DrawFn,
    rules: RuleSet,
    first_key: int,
    first_day: date = FIRST_DAY,
    last_day: date = LAST_DAY,
    max_lines: int = 30,
) -> list[dict]:
    """Valid normal lines: each has a version of its scheme in force on its date
    that lists its visit type (the pipeline rejects the others before)."""
    out: list[dict] = []
    if (first_day, last_day) == (FIRST_DAY, LAST_DAY) and draw(st.booleans()):
        first_day = date(2024, 1, 1)  # one year: longer runs of lines per group
    span = (last_day - first_day).days
    for _ in range(draw(st.integers(0, max_lines))):
        scheme = draw(st.sampled_from(rules.schemes))
        visit_type = draw(st.sampled_from(["outpatient", "inpatient"]))
        day = first_day + timedelta(days=draw(st.integers(0, span)))
        v = rules.in_force(scheme, day)
        if v is None or v.rule.visit(visit_type) is None:
            continue
        amount = st.one_of(money(3000), money(50000))
        admitted = None
        if visit_type == "inpatient" and draw(st.integers(0, 3)) > 0:
            admitted = day - timedelta(days=draw(st.integers(-2, 40)))
        key = first_key + len(out)
        out.append(
            {
                "line_key": key,
                "person_key": draw(st.sampled_from(PERSONS)),  # p1 most often
                "scheme": scheme,
                "plan_year": day.year,
                "visit_type": visit_type,
                "service_date": day,
                "settlement_id": f"S{draw(st.integers(0, 40)):03d}",
                "admission_date": admitted,
                "total_cost": draw(amount),
                "self_pay_1": draw(amount),
                "self_pay_2": draw(amount),
                "out_of_pocket": draw(amount),
                "kind": "normal",
                "orig_rule_version": None,
                "orig_base_amount": None,
                "orig_ratio_part": None,
                "orig_allowance": None,
                "orig_allowance_days": None,
            }
        )
    return out


@st.composite
def clawbacks(
    draw: st.DrawFn,
    earlier: list[dict],
    results: dict[int, dict],
    first_key: int,
    not_before: date | None = None,
    not_after: date | None = None,
) -> list[dict]:
    """Reversals of some lines adjudicated in an earlier batch, each at most once,
    dated on or after the original (possibly in the next year)."""
    normal = [ln for ln in earlier if ln["kind"] == "normal"]
    if not normal:
        return []
    chosen = draw(st.lists(st.sampled_from(normal), unique_by=lambda ln: ln["line_key"]))
    out = []
    for original in chosen:
        low = max(original["service_date"], not_before or original["service_date"])
        high = not_after or original["service_date"] + timedelta(days=400)
        if high < low:
            continue
        day = low + timedelta(days=draw(st.integers(0, (high - low).days)))
        key = first_key + len(out)
        out.append(
            clawback(key, day.isoformat(), original, results[original["line_key"]], f"R{key:04d}")
        )
    return out


@st.composite
def random_openings(draw: st.DrawFn, lines: list[dict]) -> list[dict]:
    """Arbitrary accumulators for some of the groups of ``lines``."""
    groups = sorted({(ln["person_key"], ln["scheme"], ln["plan_year"]) for ln in lines})
    out = []
    for person, scheme, year in groups:
        if draw(st.booleans()):
            out.append(
                {
                    "person_key": person,
                    "scheme": scheme,
                    "plan_year": year,
                    "base_outpatient": draw(money(30000)),
                    "base_inpatient": draw(money(30000)),
                    "paid_outpatient": draw(money(5000)),
                    "paid_inpatient": draw(money(5000)),
                    "paid_total": draw(money(10000)),
                    "allowance_days": draw(st.integers(0, 15)),
                }
            )
    return out


# -- properties --------------------------------------------------------------------

# how many lines one recursive CTE walks: one group at a time, a few, or all
walk_chunk_rows = st.sampled_from([1, 2, 7, WALK_CHUNK_ROWS])


def assert_same(lines: list[dict], got: dict[int, dict], want: dict[int, dict]) -> None:
    for r in want.values():  # what the examples exercised (--hypothesis-show-statistics)
        for note in filter(None, r["note"].split(";")):
            event(note)
        event(f"status {r['status']}")
        if r["allowance"] > 0:
            event("allowance paid")
    diffs = differences(lines, got, want)
    assert not diffs, "engine and oracle differ:\n" + "\n".join(diffs[:10])


@ENGINE_PROFILE
@given(data=st.data())
def test_engine_matches_oracle(data: st.DataObject) -> None:
    rules = data.draw(rule_sets(), label="rules")
    chunk = data.draw(walk_chunk_rows, label="walk chunk rows")
    # batch 1: random lines over random opening balances
    first = data.draw(normal_lines(rules, first_key=1), label="batch 1")
    opening = data.draw(random_openings(first), label="opening")
    want1 = oracle_adjudicate(rules, first, opening)
    assert_same(first, engine_adjudicate(rules, first, opening, chunk), want1)
    # batch 2: new lines and reversals of batch 1's lines, over batch 1's closing
    new = data.draw(normal_lines(rules, first_key=1000), label="batch 2")
    backs = data.draw(clawbacks(first, want1, first_key=5000), label="clawbacks")
    second = new + backs
    opening2 = closing_balances(opening, want1, first)
    assert_same(
        second,
        engine_adjudicate(rules, second, opening2, chunk),
        oracle_adjudicate(rules, second, opening2),
    )


def month_of(day: date) -> tuple[int, int]:
    return (day.year, day.month)


@MONTHLY_PROFILE
@given(data=st.data())
def test_monthly_batches_equal_one_batch(data: st.DataObject) -> None:
    """Spec 4.1: the same payouts whether the settlements arrive in one batch or
    month by month (each batch later than the one before; reversals here only of
    lines from a batch before all of them)."""
    rules = data.draw(rule_sets(), label="rules")
    prior = data.draw(
        normal_lines(rules, first_key=1, last_day=date(2023, 3, 31), max_lines=12), label="prior"
    )
    prior_results = engine_adjudicate(rules, prior, [])
    opening = closing_balances([], prior_results, prior)
    rest = data.draw(
        normal_lines(
            rules, first_key=1000, first_day=date(2023, 4, 1), last_day=date(2023, 12, 31)
        ),
        label="rest",
    )
    rest += data.draw(
        clawbacks(prior, prior_results, 5000, date(2023, 4, 1), date(2023, 12, 31)),
        label="clawbacks",
    )
    whole = engine_adjudicate(rules, rest, opening)
    chunk = data.draw(walk_chunk_rows, label="walk chunk rows (monthly)")

    by_month: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for ln in rest:
        by_month[month_of(ln["service_date"])].append(ln)
    piecewise: dict[int, dict] = {}
    balance = opening
    for month in sorted(by_month):
        batch = by_month[month]
        results = engine_adjudicate(rules, batch, balance, chunk)
        piecewise.update(results)
        balance = closing_balances(balance, results, batch)
    diffs = differences(rest, piecewise, whole)
    assert not diffs, "monthly batches differ from one batch:\n" + "\n".join(diffs[:10])


@ENGINE_PROFILE
@given(data=st.data())
def test_payouts_within_caps_and_books_balance(data: st.DataObject) -> None:
    rules = data.draw(rule_sets(), label="rules")
    first = data.draw(normal_lines(rules, first_key=1), label="batch 1")
    r1 = engine_adjudicate(rules, first, [])
    backs = data.draw(clawbacks(first, r1, first_key=5000), label="clawbacks")
    new = data.draw(normal_lines(rules, first_key=1000), label="batch 2")
    opening = closing_balances([], r1, first)
    r2 = engine_adjudicate(rules, new + backs, opening)

    for lines, results, start in ((first, r1, []), (new + backs, r2, opening)):
        start_by_group = {(o["person_key"], o["scheme"], o["plan_year"]): o for o in start}
        totals: dict[tuple, Decimal] = defaultdict(Decimal)
        for ln in lines:
            r = results[ln["line_key"]]
            assert r["payout"] == r["ratio_part"] + r["allowance"]
            totals[(ln["person_key"], ln["scheme"], ln["plan_year"])] += r["payout"]
            if ln["kind"] == "clawback":
                assert r["status"] == "clawback"
                assert r["payout"] == -(ln["orig_ratio_part"] + ln["orig_allowance"])
                continue
            rule = rules.in_force(ln["scheme"], ln["service_date"]).rule  # type: ignore[union-attr]
            visit = rule.visit(ln["visit_type"])
            assert visit is not None
            assert r["ratio_part"] >= 0 and r["allowance"] >= 0 and r["allowance_days"] >= 0
            assert r["ratio_part"] <= r["computed"]
            assert r["status"] == ("paid" if r["payout"] > 0 else "zero")
            if visit.per_episode_cap is not None:
                assert r["ratio_part"] <= visit.per_episode_cap
            if r["ratio_part"] > 0 and visit.annual_cap is not None:
                assert r["paid_type_after"] <= visit.annual_cap
            if r["payout"] > 0 and rule.annual_cap is not None:
                assert r["paid_total_after"] <= rule.annual_cap
            if visit.allowance is not None:
                assert r["allowance"] <= r["allowance_days"] * visit.allowance.per_day
                if r["allowance_days"] > 0:
                    assert r["days_after"] <= visit.allowance.max_days
            else:
                assert r["allowance"] == 0 and r["allowance_days"] == 0
        # each group's total paid moves by exactly the sum of its lines' payouts
        last: dict[tuple, dict] = {}
        for ln in sorted(
            lines, key=lambda x: (x["service_date"], x["settlement_id"], x["line_key"])
        ):
            last[(ln["person_key"], ln["scheme"], ln["plan_year"])] = results[ln["line_key"]]
        for group, total in totals.items():
            opened = start_by_group.get(group, {}).get("paid_total", D(0))
            assert last[group]["paid_total_after"] == opened + total
