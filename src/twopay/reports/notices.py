"""`twopay notices`: one file per unit of what its officers must fix (spec 8).

For the batch of a period: identity and card rejections (layout.NOTICE_CODES),
the reviews still pending after it, its payments the bank returned as failed,
and the records of its roster that could not be read (a roster record's unit
is its own unit_code cell). Each row carries the fix in words (reasons.FIXES). The unit is the
member's unit_code in that batch's roster; a row whose member cannot be
known (an ID not in the roster) goes to the `unassigned` notice.

Files are named from the unit code made safe (no path separators, no dots),
ID numbers and card numbers are masked unless ``unmask``, and text that a
spreadsheet would run as a formula is neutralised.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from twopay.errors import UsageError
from twopay.identity.idnumber import TODAY_SQL, id_normalise_sql, id_problem_sql
from twopay.ledger.reconcile import FAILED_SQL
from twopay.ledger.workspace import Workspace
from twopay.reports import layout
from twopay.reports.reasons import FIXES, reason
from twopay.reports.render import (
    _pending_reviews_sql,
    check_out_folder,
    mask_sql,
    mask_text_sql,
)
from twopay.reports.xlsx import neutralise, open_book, write_table

PERIOD_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")  # ASCII digits only: \d takes "２０２４"
UNASSIGNED = "unassigned"
# What a notice file may be called: our own names only, so stale files of an
# earlier run can be told apart from anything else in the folder.
NOTICE_FILE_RE = re.compile(r"^(unit-.+|unassigned)\.(csv|xlsx)$")


def remove_notice_files(folder: Path, keep: frozenset[str] | set[str] = frozenset()) -> None:
    """Delete twopay's own notice files in ``folder`` (but those in ``keep``);
    anything else an analyst keeps there stays."""
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_file() and NOTICE_FILE_RE.match(old.name) and old.name not in keep:
                old.unlink()


def notice_rows_sql(unmask: bool) -> str:
    """Every row a unit must act on for batch $batch, with its unit."""
    mask = (lambda c: c) if unmask else mask_sql
    mask_text = (lambda c: c) if unmask else mask_text_sql
    return f"""
    WITH roster AS (SELECT * FROM roster_records WHERE batch_id = $batch),
    by_member AS (
        SELECT member_id, unit_code FROM roster
        QUALIFY row_number() OVER (
            PARTITION BY member_id ORDER BY valid_from DESC, record_key DESC) = 1
    ),
    -- an ID Excel turned into a number (1.10105E+17) is many people, not one
    -- (spec 3: never guessed): it names no person, so no unit either
    by_person AS (
        SELECT person_key, member_id, unit_code FROM roster
        WHERE {id_problem_sql("person_key", TODAY_SQL)} IS DISTINCT FROM 'excel_mangled'
        QUALIFY row_number() OVER (
            PARTITION BY person_key ORDER BY valid_from DESC, record_key DESC) = 1
    ),
    -- an ID whose only roster record could not be read: its settlements are
    -- rejected not_a_member, and the record's own unit is the one to fix it
    bad_person AS (
        SELECT {id_normalise_sql("r.id_number")} AS person_key,
               arg_min(r.member_id, r.line_number) AS member_id,
               arg_min(r.unit_code, r.line_number) AS unit_code
        FROM roster_rows r JOIN batches b ON b.roster_stage = r.stage_id
        WHERE b.batch_id = $batch AND r.q_code IS NOT NULL AND r.id_number IS NOT NULL
        GROUP BY ALL
    ),
    unit_names AS (
        SELECT unit_code, max(unit_name) AS unit_name FROM roster GROUP BY unit_code
    ),
    rejected AS (
        SELECT 1 AS kind_order, 'rejection' AS kind, o.row_batch_id, o.row_key,
            o.settlement_id, NULL::VARCHAR AS payment_id,
            coalesce(o.member_id, k.member_id, bp.member_id, bi.member_id, bq.member_id)
                AS member_id,
            s.name, s.id_number,
            NULL::VARCHAR AS card_no, s.service_date, s.self_pay_1,
            NULL::DECIMAL(18, 2) AS amount, o.code AS reason_code, o.detail,
            NULL::VARCHAR AS held_since,
            coalesce(o.unit_code, k.unit_code, bm.unit_code, bp.unit_code, bi.unit_code,
                     bq.unit_code) AS unit_code
        FROM outcomes o
        JOIN settlements s ON s.batch_id = o.row_batch_id AND s.row_key = o.row_key
        -- a name mismatch: the roster record the identity stage compared the
        -- name with (valid on the service date, spec 5), as rejections.csv
        -- and the detail name it; not the person's latest record
        LEFT JOIN roster_records k ON k.batch_id = o.row_batch_id
            AND k.record_key = TRY_CAST(json_extract_string(o.identity, '$.record_key') AS BIGINT)
        LEFT JOIN by_member bm ON bm.member_id = o.member_id
        LEFT JOIN by_person bp ON bp.person_key = o.person_key
        -- a name mismatch: the ID is in the roster even if no member was accepted
        LEFT JOIN by_person bi ON bi.person_key = {id_normalise_sql("s.id_number")}
        LEFT JOIN bad_person bq ON bq.person_key = {id_normalise_sql("s.id_number")}
            AND o.code = 'not_a_member'
        WHERE o.batch_id = $batch AND o.outcome = 'rejected' AND list_contains($codes, o.code)
    ),
    pending AS (
        SELECT 2, 'review', p.row_batch_id, p.row_key, p.settlement_id, NULL,
            coalesce(p.member_id, p.candidate_member_id, bp.member_id), s.name, s.id_number,
            NULL, s.service_date, s.self_pay_1, NULL, p.code, p.detail, p.held_since,
            coalesce(p.unit_code, bc.unit_code, bp.unit_code)
        FROM ({_pending_reviews_sql()}) p
        JOIN settlements s ON s.batch_id = p.row_batch_id AND s.row_key = p.row_key
        LEFT JOIN by_member bc ON bc.member_id = p.candidate_member_id
        LEFT JOIN by_person bp ON bp.person_key = p.person_key
    ),
    -- the failures as the next run reads them to re-issue
    returned AS ({FAILED_SQL}),
    failed AS (
        -- the amount owed (a failed row moved no money, whatever it says)
        SELECT 3, 'payment_failed', NULL, NULL, NULL, p.payment_id, p.member_id, p.name,
            NULL, p.card_no, NULL, NULL, p.amount, 'payment_failed',
            r.reason, NULL, p.unit_code
        FROM payments p JOIN returned r USING (payment_id)
        WHERE p.batch_id = $batch
    ),
    roster_bad AS (
        -- roster records that could not be read (an empty card number, a bad
        -- date): the unit's own data, which only its officers can correct;
        -- and a card number Excel turned into a number (6.22202E+18): that
        -- record is read and its claims paid, but the bank cannot pay into
        -- the card (a failed payment is re-issued to the card the roster
        -- then holds)
        SELECT 4, 'roster_record', NULL, r.line_number, NULL, NULL, r.member_id, r.name,
            r.id_number, r.card_no, NULL, NULL, NULL, 'roster_record',
            'roster line ' || r.line_number::VARCHAR || ': ' || CASE
                WHEN r.q_code IS NOT NULL THEN r.q_code || ': ' || coalesce(r.q_detail, '')
                ELSE 'card_no ' || r.card_no
                     || ' looks like a number Excel converted; the bank cannot pay into it'
            END,
            NULL, r.unit_code
        FROM roster_rows r JOIN batches b ON b.roster_stage = r.stage_id
        WHERE b.batch_id = $batch
          AND (r.q_code IS NOT NULL
               OR regexp_full_match(r.card_no, '[0-9]+(\\.[0-9]+)?[Ee]\\+?[0-9]+'))
    ),
    everything AS (
        SELECT * FROM rejected UNION ALL SELECT * FROM pending UNION ALL SELECT * FROM failed
        UNION ALL SELECT * FROM roster_bad
    )
    SELECT e.unit_code, n.unit_name, e.kind, e.settlement_id, e.payment_id, e.member_id,
        e.name, {mask("e.id_number")} AS id_number, {mask("e.card_no")} AS card_no,
        e.service_date, e.self_pay_1, e.amount, e.reason_code,
        {mask_text("e.detail")} AS detail, e.held_since
    FROM everything e LEFT JOIN unit_names n USING (unit_code)
    ORDER BY e.unit_code NULLS LAST, e.kind_order, e.row_batch_id, e.row_key, e.payment_id
    """


def unit_file_stem(unit_code: str | None, taken: set[str]) -> str:
    """A file name stem from a unit code: letters, digits, '_' and '-' only
    (no separators, no dots, so no '..'); a short hash keeps codes that
    clean to the same stem (or differ only in case) apart."""
    if not unit_code:
        return UNASSIGNED
    safe = re.sub(r"[^\w-]", "_", unit_code)[:60]
    # a file name is at most 255 bytes: keep the stem well below (a
    # character outside the BMP is four bytes in UTF-8)
    while len(safe.encode("utf-8")) > 120:
        safe = safe[:-1]
    stem = f"unit-{safe}"
    if safe != unit_code or stem.lower() in taken:
        stem += "-" + hashlib.sha1(unit_code.encode("utf-8")).hexdigest()[:8]
    # the hashed stem may itself be a name another unit already took (a unit
    # literally coded "A_B-66927f85" next to "A~B"): never reuse a stem
    base, n = stem, 2
    while stem.lower() in taken:
        stem, n = f"{base}-{n}", n + 1
    taken.add(stem.lower())
    return stem


@dataclass
class UnitNotice:
    unit_code: str | None
    unit_name: str | None
    csv: Path
    xlsx: Path
    rows: int
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class NoticesResult:
    period: str
    out: Path
    units: list[UnitNotice]


def _frame(con: duckdb.DuckDBPyConnection, batch_id: int, lang: str, unmask: bool) -> pl.DataFrame:
    frame = con.sql(
        notice_rows_sql(unmask), params={"batch": batch_id, "codes": list(layout.NOTICE_CODES)}
    ).pl()
    codes = [*layout.NOTICE_CODES, "probable_id_typo", "probable_name_typo", "payment_failed"]
    reasons = {c: reason(c, lang) for c in codes}
    reasons["payment_failed"] = layout.text("payment_failed", lang)
    reasons["roster_record"] = layout.text("roster_record_unreadable", lang)
    fixes = {c: (zh if lang == "zh" else en) for c, (zh, en) in FIXES.items()}
    return frame.with_columns(
        pl.col("reason_code")
        .replace_strict(reasons, default=pl.col("reason_code"))
        .alias("reason"),
        pl.col("reason_code")
        .replace_strict(fixes, default=None, return_dtype=pl.String)
        .alias("fix"),
    )


def write_notices(
    ws: Workspace,
    period: str,
    *,
    out: Path | None = None,
    lang: str | None = None,
    unmask: bool = False,
) -> NoticesResult:
    if not PERIOD_RE.match(period):
        raise UsageError(f"--period {period!r}: expected YYYY-MM, e.g. 2024-03.")
    lang = lang or ws.settings.lang
    default_out = ws.reports_dir(period) / "notices"
    out_dir = out or default_out
    check_out_folder(out_dir)
    con = ws.connect(read_only=True)
    try:
        found = con.execute(
            "SELECT batch_id, started_at FROM batches WHERE period = ?", [period]
        ).fetchall()
        if not found:
            raise UsageError(f"no batch for period {period} in {ws.ledger_path}; run it first.")
        batch_id, started = int(found[0][0]), found[0][1]
        frame = _frame(con, batch_id, lang, unmask)
    finally:
        con.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    units: list[UnitNotice] = []
    taken: set[str] = set()
    tmp = Path(tempfile.mkdtemp(prefix=".twopay-notices-", dir=out_dir))
    try:
        groups = frame.partition_by("unit_code", maintain_order=True, include_key=True)
        for group in groups:
            unit_code = group["unit_code"][0]
            unit_name = group["unit_name"][0]
            stem = unit_file_stem(unit_code, taken)
            kinds = {
                k: layout.text(k, lang)
                for k in ("rejection", "review", "payment_failed", "roster_record")
            }
            table = group.select(layout.NOTICE_COLUMNS).with_columns(
                pl.col("kind").replace_strict(kinds, default=pl.col("kind"))
            )
            _write_csv(neutralise(table), tmp / f"{stem}.csv", lang)
            title = layout.text(
                "notice_title",
                lang,
                unit=" ".join(x for x in (unit_code, unit_name) if x)
                or layout.text("unassigned", lang),
                period=period,
            )
            book = open_book(
                tmp / f"{stem}.xlsx", started if isinstance(started, datetime) else None
            )
            write_table(book, unit_code or UNASSIGNED, table, lang=lang, title=title)
            book.wb.close()
            counts = dict(group.group_by("kind").len().iter_rows())
            units.append(
                UnitNotice(
                    unit_code,
                    unit_name,
                    out_dir / f"{stem}.csv",
                    out_dir / f"{stem}.xlsx",
                    group.height,
                    {str(k): int(v) for k, v in counts.items()},
                )
            )
        written = {p.name for p in tmp.iterdir()}
        if out_dir.resolve() == default_out.resolve():
            # our own folder: notices of units with nothing left to fix go
            remove_notice_files(out_dir, keep=written)
        for name in sorted(written):
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return NoticesResult(period, out_dir, units)


def _write_csv(table: pl.DataFrame, path: Path, lang: str) -> None:
    """UTF-8 with a BOM, so that Excel on a Chinese desktop opens it as UTF-8;
    headers in the notice's language (these files are for people)."""
    headers = {c: layout.header(c, lang) for c in table.columns}
    table.rename(headers).write_csv(path, include_bom=True)
