"""Membership, unit dues and per-scheme coverage, waiting period and rule
version (spec section 5, in that order)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from twopay.errors import UsageError
from twopay.identity.idnumber import id_normalise_sql
from twopay.io.readers import sql_literal
from twopay.rules.loader import RuleSet

# What the stages need from a person's records in time order (spec 2.1, 5):
# whether a record overlaps the one before (a roster error) and the start of
# its unbroken run of membership (a record continues the run when it starts the
# day after the previous one ends; the waiting period counts from there). Only
# people with several records need the window; for the rest the run starts at
# valid_from and nothing overlaps, so they have no row here.
ROSTER_TIME_SQL = """
CREATE OR REPLACE TEMP TABLE roster_time AS
WITH several AS (SELECT person_key FROM roster GROUP BY person_key HAVING count(*) > 1),
o AS (
    SELECT record_key, person_key, valid_from, line_number,
        lag(valid_from) OVER w AS prev_from, lag(valid_to) OVER w AS prev_to,
        lag(line_number) OVER w AS prev_line
    FROM roster SEMI JOIN several USING (person_key)
    WINDOW w AS (PARTITION BY person_key ORDER BY valid_from, record_key)
)
SELECT record_key, line_number, prev_line,
    prev_from IS NOT NULL AND (prev_to IS NULL OR prev_to >= valid_from) AS overlaps_prev,
    max(CASE WHEN prev_to IS NULL OR valid_from > prev_to + 1 THEN valid_from END) OVER (
        PARTITION BY person_key ORDER BY valid_from, record_key ROWS UNBOUNDED PRECEDING
    ) AS run_start
FROM o
"""


def check_roster_overlaps(con: duckdb.DuckDBPyConnection, roster_path: Path) -> None:
    """Spec 2.1: one person's records must not overlap in time (exit 2, both rows)."""
    rows = con.execute(
        "SELECT prev_line, line_number FROM roster_time WHERE overlaps_prev "
        "ORDER BY prev_line LIMIT 1"
    ).fetchall()
    if rows:
        raise UsageError(
            f"{roster_path}: lines {rows[0][0]} and {rows[0][1]} give one ID number "
            "membership records that overlap in time; end one before the other starts."
        )


SCHEME_DDL = """
CREATE OR REPLACE TEMP TABLE scheme_versions (
    scheme VARCHAR, version VARCHAR, effective_from DATE, effective_to DATE,
    enrollment VARCHAR, categories VARCHAR[], waiting_days INTEGER,
    has_outpatient BOOLEAN, has_inpatient BOOLEAN
)
"""


def _load_schemes(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> None:
    con.execute(SCHEME_DDL)
    con.executemany(
        "INSERT INTO scheme_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                v.rule.scheme,
                v.rule.version,
                v.rule.effective_from,
                v.rule.effective_to,
                v.rule.enrollment,
                list(v.rule.categories),
                v.rule.waiting_days,
                v.rule.outpatient is not None,
                v.rule.inpatient is not None,
            )
            for v in rules.versions
        ],
    )


def check(
    con: duckdb.DuckDBPyConnection, rules: RuleSet, *, has_units: bool, has_enrollments: bool
) -> None:
    """From ``identified2`` write ``decisions`` (one per row) and the view
    ``eligible_lines`` (one per row and scheme that passes; read once)."""
    _load_schemes(con, rules)
    units = (
        "SELECT unit_code, max(dues_paid_through) AS dues_paid_through FROM units_typed "
        "WHERE q_code IS NULL GROUP BY unit_code"
        if has_units
        else "SELECT NULL::VARCHAR AS unit_code, NULL::DATE AS dues_paid_through WHERE false"
    )
    enrollments = (
        f"""SELECT {id_normalise_sql("id_number")} AS person_key, member_id, scheme,
                   valid_from, valid_to
            FROM enrollments_typed WHERE q_code IS NULL"""
        if has_enrollments
        else "SELECT NULL::VARCHAR AS person_key, NULL::VARCHAR AS member_id, "
        "NULL::VARCHAR AS scheme, NULL::DATE AS valid_from, NULL::DATE AS valid_to WHERE false"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE member_checks AS
        WITH u AS ({units})
        -- what the checks, the lines and the ledger read; the identity
        -- evidence stays in identified2, read once by decisions
        SELECT i.* EXCLUDE (id_number, name, id_norm, id_problem, candidate_member_id,
                            evidence, id_detail, override_decision, carried, id_outcome,
                            id_member, id_record),
               r.member_id, r.unit_code, r.category, r.valid_from, r.valid_to,
               coalesce(rt.run_start, r.valid_from) AS run_start,
               r.valid_from <= i.service_date
                   AND (r.valid_to IS NULL OR i.service_date <= r.valid_to) AS member_active,
               u.unit_code IS NOT NULL AS unit_known, u.dues_paid_through
        FROM identified2 i
        LEFT JOIN roster r USING (record_key)
        LEFT JOIN roster_time rt USING (record_key)
        LEFT JOIN u ON u.unit_code = r.unit_code
        WHERE i.id_outcome IN ('exact', 'homophone', 'override')
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE scheme_checks AS
        WITH e AS ({enrollments}),
        pairs AS (
            SELECT m.row_batch_id, m.row_key, s.scheme, m.service_date, m.visit_type,
                   m.category, m.run_start, m.person_key, m.member_id
            FROM member_checks m
            CROSS JOIN (SELECT DISTINCT scheme FROM scheme_versions) s
            WHERE m.member_active AND (NOT {has_units} OR
                  (m.unit_known AND m.dues_paid_through >= m.service_date))
        ),
        -- the version coverage reads: in force, else the latest started
        -- before the date, else the earliest (spec 5). It depends on the
        -- scheme and the date alone: chosen once per distinct date, not per row.
        days AS (SELECT DISTINCT service_date FROM member_checks),
        version_on AS (
            SELECT d.service_date, v.scheme, v.version, v.enrollment, v.categories,
                   v.waiting_days, v.has_outpatient, v.has_inpatient,
                   v.effective_from <= d.service_date
                       AND (v.effective_to IS NULL OR d.service_date <= v.effective_to) AS in_force
            FROM days d CROSS JOIN scheme_versions v
            QUALIFY row_number() OVER (
                PARTITION BY d.service_date, v.scheme
                ORDER BY in_force DESC, (v.effective_from <= d.service_date) DESC,
                         CASE WHEN v.effective_from <= d.service_date
                              THEN v.effective_from END DESC,
                         v.effective_from, v.version) = 1
        ),
        chk AS (
            SELECT p.*, v.version, v.enrollment, v.categories, v.waiting_days,
                   v.has_outpatient, v.has_inpatient, v.in_force
            FROM pairs p JOIN version_on v
                ON v.scheme = p.scheme AND v.service_date = p.service_date
        ),
        required AS (SELECT * FROM chk WHERE enrollment = 'required'),
        enr AS (
            -- enrolled by ID number or by member_id: two equi-joins, not an OR
            -- (an OR join condition would compare every row with every enrollment)
            SELECT row_batch_id, row_key, scheme, min(valid_from) AS enrolled_from
            FROM (
                SELECT c.row_batch_id, c.row_key, c.scheme, e.valid_from
                FROM required c JOIN e ON e.scheme = c.scheme AND e.person_key = c.person_key
                WHERE e.valid_from <= c.service_date AND c.service_date <= e.valid_to
                UNION ALL
                SELECT c.row_batch_id, c.row_key, c.scheme, e.valid_from
                FROM required c JOIN e ON e.scheme = c.scheme AND e.member_id = c.member_id
                WHERE e.valid_from <= c.service_date AND c.service_date <= e.valid_to
            )
            GROUP BY ALL
        )
        -- what eligible_lines, decisions and the ledger read: 10M rows for a
        -- 5M-row month with two schemes, so nothing more
        SELECT c.row_batch_id, c.row_key, c.scheme, c.version,
            CASE
                WHEN NOT list_contains(c.categories, c.category)
                  OR (c.enrollment = 'required' AND enr.enrolled_from IS NULL)
                  OR NOT (CASE c.visit_type WHEN 'outpatient' THEN c.has_outpatient
                               ELSE c.has_inpatient END) THEN 1
                WHEN c.service_date < CASE c.enrollment WHEN 'required' THEN enr.enrolled_from
                                           ELSE c.run_start END + c.waiting_days THEN 2
                WHEN NOT c.in_force THEN 3
                ELSE 4
            END AS stage,
            CASE
                WHEN NOT list_contains(c.categories, c.category)
                    THEN c.scheme || ': category ' || c.category || ' not covered'
                WHEN c.enrollment = 'required' AND enr.enrolled_from IS NULL
                    THEN c.scheme || ': no enrollment in force on ' || c.service_date::VARCHAR
                WHEN NOT (CASE c.visit_type WHEN 'outpatient' THEN c.has_outpatient
                               ELSE c.has_inpatient END)
                    THEN c.scheme || ': ' || c.visit_type || ' not covered'
                WHEN c.service_date < CASE c.enrollment WHEN 'required' THEN enr.enrolled_from
                                           ELSE c.run_start END + c.waiting_days
                    THEN c.scheme || ': waiting period of ' || c.waiting_days::VARCHAR
                         || ' days from ' || (CASE c.enrollment WHEN 'required'
                            THEN enr.enrolled_from ELSE c.run_start END)::VARCHAR
                         || ' runs to ' || ((CASE c.enrollment WHEN 'required'
                            THEN enr.enrolled_from ELSE c.run_start END)
                            + c.waiting_days - 1)::VARCHAR
                WHEN NOT c.in_force
                    THEN c.scheme || ': no version in force on ' || c.service_date::VARCHAR
            END AS why_not
        FROM chk c
        LEFT JOIN enr USING (row_batch_id, row_key, scheme)
        """
    )
    schemes = sorted({v.rule.scheme for v in rules.versions})
    reasons = (
        "nullif(concat_ws('; ', "
        + ", ".join(f"max(why_not) FILTER (WHERE scheme = {sql_literal(s)})" for s in schemes)
        + "), '')"
        if schemes
        else "NULL::VARCHAR"
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW eligible_lines AS
        SELECT m.row_batch_id, m.row_key, m.settlement_id, s.scheme, m.person_key, m.member_id,
               m.unit_code, m.service_date, m.admission_date, m.visit_type, m.total_cost,
               m.self_pay_1, m.self_pay_2, m.out_of_pocket, m.match
        FROM member_checks m
        JOIN scheme_checks s USING (row_batch_id, row_key)
        WHERE s.stage = 4
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE decisions AS
        -- one pass over the scheme checks: the furthest stage a row reaches
        -- and, for rows no scheme passes, every scheme's reason in scheme order
        -- (one conditional aggregate per scheme; an ordered string_agg would
        -- sort each row's checks)
        WITH best AS (
            SELECT row_batch_id, row_key, max(stage) AS stage,
                   CASE WHEN max(stage) < 4 THEN {reasons} END AS why_not
            FROM scheme_checks GROUP BY ALL
        )
        SELECT i.row_batch_id, i.row_key, i.settlement_id, i.carried,
            CASE
                WHEN i.id_outcome IN ('probable_id_typo', 'probable_name_typo') THEN 'held'
                WHEN i.id_outcome NOT IN ('exact', 'homophone', 'override') THEN 'rejected'
                WHEN NOT m.member_active THEN 'rejected'
                WHEN m.member_active AND {has_units} AND (NOT m.unit_known
                     OR m.dues_paid_through < m.service_date) THEN 'rejected'
                WHEN b.stage = 4 THEN 'adjudicated'
                ELSE 'rejected'
            END AS outcome,
            CASE
                WHEN i.id_outcome NOT IN ('exact', 'homophone', 'override') THEN i.id_outcome
                WHEN NOT m.member_active THEN 'membership_inactive'
                WHEN {has_units} AND (NOT m.unit_known OR m.dues_paid_through < m.service_date)
                    THEN 'unit_dues_unpaid'
                WHEN b.stage = 4 THEN NULL
                WHEN b.stage = 3 THEN 'no_rule_version'
                WHEN b.stage = 2 THEN 'waiting_period'
                ELSE 'no_coverage'
            END AS code,
            CASE
                WHEN i.id_outcome NOT IN ('exact', 'homophone', 'override') THEN i.id_detail
                WHEN NOT m.member_active
                    THEN 'member ' || m.member_id || ' record valid ' || m.valid_from::VARCHAR
                         || ' to ' || coalesce(m.valid_to::VARCHAR, 'open') || '; service date '
                         || i.service_date::VARCHAR
                WHEN {has_units} AND NOT m.unit_known
                    THEN 'unit ' || m.unit_code || ' is not in the units file'
                WHEN {has_units} AND m.dues_paid_through < m.service_date
                    THEN 'unit ' || m.unit_code || ' dues paid through '
                         || m.dues_paid_through::VARCHAR || '; service date '
                         || i.service_date::VARCHAR
                WHEN b.stage = 4 THEN NULL
                ELSE coalesce(b.why_not, 'no scheme in the rules')
            END AS detail,
            i.person_key, m.member_id, m.unit_code, i.match, i.candidate_member_id,
            -- NULL for a plain exact match: spelled out from id_member and
            -- id_record (identity.match.exact_evidence_sql) as it goes to the ledger
            i.evidence AS identity, i.id_member, i.id_record,
            -- the checks themselves are kept flat (eligibility_members and
            -- eligibility_schemes in the ledger); v_eligibility assembles them
            NULL::VARCHAR AS eligibility
        FROM identified2 i
        LEFT JOIN member_checks m USING (row_batch_id, row_key)
        LEFT JOIN best b USING (row_batch_id, row_key)
        """.replace("{has_units}", "true" if has_units else "false").replace("{reasons}", reasons)
    )
