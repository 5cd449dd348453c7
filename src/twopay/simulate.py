"""`twopay simulate`: replay a plan year under other rules (spec 8).

The year's adjudicated lines are replayed through the same set-based engine,
batch by batch in the order they were committed (spec 4.1: earlier batches
first), each batch's opening taken from the simulated results before it, and
clawbacks removing what the simulated original paid. The ledger is opened
read-only; everything happens in temp tables.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from twopay.errors import UsageError
from twopay.ledger.workspace import Workspace
from twopay.rules.engine import LINES_DDL, OPENING_DDL, adjudicate, load_params
from twopay.rules.loader import load_rules

SIM_DDL = """
CREATE OR REPLACE TEMP TABLE sim (
    batch_id INTEGER, line_key BIGINT, person_key VARCHAR, scheme VARCHAR, plan_year INTEGER,
    visit_type VARCHAR, base_amount DECIMAL(18,2), ratio_part DECIMAL(18,2),
    allowance DECIMAL(18,2), allowance_days INTEGER, payout DECIMAL(18,2), rule_version VARCHAR
)
"""


def simulate(ws: Workspace, year: int, rules_dir: Path) -> dict[str, Any]:
    rules = load_rules(rules_dir)
    con = ws.connect(read_only=True)
    try:
        batches = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT batch_id FROM lines WHERE plan_year = ? ORDER BY 1", [year]
            ).fetchall()
        ]
        if not batches:
            raise UsageError(f"the ledger has no adjudicated lines for plan year {year}.")
        con.execute(SIM_DDL)
        for b in batches:
            con.execute("DROP TABLE IF EXISTS adj_lines")
            con.execute("DROP TABLE IF EXISTS adj_opening")
            con.execute(LINES_DDL)
            con.execute(OPENING_DDL)
            con.execute(
                """
                INSERT INTO adj_lines
                SELECT l.line_key, l.person_key, l.scheme, l.plan_year, l.visit_type,
                    l.service_date, l.settlement_id, s.admission_date, s.total_cost,
                    s.self_pay_1, s.self_pay_2, s.out_of_pocket, l.kind,
                    o.rule_version, coalesce(o.base_amount, 0), coalesce(o.ratio_part, 0),
                    coalesce(o.allowance, 0), coalesce(o.allowance_days, 0)
                FROM lines l
                LEFT JOIN settlements s ON s.batch_id = l.row_batch_id AND s.row_key = l.row_key
                LEFT JOIN sim o ON o.line_key = l.reverses_line
                WHERE l.batch_id = ? AND l.plan_year = ?
                """,
                [b, year],
            )
            con.execute(
                """
                INSERT INTO adj_opening
                SELECT person_key, scheme, plan_year,
                    sum(base_amount) FILTER (visit_type = 'outpatient'),
                    sum(base_amount) FILTER (visit_type = 'inpatient'),
                    sum(ratio_part) FILTER (visit_type = 'outpatient'),
                    sum(ratio_part) FILTER (visit_type = 'inpatient'),
                    sum(ratio_part + allowance), sum(allowance_days)
                FROM sim GROUP BY ALL
                """
            )
            # a normal line of a scheme with no version in force under the new
            # rules pays nothing (it stays out of the replay)
            load_params(con, rules)
            con.execute(
                """
                DELETE FROM adj_lines WHERE kind = 'normal' AND NOT EXISTS (
                    SELECT 1 FROM adj_params p WHERE p.scheme = adj_lines.scheme
                      AND p.visit_type = adj_lines.visit_type
                      AND adj_lines.service_date >= p.effective_from
                      AND (p.effective_to IS NULL OR adj_lines.service_date <= p.effective_to))
                """
            )
            adjudicate(con, rules)
            con.execute(
                f"""
                INSERT INTO sim
                SELECT {int(b)}, r.line_key, a.person_key, a.scheme, a.plan_year, a.visit_type,
                       r.base_amount, r.ratio_part, r.allowance, r.allowance_days, r.payout,
                       r.rule_version
                FROM adj_result r JOIN adj_lines a USING (line_key)
                """
            )
        return _compare(con, year, ws)
    finally:
        con.close()


def _money(v: object) -> str:
    return f"{Decimal(str(v or 0)):.2f}"


def _rows(con: Any, sql: str, params: list[object]) -> list[dict[str, str]]:
    return [
        {
            "group": str(g),
            "actual": _money(a),
            "simulated": _money(s),
            "change": _money(Decimal(str(s or 0)) - Decimal(str(a or 0))),
        }
        for g, a, s in con.execute(sql, params).fetchall()
    ]


def _compare(con: Any, year: int, ws: Workspace) -> dict[str, Any]:
    bands = ws.settings.run.bands
    band_case = " ".join(f"WHEN t < {float(e)} THEN {i}" for i, e in enumerate(bands))
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE both_ AS
        SELECT l.line_key, l.settlement_id, l.member_id, l.unit_code, l.visit_type, l.payout AS actual,
               coalesce(s.payout, 0) AS simulated
        FROM lines l LEFT JOIN sim s USING (line_key)
        WHERE l.plan_year = ?
        """,
        [year],
    )
    total = _rows(con, "SELECT 'all', sum(actual), sum(simulated) FROM both_", [])
    by_visit = _rows(
        con, "SELECT visit_type, sum(actual), sum(simulated) FROM both_ GROUP BY 1 ORDER BY 1", []
    )
    by_band = _rows(
        con,
        f"""
        SELECT band, sum(a), sum(s) FROM (
            SELECT CASE {band_case} ELSE {len(bands)} END AS band, a, s FROM (
                SELECT settlement_id, sum(actual) AS a, sum(simulated) AS s,
                       greatest(sum(actual), sum(simulated)) AS t
                FROM both_ GROUP BY 1))
        GROUP BY 1 ORDER BY 1
        """,
        [],
    )
    labels = (
        [f"< {bands[0]:g}"]
        + [f"{a:g}-{b:g}" for a, b in zip(bands, bands[1:], strict=False)]
        + [f"> {bands[-1]:g}"]
    )
    for row in by_band:
        row["group"] = labels[int(row["group"])]
    by_unit = _rows(
        con,
        "SELECT coalesce(unit_code, ''), sum(actual), sum(simulated) FROM both_ GROUP BY 1 "
        "ORDER BY abs(sum(simulated) - sum(actual)) DESC, 1 LIMIT 20",
        [],
    )
    members = con.execute(
        """
        SELECT count(*) FILTER (s > a), count(*) FILTER (s < a), count(*) FILTER (s = a)
        FROM (SELECT member_id, sum(actual) a, sum(simulated) s FROM both_ GROUP BY 1)
        """
    ).fetchall()[0]
    largest = [
        {
            "member_id": m,
            "actual": _money(a),
            "simulated": _money(s),
            "change": _money(Decimal(str(s)) - Decimal(str(a))),
        }
        for m, a, s in con.execute(
            """
            SELECT member_id, sum(actual) a, sum(simulated) s FROM both_ GROUP BY 1
            HAVING sum(actual) <> sum(simulated)
            ORDER BY abs(sum(simulated) - sum(actual)) DESC, member_id LIMIT 20
            """
        ).fetchall()
    ]
    return {
        "year": year,
        "total": total,
        "by_visit_type": by_visit,
        "by_band": by_band,
        "by_unit": by_unit,
        "members": {"gain": int(members[0]), "lose": int(members[1]), "same": int(members[2])},
        "largest_changes": largest,
    }
