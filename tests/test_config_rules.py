"""The shipped default rules (config/rules): they load, say what the brief and
the spec say, and every number carries its source or says it has none."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from helpers import cli
from oracle import oracle_adjudicate
from test_engine_oracle import (
    RESULT_COLUMNS,
    compiled_steps_connection,
    engine_adjudicate,
    line,
)
from twopay.rules.compile import all_sql
from twopay.rules.loader import RuleSet, load_rules

RULES_DIR = Path(__file__).resolve().parents[1] / "config" / "rules"
D = Decimal


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules(RULES_DIR)


def test_shipped_rules_load(shipped: RuleSet) -> None:
    assert shipped.schemes == ("bj-inservice", "wh-hospital")
    assert {v.path.name for v in shipped.versions} == {
        "bj-inservice-2018.toml",
        "wh-hospital-2024.toml",
    }


def test_packaged_defaults_are_the_config_folder() -> None:
    """`twopay init` copies src/twopay/defaults/rules, a link to config/rules."""
    import twopay

    packaged = Path(twopay.__file__).parent / "defaults" / "rules"
    assert sorted(p.name for p in packaged.glob("*.toml")) == sorted(
        p.name for p in RULES_DIR.glob("*.toml")
    )


@pytest.mark.parametrize(
    ("scheme", "day", "label"),
    [
        ("bj-inservice", date(2017, 12, 31), None),
        ("bj-inservice", date(2018, 1, 1), "2018"),
        ("bj-inservice", date(2024, 2, 15), "2018"),
        ("bj-inservice", date(2030, 6, 1), "2018"),  # the last version is open-ended
        ("wh-hospital", date(2023, 12, 31), None),
        ("wh-hospital", date(2024, 1, 1), "2024"),
        ("wh-hospital", date(2024, 2, 15), "2024"),
    ],
)
def test_version_in_force_on_sample_dates(
    shipped: RuleSet, scheme: str, day: date, label: str | None
) -> None:
    found = shipped.in_force(scheme, day)
    assert (found.rule.version if found else None) == label


def test_bj_inservice_is_the_spec_example(shipped: RuleSet) -> None:
    rule = shipped.in_force("bj-inservice", date(2024, 1, 1)).rule  # type: ignore[union-attr]
    assert rule.title == "北京市在职职工医疗互助保障计划"
    assert (rule.enrollment, rule.categories, rule.base) == (
        "automatic",
        ["in_service"],
        "self_pay_1",
    )
    assert rule.annual_cap == 200000
    out, inp = rule.outpatient, rule.inpatient
    assert out is not None and inp is not None
    assert (out.deductible, out.deductible_scope, out.ratio, out.annual_cap) == (
        1800,
        "year",
        D("0.5"),
        20000,
    )
    assert (inp.deductible, inp.deductible_scope, inp.annual_cap) == (1300, "year", 180000)
    assert inp.segments() == [
        (0, 10000, D("0.5")),
        (10000, 50000, D("0.6")),
        (50000, None, D("0.7")),
    ]
    assert inp.allowance is None


def test_wh_hospital_shape(shipped: RuleSet) -> None:
    rule = shipped.in_force("wh-hospital", date(2024, 1, 1)).rule  # type: ignore[union-attr]
    assert rule.enrollment == "required"
    assert rule.categories == ["in_service", "retired"]
    assert rule.outpatient is None  # hospital cover only
    assert rule.waiting_days == 90
    inp = rule.inpatient
    assert inp is not None
    assert inp.tiers is not None and len(inp.tiers) >= 2
    assert inp.per_episode_cap is not None
    assert inp.allowance is not None and inp.allowance.per_day > 0 and inp.allowance.max_days > 0


NUMBER_OR_TIER = re.compile(r"^\s*(\w+\s*=\s*[-\d]|\{\s*(up_to|ratio))")


@pytest.mark.parametrize("path", sorted(RULES_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_number_has_a_source_or_says_it_has_none(path: Path) -> None:
    """Each number in a shipped rule file carries a comment beside it: the
    source it was checked against, or `illustrative: not sourced`."""
    bare = [
        f"{path.name}:{n}: {text.strip()}"
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if NUMBER_OR_TIER.match(text) and "#" not in text
    ]
    assert bare == []


@pytest.mark.parametrize("run", [oracle_adjudicate, engine_adjudicate], ids=["oracle", "engine"])
def test_bj_inservice_worked_year(shipped: RuleSet, run) -> None:
    """A member's year under the shipped Beijing rules, worked by hand."""

    def settlement(key: int, day: str, visit_type: str, self_pay_1: str) -> dict:
        service_date = date.fromisoformat(day)
        return {
            "line_key": key,
            "person_key": "110105198001010010",
            "scheme": "bj-inservice",
            "plan_year": service_date.year,
            "visit_type": visit_type,
            "service_date": service_date,
            "settlement_id": f"S{key}",
            "admission_date": None,
            "total_cost": D(self_pay_1) * 3,
            "self_pay_1": D(self_pay_1),
            "self_pay_2": D(0),
            "out_of_pocket": D(0),
            "kind": "normal",
            "orig_rule_version": None,
            "orig_base_amount": None,
            "orig_ratio_part": None,
            "orig_allowance": None,
            "orig_allowance_days": None,
        }

    lines = [
        settlement(1, "2024-02-01", "outpatient", "1000.00"),  # under 1800: 0
        settlement(
            2, "2024-03-01", "outpatient", "2000.01"
        ),  # 1200.01 above * .5 = 600.005 -> 600.01
        settlement(3, "2024-05-01", "inpatient", "21300"),  # 20000 above 1300: 5000 + 6000 = 11000
    ]
    r = run(shipped, lines, [])
    assert [r[k]["payout"] for k in (1, 2, 3)] == [D("0"), D("600.01"), D("11000")]
    assert {r[k]["rule_version"] for k in r} == {"2018"}


def test_rules_sql_prints_what_the_engine_runs(shipped: RuleSet) -> None:
    """`twopay rules sql` is the engine's SQL: replayed statement by statement
    (each group where a cap binds walked in a chunk of its own), it gives the
    engine's results to the fen."""
    result = cli("rules", "sql", RULES_DIR)
    assert result.exit_code == 0, result.output
    statements = duckdb.extract_statements(result.output)
    names = [re.search(r"(?m)^-- (adj_\w+)$", s.query).group(1) for s in statements]  # type: ignore[union-attr]
    assert names == [name for name, _ in all_sql(shipped)]

    lines = [  # p1's outpatient year crosses its 20000 cap on the third line
        line(1, "2024-01-10", "outpatient", "15000", scheme="bj-inservice"),
        line(2, "2024-02-10", "outpatient", "15000", scheme="bj-inservice"),
        line(3, "2024-03-10", "outpatient", "15000", scheme="bj-inservice"),
        line(4, "2024-04-10", "outpatient", "15000", scheme="bj-inservice"),
        line(5, "2024-01-10", "outpatient", "3000", scheme="bj-inservice", person="p2"),
        line(6, "2024-02-10", "outpatient", "45000", scheme="bj-inservice", person="p3"),
        line(7, "2024-05-10", "inpatient", "90000", scheme="bj-inservice", person="p3"),
    ]
    con = compiled_steps_connection(shipped, lines)
    for name, stmt in zip(names, statements, strict=True):
        if name == "adj_walk_chunk":
            chunks = con.execute("SELECT DISTINCT chunk FROM adj_walk_start").fetchall()
            assert len(chunks) == 2  # p1 and p3
            for (chunk,) in chunks:
                con.execute(stmt.query, {"chunk": chunk})
        else:
            con.execute(stmt.query, {"chunk_rows": 1} if stmt.named_parameters else None)
    cols = ", ".join(RESULT_COLUMNS)
    replayed = con.execute(f"SELECT {cols} FROM adj_result ORDER BY line_key").fetchall()
    engine = engine_adjudicate(shipped, lines, [])
    assert replayed == [tuple(engine[k][c] for c in RESULT_COLUMNS) for k in sorted(engine)]
    assert [engine[k]["note"] for k in (3, 4, 6)] == ["cap_reached"] * 3
