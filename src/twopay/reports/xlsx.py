"""report.xlsx: the batch's tables as sheets, for people (spec 7)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import xlsxwriter

SHEETS = ("payouts", "payout_lines", "rejections", "review", "quarantine", "recoveries")
MONEY = {"amount", "base_amount", "deductible_applied", "computed", "allowance", "payout"}


def write_report_xlsx(
    path: Path, summary: dict[str, object], tables: dict[str, Path], *, lang: str
) -> None:
    wb = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False, "strings_to_urls": False})
    # A fixed creation time keeps the file byte-identical across re-renders.
    created = summary.get("started_at") or "2000-01-01T00:00:00"
    wb.set_properties({"created": datetime.fromisoformat(str(created))})
    bold = wb.add_format({"bold": True})
    ws = wb.add_worksheet("Summary")
    ws.write(0, 0, "twopay " + str(summary.get("period")), bold)
    balance = summary.get("balance", {})
    row = 2
    for key in ("rows_in", "quarantined", "rejected", "held", "adjudicated", "balanced"):
        ws.write(row, 0, key)
        ws.write(row, 1, str(balance.get(key, "")) if isinstance(balance, dict) else "")
        row += 1
    for name in SHEETS:
        frame = pl.read_csv(tables[name], infer_schema=False) if name in tables else pl.DataFrame()
        sheet = wb.add_worksheet(name)
        for c, col in enumerate(frame.columns):
            sheet.write_string(0, c, col, bold)
        for r, values in enumerate(frame.iter_rows(), start=1):
            for c, value in enumerate(values):
                if value is None:
                    continue
                sheet.write_string(r, c, value)
        sheet.freeze_panes(1, 0)
        if frame.width:
            sheet.autofilter(0, 0, max(frame.height, 1), frame.width - 1)
    wb.close()
