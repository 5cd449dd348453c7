"""Rule versions compiled to set-based SQL (spec 4.1).

Pure functions that return SQL text; `engine.py` executes them. Keeping the
generation apart lets an analyst read what the rules compile to
(`twopay rules sql`).

How the sequential definition becomes set-based:

* base_ytd is never capped, so ``base_before`` is a window sum over the ordered
  lines of (person, scheme, plan year, visit type), plus the opening balance of
  earlier batches. ``computed`` then depends on that line alone.
* the caps are a recurrence (each ratio_part depends on the capped sum of the
  lines before it). When, in a group, no line would exceed any cap with the
  *uncapped* running sums, every cap is inactive and the running sums are exact
  (by induction over the lines): that is the fast path, window sums only.
* the groups where some cap binds are walked line by line with a recursive
  CTE, all such groups at once (iteration k handles the k-th line of every
  group), so the sequential part is still set-based and touches only the
  residue. A group is walked from its first binding line (the lines before it
  are exact, by the same induction), and the groups go in chunks of bounded
  size: a recursive CTE's working set is held in memory, and the groups are
  independent, so chunking changes no result.
"""

from __future__ import annotations

from dataclasses import dataclass

from twopay.rules.dialect import DIALECT, DuckDBDialect
from twopay.rules.loader import RuleSet
from twopay.rules.models import VISIT_TYPES, VisitRule


@dataclass(frozen=True)
class ParamRow:
    """One (version, visit type) of the rule set, as a row of adj_params."""

    fkey: int
    scheme: str
    version: str
    visit_type: str
    effective_from: object
    effective_to: object
    base: str
    deductible: object
    scope: str
    per_episode_cap: object
    type_cap: object
    scheme_cap: object
    per_day: object
    max_days: object


def param_rows(rules: RuleSet) -> list[ParamRow]:
    rows: list[ParamRow] = []
    for v in rules.versions:
        r = v.rule
        for visit_type in VISIT_TYPES:
            visit = r.visit(visit_type)
            if visit is None:
                continue
            rows.append(
                ParamRow(
                    fkey=len(rows),
                    scheme=r.scheme,
                    version=r.version,
                    visit_type=visit_type,
                    effective_from=r.effective_from,
                    effective_to=r.effective_to,
                    base=r.base,
                    deductible=visit.deductible,
                    scope=visit.deductible_scope,
                    per_episode_cap=visit.per_episode_cap,
                    type_cap=visit.annual_cap,
                    scheme_cap=r.annual_cap,
                    per_day=visit.allowance.per_day if visit.allowance else None,
                    max_days=visit.allowance.max_days if visit.allowance else None,
                )
            )
    return rows


def ratio_function_sql(visit: VisitRule, x: str, d: DuckDBDialect = DIALECT) -> str:
    """F(x): the integral of the (tiered) ratio from 0 to x (spec 4.1)."""
    terms = []
    for lower, upper, ratio in visit.segments():
        above = f"greatest({x} - {d.decimal_literal(lower)}, 0)"
        if upper is not None:
            above = f"least({above}, {d.decimal_literal(upper - lower)})"
        terms.append(f"{d.decimal_literal(ratio)} * {above}")
    return " + ".join(terms) if terms else "0"


def computed_sql(rules: RuleSet, d: DuckDBDialect = DIALECT) -> str:
    """computed = F(ya) - F(yb), rounded half-up, chosen by the line's fkey."""
    whens = []
    fkey = 0
    for v in rules.versions:
        for visit_type in VISIT_TYPES:
            visit = v.rule.visit(visit_type)
            if visit is None:
                continue
            whens.append(
                f"WHEN {fkey} THEN ({ratio_function_sql(visit, 'ya', d)}) - "
                f"({ratio_function_sql(visit, 'yb', d)})"
            )
            fkey += 1
    if not whens:
        return d.money("0")
    return d.round_half_up("CASE fkey " + " ".join(whens) + " END")


PARAMS_DDL = """
CREATE OR REPLACE TEMP TABLE adj_params (
    fkey INTEGER, scheme VARCHAR, version VARCHAR, visit_type VARCHAR,
    effective_from DATE, effective_to DATE, base VARCHAR,
    deductible DECIMAL(18,2), scope VARCHAR, per_episode_cap DECIMAL(18,2),
    type_cap DECIMAL(18,2), scheme_cap DECIMAL(18,2), per_day DECIMAL(18,2),
    max_days INTEGER
)
"""


def own_type_sum(visit_type: str, value: str, window: str) -> str:
    """The running sum of ``value`` over the line's own visit type, as sums over
    the whole (person, scheme, plan year) window: every accumulator of a step
    then shares one partition, i.e. one sort, instead of one per visit type."""
    whens = " ".join(
        f"WHEN '{vt}' THEN sum(CASE WHEN {visit_type} = '{vt}' THEN {value} END) OVER {window}"
        for vt in VISIT_TYPES
    )
    return f"CASE {visit_type} {whens} END"


def prepared_sql(rules: RuleSet, d: DuckDBDialect = DIALECT) -> str:
    """Every line with its version's parameters, base_before (window sum) and
    the pre-cap amounts: computed, x (after the per-episode cap), the
    allowance asked for."""
    big = d.unbounded
    return f"""
CREATE OR REPLACE TEMP TABLE adj_prepared AS
WITH versioned AS (
    SELECT
        l.*,
        p.fkey, p.version AS version_label, p.deductible, p.scope,
        p.per_episode_cap, coalesce(p.type_cap, {big}) AS type_cap,
        coalesce(p.scheme_cap, {big}) AS scheme_cap, p.per_day, p.max_days,
        CASE l.kind
            WHEN 'clawback' THEN -l.orig_base_amount
            ELSE CASE p.base
                WHEN 'self_pay_1' THEN l.self_pay_1
                WHEN 'self_pay_2' THEN coalesce(l.self_pay_2, 0)
                WHEN 'out_of_pocket' THEN coalesce(l.out_of_pocket, 0)
                ELSE l.total_cost
            END
        END AS d_base
    FROM adj_lines AS l
    LEFT JOIN adj_params AS p
        ON l.kind = 'normal'
        AND p.scheme = l.scheme
        AND p.visit_type = l.visit_type
        AND l.service_date >= p.effective_from
        AND (p.effective_to IS NULL OR l.service_date <= p.effective_to)
),
ordered AS (
    SELECT
        v.*,
        coalesce(CASE v.visit_type
            WHEN 'outpatient' THEN o.base_outpatient ELSE o.base_inpatient END, 0)
        + coalesce({own_type_sum("v.visit_type", "v.d_base", "lines_before")}, 0) AS base_before,
        coalesce(CASE v.visit_type
            WHEN 'outpatient' THEN o.paid_outpatient ELSE o.paid_inpatient END, 0)
            AS open_paid_type,
        coalesce(o.paid_outpatient, 0) AS open_paid_outpatient,
        coalesce(o.paid_inpatient, 0) AS open_paid_inpatient,
        coalesce(o.paid_total, 0) AS open_paid_total,
        coalesce(o.allowance_days, 0) AS open_days,
        row_number() OVER lines_upto AS rn,
        -- the group as one integer (its first line's key): the later windows
        -- partition by it, and an integer sorts far faster than the keys
        first_value(v.line_key) OVER lines_upto AS grp
    FROM versioned AS v
    LEFT JOIN adj_opening AS o USING (person_key, scheme, plan_year)
    WINDOW lines_upto AS (
        PARTITION BY v.person_key, v.scheme, v.plan_year
        ORDER BY v.service_date, v.settlement_id, v.line_key),
    lines_before AS (lines_upto ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
amounts AS (
    SELECT
        *,
        CASE WHEN kind = 'normal' AND scope = 'episode'
            THEN greatest(d_base - deductible, 0)
            ELSE greatest(base_before + d_base - deductible, 0) END AS ya,
        CASE WHEN kind = 'normal' AND scope = 'episode'
            THEN 0
            ELSE greatest(base_before - deductible, 0) END AS yb
    FROM ordered
)
SELECT
    -- what the later steps do not read stays out of this wide copy of every line
    * EXCLUDE (ya, yb, total_cost, self_pay_1, self_pay_2, out_of_pocket, orig_base_amount,
               fkey, deductible, scope),
    CASE kind WHEN 'normal' THEN {computed_sql(rules, d)} ELSE 0 END AS computed,
    CASE WHEN kind <> 'normal' THEN 0
        WHEN scope = 'episode' THEN least(d_base, deductible)
        ELSE least(d_base, greatest(deductible - base_before, 0)) END AS deductible_applied,
    CASE WHEN kind = 'normal' AND per_day IS NOT NULL AND admission_date IS NOT NULL
        THEN greatest(1, {d.days_between("admission_date", "service_date")})
        ELSE 0 END AS days_asked
FROM amounts
"""


def step_sql(d: DuckDBDialect = DIALECT) -> str:
    """Pre-cap amounts and their uncapped running sums; flags where a cap binds.
    A narrow table keyed by adj_prepared's rowid: the window sorts only the
    few columns it needs, and the wide columns are joined once, in adj_result
    (a wide copy of every line here cost as much as the window itself)."""
    money = d.money_fn
    return f"""
CREATE OR REPLACE TEMP TABLE adj_steps AS
WITH asked AS (
    SELECT
        rowid AS rid, grp, visit_type, rn, kind,
        open_paid_type, open_paid_total, open_days, days_asked,
        type_cap, scheme_cap, max_days,
        CASE kind WHEN 'normal'
            THEN least(computed, coalesce(per_episode_cap, computed))
            ELSE -orig_ratio_part END AS d_ratio,
        CASE kind WHEN 'normal' THEN days_asked ELSE -orig_allowance_days END AS d_days,
        CASE kind WHEN 'normal' THEN {money}(days_asked * coalesce(per_day, 0))
            ELSE -orig_allowance END AS d_allowance
    FROM adj_prepared
),
running AS (
    SELECT
        *,
        open_paid_type + coalesce({own_type_sum("visit_type", "d_ratio", "lines_before")}, 0)
            AS paid_type_before,
        open_paid_total + coalesce(sum(d_ratio + d_allowance) OVER lines_before, 0)
            AS paid_total_before,
        open_days + coalesce(sum(d_days) OVER lines_before, 0) AS days_before
    FROM asked
    WINDOW lines_before AS (
        PARTITION BY grp ORDER BY rn ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
)
SELECT
    rid, grp, rn, d_ratio, d_days, d_allowance, paid_type_before, paid_total_before, days_before,
    -- a cap binds on this line when the uncapped running sums would cross it
    -- (checked with uncapped sums; exact as long as none bound before)
    kind = 'normal' AND (
        paid_type_before + d_ratio > type_cap
        OR paid_total_before + d_ratio + d_allowance > scheme_cap
        OR (days_asked > 0 AND days_before + days_asked > max_days)
    ) AS binds
FROM running
"""


def residue_sql() -> str:
    """The lines of the groups where some cap binds: only the columns the walk
    reads, each group (``grp``) given to a ``chunk`` of at most
    about ``$chunk_rows`` lines to walk. ``first_rn`` is the group's first
    line where a cap binds: the lines before it are exact from the window
    sums (no cap bound yet), so the walk starts there."""
    return """
-- $chunk_rows: about how many lines one recursive CTE walks (engine.WALK_CHUNK_ROWS)
CREATE OR REPLACE TEMP TABLE adj_residue AS
WITH bound AS (
    SELECT grp, min(rn) AS first_rn FROM adj_steps WHERE binds GROUP BY grp
),
lines AS (
    SELECT
        s.grp, b.first_rn, s.rn, p.line_key,
        p.visit_type, p.kind, p.type_cap, p.scheme_cap, p.days_asked, p.max_days, p.per_day,
        p.open_paid_outpatient, p.open_paid_inpatient, p.open_paid_total, p.open_days,
        s.d_ratio, s.d_days, s.d_allowance
    FROM adj_steps AS s
    JOIN bound AS b USING (grp)
    JOIN adj_prepared AS p ON p.rowid = s.rid
),
groups AS (
    SELECT grp, count(*) FILTER (WHERE rn >= first_rn) AS walk_rows FROM lines GROUP BY grp
),
chunked AS (
    SELECT grp, (sum(walk_rows) OVER by_group - walk_rows) // $chunk_rows AS chunk
    FROM groups
    WINDOW by_group AS (ORDER BY grp ROWS UNBOUNDED PRECEDING)
)
SELECT c.chunk, l.*
FROM lines AS l JOIN chunked AS c USING (grp)
"""


def walk_start_sql(d: DuckDBDialect = DIALECT) -> str:
    """Each residue group's accumulators just before its first binding line:
    the opening balance plus the (exact) amounts of the lines before it."""
    money = d.money_fn
    before = "rn < first_rn"
    return f"""
CREATE OR REPLACE TEMP TABLE adj_walk_start AS
SELECT
    grp, any_value(chunk) AS chunk, any_value(first_rn) - 1 AS rn,
    {money}(any_value(open_paid_outpatient) + coalesce(
        sum(d_ratio) FILTER (WHERE {before} AND visit_type = 'outpatient'), 0)) AS paid_out,
    {money}(any_value(open_paid_inpatient) + coalesce(
        sum(d_ratio) FILTER (WHERE {before} AND visit_type = 'inpatient'), 0)) AS paid_in,
    {money}(any_value(open_paid_total) + coalesce(
        sum(d_ratio + d_allowance) FILTER (WHERE {before}), 0)) AS paid_total,
    CAST(any_value(open_days) + coalesce(sum(d_days) FILTER (WHERE {before}), 0) AS INTEGER)
        AS days
FROM adj_residue
GROUP BY grp
"""


def walked_ddl(d: DuckDBDialect = DIALECT) -> str:
    m = d.money_type
    return f"""
CREATE OR REPLACE TEMP TABLE adj_walked (
    line_key BIGINT, ratio_part {m}, allowance {m}, allowance_days INTEGER,
    paid_type_before {m}, paid_total_before {m}, days_before INTEGER)
"""


def walk_sql(d: DuckDBDialect = DIALECT) -> str:
    """The sequential definition, run over the groups where a cap binds, from
    each group's first binding line; once per chunk (``$chunk`` = 0, 1, ...):
    the groups are independent, and a chunk bounds what the recursive CTE
    holds in memory (its working set is not spilled)."""
    money = d.money_fn
    return f"""
-- run once per chunk: $chunk is each value of adj_walk_start.chunk
INSERT INTO adj_walked
{d.recursive_with()} residue AS (
    SELECT * FROM adj_residue WHERE chunk = $chunk AND rn >= first_rn
),
walk(grp, rn, line_key, paid_out, paid_in, paid_total, days,
     ratio_part, allowance, allowance_days,
     paid_type_before, paid_total_before, days_before) AS (
    SELECT grp, rn, NULL::BIGINT, paid_out, paid_in, paid_total, days,
        NULL::{d.money_type}, NULL::{d.money_type}, NULL::INTEGER,
        NULL::{d.money_type}, NULL::{d.money_type}, NULL::INTEGER
    FROM adj_walk_start
    WHERE chunk = $chunk
    UNION ALL
    SELECT
        grp, rn, line_key,
        paid_out + CASE visit_type WHEN 'outpatient' THEN step_ratio ELSE 0 END,
        paid_in + CASE visit_type WHEN 'inpatient' THEN step_ratio ELSE 0 END,
        paid_total + step_ratio + step_allowance,
        days + step_days,
        step_ratio, step_allowance, step_days,
        paid_type, paid_total, days
    FROM (
        -- step_* names are distinct from walk's columns on purpose: an alias
        -- that shadows a FROM column would silently read the previous row.
        SELECT
            w.paid_out, w.paid_in, w.paid_total, w.days, r.*,
            CASE r.visit_type WHEN 'outpatient' THEN w.paid_out ELSE w.paid_in END
                AS paid_type,
            CASE r.kind WHEN 'normal'
                THEN greatest(0, least(r.d_ratio, r.type_cap - paid_type,
                                       r.scheme_cap - w.paid_total))
                ELSE r.d_ratio END AS step_ratio,
            CASE r.kind WHEN 'normal'
                THEN CAST(greatest(0, least(r.days_asked,
                        coalesce(r.max_days, 0) - w.days)) AS INTEGER)
                ELSE r.d_days END AS step_days,
            CASE r.kind WHEN 'normal'
                THEN {money}(greatest(0, least(step_days * coalesce(r.per_day, 0),
                        r.scheme_cap - w.paid_total - step_ratio)))
                ELSE r.d_allowance END AS step_allowance
        FROM walk AS w
        JOIN residue AS r ON r.grp = w.grp AND r.rn = w.rn + 1
    )
)
SELECT line_key, ratio_part, allowance, allowance_days,
    paid_type_before, paid_total_before, days_before
FROM walk
WHERE line_key IS NOT NULL
"""


def result_sql(d: DuckDBDialect = DIALECT) -> str:
    money = d.money_fn
    return f"""
CREATE OR REPLACE TEMP TABLE adj_result AS
WITH merged AS (
    SELECT
        p.*,
        coalesce(w.ratio_part, s.d_ratio) AS ratio_part,
        coalesce(w.allowance, s.d_allowance) AS allowance_amt,
        coalesce(w.allowance_days, s.d_days) AS allowance_days_n,
        coalesce(w.paid_type_before, s.paid_type_before) AS paid_type_b,
        coalesce(w.paid_total_before, s.paid_total_before) AS paid_total_b,
        coalesce(w.days_before, s.days_before) AS days_b
    FROM adj_prepared AS p
    JOIN adj_steps AS s ON p.rowid = s.rid
    LEFT JOIN adj_walked AS w ON w.line_key = p.line_key
)
SELECT
    line_key,
    -- the line's own columns the caller reports, passed through so that it
    -- need not keep adj_lines beside adj_prepared's copy of it
    settlement_id, scheme, kind, person_key, plan_year, visit_type, service_date,
    CASE kind WHEN 'normal' THEN version_label ELSE orig_rule_version END AS rule_version,
    {money}(d_base) AS base_amount,
    {money}(deductible_applied) AS deductible_applied,
    {money}(computed) AS computed,
    {money}(ratio_part) AS ratio_part,
    {money}(allowance_amt) AS allowance,
    CAST(allowance_days_n AS INTEGER) AS allowance_days,
    {money}(ratio_part + allowance_amt) AS payout,
    CASE WHEN kind = 'clawback' THEN 'clawback'
        WHEN ratio_part + allowance_amt > 0 THEN 'paid' ELSE 'zero' END AS status,
    CASE WHEN kind = 'clawback' THEN '' ELSE concat_ws(';',
        CASE WHEN computed = 0 THEN 'below_deductible' END,
        CASE WHEN ratio_part < computed
            OR allowance_amt < {money}(days_asked * coalesce(per_day, 0))
            THEN 'cap_reached' END,
        CASE WHEN visit_type = 'inpatient' AND per_day IS NOT NULL
            AND admission_date IS NULL THEN 'no_admission_date' END) END AS note,
    {money}(base_before) AS base_ytd_before,
    {money}(base_before + d_base) AS base_ytd_after,
    {money}(paid_type_b) AS paid_type_before,
    {money}(paid_type_b + ratio_part) AS paid_type_after,
    {money}(paid_total_b) AS paid_total_before,
    {money}(paid_total_b + ratio_part + allowance_amt) AS paid_total_after,
    CAST(days_b AS INTEGER) AS days_before,
    CAST(days_b + allowance_days_n AS INTEGER) AS days_after
FROM merged
"""


def all_sql(rules: RuleSet, d: DuckDBDialect = DIALECT) -> list[tuple[str, str]]:
    """The named steps, in order (for `rules sql` and for execution)."""
    return [
        ("adj_prepared", prepared_sql(rules, d)),
        ("adj_steps", step_sql(d)),
        ("adj_residue", residue_sql()),
        ("adj_walk_start", walk_start_sql(d)),
        ("adj_walked", walked_ddl(d)),
        ("adj_walk_chunk", walk_sql(d)),
        ("adj_result", result_sql(d)),
    ]
