"""The identity stage, spec section 3: whose bill is it?

Set-based in DuckDB. ID numbers are normalised and validated in SQL and
matched to the roster with one join; equal names are settled in SQL too. Only
the residue touches Python, in batches of distinct values: name pairs that
differ (opencc, pypinyin), and the few values that still need NFKC.

The search for a roster person one digit away (rule 4) is a join as well: for
each unmatched ID we generate, in SQL, only those one-substitution and
one-adjacent-transposition variants whose check character comes out right
(integer arithmetic on the MOD 11-2 sum, at most about 35 per ID), and join
them to the roster on person_key.

Tables:
  reads   id_input(row_key, id_raw, name, service_date)
          roster(record_key, member_id, name, id_number, ..., valid_from, valid_to,
                 person_key, name_norm)   -- person_key, name_norm: prepare_roster
  writes  id_result (temp; one row per id_input row, see ID_RESULT_COLUMNS)
Scratch tables are temp tables named identity_*.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

import duckdb

from twopay.identity.idnumber import (
    CHECK_CHARS,
    PROBLEMS,
    WEIGHTS,
    check_char_sql,
    clean_id,
    id_clean_sql,
    id_digits_sql,
    id_from_clean_sql,
    id_normalise_sql,
    id_problem_sql,
    normalise_id,
)
from twopay.identity.names import (
    compare_many,
    homophone_key,
    name_forms,
    name_norm_sql,
    normalise_name,
    to_simplified_many,
)
from twopay.ledger.tables import register_table

OUTCOMES = (
    "exact",
    "homophone",
    "probable_name_typo",
    "name_mismatch",
    "probable_id_typo",
    "invalid_id_number",
    "not_a_member",
)
ACCEPTED = ("exact", "homophone")
HELD = ("probable_name_typo", "probable_id_typo")

ID_RESULT_COLUMNS = (
    "row_key BIGINT",
    "id_norm VARCHAR",  # normalised ID (the cleaned text when invalid)
    "id_problem VARCHAR",  # NULL when valid, else a key of idnumber.PROBLEMS
    "outcome VARCHAR",  # one of OUTCOMES
    "match VARCHAR",  # exact | traditional | homophone for accepted rows, else NULL
    "person_key VARCHAR",
    "record_key BIGINT",
    "candidate_member_id VARCHAR",
    "detail VARCHAR",  # one English sentence, IDs in full (reports mask them)
    "evidence VARCHAR",  # JSON text
    "roster_member VARCHAR",  # member_id of the record the ID found (rules 1-3)
)


def exact_detail_sql(member: str) -> str:
    """The detail of a plain exact match (ID and name as the roster has them)."""
    return f"'ID and name match roster member ' || {member} || '.'"


def exact_evidence_sql(member: str, record: str) -> str:
    """The evidence of a plain exact match: by concatenation, the common case
    (to_json of a struct costs 50 % more)."""
    return (
        '\'{"rule":"3.1","outcome":"exact","name_level":"exact","roster_member":\''
        f" || to_json({member})::VARCHAR || ',\"record_key\":' || {record}::VARCHAR || '}}'"
    )


# a value with a character beyond ASCII (bytes <> characters): cheaper than a regex
_NON_ASCII = "strlen({0}) <> length({0})"

# The roster record to use for a settlement: the one valid on the service
# date, else the person's latest (spec 2.1, 5). An arg_max key, largest wins.
_RECORD_ORDER = (
    "(r.valid_from <= i.service_date AND (r.valid_to IS NULL OR i.service_date <= r.valid_to), "
    "r.valid_from, r.record_key)"
)


# -- the roster ---------------------------------------------------------------------


def roster_keys_sql(id_col: str = "id_number", name_col: str = "name") -> tuple[str, str]:
    """SQL for a roster record's person_key (the normalised ID; the cleaned
    text when invalid) and name_norm, for callers that build the roster table
    in one statement (then call fix_roster_keys)."""
    return id_normalise_sql(id_col), name_norm_sql(name_col)


def fix_roster_keys(
    con: duckdb.DuckDBPyConnection, table: str = "roster", where: str = "true"
) -> int:
    """person_key of the records (of ``table``, those ``where`` selects) whose
    ID still has non-ASCII characters (a roster table not read through the
    readers' NFKC): the Python twin decides. Returns how many records it fixed
    (almost always none)."""
    odd = con.execute(
        f"SELECT record_key, id_number FROM {table} "
        f"WHERE ({where}) AND {_NON_ASCII.format('id_number')}"
    ).fetchall()
    if odd:
        register_table(
            con,
            "identity_roster_fix",
            {"record_key": [r[0] for r in odd], "person_key": [normalise_id(r[1]) for r in odd]},
        )
        con.execute(
            f"""
            UPDATE {table} SET person_key = f.person_key
            FROM identity_roster_fix f WHERE {table}.record_key = f.record_key AND ({where})
            """
        )
    return len(odd)


def prepare_roster(con: duckdb.DuckDBPyConnection, today: date) -> None:
    """Fill roster.person_key (the normalised ID; the cleaned text when
    invalid) and roster.name_norm, adding the columns when missing. ``today``
    is kept for roster_id_problems (birth dates up to the day of the run)."""
    have = {row[0] for row in con.execute("DESCRIBE roster").fetchall()}
    for col in ("person_key", "name_norm"):
        if col not in have:
            con.execute(f"ALTER TABLE roster ADD COLUMN {col} VARCHAR")
    con.execute("SET VARIABLE identity_today = ?::DATE", [today])
    person_key, name_norm = roster_keys_sql()
    con.execute(f"UPDATE roster SET person_key = {person_key}, name_norm = {name_norm}")
    fix_roster_keys(con)


def roster_id_problems(
    con: duckdb.DuckDBPyConnection, today: date | None = None
) -> list[tuple[int, str]]:
    """(record_key, problem code) of every roster record whose ID number is
    invalid, by record_key; such a record can never match (spec 3). Run after
    prepare_roster, whose ``today`` is used unless one is given. Computed on
    demand: validating every roster ID costs more than the matching needs."""
    day = "coalesce($today, getvariable('identity_today'), current_date)"
    return [
        (r[0], r[1])
        for r in con.execute(
            f"""
            SELECT record_key, id_problem FROM (
                SELECT record_key, {id_problem_sql("person_key", day, "n17")} AS id_problem
                FROM (SELECT record_key, person_key, {id_digits_sql("person_key")} AS n17
                      FROM roster)
            ) WHERE id_problem IS NOT NULL
            ORDER BY record_key
            """,
            {"today": today},
        ).fetchall()
    ]


def roster_invalid_ids(con: duckdb.DuckDBPyConnection, today: date | None = None) -> list[int]:
    """record_keys of the roster records whose ID number is invalid."""
    return [key for key, _ in roster_id_problems(con, today)]


# -- settlements --------------------------------------------------------------------


def match_identities(
    con: duckdb.DuckDBPyConnection,
    today: date,
    timings: dict[str, float] | None = None,
    *,
    lazy_exact: bool = False,
) -> None:
    """Decide spec 3 rules 1-4 for every id_input row; write temp table id_result.
    ``timings``, when given, receives the seconds each step took. With
    ``lazy_exact`` the detail and evidence of a plain exact match (most rows)
    are left NULL, for the caller to spell out from roster_member and
    record_key (exact_detail_sql, exact_evidence_sql) where it needs them."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("normalise IDs and names", lambda: _normalise_input(con, today)),
        ("find roster records", lambda: _find_records(con)),
        ("compare differing names", lambda: _compare_found_names(con)),
        ("search one-digit-away IDs", lambda: _find_id_typo_candidates(con, today)),
        ("write id_result", lambda: _write_result(con, lazy_exact)),
    ]
    for label, step in steps:
        start = time.perf_counter()
        step()
        if timings is not None:
            timings[label] = time.perf_counter() - start


def _normalise_input(con: duckdb.DuckDBPyConnection, today: date) -> None:
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_ids AS
        WITH n AS (
            SELECT row_key, id_raw, service_date, {name_norm_sql("name")} AS name_norm,
                   {id_normalise_sql("id_raw")} AS id_norm
            FROM id_input
        ), d AS (
            SELECT *, {id_digits_sql("id_norm")} AS n17 FROM n
        )
        SELECT row_key, id_raw, service_date, name_norm, id_norm, n17,
               {id_problem_sql("id_norm", "$today", "n17")} AS id_problem
        FROM d
        """,
        {"today": today},
    )
    # IDs with non-ASCII characters were not NFKC-normalised by a reader (full-
    # width digits): the Python twin normalises them, then SQL validates again.
    odd = con.execute(
        f"SELECT row_key, id_raw FROM identity_ids WHERE {_NON_ASCII.format('id_raw')}"
    ).fetchall()
    if odd:
        register_table(
            con,
            "identity_input_fix",
            {"row_key": [r[0] for r in odd], "id_clean": [clean_id(r[1]) for r in odd]},
        )
        con.execute(
            f"""
            UPDATE identity_ids SET id_norm = f.id_norm, n17 = f.n17, id_problem = f.id_problem
            FROM (
                SELECT row_key, id_norm, {id_digits_sql("id_norm")} AS n17,
                       {id_problem_sql("id_norm", "$today")} AS id_problem
                FROM (SELECT *, {id_from_clean_sql("id_clean")} AS id_norm
                      FROM identity_input_fix)
            ) f
            WHERE identity_ids.row_key = f.row_key
            """,
            {"today": today},
        )


def _find_records(con: duckdb.DuckDBPyConnection) -> None:
    """Rule 1's join: a valid ID found in the roster, and its record for the
    service date (else the latest); every input row, with NULL roster columns
    when its ID is invalid or not found. Only settlements of people with several
    records need a choice; ranking just those is 2x cheaper than ranking all
    (DuckDB turns the ranking into a hash aggregate with string payloads)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_joined AS
        SELECT i.*, r.record_key, r.person_key, r.member_id, r.name_norm AS roster_name,
               {_RECORD_ORDER} AS preference
        FROM identity_ids i LEFT JOIN roster r
            ON r.person_key = i.id_norm AND i.id_problem IS NULL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE identity_found AS
        WITH several AS (
            SELECT row_key FROM identity_joined GROUP BY row_key HAVING count(*) > 1
        )
        SELECT * EXCLUDE (preference) FROM identity_joined ANTI JOIN several USING (row_key)
        UNION ALL
        SELECT * EXCLUDE (preference) FROM (
            SELECT * FROM identity_joined SEMI JOIN several USING (row_key)
        ) QUALIFY row_number() OVER (PARTITION BY row_key ORDER BY preference DESC) = 1
        """
    )
    con.execute("DROP TABLE identity_joined")  # the later steps read identity_found


def _compare_found_names(con: duckdb.DuckDBPyConnection) -> None:
    """Rules 1-3 for names that differ in SQL: distinct pairs, one Python batch."""
    pairs = con.execute(
        """
        SELECT DISTINCT name_norm, roster_name
        FROM identity_found
        WHERE record_key IS NOT NULL AND name_norm IS DISTINCT FROM roster_name
        """
    ).fetchall()
    levels = compare_many([(a, b) for a, b in pairs])
    norm = [normalise_name(n) for p in pairs for n in p]
    simple = to_simplified_many(norm)
    sounds = []
    for i, lvl in enumerate(levels):
        key = (
            homophone_key(norm[2 * i], norm[2 * i + 1], simple[2 * i], simple[2 * i + 1])
            if lvl == "homophone"
            else None
        )
        sounds.append(" ".join(key) if key is not None else None)
    register_table(
        con,
        "identity_name_level",
        {
            "name_norm": [p[0] for p in pairs],
            "roster_name": [p[1] for p in pairs],
            "level": levels,
            "pinyin": sounds,
        },
    )


# The one-edit variants of an ID, as (kind, p, c) rows: 's' substitutes digit
# c at position p (1-17), 'k' replaces the check character, 't' swaps p and
# p+1 (p = 17 swaps the last digit with the check character), 'l' swaps the
# 6th and 7th digits of a 15-digit legacy number (positions 6 and 9 of its
# 18-digit form, around the inserted '19').
_EDITS_SQL = """
    SELECT 's' AS kind, p::INTEGER AS p, c::INTEGER AS c FROM range(1, 18) a(p), range(0, 10) b(c)
    UNION ALL SELECT 't', p::INTEGER, NULL FROM range(1, 18) a(p)
    UNION ALL SELECT 'k', 18, NULL
    UNION ALL SELECT 'l', 6, NULL
"""


def _edits_sql(variants: str) -> str:
    """The variants (of _variants_sql / _odd_variants_sql) with the edit each
    makes, in words: a legacy number's digits counted as its owner wrote them
    (the 15 digits: the '19' at 7-8 is ours)."""
    return f"""
        SELECT *, CASE kind WHEN 's' THEN 'digit ' || told || in_legacy || ' differs'
                            WHEN 'k' THEN 'the check character differs'
                            ELSE 'digits ' || told || ' and ' || (told + 1) || in_legacy
                                 || ' are swapped' END AS edit
        FROM (
            SELECT *, CASE WHEN legacy AND p > 8 THEN p - 2 ELSE p END AS told,
                   CASE WHEN legacy THEN ' of the 15-digit number' ELSE '' END AS in_legacy
            FROM ({variants})
        )
    """


def _variants_sql(probe: str = "identity_probe") -> str:
    """SQL over ``probe`` (identity_probe) x edits: the variants of each all-digit ID whose
    check character is right, as (row_key, variant). For an ID that came from
    a 15-digit legacy number the check character was computed by us, so the
    edits are in its 15 digits (not the inserted '19') and the check is
    recomputed (spec 3: a typo in the legacy number as written)."""
    w = "[" + ", ".join(map(str, WEIGHTS)) + "]"
    pow10 = "([" + ", ".join(str(10 ** (17 - p)) for p in range(1, 18)) + "]::BIGINT[])"

    def digit(pos: str) -> str:
        return f"((q.n17 // {pow10}[{pos}]) % 10)"

    def mod11(x: str) -> str:
        return f"((({x}) % 11 + 11) % 11)"

    def check_of(s: str) -> str:
        return f"substr('{CHECK_CHARS}', ({s})::INTEGER + 1, 1)"

    d, d1, d9 = digit("e.p"), digit("e.p + 1"), digit("9")
    s_sub = mod11(f"q.s + {w}[e.p] * (e.c - {d})")
    s_swap = mod11(f"q.s + ({w}[e.p] - {w}[e.p + 1]) * ({d1} - {d})")
    s_legacy_swap = mod11(f"q.s + ({w}[6] - {w}[9]) * ({d9} - {digit('6')})")
    check_digit = "TRY_CAST(right(q.id, 1) AS INTEGER)"
    s_swap17 = mod11(f"q.s + 2 * ({check_digit} - {d})")
    return f"""
        SELECT q.row_key, q.legacy, e.kind, e.p, CASE
            WHEN e.kind = 's' THEN left(q.id, e.p - 1) || e.c::VARCHAR || substr(q.id, e.p + 1, 17 - e.p)
                || CASE WHEN q.legacy THEN {check_of(s_sub)} ELSE right(q.id, 1) END
            WHEN e.kind = 'k' THEN left(q.id, 17) || {check_of("q.s")}
            WHEN e.kind = 'l' THEN left(q.id, 5) || substr(q.id, 9, 1) || substr(q.id, 7, 2)
                || substr(q.id, 6, 1) || substr(q.id, 10, 8) || {check_of(s_legacy_swap)}
            WHEN e.p = 17 THEN left(q.id, 16) || right(q.id, 1) || substr(q.id, 17, 1)
            ELSE left(q.id, e.p - 1) || substr(q.id, e.p + 1, 1) || substr(q.id, e.p, 1)
                || substr(q.id, e.p + 2, 16 - e.p)
                || CASE WHEN q.legacy THEN {check_of(s_swap)} ELSE right(q.id, 1) END
            END AS variant
        FROM {probe} q, ({_EDITS_SQL}) e
        WHERE q.n17 IS NOT NULL AND CASE
            WHEN e.kind = 's' THEN e.c <> {d} AND CASE
                WHEN q.legacy THEN e.p NOT IN (7, 8) ELSE {s_sub} = q.v END
            WHEN e.kind = 'k' THEN NOT q.legacy AND q.v <> q.s
            WHEN e.kind = 'l' THEN q.legacy AND {digit("6")} <> {d9}
            WHEN e.p = 17 THEN NOT q.legacy AND {check_digit} IS NOT NULL
                AND {check_digit} <> {d} AND {check_of(s_swap17)} = substr(q.id, 17, 1)
            ELSE {d} <> {d1} AND CASE
                WHEN q.legacy THEN e.p NOT IN (6, 7, 8) ELSE {s_swap} = q.v END
        END
    """


def _odd_variants_sql(probe: str = "identity_probe") -> str:
    """Variants of IDs that are not 17 digits and a check character (a letter
    typed for a digit): few rows, so every edit is built and then tested."""
    return f"""
        SELECT row_key, false AS legacy, kind, p, variant FROM (
            SELECT q.row_key, e.kind, e.p, CASE
                WHEN e.kind = 's' THEN left(q.id, e.p - 1) || e.c::VARCHAR || substr(q.id, e.p + 1)
                WHEN e.kind = 't' THEN left(q.id, e.p - 1) || substr(q.id, e.p + 1, 1)
                    || substr(q.id, e.p, 1) || substr(q.id, e.p + 2)
                END AS variant
            FROM {probe} q, ({_EDITS_SQL}) e
            WHERE q.n17 IS NULL AND e.kind IN ('s', 't')
        )
        WHERE regexp_full_match(variant, '[0-9]{{17}}[0-9X]')
          AND {check_char_sql("TRY_CAST(left(variant, 17) AS BIGINT)")} = right(variant, 1)
    """


def _find_id_typo_candidates(con: duckdb.DuckDBPyConnection, today: date) -> None:
    """Rule 4: roster people one digit substitution or adjacent transposition
    away from an ID that is invalid or not found, with the same name."""
    w_terms = " + ".join(f"((n17 // {10 ** (16 - i)}) % 10) * {w}" for i, w in enumerate(WEIGHTS))
    # Excel-mangled values are never guessed (spec 3); other lengths cannot be
    # one substitution or transposition from an 18-character ID. A 15-digit
    # legacy number that normalisation left as it is (its birth date is not
    # real) is searched in the 18-digit form it would have: a typo there is
    # as likely as anywhere.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_probe AS
        WITH f AS (
            SELECT i.*,
                   CASE WHEN regexp_full_match(i.id_norm, '[0-9]{{15}}')
                        THEN TRY_CAST(left(i.id_norm, 6) || '19' || substr(i.id_norm, 7) AS BIGINT)
                   END AS raw17
            FROM identity_found i
            WHERE i.record_key IS NULL AND length(i.id_norm) IN (15, 18)
              AND i.id_problem IS DISTINCT FROM 'excel_mangled'
        ),
        g AS (
            SELECT *, CASE WHEN raw17 IS NOT NULL
                           THEN lpad(raw17::VARCHAR, 17, '0') || {check_char_sql("raw17")}
                           ELSE id_norm END AS id
            FROM f WHERE length(id_norm) = 18 OR raw17 IS NOT NULL
        ),
        q AS (
            SELECT row_key, id, name_norm, service_date,
                   -- from a 15-digit legacy number: we computed its check character
                   length({id_clean_sql("id_raw")}) = 15 AS legacy,
                   CASE WHEN raw17 IS NOT NULL THEN raw17
                        WHEN regexp_full_match(left(id, 17), '[0-9]{{17}}') THEN n17 END AS n17,
                   strpos('{CHECK_CHARS}', right(id, 1)) - 1 AS v
            FROM g
        )
        SELECT *, ({w_terms}) % 11 AS s FROM q
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_near AS
        SELECT DISTINCT v.row_key, r.record_key, r.person_key, r.name_norm, v.edit
        FROM ({_edits_sql(f"{_variants_sql()} UNION ALL {_odd_variants_sql()}")}) v
        JOIN roster r ON r.person_key = v.variant
        """
    )
    # The typo may be the roster's (spec 3 rule 4 asks only that a roster
    # person's ID be one edit away): the roster records whose own ID is
    # invalid (few; Excel-mangled ones are never guessed) are searched the
    # other way round, from their ID to the settlements' (an edit is
    # symmetric, so the position named is the same). Only the records of
    # people named as a probe is, in either script (the candidate must have
    # the same name, and 張偉 is 张伟): a few, not the whole roster.
    names = [r[0] for r in con.execute("SELECT DISTINCT name_norm FROM identity_probe").fetchall()]
    forms = sorted({f for n in names if n for f in name_forms(n)})
    register_table(con, "identity_probe_forms", {"form": forms})
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_roster_probe AS
        WITH d AS (
            -- an ID with a letter inside (the X swapped into place 17) is
            -- kept too: _odd_variants_sql builds its edits; a 15-digit legacy
            -- number that normalisation left as it is (no real birth date) is
            -- searched in the 18-digit form it would have, as a settlement's is
            SELECT record_key, person_key,
                   CASE WHEN regexp_full_match(person_key, '[0-9]{{15}}')
                        THEN TRY_CAST(left(person_key, 6) || '19' || substr(person_key, 7)
                                      AS BIGINT) END AS raw17,
                   CASE WHEN regexp_full_match(left(person_key, 17), '[0-9]{{17}}')
                        THEN {id_digits_sql("person_key")} END AS n17
            FROM roster
            WHERE name_norm IN (SELECT form FROM identity_probe_forms)
              AND (length(person_key) = 18 OR regexp_full_match(person_key, '[0-9]{{15}}'))
        ),
        b AS (
            SELECT record_key AS row_key, person_key AS id, n17, false AS legacy
            FROM d WHERE raw17 IS NULL
                AND coalesce({id_problem_sql("person_key", "$today", "n17")}, 'valid')
                NOT IN ('valid', 'excel_mangled')
            UNION ALL
            SELECT record_key, lpad(raw17::VARCHAR, 17, '0') || {check_char_sql("raw17")},
                   raw17, true
            FROM d WHERE raw17 IS NOT NULL
        )
        SELECT row_key, id, legacy, n17,
               strpos('{CHECK_CHARS}', right(id, 1)) - 1 AS v, ({w_terms}) % 11 AS s
        FROM b
        """,
        {"today": today},
    )
    con.execute(
        f"""
        INSERT INTO identity_near
        SELECT DISTINCT q.row_key, r.record_key, r.person_key, r.name_norm, v.edit
        FROM ({
            _edits_sql(
                f"{_variants_sql('identity_roster_probe')} "
                f"UNION ALL {_odd_variants_sql('identity_roster_probe')}"
            )
        }) v
        -- the typo is the roster's: a settlement's legacy number is compared in
        -- the 18-digit form it normalises to, and the digits are counted there
        -- (a roster's own 15-digit number, shown as such, as its owner wrote it)
        JOIN identity_probe q ON q.id = v.variant
        JOIN roster r ON r.record_key = v.row_key
        """
    )
    # Same name: equal in SQL, or (few pairs) equal once NFKC and
    # Traditional->Simplified are applied in Python.
    pairs = con.execute(
        """
        SELECT DISTINCT q.name_norm, n.name_norm
        FROM identity_near n JOIN identity_probe q USING (row_key)
        WHERE q.name_norm IS DISTINCT FROM n.name_norm
        """
    ).fetchall()
    same = [
        p
        for p, lvl in zip(pairs, compare_many(pairs), strict=True)
        if lvl in ("exact", "traditional")
    ]
    register_table(
        con, "identity_near_same", {"given": [p[0] for p in same], "roster": [p[1] for p in same]}
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_candidates AS
        WITH same AS (
            SELECT n.*, q.service_date
            FROM identity_near n JOIN identity_probe q USING (row_key)
            WHERE q.name_norm = n.name_norm
               OR EXISTS (SELECT 1 FROM identity_near_same s
                          WHERE s.given = q.name_norm AND s.roster = n.name_norm)
        ),
        people AS (
            -- the whole person (any of their records) is the candidate
            SELECT DISTINCT s.row_key, s.person_key, s.service_date, s.edit FROM same s
        ),
        per_person AS (
            -- and the record to name: valid on the service date, else the latest
            SELECT p.row_key, p.person_key, any_value(p.edit) AS edit,
                   arg_max(r.record_key, {_RECORD_ORDER.replace("i.", "p.")}) AS record_key
            FROM people p JOIN roster r ON r.person_key = p.person_key
            GROUP BY p.row_key, p.person_key
        )
        -- one row per settlement; the single-candidate columns mean something
        -- only when n = 1
        SELECT pp.row_key, count(*) AS n,
               string_agg(r.member_id, ', ' ORDER BY r.member_id) AS members,
               any_value(pp.person_key) AS person_key, any_value(pp.record_key) AS record_key,
               any_value(r.member_id) AS member_id, any_value(r.name_norm) AS roster_name,
               any_value(pp.edit) AS edit
        FROM per_person pp JOIN roster r ON r.record_key = pp.record_key
        GROUP BY pp.row_key
        """
    )


def _write_result(con: duckdb.DuckDBPyConnection, lazy_exact: bool = False) -> None:
    """One row per input row: rules 1-4 in order (spec 3), detail and evidence."""
    problems = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in PROBLEMS.items())
    # the ledger keeps the full values (spec 7): reports, notices and `why`
    # mask the IDs in these sentences unless --unmask
    # a 15-digit legacy number is named as it was written (its typo's digits
    # are counted there), not in the 18-digit form it converts to
    given = (
        f"coalesce(nullif(CASE WHEN length({id_clean_sql('id_raw')}) = 15 "
        f"THEN {id_clean_sql('id_raw')} ELSE id_norm END, ''), '(empty)')"
    )
    cand = "c_person"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_result AS
        WITH decided AS (
            SELECT f.row_key, f.id_raw, f.id_norm, f.id_problem, f.name_norm,
                   f.record_key AS f_record, f.person_key AS f_person, f.member_id AS f_member,
                   f.roster_name,
                   CASE WHEN f.record_key IS NULL THEN NULL
                        WHEN f.name_norm = f.roster_name THEN 'exact'
                        ELSE l.level END AS level,
                   l.pinyin,
                   coalesce(c.n, 0) AS candidates, c.members AS c_members,
                   CASE WHEN c.n = 1 THEN c.person_key END AS c_person,
                   CASE WHEN c.n = 1 THEN c.record_key END AS c_record,
                   CASE WHEN c.n = 1 THEN c.member_id END AS c_member,
                   CASE WHEN c.n = 1 THEN c.roster_name END AS c_name,
                   CASE WHEN c.n = 1 THEN c.edit END AS c_edit
            FROM identity_found f
            LEFT JOIN identity_name_level l
                ON l.name_norm = f.name_norm AND l.roster_name = f.roster_name
            LEFT JOIN identity_candidates c USING (row_key)
        ),
        outcome AS (
            SELECT *,
                CASE
                    WHEN level IN ('exact', 'traditional') THEN 'exact'
                    WHEN level IS NOT NULL THEN level
                    WHEN candidates = 1 THEN 'probable_id_typo'
                    WHEN id_problem IS NOT NULL THEN 'invalid_id_number'
                    ELSE 'not_a_member'
                END AS outcome,
                CASE WHEN level IS NOT NULL THEN '3.' || CASE
                        WHEN level IN ('exact', 'traditional') THEN '1'
                        WHEN level = 'homophone' THEN '2' ELSE '3' END
                     ELSE '3.4' END AS rule
            FROM decided
        )
        SELECT
            row_key,
            id_norm,
            id_problem,
            outcome,
            CASE WHEN level IN ('exact', 'traditional', 'homophone') THEN level END AS match,
            CASE WHEN level IS NOT NULL THEN f_person
                 WHEN candidates = 1 THEN c_person END AS person_key,
            CASE WHEN level IS NOT NULL THEN f_record
                 WHEN candidates = 1 THEN c_record END AS record_key,
            -- the member a reviewer would confirm (held rows only)
            CASE WHEN outcome = 'probable_name_typo' THEN f_member
                 WHEN outcome = 'probable_id_typo' THEN c_member END AS candidate_member_id,
            CASE outcome
                WHEN 'exact' THEN CASE WHEN level = 'exact'
                    THEN {"NULL" if lazy_exact else exact_detail_sql("f_member")}
                    ELSE 'Name ' || name_norm || ' is roster member ' || f_member || '''s '
                        || roster_name || ' in Simplified characters.' END
                WHEN 'homophone' THEN 'Name ' || name_norm || ' sounds as roster member '
                    || f_member || '''s ' || roster_name || ' (' || pinyin
                    || '): accepted, flagged.'
                WHEN 'probable_name_typo' THEN 'Name ' || name_norm
                    || ' is one character from roster member ' || f_member || '''s '
                    || roster_name || ': held for review.'
                WHEN 'name_mismatch' THEN 'Name ' || name_norm || ' does not match roster member '
                    || f_member || '''s ' || roster_name || ' for ID ' || {given} || '.'
                WHEN 'probable_id_typo' THEN 'ID ' || {given} || ' '
                    || coalesce(CASE id_problem {problems} END, 'is not in the roster')
                    || '; roster member ' || c_member || ' of the same name has ' || {cand}
                    || ' (' || c_edit || '): held for review.'
                ELSE 'ID ' || {given} || ' '
                    || coalesce(CASE id_problem {problems} END, 'is valid but not in the roster')
                    || CASE WHEN candidates > 1 THEN '; ' || candidates::VARCHAR
                        || ' roster members of the same name are one digit away ('
                        || c_members || '), so none is chosen.' ELSE '.' END
            END AS detail,
            CASE WHEN outcome = 'exact' AND level = 'exact' THEN
                {"NULL" if lazy_exact else exact_evidence_sql("f_member", "f_record")}
                ELSE to_json({{
                    'rule': rule, 'outcome': outcome,
                    'id_given': id_raw, 'id_normalised': coalesce(nullif(id_norm, ''), '(empty)'),
                    'id_problem': id_problem, 'name_given': name_norm,
                    'roster_name': coalesce(roster_name, c_name),
                    'roster_member': coalesce(f_member, c_member),
                    'record_key': coalesce(f_record, c_record),
                    'name_level': level, 'pinyin': pinyin,
                    'candidates': candidates, 'candidate_members': c_members,
                    'candidate_id': CASE WHEN c_person IS NOT NULL THEN {cand} END,
                    'candidate_edit': c_edit}})::VARCHAR
            END AS evidence,
            CASE WHEN level IS NOT NULL THEN f_member END AS roster_member
        FROM outcome
        """
    )
