"""Run the compiled rules over the lines of a batch (spec 4.1).

Contract (tables on the given connection):

* ``adj_lines`` (line_key, person_key, scheme, plan_year, visit_type,
  service_date, settlement_id, admission_date, total_cost, self_pay_1,
  self_pay_2, out_of_pocket, kind 'normal'|'clawback', orig_rule_version,
  orig_base_amount, orig_ratio_part, orig_allowance, orig_allowance_days)
* ``adj_opening`` (person_key, scheme, plan_year, base_outpatient,
  base_inpatient, paid_outpatient, paid_inpatient, paid_total, allowance_days):
  the accumulators of earlier batches.

Writes ``adj_result`` with one row per line (see compile.result_sql), the
line's own columns passed through. adj_lines is consumed: it is dropped as
soon as adj_prepared holds its copy.
"""

from __future__ import annotations

import duckdb

from twopay.ledger.tables import insert_rows
from twopay.rules.compile import PARAMS_DDL, all_sql, param_rows
from twopay.rules.dialect import DIALECT
from twopay.rules.loader import RuleSet

LINES_DDL = """
CREATE TEMP TABLE IF NOT EXISTS adj_lines (
    line_key BIGINT, person_key VARCHAR, scheme VARCHAR, plan_year INTEGER,
    visit_type VARCHAR, service_date DATE, settlement_id VARCHAR, admission_date DATE,
    total_cost DECIMAL(18,2), self_pay_1 DECIMAL(18,2), self_pay_2 DECIMAL(18,2),
    out_of_pocket DECIMAL(18,2), kind VARCHAR, orig_rule_version VARCHAR,
    orig_base_amount DECIMAL(18,2), orig_ratio_part DECIMAL(18,2),
    orig_allowance DECIMAL(18,2), orig_allowance_days INTEGER
)
"""

OPENING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS adj_opening (
    person_key VARCHAR, scheme VARCHAR, plan_year INTEGER,
    base_outpatient DECIMAL(18,2), base_inpatient DECIMAL(18,2),
    paid_outpatient DECIMAL(18,2), paid_inpatient DECIMAL(18,2),
    paid_total DECIMAL(18,2), allowance_days INTEGER
)
"""


def load_params(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> None:
    """The rule numbers go in as data (parameters), not as SQL text."""
    con.execute(PARAMS_DDL)
    rows = [
        (
            r.fkey,
            r.scheme,
            r.version,
            r.visit_type,
            r.effective_from,
            r.effective_to,
            r.base,
            r.deductible,
            r.scope,
            r.per_episode_cap,
            r.type_cap,
            r.scheme_cap,
            r.per_day,
            r.max_days,
        )
        for r in param_rows(rules)
    ]
    insert_rows(con, "adj_params", rows)


# About this many lines are walked by one recursive CTE, whose working set
# DuckDB keeps in memory (see compile.walk_sql). A month's residue is usually
# one chunk; benchmarks/bench_engine.py walks 30M lines (6.6M of them capped)
# under memory_limit 500MB this way.
WALK_CHUNK_ROWS = 500_000


def adjudicate(
    con: duckdb.DuckDBPyConnection, rules: RuleSet, walk_chunk_rows: int = WALK_CHUNK_ROWS
) -> None:
    if walk_chunk_rows < 1:
        raise ValueError(f"walk_chunk_rows must be at least 1, not {walk_chunk_rows}")
    for stmt in DIALECT.setup_sql():
        con.execute(stmt)
    con.execute(LINES_DDL)
    con.execute(OPENING_DDL)
    load_params(con, rules)
    # adj_prepared is the one wide copy of the lines (adj_lines goes once it
    # is made); the steps' tables go once adj_result has read them
    done_with = {
        "adj_prepared": ("adj_lines",),
        "adj_result": ("adj_prepared", "adj_steps", "adj_residue", "adj_walk_start", "adj_walked"),
    }
    for name, sql in all_sql(rules):
        if name == "adj_residue":
            con.execute(sql, {"chunk_rows": walk_chunk_rows})
        elif name == "adj_walk_chunk":
            chunks = con.execute("SELECT DISTINCT chunk FROM adj_walk_start ORDER BY 1").fetchall()
            for (chunk,) in chunks:
                con.execute(sql, {"chunk": chunk})
        else:
            con.execute(sql)
        for table in done_with.get(name, ()):
            con.execute(f"DROP TABLE IF EXISTS {table}")
