"""report.xlsx: the batch's tables as sheets, for people (spec 7).

It opens on a Summary sheet with the batch's figures and native Excel charts
(rejections by reason, payouts by band, by visit type, by unit, and the
months of the year side by side once there are several); then every report
table as a sheet: money as numbers formatted 0.00, a frozen header, filters,
Chinese headers with lang zh. What goes where is data in layout.py.

The file is a pure function of its inputs: a fixed 'created' property (the
batch's start) and xlsxwriter's fixed zip timestamps keep it byte-identical
when re-rendered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import xlsxwriter
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from twopay.reports import layout
from twopay.reports.layout import CHARTS, MAX_SHEET_ROWS, SHEETS, SUMMARY_SHEET, UNITS_SHEET
from twopay.reports.reasons import reason

# Text a spreadsheet would run as a formula (OWASP CSV injection): the same
# rule as render.safe_sql, applied again here to every text cell.
FORMULA_START = r"^[=+\-@\t\r]"
FIXED_CREATED = datetime(2000, 1, 1)
# Excel keeps at most 32,767 characters in a cell (xlsxwriter cuts silently).
CELL_MAX = 32_767


# -- workbook and formats -------------------------------------------------------


@dataclass
class Book:
    wb: Workbook
    fmt: dict[str, Any]
    names: set[str]

    def sheet(self, name: str) -> Worksheet:
        """A worksheet under a valid, unique Excel sheet name: no []:*?/\\,
        at most 31 UTF-16 code units (a character outside the BMP counts
        two), and no apostrophe at either end, also after the cut."""
        clean = "".join("_" if ch in "[]:*?/\\" else ch for ch in name)
        candidate = _sheet_cut(clean, 31) or "sheet"
        n = 2
        while candidate.lower() in self.names:
            suffix = f" ({n})"
            candidate, n = (_sheet_cut(clean, 31 - len(suffix)) or "sheet") + suffix, n + 1
        self.names.add(candidate.lower())
        return self.wb.add_worksheet(candidate)


def _sheet_cut(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` UTF-16 code units (Excel's measure), without
    an apostrophe at either end."""
    out, used = [], 0
    for ch in name.strip("'"):
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > limit:
            break
        out.append(ch)
        used += width
    return "".join(out).strip("'")


def open_book(path: Path, created: datetime | None) -> Book:
    wb = xlsxwriter.Workbook(
        str(path),
        {
            # Input text is written as text, never as a formula or a link.
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            # Rows are written in order: keep memory flat on large sheets.
            "constant_memory": True,
        },
    )
    wb.set_properties({"created": created or FIXED_CREATED, "title": "twopay"})
    fmt = {
        "title": wb.add_format({"bold": True, "font_size": 14}),
        "subtitle": wb.add_format({"italic": True, "font_color": "#555555"}),
        "block": wb.add_format({"bold": True, "font_size": 12}),
        "header": wb.add_format(
            {"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True, "valign": "top"}
        ),
        "note": wb.add_format({"italic": True, "font_color": "#C00000"}),
        "money": wb.add_format({"num_format": "0.00"}),
        "int": wb.add_format({"num_format": "0"}),
        "text": None,
        "date": None,
    }
    return Book(wb, fmt, set())


# -- tables as sheets -----------------------------------------------------------


def neutralise(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix text that starts like a formula with an apostrophe (vectorised)."""
    exprs = [
        pl.when(pl.col(c).str.contains(FORMULA_START))
        .then(pl.lit("'") + pl.col(c))
        .otherwise(pl.col(c))
        .alias(c)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    ]
    return frame.with_columns(exprs) if exprs else frame


def typed(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV text to the kinds of layout.COLUMNS: money and counts become numbers."""
    exprs = []
    for c, dtype in frame.schema.items():
        kind = layout.kind_of(c)
        if kind == "money" and dtype != pl.Float64:
            exprs.append(pl.col(c).cast(pl.Float64, strict=False))
        elif kind == "int" and dtype != pl.Int64:
            exprs.append(pl.col(c).cast(pl.Int64, strict=False))
        elif kind in ("text", "date") and dtype != pl.String:
            exprs.append(pl.col(c).cast(pl.String))
    return frame.with_columns(exprs) if exprs else frame


def read_table(path: Path, max_rows: int, rows: int | None = None) -> tuple[pl.DataFrame, int]:
    """The first max_rows rows of a report CSV (all text), and its full row
    count: ``rows`` when the writer knows it, else counted (a scan of the file)."""
    # glob=False: a folder named like '报表[2024]' is a path, not a pattern
    frame = pl.read_csv(path, infer_schema=False, n_rows=max_rows, glob=False)
    total = frame.height
    if rows is not None:
        total = rows
    elif total >= max_rows:
        total = int(
            pl.scan_csv(path, infer_schema=False, glob=False).select(pl.len()).collect().item()
        )
    return frame, total


def write_table(
    book: Book,
    sheet_name: str,
    frame: pl.DataFrame,
    *,
    lang: str,
    total_rows: int | None = None,
    source_file: str | None = None,
    title: str | None = None,
    max_rows: int = MAX_SHEET_ROWS,
) -> bool:
    """One table as a sheet: headers in ``lang``, money 0.00, frozen header,
    autofilter. At most ``max_rows`` rows; a note says when there were more.
    Returns whether the sheet was capped."""
    ws = book.sheet(sheet_name)
    whole = frame.height
    frame = neutralise(typed(frame.head(max_rows)))
    total = whole if total_rows is None else total_rows
    capped = total > frame.height
    columns = frame.columns
    writers: list[Callable[..., Any]] = []
    for c, col in enumerate(columns):
        kind = layout.kind_of(col)
        spec = layout.COLUMNS.get(col)
        ws.set_column(c, c, spec.width if spec else 14, book.fmt[kind])
        writers.append(
            ws.write_number if kind in ("money", "int") else _text_writer(ws, lang, source_file)
        )
    row = 0
    if title:
        ws.write_string(row, 0, title, book.fmt["block"])
        row += 1
    head = row
    for c, col in enumerate(columns):
        ws.write_string(head, c, layout.header(col, lang), book.fmt["header"])
    if capped:
        # beside the header, where nobody misses it
        ws.write_string(
            head,
            len(columns) + 1,
            layout.text("capped", lang, shown=frame.height, total=total, file=source_file or ""),
            book.fmt["note"],
        )
    # The one unavoidable cell-by-cell loop: xlsxwriter has no bulk writer. It is
    # bounded by max_rows.
    for values in frame.iter_rows():
        row += 1
        for c, value in enumerate(values):
            if value is not None:
                writers[c](row, c, value)
    ws.freeze_panes(head + 1, 0)
    if columns:
        ws.autofilter(head, 0, max(row, head + 1), len(columns) - 1)
    return capped


def _text_writer(ws: Worksheet, lang: str, source_file: str | None) -> Callable[..., Any]:
    """write_string, but a text longer than an Excel cell holds is cut with a
    visible marker naming the CSV that has it whole (never cut silently)."""
    marker = layout.text("cut", lang, file=source_file or "CSV")

    def write(row: int, col: int, value: str) -> Any:
        if len(value) > CELL_MAX:
            value = value[: CELL_MAX - len(marker)] + marker
        return ws.write_string(row, col, value)

    return write


# -- the Summary sheet ----------------------------------------------------------


@dataclass
class Block:
    key: str
    columns: list[str]
    rows: list[list[object]]


def _num(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def summary_blocks(
    summary: Mapping[str, Any], months: Sequence[Mapping[str, Any]], lang: str
) -> list[Block]:
    """The chart data of the Summary sheet, from summary.json's figures."""
    codes: Mapping[str, int] = summary.get("codes", {}) or {}
    rejections = sorted(
        ((k.split(":", 1)[1], int(n)) for k, n in codes.items() if k.startswith("rejected:")),
        key=lambda kv: (-kv[1], kv[0]),
    )
    visit = summary.get("per_visit_type", {}) or {}
    units = summary.get("per_unit", {}) or {}
    top_units = sorted(units.items(), key=lambda kv: (-_num(kv[1].get("payout")), kv[0]))
    return [
        Block(
            "rejections",
            ["reason", "reason_code", "count"],
            [[reason(code, lang), code, n] for code, n in rejections],
        ),
        Block(
            "bands",
            ["band", "person_times", "amount"],
            [
                [b.get("band", ""), int(b.get("person_times", 0)), _num(b.get("amount", 0))]
                for b in summary.get("bands", []) or []
            ],
        ),
        Block(
            "visit_types",
            ["visit_type", "lines", "payout"],
            [
                [layout.text(vt, lang), int(v.get("lines", 0)), _num(v.get("payout", 0))]
                for vt, v in sorted(visit.items())
            ],
        ),
        Block(
            "units",
            ["unit_code", "lines", "payout"],
            [
                [u, int(v.get("lines", 0)), _num(v.get("payout", 0))]
                for u, v in top_units[: layout.TOP_UNITS]
            ],
        ),
        Block(
            "months",
            [
                "period",
                "rows_in",
                "rejected",
                "held",
                "adjudicated",
                "payout_total",
                "payments_amount",
            ],
            [
                [
                    m["period"],
                    int(m["rows_in"]),
                    int(m["rejected"]),
                    int(m["held"]),
                    int(m["adjudicated"]),
                    _num(m["payout_total"]),
                    _num(m["payments_amount"]),
                ]
                for m in months
            ],
        ),
    ]


def _figures(summary: Mapping[str, Any], lang: str) -> list[tuple[str, list[tuple[str, object]]]]:
    bal = summary.get("balance", {}) or {}
    lines = summary.get("lines", {}) or {}
    pay = summary.get("payments", {}) or {}
    rec = summary.get("recoveries", {}) or {}
    t = lambda key: layout.text(key, lang)  # noqa: E731
    h = lambda key: layout.header(key, lang)  # noqa: E731
    return [
        (
            "balance",
            [
                (h("rows_in"), int(bal.get("rows_in", 0))),
                (h("quarantined"), int(bal.get("quarantined", 0))),
                (h("rejected"), int(bal.get("rejected", 0))),
                (h("held"), int(bal.get("held", 0))),
                (h("adjudicated"), int(bal.get("adjudicated", 0))),
                (t("balanced"), t("yes") if bal.get("balanced") else t("no")),
            ],
        ),
        (
            "money",
            [
                (t("lines_count"), int(lines.get("count", 0))),
                (t("paid_lines"), int(lines.get("paid", 0))),
                (t("zero_lines"), int(lines.get("zero", 0))),
                (t("clawback_lines"), int(lines.get("clawback", 0))),
                (t("payout_total"), _num(lines.get("payout_total", 0))),
                (t("payments_count"), int(pay.get("count", 0))),
                (t("payments_amount"), _num(pay.get("amount", 0))),
                (t("recoveries_new"), _num(rec.get("new_amount", 0))),
                (t("offset_amount"), _num(rec.get("offset_amount", 0))),
                (t("review_pending"), int(summary.get("review_pending", 0) or 0)),
            ],
        ),
    ]


def write_summary_sheet(
    book: Book,
    summary: Mapping[str, Any],
    months: Sequence[Mapping[str, Any]],
    lang: str,
    capped: Sequence[str],
) -> None:
    ws = book.sheet(SUMMARY_SHEET.title(lang))
    ws.activate()
    ws.set_column(0, 0, 30)
    ws.set_column(1, 6, 14)
    name = ws.get_name()
    ws.write_string(
        0, 0, f"{layout.text('report_title', lang)} {summary.get('period', '')}", book.fmt["title"]
    )
    rules = ", ".join(
        f"{r.get('scheme')} {r.get('version')}" for r in summary.get("rules", []) or []
    )
    ws.write_string(
        1,
        0,
        f"twopay {summary.get('twopay_version', '')} · batch {summary.get('batch_id', '')}"
        + (f" · {rules}" if rules else ""),
        book.fmt["subtitle"],
    )
    row = 3
    for key, figures in _figures(summary, lang):
        ws.write_string(row, 0, layout.text(key, lang), book.fmt["block"])
        row += 1
        for label, value in figures:
            ws.write_string(row, 0, label)
            if isinstance(value, str):
                ws.write_string(row, 1, value)
            else:
                ws.write_number(
                    row, 1, value, book.fmt["money"] if isinstance(value, float) else None
                )
            row += 1
        row += 1
    for note in capped:
        ws.write_string(row, 0, note, book.fmt["note"])
        row += 1
    if capped:
        row += 1

    charts = {c.block: c for c in CHARTS}
    chart_row = 3
    for block in summary_blocks(summary, months, lang):
        ws.write_string(row, 0, layout.text(block.key, lang), book.fmt["block"])
        row += 1
        for c, col in enumerate(block.columns):
            ws.write_string(row, c, layout.header(col, lang), book.fmt["header"])
        first = row + 1
        for values in block.rows:
            row += 1
            for c, value in enumerate(values):
                if isinstance(value, str):
                    # a unit code from the roster is input text too (spec 7)
                    ws.write_string(
                        row, c, "'" + value if re.match(FORMULA_START, value) else value
                    )
                else:
                    fmt = book.fmt["money"] if isinstance(value, float) else None
                    ws.write_number(row, c, value, fmt)
        last = row
        row += 2
        spec = charts.get(block.key)
        if spec is None or len(block.rows) < max(spec.min_categories, 1):
            continue
        chart = book.wb.add_chart({"type": spec.kind})
        cat_col = 0
        val_col = block.columns.index(spec.value)
        chart.add_series(
            {
                "name": layout.header(spec.value, lang),
                "categories": [name, first, cat_col, last, cat_col],
                "values": [name, first, val_col, last, val_col],
                "data_labels": {"value": True},
            }
        )
        chart.set_title({"name": spec.title(lang)})
        chart.set_legend({"none": True})
        chart.set_size({"width": 560, "height": 300})
        ws.insert_chart(chart_row, 8, chart)
        chart_row += 16


# -- the workbook ---------------------------------------------------------------


def write_report_xlsx(
    path: Path,
    summary: dict[str, object],
    tables: dict[str, Path],
    *,
    lang: str,
    months: Sequence[Mapping[str, Any]] = (),
    max_rows: int = MAX_SHEET_ROWS,
    rows: Mapping[str, int] | None = None,
) -> None:
    """Summary sheet first, then every table of ``tables`` (report CSVs);
    ``rows`` gives a table's row count when known, so a CSV of millions of
    lines is not read through only to be counted."""
    created = summary.get("started_at")
    book = open_book(path, datetime.fromisoformat(str(created)) if created else None)
    # The Summary sheet must come first but mentions capped sheets: count first.
    loaded: list[tuple[str, str, pl.DataFrame, int]] = []
    known = {s.table for s in SHEETS}
    order = [s for s in SHEETS if s.table in tables] + [
        layout.Sheet(t, t, t) for t in sorted(tables) if t not in known
    ]
    capped: list[str] = []
    for sheet in order:
        frame, total = read_table(tables[sheet.table], max_rows, (rows or {}).get(sheet.table))
        loaded.append((sheet.title(lang), tables[sheet.table].name, frame, total))
        if total > frame.height:
            capped.append(
                f"{sheet.title(lang)}: "
                + layout.text(
                    "capped", lang, shown=frame.height, total=total, file=tables[sheet.table].name
                )
            )
    write_summary_sheet(book, summary, months, lang, capped)
    for title, file_name, frame, total in loaded:
        write_table(
            book,
            title,
            frame,
            lang=lang,
            total_rows=total,
            source_file=file_name,
            max_rows=max_rows,
        )
    units = summary.get("per_unit", {}) or {}
    if isinstance(units, dict):
        by_unit = pl.DataFrame(
            {
                "unit_code": list(units),
                "lines": [int(v.get("lines", 0)) for v in units.values()],
                "payout": [_num(v.get("payout", 0)) for v in units.values()],
            },
            schema={"unit_code": pl.String, "lines": pl.Int64, "payout": pl.Float64},
        )
        write_table(book, UNITS_SHEET.title(lang), by_unit, lang=lang, max_rows=max_rows)
    book.wb.close()


# -- the months of the year (for the side-by-side chart) --------------------------

MONTHS_SQL = """
WITH me AS (SELECT period FROM batches WHERE batch_id = $batch),
year_batches AS (
    SELECT b.batch_id, b.period FROM batches b, me
    WHERE b.batch_id <= $batch AND left(b.period, 4) = left(me.period, 4)
),
o AS (
    SELECT batch_id,
        count(*) FILTER (outcome = 'rejected') AS rejected,
        count(*) FILTER (outcome = 'held') AS held,
        count(*) FILTER (outcome = 'adjudicated') AS adjudicated,
        count(*) FILTER (outcome = 'quarantined') AS quarantined
    FROM outcomes WHERE NOT carried AND batch_id IN (SELECT batch_id FROM year_batches)
    GROUP BY batch_id
),
l AS (
    SELECT batch_id, sum(payout) AS payout_total FROM lines
    WHERE batch_id IN (SELECT batch_id FROM year_batches) GROUP BY batch_id
),
p AS (
    SELECT batch_id, sum(amount) AS payments_amount FROM payments
    WHERE batch_id IN (SELECT batch_id FROM year_batches) GROUP BY batch_id
)
SELECT y.period,
    coalesce(o.rejected + o.held + o.adjudicated + o.quarantined, 0) AS rows_in,
    coalesce(o.rejected, 0) AS rejected, coalesce(o.held, 0) AS held,
    coalesce(o.adjudicated, 0) AS adjudicated,
    coalesce(l.payout_total, 0) AS payout_total,
    coalesce(p.payments_amount, 0) AS payments_amount
FROM year_batches y
LEFT JOIN o USING (batch_id) LEFT JOIN l USING (batch_id) LEFT JOIN p USING (batch_id)
ORDER BY y.period
"""


def months_of_year(con: duckdb.DuckDBPyConnection, batch_id: int) -> list[dict[str, object]]:
    """The batches of the batch's year up to and including it (only earlier
    batches, so a re-render of an old batch is unchanged by later ones)."""
    cur = con.execute(MONTHS_SQL, {"batch": batch_id})
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
