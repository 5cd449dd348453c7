"""Render a committed batch's reports from the ledger (spec section 7).

Reports are a pure function of the ledger rows of the batch, so a re-run with
the same inputs rewrites byte-identical files. They are written to a temporary
folder and renamed into place.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import duckdb

from twopay import __version__
from twopay.errors import UsageError
from twopay.faults import fault_point
from twopay.identity.idnumber import mask_id_sql, mask_text_sql
from twopay.reports.reasons import REASONS

SUMMARY_SCHEMA_VERSION = 1


def mask_sql(col: str) -> str:
    """idnumber.mask_id_sql, with NULL left NULL (an unknown ID stays empty)."""
    return mask_id_sql(col, empty="NULL")


def band_sql(amount: str, edges: list[float]) -> str:
    """SQL: the subsidy band (0, 1, ...) of ``amount`` (spec 7: "< 3000,
    3000-10000, > 10000"): a band holds its lower edge, and the last edge,
    when there are several, belongs to the band that ends there. The edges
    are validated settings (RunSettings.bands): positive and ascending."""
    whens = [f"WHEN {amount} < {e!r} THEN {i}" for i, e in enumerate(edges)]
    if len(edges) >= 2:
        whens.append(f"WHEN {amount} = {edges[-1]!r} THEN {len(edges) - 1}")
    return f"CASE {' '.join(whens)} ELSE {len(edges)} END"


def band_labels(edges: list[float]) -> list[str]:
    """The bands' names, in band_sql's order: "< 3000", "3000-10000",
    "> 10000"; with a single edge the upper band is ">= edge"."""
    inner = [f"{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(edges)]
    top = f"> {edges[-1]:g}" if len(edges) >= 2 else f">= {edges[-1]:g}"
    return [f"< {edges[0]:g}", *inner, top]


def check_out_folder(out_dir: Path) -> None:
    """A report folder that cannot be made or written is a usage error (exit
    2), found before anything is done: a run used to commit its batch and then
    fail on it (exit 1, no reports)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: this is a file, not a folder for the reports.")
    there = out_dir
    while not there.exists() and there != there.parent:
        there = there.parent
    if not there.is_dir():
        raise UsageError(f"--out {out_dir}: {there} is a file, so the folder cannot be made.")
    if not os.access(there, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir}: {there} is not writable.")


def safe_sql(col: str) -> str:
    """Neutralise text that a spreadsheet would run as a formula."""
    # the first character alone is looked at: a plain comparison, not a
    # regular expression per cell (payout_lines has millions of cells)
    return (
        f"CASE WHEN left({col}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) "
        f"THEN '''' || {col} ELSE {col} END"
    )


def _reason_case(lang: str) -> str:
    idx = 0 if lang == "zh" else 1
    whens = " ".join(
        f"WHEN '{code}' THEN '{texts[idx].replace(chr(39), chr(39) * 2)}'"
        for code, texts in REASONS.items()
    )
    return f"CASE code {whens} ELSE code END"


def _pending_reviews_sql() -> str:
    return """
        SELECT o.*, b.period AS held_since
        FROM outcomes o JOIN batches b ON b.batch_id = o.row_batch_id
        WHERE o.batch_id <= $batch AND o.outcome = 'held' AND NOT o.carried
          AND NOT EXISTS (
            SELECT 1 FROM outcomes d
            WHERE d.batch_id <= $batch AND d.carried
              AND d.row_batch_id = o.row_batch_id AND d.row_key = o.row_key)
    """


def report_queries(lang: str, unmask: bool) -> dict[str, tuple[str, str]]:
    """Each CSV report as a query over the ledger ($batch is the batch id) and
    the file's order over the query's columns (as ``r.column``). A column
    whose name starts with ``_`` orders the file and is not written.

    The order is the COPY's own ORDER BY: an ORDER BY inside the query would
    not survive the neutralising projection around it once DuckDB runs it on
    several threads (a few hundred thousand rows came out in interleaved runs
    of 2,048)."""
    mask = (lambda c: c) if unmask else mask_sql
    mask_text = (lambda c: c) if unmask else mask_text_sql
    return {
        "payouts": (
            """
            SELECT payment_id, member_id, name, card_no, unit_code, amount, lines, retry_of
            FROM payments WHERE batch_id = $batch
            """,
            "r.payment_id",
        ),
        "recoveries": (
            """
            SELECT member_id, amount, settlement_ids FROM recoveries
            WHERE batch_id = $batch AND kind = 'owed'
            """,
            # two people may owe under one member_id (re-used since): a total order
            "r.member_id, r.settlement_ids",
        ),
        "payout_lines": (
            """
            SELECT settlement_id, scheme, rule_version, member_id, visit_type, service_date,
                   base_amount, deductible_applied, computed, allowance, payout, status,
                   nullif(note, '') AS note, match, line_key AS _line_key
            FROM lines WHERE batch_id = $batch
            """,
            "r.settlement_id, r.scheme, r._line_key",
        ),
        "rejections": (
            f"""
            WITH r AS (
                SELECT settlement_id, unit_code, code, detail, row_batch_id, row_key
                FROM outcomes WHERE batch_id = $batch AND outcome = 'rejected'
            ),
            -- a name that does not match: the unit is known, from the roster
            -- record the ID found (its evidence names it), though no member
            -- was accepted; looked up for those few rows alone
            mismatched AS (
                SELECT row_batch_id, row_key,
                       TRY_CAST(json_extract_string(identity, '$.record_key') AS BIGINT) AS rk
                FROM outcomes
                WHERE batch_id = $batch AND outcome = 'rejected' AND code = 'name_mismatch'
            ),
            known AS (
                SELECT m.row_batch_id, m.row_key, k.unit_code
                FROM mismatched m
                JOIN roster_records k ON k.batch_id = m.row_batch_id AND k.record_key = m.rk
            )
            SELECT r.settlement_id, {mask("s.id_number")} AS id_number, s.name,
                   coalesce(r.unit_code, k.unit_code) AS unit_code,
                   r.code AS reason_code, {_reason_case(lang)} AS reason,
                   {mask_text("r.detail")} AS detail,
                   r.row_batch_id AS _row_batch_id, r.row_key AS _row_key
            FROM r
            LEFT JOIN settlements s ON s.batch_id = r.row_batch_id AND s.row_key = r.row_key
            LEFT JOIN known k ON k.row_batch_id = r.row_batch_id AND k.row_key = r.row_key
            """,
            "r._row_batch_id, r._row_key",
        ),
        "review": (
            f"""
            SELECT settlement_id, code AS reason_code, candidate_member_id, held_since,
                   {mask_text("detail")} AS detail,
                   row_batch_id AS _row_batch_id, row_key AS _row_key
            FROM ({_pending_reviews_sql()})
            """,
            "r._row_batch_id, r._row_key",
        ),
        "quarantine": _quarantine_query("quarantine WHERE batch_id = $batch", unmask),
    }


def _quarantine_query(source: str, unmask: bool) -> tuple[str, str]:
    """quarantine.csv from ``source`` (the ledger's rows of a batch, or a
    refused run's q_rows): settlements first, then the roster, units and
    enrollments, each by file name and line."""
    mask_text = (lambda c: c) if unmask else mask_text_sql
    return (
        f"""
        SELECT source_file, line_number, error_code, {mask_text("detail")} AS detail,
               {mask_text("raw")} AS raw, file_kind AS _file_kind
        FROM {source}
        """,
        "CASE r._file_kind WHEN 'settlements' THEN 0 WHEN 'roster' THEN 1 WHEN 'units' THEN 2 "
        # (two files of one name, from two folders, tie on name and line:
        # the rest of the row orders them, so the bytes do not vary)
        "ELSE 3 END, r.source_file, r.line_number, r.error_code, r.detail, r.raw",
    )


# Every column whose text can come from an input file (formula injection, spec 7).
TEXT_COLUMNS = {
    "name",
    "detail",
    "raw",
    "settlement_id",
    "settlement_ids",
    "note",
    "reason",
    "id_number",
    "member_id",
    "card_no",
    "unit_code",
    "candidate_member_id",
    "retry_of",
    "source_file",
}


def write_csv(
    con: duckdb.DuckDBPyConnection, query: str, order: str, path: Path, batch_id: int
) -> int:
    """One report file: the rows of ``query`` in ``order`` (report_queries),
    text neutralised for spreadsheets. Returns the number of rows written."""
    params = {"batch": batch_id} if "$batch" in query else {}
    cols = [d[0] for d in con.execute(f"SELECT * FROM ({query}) LIMIT 0", params).description]
    select = ", ".join(
        f"{safe_sql('r.' + c)} AS {c}" if c in TEXT_COLUMNS else f"r.{c}"
        for c in cols
        if not c.startswith("_")
    )
    # COPY answers with the number of rows it wrote
    written = con.execute(
        f"COPY (SELECT {select} FROM ({query}) AS r ORDER BY {order}) "
        f"TO '{_sql_path(path)}' (HEADER, DELIMITER ',')",
        params,
    ).fetchall()
    return int(written[0][0])


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def batch_summary(con: duckdb.DuckDBPyConnection, batch_id: int) -> dict[str, object]:
    """summary.json: the stored balance plus figures computed from the ledger."""
    row = con.execute(
        "SELECT period, summary, started_at, finished_at FROM batches WHERE batch_id = ?",
        [batch_id],
    ).fetchall()[0]
    stored = json.loads(row[1])
    q = lambda sql: con.execute(sql, {"batch": batch_id}).fetchall()  # noqa: E731

    def money(v: object) -> str:
        return f"{v:.2f}" if v is not None else "0.00"

    by_outcome: dict[str, dict[str, object]] = {
        outcome: {"rows": int(n)}
        for outcome, n in q(
            "SELECT outcome, count(*) FROM outcomes WHERE batch_id = $batch AND NOT carried "
            "GROUP BY ALL ORDER BY 1"
        )
    }
    # The amounts the rows of each outcome claimed (spec 7: counts and amounts
    # per outcome; an unreadable amount counts as nothing). The few rows not
    # adjudicated are summed; the adjudicated are the rest of the batch, so
    # the millions of adjudicated rows are not joined to their outcomes.
    claimed = dict.fromkeys(by_outcome, (Decimal(0), Decimal(0)))
    for outcome, cost, pay in q(
        "SELECT o.outcome, coalesce(sum(s.total_cost), 0), coalesce(sum(s.self_pay_1), 0) "
        "FROM outcomes o JOIN settlements s ON s.batch_id = o.batch_id AND s.row_key = o.row_key "
        "WHERE o.batch_id = $batch AND NOT o.carried AND o.outcome <> 'adjudicated' GROUP BY 1"
    ):
        claimed[outcome] = (cost, pay)
    if "adjudicated" in claimed:
        cost, pay = q(
            "SELECT coalesce(sum(total_cost), 0), coalesce(sum(self_pay_1), 0) FROM settlements "
            "WHERE batch_id = $batch"
        )[0]
        others = [v for k, v in claimed.items() if k != "adjudicated"]
        claimed["adjudicated"] = (
            cost - sum((c for c, _ in others), Decimal(0)),
            pay - sum((p for _, p in others), Decimal(0)),
        )
        own_payout = q(
            "SELECT coalesce(sum(payout), 0) FROM lines WHERE batch_id = $batch "
            "AND row_batch_id = $batch"
        )[0][0]
        by_outcome["adjudicated"]["payout"] = money(own_payout)
    for outcome, (cost, pay) in claimed.items():
        by_outcome[outcome]["total_cost"] = money(cost)
        by_outcome[outcome]["self_pay_1"] = money(pay)
    by_code = {
        f"{outcome}:{code}": int(n)
        for outcome, code, n in q(
            "SELECT outcome, code, count(*) FROM outcomes WHERE batch_id = $batch "
            "AND code IS NOT NULL GROUP BY ALL ORDER BY 1, 2"
        )
    }
    lines = q(
        "SELECT count(*), coalesce(sum(payout), 0), coalesce(sum(payout) FILTER (status = 'paid'), 0),"
        " count(*) FILTER (status = 'paid'), count(*) FILTER (status = 'zero'),"
        " count(*) FILTER (status = 'clawback'), coalesce(sum(payout) FILTER (status = 'clawback'), 0)"
        " FROM lines WHERE batch_id = $batch"
    )[0]
    per_visit = {
        vt: {"lines": int(n), "payout": money(amt)}
        for vt, n, amt in q(
            "SELECT visit_type, count(*), sum(payout) FROM lines WHERE batch_id = $batch "
            "GROUP BY ALL ORDER BY 1"
        )
    }
    per_scheme = {
        s: {"lines": int(n), "payout": money(amt), "paid_lines": int(p)}
        for s, n, amt, p in q(
            "SELECT scheme, count(*), sum(payout), count(*) FILTER (status = 'paid') "
            "FROM lines WHERE batch_id = $batch GROUP BY ALL ORDER BY 1"
        )
    }
    per_unit = {
        u or "": {"lines": int(n), "payout": money(amt)}
        for u, n, amt in q(
            "SELECT unit_code, count(*), sum(payout) FROM lines WHERE batch_id = $batch "
            "GROUP BY ALL ORDER BY 1"
        )
    }
    edges = [float(e) for e in stored.get("bands_edges", [3000, 10000])]
    band_rows = dict(
        (int(b), (int(n), a))
        for b, n, a in q(
            f"SELECT {band_sql('total', edges)} AS band, count(*), sum(total) FROM ("
            "SELECT settlement_id, sum(payout) AS total FROM lines WHERE batch_id = $batch "
            "AND status = 'paid' GROUP BY settlement_id) GROUP BY ALL"
        )
    )
    bands = []
    for i, label in enumerate(band_labels(edges)):
        n, amount = band_rows.get(i, (0, 0))
        bands.append({"band": label, "person_times": n, "amount": money(amount)})
    payments = q("SELECT count(*), coalesce(sum(amount), 0) FROM payments WHERE batch_id = $batch")[
        0
    ]
    recov = q(
        "SELECT coalesce(sum(amount) FILTER (kind = 'owed'), 0), "
        "coalesce(-sum(amount) FILTER (kind = 'offset'), 0), count(*) FILTER (kind = 'owed') "
        "FROM recoveries WHERE batch_id = $batch"
    )[0]
    review = q(f"SELECT count(*) FROM ({_pending_reviews_sql()})")[0][0]
    carried = q(
        "SELECT outcome, count(*) FROM outcomes WHERE batch_id = $batch AND carried GROUP BY ALL"
    )
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "twopay_version": stored.get("twopay_version", __version__),
        "period": row[0],
        "batch_id": batch_id,
        "started_at": stored.get("started_at"),
        "finished_at": stored.get("finished_at"),
        "inputs": stored.get("inputs", []),
        "rules": stored.get("rules", []),
        "balance": stored.get("balance", {}),
        "outcomes": by_outcome,
        "codes": by_code,
        "carried_decisions": {o: int(n) for o, n in carried},
        "lines": {
            "count": int(lines[0]),
            "payout_total": money(lines[1]),
            "paid": int(lines[3]),
            "paid_amount": money(lines[2]),
            "zero": int(lines[4]),
            "clawback": int(lines[5]),
            "clawback_amount": money(lines[6]),
        },
        "payments": {"count": int(payments[0]), "amount": money(payments[1])},
        "recoveries": {
            "new_count": int(recov[2]),
            "new_amount": money(recov[0]),
            "offset_amount": money(recov[1]),
        },
        "review_pending": int(review),
        "per_visit_type": per_visit,
        "per_scheme": per_scheme,
        "per_unit": per_unit,
        "bands": bands,
    }


def render_batch_reports(
    con: duckdb.DuckDBPyConnection,
    batch_id: int,
    out_dir: Path,
    *,
    lang: str,
    unmask: bool = False,
) -> dict[str, object]:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # beside the reports' files when their folder exists (the same file
    # system, and a folder twopay may write in), else beside the folder
    tmp = Path(
        tempfile.mkdtemp(prefix=".twopay-", dir=out_dir if out_dir.is_dir() else out_dir.parent)
    )
    try:
        tables: dict[str, Path] = {}
        rows: dict[str, int] = {}
        for name, (query, order) in report_queries(lang, unmask).items():
            path = tmp / f"{name}.csv"
            rows[name] = write_csv(con, query, order, path, batch_id)
            tables[name] = path
        summary = batch_summary(con, batch_id)
        (tmp / "summary.json").write_text(
            json.dumps(summary, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
            encoding="utf-8",
        )
        from twopay.reports.xlsx import months_of_year, write_report_xlsx

        write_report_xlsx(
            tmp / "report.xlsx",
            summary,
            tables,
            lang=lang,
            months=months_of_year(con, batch_id),
            rows=rows,
        )
        fault_point("reports")
        _swap_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


# what a refused run wrote beside a committed set; the next set replaces it
REFUSED_QUARANTINE = "quarantine-refused.csv"


def write_quarantine_only(con: duckdb.DuckDBPyConnection, out_dir: Path, *, unmask: bool) -> Path:
    """A refused run (too many unreadable rows) still shows what could not be
    read: in quarantine.csv, or, where the folder holds the reports of a
    committed batch (a refused --replace), beside them in
    quarantine-refused.csv, so that the committed set stays whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    committed = (out_dir / "summary.json").exists()
    path = out_dir / (REFUSED_QUARANTINE if committed else "quarantine.csv")
    query, order = _quarantine_query("q_rows", unmask)
    write_csv(con, query, order, path, 0)
    return path


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Put the finished files in place. A new report folder is renamed into
    place whole. In an existing one each file is renamed over its old
    version (one atomic rename each), summary.json last, so that a reader who
    sees the new summary sees the new set; nothing else there is touched (the
    period's notices, an analyst's own files), but a refused run's
    quarantine-refused.csv, which this set supersedes, goes."""
    if not out_dir.exists():
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)  # a report folder, not mkdtemp's private 0700
        os.replace(tmp, out_dir)
        return
    for name in sorted((e.name for e in tmp.iterdir()), key=lambda n: n == "summary.json"):
        os.replace(tmp / name, out_dir / name)
    (out_dir / REFUSED_QUARANTINE).unlink(missing_ok=True)
