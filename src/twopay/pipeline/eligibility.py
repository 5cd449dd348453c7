"""Membership, unit dues and per-scheme coverage, waiting period and rule
version (spec section 5, in that order)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from twopay.errors import UsageError
from twopay.identity.idnumber import TODAY_SQL, id_normalise_sql, id_problem_sql
from twopay.io.readers import sql_literal
from twopay.ledger.tables import insert_rows
from twopay.rules.loader import RuleSet
from twopay.rules.models import RuleVersion

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
    # A value Excel turned into a number (1.10105E+17) is no ID number: such
    # records never match (spec 3), and different people share the value, so
    # their dates are not one person's records overlapping.
    rows = con.execute(
        f"""
        SELECT t.prev_line, t.line_number FROM roster_time t JOIN roster r USING (record_key)
        WHERE t.overlaps_prev
          AND {id_problem_sql("r.person_key", TODAY_SQL)} IS DISTINCT FROM 'excel_mangled'
        ORDER BY t.prev_line LIMIT 1
        """
    ).fetchall()
    if rows:
        raise UsageError(
            f"{roster_path}: lines {rows[0][0]} and {rows[0][1]} give one ID number "
            "membership records that overlap in time; end one before the other starts."
        )


def check_roster_member_ids(con: duckdb.DuckDBPyConnection, roster_path: Path) -> None:
    """A member_id names one person: payments are made per member_id, to the
    card of its latest record, so a member_id under two ID numbers would pay
    one person's claims to the other (exit 2, a row of each)."""
    rows = con.execute(
        """
        WITH per_person AS (
            SELECT member_id, person_key, min(line_number) AS line FROM roster
            WHERE member_id IS NOT NULL GROUP BY member_id, person_key
        )
        SELECT member_id, min(line), max(line) FROM per_person
        GROUP BY member_id HAVING count(*) > 1 ORDER BY 2 LIMIT 1
        """
    ).fetchall()
    if rows:
        member, first, second = rows[0]
        raise UsageError(
            f"{roster_path}: lines {first} and {second} give member_id {member} to two "
            "different ID numbers; a member_id belongs to one person."
        )


SCHEME_DDL = """
CREATE OR REPLACE TEMP TABLE scheme_versions (
    scheme VARCHAR, version VARCHAR, effective_from DATE, effective_to DATE,
    enrollment VARCHAR, categories VARCHAR[], waiting_days INTEGER,
    has_outpatient BOOLEAN, has_inpatient BOOLEAN
)
"""


def coverage_terms(rule: RuleVersion) -> tuple[object, ...]:
    """What decides whom a version covers (spec 5: coverage, waiting, a
    version in force): the columns of scheme_versions after scheme and
    version. simulate compares them to say when other rules change them."""
    return (
        rule.effective_from,
        rule.effective_to,
        rule.enrollment,
        sorted(rule.categories),
        rule.waiting_days,
        rule.outpatient is not None,
        rule.inpatient is not None,
    )


def _load_schemes(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> None:
    con.execute(SCHEME_DDL)
    insert_rows(
        con,
        "scheme_versions",
        [(v.rule.scheme, v.rule.version, *coverage_terms(v.rule)) for v in rules.versions],
    )


def _schemes(rules: RuleSet) -> list[str]:
    """The schemes in order: column k of the per-scheme checks is scheme k."""
    return sorted({v.rule.scheme for v in rules.versions})


def scheme_columns(rules: RuleSet) -> list[str]:
    """The per-scheme columns of ``member_checks``: scheme k's version,
    stage reached (1-4; NULL where the row never reached the schemes) and
    reason it stopped."""
    return [f"{c}_{k}" for k in range(len(_schemes(rules))) for c in ("version", "stage", "why")]


def scheme_checks_sql(rules: RuleSet, source: str) -> str:
    """The checks one per row and scheme (the ledger's eligibility_schemes)
    from the per-scheme columns of ``source``."""
    parts = [
        f"SELECT row_batch_id, row_key, {sql_literal(s)} AS scheme, version_{k} AS version, "
        f"stage_{k} AS stage, why_{k} AS why_not FROM {source} WHERE stage_{k} IS NOT NULL"
        for k, s in enumerate(_schemes(rules))
    ]
    return (
        " UNION ALL ".join(parts)
        if parts
        else "SELECT NULL::INTEGER AS row_batch_id, NULL::BIGINT AS row_key, "
        "NULL::VARCHAR AS scheme, NULL::VARCHAR AS version, NULL::INTEGER AS stage, "
        "NULL::VARCHAR AS why_not WHERE false"
    )


def _scheme_check_sql(k: int, scheme: str, has_enrollments: bool) -> tuple[str, str]:
    """The join and the three columns of scheme ``k``'s checks (spec 5:
    covered, waiting period, a version in force). ``c`` is the row, ``v{k}``
    the version that coverage reads on its date, ``n{k}`` its enrollment."""
    v, n = f"v{k}", f"n{k}"
    join = (
        f"LEFT JOIN version_on {v} ON {v}.service_date = c.service_date "
        f"AND {v}.scheme = {sql_literal(scheme)}"
    )
    if has_enrollments:
        join += (
            f" LEFT JOIN enr {n} ON {n}.row_batch_id = c.row_batch_id "
            f"AND {n}.row_key = c.row_key AND {n}.scheme = {sql_literal(scheme)}"
        )
        enrolled = f"{n}.enrolled_from"
    else:
        enrolled = "NULL::DATE"
    start = f"(CASE {v}.enrollment WHEN 'required' THEN {enrolled} ELSE c.run_start END)"
    covers = (
        f"(CASE c.visit_type WHEN 'outpatient' THEN {v}.has_outpatient ELSE {v}.has_inpatient END)"
    )
    label = sql_literal(scheme)
    # a run without --enrollments: every required scheme fails for everyone,
    # and the detail says why rather than blaming each member
    unfiled = "" if has_enrollments else " || ' (the run was given no --enrollments file)'"
    cols = f"""
        CASE WHEN c.checked THEN {v}.version END AS version_{k},
        CASE WHEN NOT c.checked THEN NULL
            WHEN NOT list_contains({v}.categories, c.category)
              OR ({v}.enrollment = 'required' AND {enrolled} IS NULL)
              OR NOT {covers} THEN 1
            WHEN c.service_date < {start} + {v}.waiting_days THEN 2
            WHEN NOT {v}.in_force THEN 3
            ELSE 4
        END AS stage_{k},
        CASE WHEN NOT c.checked THEN NULL
            WHEN NOT list_contains({v}.categories, c.category)
                THEN {label} || ': category ' || c.category || ' not covered'
            WHEN {v}.enrollment = 'required' AND {enrolled} IS NULL
                THEN {label} || ': no enrollment in force on ' || c.service_date::VARCHAR{unfiled}
            WHEN NOT {covers}
                THEN {label} || ': ' || c.visit_type || ' not covered'
            WHEN c.service_date < {start} + {v}.waiting_days
                THEN {label} || ': waiting period of ' || {v}.waiting_days::VARCHAR
                     || ' days from ' || {start}::VARCHAR
                     || ' runs to ' || ({start} + {v}.waiting_days - 1)::VARCHAR
            WHEN NOT {v}.in_force
                THEN {label} || ': no version in force on ' || c.service_date::VARCHAR
        END AS why_{k}"""
    return join, cols


def check(
    con: duckdb.DuckDBPyConnection,
    rules: RuleSet,
    *,
    has_units: bool,
    has_enrollments: bool,
    unread: str = "(SELECT NULL::VARCHAR AS id_norm, NULL::BIGINT AS line WHERE false)",
) -> None:
    """From ``identified2`` write ``member_checks`` (one per row of
    identified2, with each scheme's checks as columns: scheme_columns; the
    checks mean something where ``identified``), and the views ``decisions``
    (one outcome per row) and ``eligible_lines`` (one per row and scheme that
    passes). The views are each read once, by the statement that writes their
    rows into the ledger: decisions is one scan of member_checks, not a copy
    of millions of rows or a second join."""
    _load_schemes(con, rules)
    schemes = _schemes(rules)
    units = (
        # a unit whose rows could not be read still counts as unpaid (spec 5),
        # but its detail says so rather than "not in the units file"
        "SELECT unit_code, max(dues_paid_through) FILTER (WHERE q_code IS NULL) "
        "AS dues_paid_through, bool_or(q_code IS NULL) AS unit_readable, "
        "min(line_number) FILTER (WHERE q_code IS NOT NULL) AS unit_bad_line "
        "FROM units_typed WHERE unit_code IS NOT NULL GROUP BY unit_code"
        if has_units
        else "SELECT NULL::VARCHAR AS unit_code, NULL::DATE AS dues_paid_through, "
        "NULL::BOOLEAN AS unit_readable, NULL::BIGINT AS unit_bad_line WHERE false"
    )
    identified = "i.id_outcome IN ('exact', 'homophone', 'override')"
    if has_enrollments:
        # enrolled by ID number or by member_id: two equi-joins, not an OR (an
        # OR join condition would compare every row with every enrollment).
        # Found for every scheme; a check reads it where its version requires it.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE enr AS
            WITH e AS (
                SELECT {id_normalise_sql("id_number")} AS person_key, member_id, scheme,
                       valid_from, valid_to
                FROM enrollments_typed WHERE q_code IS NULL
            ),
            c AS (
                SELECT i.row_batch_id, i.row_key, i.service_date, i.person_key, r.member_id
                FROM identified2 i JOIN roster r USING (record_key) WHERE {identified}
            )
            SELECT row_batch_id, row_key, scheme, min(valid_from) AS enrolled_from
            FROM (
                SELECT c.row_batch_id, c.row_key, e.scheme, e.valid_from
                FROM c JOIN e ON e.person_key = c.person_key
                WHERE e.valid_from <= c.service_date AND c.service_date <= e.valid_to
                UNION ALL
                -- a member_id names a person (check_roster_member_ids): the
                -- enrollment is theirs whichever member_id the record of the
                -- service date carries (a card re-issued under a new one).
                -- Only a valid ID number names one person: records under
                -- 1.10105E+17 (many people) are each member_id's own.
                SELECT c.row_batch_id, c.row_key, e.scheme, e.valid_from
                FROM c
                JOIN (
                    SELECT DISTINCT member_id, person_key,
                        {id_problem_sql("person_key", TODAY_SQL)} IS NULL AS one_person
                    FROM roster WHERE member_id IN (SELECT member_id FROM e)
                ) m ON m.person_key = c.person_key
                JOIN e ON e.member_id = m.member_id
                WHERE (m.one_person OR m.member_id = c.member_id)
                  AND e.valid_from <= c.service_date AND c.service_date <= e.valid_to
            )
            GROUP BY ALL
            """
        )
    per_scheme = [_scheme_check_sql(k, s, has_enrollments) for k, s in enumerate(schemes)]
    joins = "\n".join(j for j, _c in per_scheme)
    cols = "".join("," + c for _j, c in per_scheme)
    has_u = "true" if has_units else "false"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE member_checks AS
        WITH u AS ({units}),
        -- the version coverage reads: in force, else the latest started
        -- before the date, else the earliest (spec 5). It depends on the
        -- scheme and the date alone: chosen once per distinct date, not per row.
        days AS (SELECT DISTINCT service_date FROM identified2),
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
        -- what the checks, the lines, the ledger and decisions read; the
        -- roster record only for an identified row (a held row's record_key
        -- names its candidate, who is not checked)
        m AS (
            SELECT i.*,
                   coalesce({identified}, false) AS identified,
                   r.member_id, r.unit_code, r.category, r.valid_from, r.valid_to,
                   coalesce(rt.run_start, r.valid_from) AS run_start,
                   r.valid_from <= i.service_date
                       AND (r.valid_to IS NULL OR i.service_date <= r.valid_to) AS member_active,
                   coalesce(u.unit_readable, false) AS unit_known, u.dues_paid_through,
                   u.unit_bad_line, ur.line AS unread_line
            FROM identified2 i
            LEFT JOIN roster r ON r.record_key = i.record_key AND {identified}
            LEFT JOIN roster_time rt ON rt.record_key = r.record_key
            LEFT JOIN u ON u.unit_code = r.unit_code
            -- the person's roster record that could not be read (one per ID)
            LEFT JOIN {unread} ur ON ur.id_norm = i.person_key
        ),
        -- the rows that reach the schemes: an identified, active member, and
        -- (with a units file) a known unit whose dues cover the date
        c AS (
            SELECT *, CASE WHEN identified THEN member_active AND (NOT {has_u} OR
                       (unit_known AND dues_paid_through >= service_date)) ELSE false END
                       AS checked
            FROM m
        )
        SELECT c.* EXCLUDE (checked){cols}
        FROM c
        {joins}
        """
    )
    con.execute("DROP TABLE IF EXISTS enr")
    stages = [f"stage_{k}" for k in range(len(schemes))]
    best = f"greatest({', '.join(stages)})" if stages else "NULL::INTEGER"
    reasons = (
        f"nullif(concat_ws('; ', {', '.join(f'why_{k}' for k in range(len(schemes)))}), '')"
        if schemes
        else "NULL::VARCHAR"
    )
    line = (
        "SELECT row_batch_id, row_key, settlement_id, {scheme} AS scheme, person_key, member_id, "
        "unit_code, service_date, admission_date, visit_type, total_cost, self_pay_1, "
        "self_pay_2, out_of_pocket, match FROM member_checks WHERE {passes}"
    )
    passing = [
        line.format(scheme=sql_literal(s), passes=f"stage_{k} = 4") for k, s in enumerate(schemes)
    ] or [line.format(scheme="NULL::VARCHAR", passes="false")]
    con.execute("CREATE OR REPLACE TEMP VIEW eligible_lines AS " + " UNION ALL ".join(passing))
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW decisions AS
        -- the furthest stage a row reaches over the schemes and, for rows no
        -- scheme passes, every scheme's reason in scheme order: read across
        -- the row's own columns, no grouping
        WITH i AS (
            SELECT *, {best} AS stage,
                   CASE WHEN {best} < 4 THEN {reasons} END AS why_not
            FROM member_checks
        )
        SELECT i.row_batch_id, i.row_key, i.settlement_id, i.carried,
            CASE
                WHEN i.id_outcome IN ('probable_id_typo', 'probable_name_typo') THEN 'held'
                WHEN i.id_outcome NOT IN ('exact', 'homophone', 'override') THEN 'rejected'
                WHEN NOT i.member_active THEN 'rejected'
                WHEN i.member_active AND {has_units} AND (NOT i.unit_known
                     OR i.dues_paid_through < i.service_date) THEN 'rejected'
                WHEN i.stage = 4 THEN 'adjudicated'
                ELSE 'rejected'
            END AS outcome,
            CASE
                WHEN i.id_outcome NOT IN ('exact', 'homophone', 'override') THEN i.id_outcome
                WHEN NOT i.member_active THEN 'membership_inactive'
                WHEN {has_units} AND (NOT i.unit_known OR i.dues_paid_through < i.service_date)
                    THEN 'unit_dues_unpaid'
                WHEN i.stage = 4 THEN NULL
                WHEN i.stage = 3 THEN 'no_rule_version'
                WHEN i.stage = 2 THEN 'waiting_period'
                ELSE 'no_coverage'
            END AS code,
            CASE
                WHEN i.id_outcome NOT IN ('exact', 'homophone', 'override') THEN i.id_detail
                WHEN NOT i.member_active
                    THEN 'member ' || i.member_id || ' record valid ' || i.valid_from::VARCHAR
                         || ' to ' || coalesce(i.valid_to::VARCHAR, 'open') || '; service date '
                         || i.service_date::VARCHAR
                         || coalesce('; roster line ' || i.unread_line::VARCHAR
                                     || ' of this ID number could not be read (see quarantine.csv)',
                                     '')
                WHEN {has_units} AND NOT i.unit_known AND i.unit_bad_line IS NOT NULL
                    THEN 'unit ' || i.unit_code || ': its row in the units file (line '
                         || i.unit_bad_line::VARCHAR || ') could not be read; see quarantine.csv'
                WHEN {has_units} AND NOT i.unit_known
                    THEN 'unit ' || i.unit_code || ' is not in the units file'
                WHEN {has_units} AND i.dues_paid_through < i.service_date
                    THEN 'unit ' || i.unit_code || ' dues paid through '
                         || i.dues_paid_through::VARCHAR || '; service date '
                         || i.service_date::VARCHAR
                WHEN i.stage = 4 THEN NULL
                ELSE coalesce(i.why_not, 'no scheme in the rules')
            END AS detail,
            i.person_key, i.member_id, i.unit_code, i.match, i.candidate_member_id,
            -- NULL for a plain exact match: spelled out from id_member and
            -- id_record (identity.match.exact_evidence_sql) as it goes to the ledger
            i.evidence AS identity, i.id_member, i.id_record,
            -- the checks themselves are kept flat (eligibility_members and
            -- eligibility_schemes in the ledger); v_eligibility assembles them
            NULL::VARCHAR AS eligibility
        FROM i
        """.replace("{has_units}", has_u)
        .replace("{reasons}", reasons)
        .replace("{best}", best)
    )
