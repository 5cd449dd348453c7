"""Readable or quarantined (spec sections 2 and 5): typed values for every row,
and the first quarantine code that applies, in the spec's order."""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

from twopay.io.cells import category_sql, date_sql, money_sql, visit_type_sql
from twopay.io.schemas import FileKind


def _required_missing(kind: FileKind) -> str:
    checks = [f"WHEN {c} IS NULL THEN 'column {c} is empty'" for c in kind.required]
    return "CASE WHEN parse_error IS NOT NULL THEN parse_error " + " ".join(checks) + " END"


def _into(target: str, insert: bool) -> str:
    return f"INSERT INTO {target}" if insert else f"CREATE OR REPLACE TEMP TABLE {target} AS"


def _value(col: str, parse: str, typed: Mapping[str, str] | None) -> str:
    """A cell's typed value: as the file typed it where it did, else parsed
    from its text (coalesce reads the text only where the typed value is NULL)."""
    return f"coalesce({typed[col]}, {parse})" if typed and col in typed else parse


def typed_settlements_sql(
    source: str,
    target: str,
    kind: FileKind,
    *,
    raw: str = "raw",
    typed: Mapping[str, str] | None = None,
    insert: bool = False,
) -> str:
    """``raw`` and ``typed``: a LoadedFile's raw_sql and typed; ``insert``
    adds the rows to ``target`` (one more settlement file)."""
    return f"{_into(target, insert)}\n{typed_settlements_query(source, kind, raw=raw, typed=typed)}"


def typed_settlements_query(
    source: str, kind: FileKind, *, raw: str = "raw", typed: Mapping[str, str] | None = None
) -> str:
    """The typed rows of ``source`` with their quarantine code and detail (a
    query: the batch inserts it into the ledger's settlement_rows)."""
    money_cols = ("total_cost", "self_pay_1", "self_pay_2", "out_of_pocket")
    parsed = ",\n".join(f"{_value(c, money_sql(c), typed)} AS {c}_v" for c in money_cols)
    bad_money = " ".join(
        f"WHEN {c} IS NOT NULL AND {c}_v IS NULL THEN '{c} ' || quote_text({c}) || "
        "' is not an amount with at most two decimals'"
        for c in money_cols
    )
    amounts = ", ".join(f"coalesce({c}_v, 0)" for c in money_cols)
    # which amount breaks the rule, by name and value
    negative = " ".join(
        f"WHEN {c}_v < 0 THEN '{c} (' || {c}_v::VARCHAR || ') is negative; a settlement''s "
        "amounts are zero or more (a reversal names the settlement it reverses)'"
        for c in money_cols
    )
    positive = " ".join(
        f"WHEN {c}_v > 0 THEN '{c} (' || {c}_v::VARCHAR || ') is positive; a reversal''s "
        "amounts are zero or negative'"
        for c in money_cols
    )
    return f"""
WITH parsed AS (
    SELECT *,
        {visit_type_sql("visit_type")} AS visit_type_v,
        {_value("service_date", date_sql("service_date"), typed)} AS service_date_v,
        {_value("admission_date", date_sql("admission_date"), typed)} AS admission_date_v,
        {parsed},
        {_required_missing(kind)} AS missing
    FROM {source}
),
coded AS (
    SELECT *,
        CASE
            WHEN missing IS NOT NULL THEN 'missing_field'
            WHEN visit_type_v IS NULL THEN 'bad_visit_type'
            WHEN service_date_v IS NULL
                OR (admission_date IS NOT NULL AND admission_date_v IS NULL) THEN 'bad_date'
            WHEN {" OR ".join(f"({c} IS NOT NULL AND {c}_v IS NULL)" for c in money_cols)}
                THEN 'bad_amount'
            WHEN reverses IS NULL AND (least({amounts}) < 0 OR self_pay_1_v > total_cost_v)
                THEN 'inconsistent_amounts'
            WHEN reverses IS NOT NULL AND greatest({amounts}) > 0 THEN 'inconsistent_amounts'
        END AS q_code
    FROM parsed
)
SELECT
    -- the raw text is kept for the rows that could not be read; a read row is
    -- kept as its normalised cells (spec 6), so its raw copy is not stored
    row_key, source_file, line_number, CASE WHEN q_code IS NOT NULL THEN {raw} END AS raw, q_code,
    -- say what a row obviously is when it is not a settlement at all
    CASE WHEN q_code IS NOT NULL AND lower(settlement_id) IN ('settlement_id', '结算流水号', '结算编号')
        THEN 'looks like a repeated header row, not a settlement'
    WHEN q_code IS NOT NULL
        AND regexp_matches(coalesce(settlement_id, '') || coalesce(name, ''), '合计|总计|小计|^(?i:total)')
        THEN 'looks like a totals row, not a settlement'
    ELSE CASE q_code
        WHEN 'missing_field' THEN missing
        WHEN 'bad_visit_type' THEN 'visit_type ' || quote_text(visit_type)
            || ' is not outpatient/inpatient (门诊/急诊/门急诊/住院)'
        WHEN 'bad_date' THEN CASE WHEN service_date_v IS NULL
            THEN 'service_date ' || quote_text(service_date) || ' is not a date'
            ELSE 'admission_date ' || quote_text(admission_date) || ' is not a date' END
        WHEN 'bad_amount' THEN CASE {bad_money} END
        WHEN 'inconsistent_amounts' THEN CASE WHEN reverses IS NULL THEN CASE {negative}
            ELSE 'self_pay_1 (' || self_pay_1_v::VARCHAR || ') is more than total_cost ('
                 || total_cost_v::VARCHAR || ')' END
            ELSE CASE {positive} END END
    END END AS q_detail,
    settlement_id, id_number, name, visit_type_v AS visit_type,
    service_date_v AS service_date, admission_date_v AS admission_date, hospital_code,
    total_cost_v AS total_cost, self_pay_1_v AS self_pay_1, self_pay_2_v AS self_pay_2,
    out_of_pocket_v AS out_of_pocket, reverses,
    -- the ID number and the name are compared as identity normalises them
    -- (spec 5: "same values after normalisation"), among repeated
    -- settlement_ids only (batch.py, dup_groups): not hashed here
    hash(settlement_id, visit_type_v, service_date_v, admission_date_v,
         hospital_code, total_cost_v, self_pay_1_v, self_pay_2_v, out_of_pocket_v,
         reverses) AS content_hash
FROM coded
"""


def typed_roster_query(
    source: str, kind: FileKind, *, raw: str = "raw", typed: Mapping[str, str] | None = None
) -> str:
    """The typed roster records of ``source`` with their quarantine code and
    detail (a query: the batch inserts it into the ledger's roster_rows)."""
    return f"""
WITH parsed AS (
    SELECT *,
        {_value("valid_from", date_sql("valid_from"), typed)} AS valid_from_v,
        {_value("valid_to", date_sql("valid_to"), typed)} AS valid_to_v,
        coalesce({category_sql("category")}, CASE WHEN category IS NULL THEN 'in_service' END)
            AS category_v,
        {_required_missing(kind)} AS missing
    FROM {source}
)
SELECT
    row_key AS record_key, source_file, line_number,
    CASE WHEN missing IS NOT NULL OR category_v IS NULL OR valid_from_v IS NULL
              OR (valid_to IS NOT NULL AND valid_to_v IS NULL) OR valid_to_v < valid_from_v
         THEN {raw} END AS raw,
    CASE
        WHEN missing IS NOT NULL THEN 'missing_field'
        WHEN category_v IS NULL THEN 'missing_field'
        WHEN valid_from_v IS NULL OR (valid_to IS NOT NULL AND valid_to_v IS NULL)
            OR valid_to_v < valid_from_v THEN 'bad_date'
    END AS q_code,
    CASE
        WHEN missing IS NOT NULL THEN missing
        WHEN category_v IS NULL THEN 'category ' || quote_text(category)
            || ' is not in_service/retired (在职/退休)'
        WHEN valid_from_v IS NULL THEN 'valid_from ' || quote_text(valid_from) || ' is not a date'
        WHEN valid_to IS NOT NULL AND valid_to_v IS NULL
            THEN 'valid_to ' || quote_text(valid_to) || ' is not a date'
        WHEN valid_to_v < valid_from_v THEN 'valid_to is before valid_from'
    END AS q_detail,
    member_id, name, id_number, card_no, unit_code, unit_name, category_v AS category,
    valid_from_v AS valid_from, valid_to_v AS valid_to, bank_account
FROM parsed
"""


def typed_simple_sql(
    source: str,
    target: str,
    kind: FileKind,
    *,
    raw: str = "raw",
    typed: Mapping[str, str] | None = None,
) -> str:
    """Units, enrollments, overrides, bank returns: dates and amounts typed
    (``typed``: a lazily loaded file's own typed cells, as for settlements)."""
    cols = []
    bad = []
    for c in kind.columns:
        if c.type == "date":
            cols.append(f"{_value(c.name, date_sql(c.name), typed)} AS {c.name}")
            bad.append(
                f"WHEN {c.name} IS NOT NULL AND {_value(c.name, date_sql(c.name), typed)} IS NULL "
                f"THEN 'bad_date|{c.name} ' || quote_text({c.name}) || ' is not a date'"
            )
        elif c.type == "money":
            cols.append(f"{_value(c.name, money_sql(c.name), typed)} AS {c.name}")
            bad.append(
                f"WHEN {c.name} IS NOT NULL AND {_value(c.name, money_sql(c.name), typed)} IS NULL "
                f"THEN 'bad_amount|{c.name} ' || quote_text({c.name}) || ' is not an amount'"
            )
        elif c.type == "decision":
            cols.append(f"lower({c.name}) AS {c.name}")
            bad.append(
                f"WHEN lower({c.name}) NOT IN ('accept', 'reject') "
                f"THEN 'missing_field|decision ' || quote_text({c.name}) || ' is not accept/reject'"
            )
        elif c.type == "status":
            cols.append(
                f"CASE WHEN lower({c.name}) IN ('success', '成功') THEN 'success' "
                f"WHEN lower({c.name}) IN ('failed', 'fail', '失败') THEN 'failed' END AS {c.name}"
            )
            bad.append(
                f"WHEN lower({c.name}) NOT IN ('success', '成功', 'failed', 'fail', '失败') "
                f"THEN 'missing_field|status ' || quote_text({c.name}) || ' is not success/failed'"
            )
        else:
            cols.append(c.name)
    missing = [f"WHEN {c} IS NULL THEN 'missing_field|column {c} is empty'" for c in kind.required]
    missing += [
        f"WHEN {' AND '.join(f'{c} IS NULL' for c in group)} "
        f"THEN 'missing_field|columns {' and '.join(group)} are {'both' if len(group) == 2 else 'all'} empty'"
        for group in kind.one_of
    ]
    names = {c.name for c in kind.columns}
    if {"valid_from", "valid_to"} <= names:
        bad.append(
            f"WHEN {_value('valid_to', date_sql('valid_to'), typed)} "
            f"< {_value('valid_from', date_sql('valid_from'), typed)} "
            "THEN 'bad_date|valid_to ' || quote_text(valid_to) || ' is before valid_from ' "
            "|| quote_text(valid_from)"
        )
    problem = (
        "CASE WHEN parse_error IS NOT NULL THEN 'missing_field|' || parse_error "
        + " ".join(missing + bad)
        + " END"
    )
    return f"""
CREATE OR REPLACE TEMP TABLE {target} AS
SELECT row_key, source_file, line_number, {raw} AS raw,
       split_part({problem}, '|', 1) AS q_code,
       nullif(substr({problem}, length(split_part({problem}, '|', 1)) + 2), '') AS q_detail,
       {", ".join(cols)}
FROM {source}
"""


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    # Quote a cell for a detail message; long cells are cut so a detail stays one line.
    con.execute(
        "CREATE OR REPLACE TEMP MACRO quote_text(x) AS "
        "'''' || CASE WHEN length(x) > 40 THEN left(x, 40) || '…' ELSE x END || ''''"
    )
