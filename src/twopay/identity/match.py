"""The identity stage, spec section 3: whose bill is it?

Set-based in DuckDB: IDs are normalised and validated in SQL and matched to
the roster with a join. Only the residue touches Python, in batches: pairs
whose names differ (opencc and pypinyin), and the names of settlements whose
ID was not found (to look for a roster person one digit away, which is again
a join, blocked on the name).

Reads ``id_input(row_key, id_raw, name, service_date)`` and ``roster`` (with
person_key and name_norm filled by prepare_roster); writes ``id_result`` with
one row per input row.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pyarrow as pa

from twopay.identity.idnumber import (
    PROBLEMS,
    id_normalise_sql,
    id_problem_sql,
    mask_id_sql,
)
from twopay.identity.names import compare_many, name_norm_sql, to_simplified_many

ACCEPTED = ("exact", "homophone")


def prepare_roster(con: duckdb.DuckDBPyConnection, today: date) -> None:
    """Fill roster.person_key (the normalised ID) and roster.name_norm."""
    con.execute(
        f"""
        UPDATE roster SET
            person_key = {id_normalise_sql("id_number")},
            name_norm = {name_norm_sql("name")}
        """
    )


def roster_invalid_ids(con: duckdb.DuckDBPyConnection, today: date) -> list[int]:
    """Roster records whose ID number is not valid (they can never match)."""
    rows = con.execute(
        f"SELECT record_key FROM roster WHERE {id_problem_sql('person_key', '?::DATE')} IS NOT NULL "
        "ORDER BY 1",
        [today],
    ).fetchall()
    return [r[0] for r in rows]


def match_identities(con: duckdb.DuckDBPyConnection, today: date) -> None:
    # 1. normalise and validate every ID, then find the person's record: the
    #    one valid on the service date, else their latest (spec 5).
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE idn AS
        WITH n AS (
            SELECT row_key, id_raw, service_date, {name_norm_sql("name")} AS name_norm,
                   {id_normalise_sql("id_raw")} AS id_norm
            FROM id_input
        )
        SELECT *, {id_problem_sql("id_norm", "?::DATE")} AS id_problem FROM n
        """,
        [today],
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_found AS
        SELECT i.row_key, r.record_key, r.person_key, r.member_id, r.name_norm AS roster_name
        FROM idn i
        JOIN roster r ON r.person_key = i.id_norm
        WHERE i.id_problem IS NULL
        QUALIFY row_number() OVER (
            PARTITION BY i.row_key
            ORDER BY (r.valid_from <= i.service_date
                      AND (r.valid_to IS NULL OR i.service_date <= r.valid_to)) DESC,
                     r.valid_from DESC, r.record_key DESC) = 1
        """
    )
    # 2. names that differ: compare the distinct pairs in Python, in one batch.
    pairs = con.execute(
        """
        SELECT DISTINCT i.name_norm, f.roster_name
        FROM idn i JOIN id_found f USING (row_key)
        WHERE i.name_norm IS DISTINCT FROM f.roster_name
        ORDER BY 1, 2
        """
    ).fetchall()
    levels = compare_many([(a or "", b or "") for a, b in pairs])
    con.register(
        "_name_levels",
        pa.table(
            {
                "name_norm": [p[0] for p in pairs],
                "roster_name": [p[1] for p in pairs],
                "level": levels,
            },
            schema=pa.schema(
                [("name_norm", pa.string()), ("roster_name", pa.string()), ("level", pa.string())]
            ),
        ),
    )
    con.execute("CREATE OR REPLACE TEMP TABLE name_levels AS SELECT * FROM _name_levels")
    con.unregister("_name_levels")
    # 3. IDs invalid or not found: a roster person one substitution or one
    #    adjacent transposition away with the same (simplified) name.
    residue_names = [
        r[0]
        for r in con.execute(
            """
            SELECT DISTINCT name_norm FROM idn
            WHERE row_key NOT IN (SELECT row_key FROM id_found) AND name_norm IS NOT NULL
            ORDER BY 1
            """
        ).fetchall()
    ]
    simple = to_simplified_many(residue_names)
    con.register(
        "_residue_names",
        pa.table(
            {"name_norm": residue_names, "simple": simple},
            schema=pa.schema([("name_norm", pa.string()), ("simple", pa.string())]),
        ),
    )
    con.execute("CREATE OR REPLACE TEMP TABLE residue_names AS SELECT * FROM _residue_names")
    con.unregister("_residue_names")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE id_candidates AS
        WITH residue AS (
            SELECT i.row_key, i.id_norm, i.service_date, n.name_norm, n.simple
            FROM idn i JOIN residue_names n USING (name_norm)
            WHERE i.row_key NOT IN (SELECT row_key FROM id_found) AND length(i.id_norm) = 18
        ),
        -- blocked on the name (as given, and in Simplified characters): two
        -- equi-joins, so the edit distance is computed only within a name
        same_name AS (
            SELECT r.row_key, r.id_norm, p.person_key, p.member_id
            FROM residue r JOIN roster p ON p.name_norm = r.name_norm
            UNION
            SELECT r.row_key, r.id_norm, p.person_key, p.member_id
            FROM residue r JOIN roster p ON p.name_norm = r.simple
            WHERE r.simple <> r.name_norm
        ),
        near AS (
            SELECT row_key, person_key, member_id FROM same_name
            WHERE length(person_key) = 18 AND person_key <> id_norm
              AND damerau_levenshtein(person_key, id_norm) = 1
        ),
        counted AS (
            SELECT row_key, count(DISTINCT person_key) AS n, min(person_key) AS person_key,
                   string_agg(DISTINCT member_id, ', ' ORDER BY member_id) AS members
            FROM near GROUP BY row_key
        )
        SELECT c.row_key, c.n, c.person_key, rec.record_key, rec.member_id, c.members
        FROM counted c
        JOIN residue r USING (row_key)
        JOIN roster rec ON rec.person_key = c.person_key
        QUALIFY row_number() OVER (
            PARTITION BY c.row_key
            ORDER BY (rec.valid_from <= r.service_date
                      AND (rec.valid_to IS NULL OR r.service_date <= rec.valid_to)) DESC,
                     rec.valid_from DESC, rec.record_key DESC) = 1
        """
    )
    problems = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in PROBLEMS.items())
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE id_result AS
        WITH decided AS (
            SELECT i.row_key, i.id_norm, i.id_problem, i.name_norm, i.id_raw,
                f.record_key AS f_record, f.person_key AS f_person, f.member_id AS f_member,
                f.roster_name,
                CASE WHEN f.row_key IS NULL THEN NULL
                     WHEN i.name_norm = f.roster_name THEN 'exact'
                     ELSE coalesce(l.level, 'name_mismatch') END AS level,
                c.n AS candidates, c.person_key AS c_person, c.record_key AS c_record,
                c.member_id AS c_member, c.members AS c_members
            FROM idn i
            LEFT JOIN id_found f USING (row_key)
            LEFT JOIN name_levels l ON l.name_norm = i.name_norm AND l.roster_name = f.roster_name
            LEFT JOIN id_candidates c USING (row_key)
        )
        SELECT
            row_key,
            CASE WHEN id_problem IS NULL THEN id_norm END AS id_norm,
            id_problem,
            CASE
                WHEN level IN ('exact', 'traditional') THEN 'exact'
                WHEN level = 'homophone' THEN 'homophone'
                WHEN level IS NOT NULL THEN level
                WHEN candidates = 1 THEN 'probable_id_typo'
                WHEN id_problem IS NOT NULL THEN 'invalid_id_number'
                ELSE 'not_a_member'
            END AS outcome,
            CASE WHEN level IN ('exact', 'traditional', 'homophone') THEN level END AS match,
            CASE WHEN level IS NOT NULL THEN f_person
                 WHEN candidates = 1 THEN c_person END AS person_key,
            CASE WHEN level IS NOT NULL THEN f_record
                 WHEN candidates = 1 THEN c_record END AS record_key,
            -- the person a reviewer would confirm: the ID's owner for a name typo
            CASE WHEN level = 'probable_name_typo' THEN f_member
                 WHEN level IS NULL AND candidates = 1 THEN c_member END AS candidate_member_id,
            CASE
                WHEN level = 'exact' THEN 'ID and name match roster member ' || f_member
                WHEN level = 'traditional' THEN 'name ' || name_norm || ' is ' || roster_name
                    || ' in Simplified characters (roster member ' || f_member || ')'
                WHEN level = 'homophone' THEN 'name ' || name_norm || ' sounds as '
                    || roster_name || ' (roster member ' || f_member || '): accepted, flagged'
                WHEN level = 'probable_name_typo' THEN 'name ' || name_norm
                    || ' is one character from ' || roster_name || ' (roster member '
                    || f_member || '): held for review'
                WHEN level = 'name_mismatch' THEN 'name ' || name_norm || ' does not match '
                    || roster_name || ' on roster member ' || f_member
                WHEN candidates = 1 THEN 'ID ' || {mask_id_sql("id_norm")}
                    || ' is not in the roster; member ' || c_member || ' of the same name has '
                    || {mask_id_sql("c_person")} || ', one digit away: held for review'
                WHEN candidates > 1 THEN 'ID ' || {mask_id_sql("id_norm")}
                    || ' is not in the roster; ' || candidates::VARCHAR
                    || ' roster people of the same name are one digit away (members '
                    || c_members || '): not matched'
                WHEN id_problem IS NOT NULL THEN 'ID ' || {mask_id_sql("id_norm")} || ' '
                    || CASE id_problem {problems} END
                ELSE 'ID ' || {mask_id_sql("id_norm")} || ' is valid but not in the roster'
            END AS detail,
            -- evidence: a short record for the common exact match (cheap on
            -- millions of rows), every compared value for the residue
            CASE WHEN level = 'exact' AND id_raw = id_norm
                THEN '{{"name_level":"exact","roster_member":' || to_json(f_member)::VARCHAR || '}}'
                ELSE to_json({{
                'id_given': {mask_id_sql("id_raw")}, 'id_normalised': {mask_id_sql("id_norm")},
                'id_problem': id_problem, 'name_given': name_norm, 'roster_name': roster_name,
                'roster_member': f_member, 'name_level': level, 'candidates': candidates,
                'candidate_members': c_members
            }})::VARCHAR END AS evidence
        FROM decided
        """
    )
