"""`twopay simulate`: replay a plan year under other rules, beside the actual (spec 8).

What is replayed: every line of plan year Y in the ledger (the settlements
that were adjudicated; rejected and held rows stay out, since eligibility is
not re-decided), with the amounts of its settlement row. Normal lines are
recomputed under the other rules; a clawback removes what the *simulated*
original paid (spec 4.1, Reversals). A normal line whose scheme has no version
in force on its service date (or whose visit type that version does not list)
pays nothing in the simulation.

Order (spec 4.1): the engine orders one batch's lines by (service_date,
settlement_id, line_key) after the opening accumulators, and the ledger's
batches must come one after another. A single pass over the whole year would
order lines by service date across batches, which differs from the actual
order whenever a later batch holds an earlier service date (a held row decided
later, a late claim) or carries a clawback. So the replay runs the same engine
batch by batch, in the order the batches were committed, each batch's opening
being the sum of the simulated lines before it. With the rules of the actual
run it therefore reproduces the ledger to the fen.

The ledger is opened read-only; everything happens in temp tables of that
connection, and nothing is written.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from twopay.errors import RuleFileError, UsageError
from twopay.ledger.workspace import Workspace
from twopay.pipeline.eligibility import coverage_terms
from twopay.reports.render import band_labels, band_sql
from twopay.rules.engine import LINES_DDL, OPENING_DDL, adjudicate, load_params
from twopay.rules.loader import RuleSet, load_rules

LARGEST = 20  # members listed under largest_changes

BATCHES_SQL = "SELECT DISTINCT batch_id FROM lines WHERE plan_year = ? ORDER BY batch_id"

SIM_DDL = """
CREATE OR REPLACE TEMP TABLE sim_lines (
    batch_id INTEGER, line_key BIGINT, person_key VARCHAR, scheme VARCHAR,
    plan_year INTEGER, visit_type VARCHAR, rule_version VARCHAR,
    base_amount DECIMAL(18,2), ratio_part DECIMAL(18,2), allowance DECIMAL(18,2),
    allowance_days INTEGER, payout DECIMAL(18,2), status VARCHAR
)
"""

# One batch's lines of the year, amounts from its settlement rows; a clawback
# carries what the simulated original paid (zero when the original was not
# replayed).
REPLAY_LINES_SQL = """
INSERT INTO adj_lines
SELECT l.line_key, l.person_key, l.scheme, l.plan_year, l.visit_type, l.service_date,
       l.settlement_id, s.admission_date, s.total_cost, s.self_pay_1, s.self_pay_2,
       s.out_of_pocket, l.kind, o.rule_version, coalesce(o.base_amount, 0),
       coalesce(o.ratio_part, 0), coalesce(o.allowance, 0), coalesce(o.allowance_days, 0)
FROM lines AS l
LEFT JOIN settlements AS s ON s.batch_id = l.row_batch_id AND s.row_key = l.row_key
LEFT JOIN sim_lines AS o ON o.line_key = l.reverses_line
WHERE l.batch_id = $batch AND l.plan_year = $year
"""

# The accumulators of the simulated lines before this batch (spec 4.1: earlier
# batches first), for the groups this batch touches.
REPLAY_OPENING_SQL = """
INSERT INTO adj_opening
SELECT person_key, scheme, plan_year,
       coalesce(sum(base_amount) FILTER (visit_type = 'outpatient'), 0),
       coalesce(sum(base_amount) FILTER (visit_type = 'inpatient'), 0),
       coalesce(sum(ratio_part) FILTER (visit_type = 'outpatient'), 0),
       coalesce(sum(ratio_part) FILTER (visit_type = 'inpatient'), 0),
       sum(ratio_part + allowance), sum(allowance_days)
FROM sim_lines
WHERE (person_key, scheme, plan_year) IN (SELECT (person_key, scheme, plan_year) FROM adj_lines)
GROUP BY person_key, scheme, plan_year
"""

NO_VERSION_SQL = """
DELETE FROM adj_lines
WHERE kind = 'normal' AND NOT EXISTS (
    SELECT 1 FROM adj_params AS p
    WHERE p.scheme = adj_lines.scheme AND p.visit_type = adj_lines.visit_type
      AND adj_lines.service_date >= p.effective_from
      AND (p.effective_to IS NULL OR adj_lines.service_date <= p.effective_to))
"""

KEEP_RESULT_SQL = """
INSERT INTO sim_lines
SELECT $batch, line_key, person_key, scheme, plan_year, visit_type, rule_version,
       base_amount, ratio_part, allowance, allowance_days, payout, status
FROM adj_result
"""

# Actual beside simulated, one row per line of the year.
COMPARE_SQL = """
CREATE OR REPLACE TEMP TABLE sim_compare AS
SELECT l.line_key, l.settlement_id, l.person_key, l.member_id, l.unit_code, l.service_date,
       l.visit_type, l.scheme,
       l.status AS actual_status, l.payout AS actual,
       coalesce(s.status, 'zero') AS simulated_status,
       coalesce(s.payout, 0)::DECIMAL(18,2) AS simulated
FROM lines AS l LEFT JOIN sim_lines AS s USING (line_key)
WHERE l.plan_year = ?
"""

TOTAL_SQL = """
SELECT count(*), count(DISTINCT settlement_id), count(DISTINCT person_key),
       coalesce(sum(actual), 0), coalesce(sum(simulated), 0)
FROM sim_compare
"""

# Group columns are fixed names from this module, never user text.
GROUP_SQL = """
SELECT coalesce({col}, '') AS grp, sum(actual), sum(simulated)
FROM sim_compare
GROUP BY grp
ORDER BY abs(sum(simulated) - sum(actual)) DESC, grp
"""


# Subsidies by band per person-time, each side banded by its own payouts, like
# summary.json's bands (spec 7, render.band_sql): paid lines summed per settlement.
def bands_sql(edges: list[float]) -> str:
    return f"""
WITH per_settlement AS (
    SELECT settlement_id,
           sum(actual) FILTER (actual_status = 'paid') AS a,
           sum(simulated) FILTER (simulated_status = 'paid') AS s
    FROM sim_compare GROUP BY settlement_id
),
sides AS (
    SELECT 'actual' AS side, a AS amount FROM per_settlement WHERE a IS NOT NULL
    UNION ALL
    SELECT 'simulated', s FROM per_settlement WHERE s IS NOT NULL
)
SELECT side, {band_sql("amount", edges)} AS band, count(*), sum(amount)
FROM sides GROUP BY side, band
"""


# Who gains or loses is a person (spec 4.1: the accumulators are a person's,
# whatever member_id they had), named by their latest member_id in the year.
MEMBERS_SQL = """
CREATE OR REPLACE TEMP TABLE sim_members AS
SELECT person_key, arg_max(member_id, (service_date, line_key)) AS member_id,
       list(DISTINCT member_id ORDER BY member_id) AS member_ids,
       arg_max(unit_code, (service_date, line_key)) AS unit_code, sum(actual) AS actual,
       sum(simulated) AS simulated, sum(simulated) - sum(actual) AS change
FROM sim_compare GROUP BY person_key
"""

GAIN_LOSE_SQL = """
SELECT count(*) FILTER (change > 0), coalesce(sum(change) FILTER (change > 0), 0),
       count(*) FILTER (change < 0), coalesce(sum(change) FILTER (change < 0), 0),
       count(*) FILTER (change = 0)
FROM sim_members
"""

# Names from the member's latest roster record, looked up for the listed
# members only (the ledger keeps every batch's roster: millions of rows).
LARGEST_SQL = """
WITH top AS (
    SELECT * FROM sim_members WHERE change <> 0
    ORDER BY abs(change) DESC, member_id LIMIT ?
),
names AS (
    SELECT member_id, arg_max(name, (batch_id, valid_from, record_key)) AS name
    FROM roster_records WHERE member_id IN (SELECT member_id FROM top)
    GROUP BY member_id
)
SELECT t.member_id, n.name, t.unit_code, t.actual, t.simulated, t.change, t.member_ids
FROM top AS t LEFT JOIN names AS n USING (member_id)
ORDER BY abs(t.change) DESC, t.member_id
"""


# Settlements of the year that no scheme covered: the replay leaves them out
# (eligibility is not re-decided), so other rules that would cover them show
# no cost for them.
UNREPLAYED_SQL = """
SELECT o.code, count(*)
FROM outcomes AS o
JOIN settlements AS s ON s.batch_id = o.row_batch_id AND s.row_key = o.row_key
WHERE o.outcome = 'rejected' AND o.code IN ('no_coverage', 'waiting_period', 'no_rule_version')
  AND year(s.service_date) = ?
GROUP BY o.code ORDER BY o.code
"""


def _coverage(rules: RuleSet) -> dict[str, list[tuple[object, ...]]]:
    """What decides whom each scheme covers, per scheme, as a function of the
    date: the replay does not re-decide it. Versions that follow each other
    without a gap and cover the same people are one interval, so splitting a
    version at a date (a new ratio from July) does not count as a change of
    who is covered (versions come ordered by scheme, then effective_from)."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for v in rules.versions:
        start, end, *terms = coverage_terms(v.rule)
        spans = out.setdefault(v.rule.scheme, [])
        if spans:
            p_start, p_end, *p_terms = spans[-1]
            if (
                p_terms == terms and p_end is not None and p_end + timedelta(days=1) == start  # type: ignore[operator]
            ):
                spans[-1] = (p_start, end, *terms)
                continue
        spans.append((start, end, *terms))
    return out


def coverage_warnings(
    ws: Workspace, con: duckdb.DuckDBPyConnection, rules: RuleSet, year: int
) -> list[str]:
    """Say so when the other rules change who is covered: the replay keeps
    the actual eligibility, so its figures would silently leave that out."""
    try:
        current = load_rules(ws.rules_dir)
    except RuleFileError:
        return []
    ours, theirs = _coverage(current), _coverage(rules)
    changed = sorted(s for s in set(ours) | set(theirs) if ours.get(s) != theirs.get(s))
    if not changed:
        return []
    out = [
        f"the other rules change who is covered by scheme(s) {', '.join(changed)} (dates in "
        "force, categories, enrollment, waiting_days or visit types); the simulation replays "
        "only the lines actually adjudicated and does not re-decide eligibility, so its "
        "figures leave out settlements newly covered and still pay those no longer covered."
    ]
    left_out = con.execute(UNREPLAYED_SQL, [year]).fetchall()
    if left_out:
        counts = ", ".join(f"{n} {code}" for code, n in left_out)
        out.append(f"settlements of {year} rejected for coverage and not replayed: {counts}.")
    return out


def simulate(ws: Workspace, year: int, rules_dir: Path) -> dict[str, Any]:
    """Replay plan year ``year`` under the rules in ``rules_dir``; the ledger is
    only read. Returns the comparison (amounts as two-decimal strings)."""
    rules = load_rules(rules_dir)
    con = ws.connect(read_only=True)
    try:
        batches = [int(r[0]) for r in con.execute(BATCHES_SQL, [year]).fetchall()]
        if not batches:
            raise UsageError(
                f"--year {year}: the ledger has no adjudicated lines of that plan year."
            )
        replay(con, rules, year, batches)
        report = compare(con, year, list(ws.settings.run.bands))
        report["rules"] = rules.manifest()
        report["batches"] = len(batches)
        report["warnings"] = coverage_warnings(ws, con, rules, year)
        return report
    finally:
        con.close()


def replay(con: duckdb.DuckDBPyConnection, rules: RuleSet, year: int, batches: list[int]) -> None:
    """Fill sim_lines: the year's lines through the engine, batch by batch."""
    con.execute(SIM_DDL)
    for batch in batches:
        con.execute("DROP TABLE IF EXISTS adj_lines")
        con.execute("DROP TABLE IF EXISTS adj_opening")
        con.execute(LINES_DDL)
        con.execute(OPENING_DDL)
        con.execute(REPLAY_LINES_SQL, {"batch": batch, "year": year})
        con.execute(REPLAY_OPENING_SQL)
        load_params(con, rules)
        con.execute(NO_VERSION_SQL)
        adjudicate(con, rules)
        con.execute(KEEP_RESULT_SQL, {"batch": batch})


def _money(v: object) -> str:
    return f"{Decimal(str(v if v is not None else 0)):.2f}"


def _side_by_side(actual: object, simulated: object) -> dict[str, str]:
    a = Decimal(str(actual or 0))
    s = Decimal(str(simulated or 0))
    return {"actual": _money(a), "simulated": _money(s), "change": _money(s - a)}


def compare(con: duckdb.DuckDBPyConnection, year: int, edges: list[float]) -> dict[str, Any]:
    """Actual (the ledger's lines) against simulated (sim_lines) for the year."""
    con.execute(COMPARE_SQL, [year])
    n_lines, n_settlements, n_members, actual, simulated = con.execute(TOTAL_SQL).fetchall()[0]
    total = {
        "lines": int(n_lines),
        "settlements": int(n_settlements),
        "members": int(n_members),
        **_side_by_side(actual, simulated),
        "change_pct": (
            f"{(Decimal(simulated) - Decimal(actual)) * 100 / Decimal(actual):.2f}"
            if actual
            else None
        ),
    }

    def grouped(col: str, key: str) -> list[dict[str, str]]:
        rows = con.execute(GROUP_SQL.format(col=col)).fetchall()
        return [{key: str(g), **_side_by_side(a, s)} for g, a, s in rows]

    bands: dict[tuple[str, int], tuple[int, object]] = {
        (side, int(band)): (int(n), amount)
        for side, band, n, amount in con.execute(bands_sql(edges)).fetchall()
    }
    by_band = []
    for i, label in enumerate(band_labels(edges)):
        n_a, a = bands.get(("actual", i), (0, 0))
        n_s, s = bands.get(("simulated", i), (0, 0))
        by_band.append(
            {
                "band": label,
                "actual_person_times": n_a,
                "simulated_person_times": n_s,
                **_side_by_side(a, s),
            }
        )

    con.execute(MEMBERS_SQL)
    gain_n, gain, lose_n, lose, same_n = con.execute(GAIN_LOSE_SQL).fetchall()[0]
    largest = [
        {
            "member_id": m,
            "member_ids": list(ids),
            "name": name,
            "unit_code": unit,
            **_side_by_side(a, s),
        }
        for m, name, unit, a, s, _change, ids in con.execute(LARGEST_SQL, [LARGEST]).fetchall()
    ]
    return {
        "year": year,
        "total": total,
        "by_visit_type": grouped("visit_type", "visit_type"),
        "by_scheme": grouped("scheme", "scheme"),
        "by_band": by_band,
        "by_unit": grouped("unit_code", "unit_code"),
        "members": {
            "gain": {"count": int(gain_n), "amount": _money(gain)},
            "lose": {"count": int(lose_n), "amount": _money(lose)},
            "same": {"count": int(same_n)},
        },
        "largest_changes": largest,
    }
