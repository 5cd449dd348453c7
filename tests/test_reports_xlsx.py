"""report.xlsx (spec 7): a Summary sheet with native charts first, every
table as a sheet with money as numbers, a frozen header, filters and Chinese
headers; byte-identical when re-rendered; large tables capped with a note."""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path

import fastexcel
import polars as pl
import pytest

from fixtures.reports.workspace import build_workspace, run_month
from twopay.reports.xlsx import write_report_xlsx

ZH_SHEETS = [
    "汇总",
    "支付清单",
    "互助金明细",
    "拒付清单",
    "待复核",
    "无法读取",
    "待追回",
    "单位汇总",
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("xlsx"))


def report(ws: Path, period: str) -> Path:
    return ws / "reports" / period / "report.xlsx"


def parts(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n).decode("utf-8") for n in z.namelist() if n.endswith(".xml")}


def charts(path: Path) -> list[str]:
    xml = parts(path)
    return [xml[n] for n in sorted(xml) if n.startswith("xl/charts/chart")]


def test_it_opens_on_the_summary_then_every_table(ws: Path) -> None:
    book = fastexcel.read_excel(report(ws, "2024-01"))
    assert book.sheet_names == ZH_SHEETS
    workbook_xml = parts(report(ws, "2024-01"))["xl/workbook.xml"]
    assert 'activeTab="' not in workbook_xml or 'activeTab="0"' in workbook_xml
    summary = book.load_sheet("汇总", header_row=None).to_polars()
    cells = {str(v) for row in summary.iter_rows() for v in row if v is not None}
    assert "二次报销批次报告 2024-01" in cells
    assert {"行数核对", "拒付原因", "互助金档次", "就诊类型"} <= cells
    assert "姓名与会员名册不符" in cells  # rejections by reason, in words


def test_money_is_numbers_with_a_two_decimal_format(ws: Path) -> None:
    book = fastexcel.read_excel(report(ws, "2024-01"))
    lines = book.load_sheet("互助金明细").to_polars()
    assert lines.columns[:4] == ["结算流水号", "互助计划", "规则版本", "会员编号"]
    assert lines["互助金"].dtype == pl.Float64
    by_sid = dict(zip(lines["结算流水号"], lines["互助金"], strict=True))
    assert by_sid == {"JAN-001": 250.0, "JAN-002": 0.0, "JAN-003": 100.0}
    payouts = book.load_sheet("支付清单").to_polars()
    assert payouts["金额(元)"].to_list() == [250.0, 100.0]
    assert payouts["服务卡号"].to_list() == ["6222000000000001", "6222000000000003"]  # text
    styles = parts(report(ws, "2024-01"))["xl/styles.xml"]
    assert 'formatCode="0.00"' in styles


def test_every_table_sheet_has_a_frozen_header_and_a_filter(ws: Path) -> None:
    xml = parts(report(ws, "2024-01"))
    sheets = [xml[f"xl/worksheets/sheet{i}.xml"] for i in range(2, len(ZH_SHEETS) + 1)]
    for sheet in sheets:
        assert re.search(
            r'<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"', sheet
        )
        assert "<autoFilter ref=" in sheet
        assert "<f>" not in sheet  # no formula anywhere


def test_the_summary_carries_native_charts(ws: Path) -> None:
    january = charts(report(ws, "2024-01"))
    titles = "".join(january)
    assert len(january) == 4
    for title in ("拒付原因", "互助金档次（人次）", "按就诊类型的互助金", "互助金最多的单位"):
        assert title in titles
    assert "本年各月互助金" not in titles  # one month: nothing to compare
    # February: no rejections (no chart for them), and the months side by side
    february = charts(report(ws, "2024-02"))
    assert any("本年各月互助金" in c for c in february)
    assert not any("拒付原因" in c for c in february)
    months = fastexcel.read_excel(report(ws, "2024-02")).load_sheet("汇总", header_row=None)
    cells = [str(v) for row in months.to_polars().iter_rows() for v in row if v is not None]
    assert "2024-01" in cells and "2024-02" in cells


def test_re_rendering_is_byte_identical(ws: Path) -> None:
    before = {p: report(ws, p).read_bytes() for p in ("2024-01", "2024-02")}
    run_month(ws, "2024-01")  # same inputs: a no-op that rewrites the reports
    run_month(ws, "2024-02")
    assert {p: report(ws, p).read_bytes() for p in before} == before


def test_english_headers_with_lang_en(ws: Path, tmp_path: Path) -> None:
    run_month(ws, "2024-01", "--lang", "en", "--out", tmp_path / "en")
    book = fastexcel.read_excel(tmp_path / "en" / "report.xlsx")
    assert book.sheet_names[:3] == ["Summary", "Payouts", "Payout lines"]
    assert book.load_sheet("Rejections").to_polars().columns[:3] == [
        "settlement id",
        "ID number",
        "name",
    ]
    assert any("Rejections by reason" in c for c in charts(tmp_path / "en" / "report.xlsx"))


def test_a_large_table_is_capped_and_says_so(tmp_path: Path) -> None:
    lines = tmp_path / "payout_lines.csv"
    with lines.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["settlement_id", "member_id", "payout", "note"])
        for i in range(12):
            w.writerow([f"S{i:02d}", f"M{i}", f"{i}.50", "=1+1" if i == 0 else ""])
    out = tmp_path / "report.xlsx"
    summary = {"period": "2024-01", "started_at": "2024-02-01T08:00:00"}
    write_report_xlsx(out, summary, {"payout_lines": lines}, lang="zh", max_rows=5)
    book = fastexcel.read_excel(out)
    sheet = book.load_sheet("互助金明细").to_polars()
    assert sheet.height == 5
    assert sheet["结算流水号"].to_list() == [f"S{i:02d}" for i in range(5)]
    assert sheet["互助金"].to_list() == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert sheet["说明"][0] == "'=1+1"  # text never becomes a formula
    note = [c for c in sheet.columns if "仅显示前 5 行" in c]
    assert note and "共 12 行" in note[0] and "payout_lines.csv" in note[0]
    summary_cells = book.load_sheet("汇总", header_row=None).to_polars()
    assert any(
        "仅显示前 5 行" in str(v) for row in summary_cells.iter_rows() for v in row if v is not None
    )
    # the same inputs give the same bytes
    again = tmp_path / "again.xlsx"
    write_report_xlsx(again, summary, {"payout_lines": lines}, lang="zh", max_rows=5)
    assert again.read_bytes() == out.read_bytes()
    assert len(lines.read_text(encoding="utf-8").splitlines()) == 13  # the CSV is whole
    # the row count the CSV writer reported stands in for counting the file
    told = tmp_path / "told.xlsx"
    write_report_xlsx(
        told, summary, {"payout_lines": lines}, lang="zh", max_rows=5, rows={"payout_lines": 12}
    )
    assert told.read_bytes() == out.read_bytes()
    write_report_xlsx(
        told, summary, {"payout_lines": lines}, lang="zh", max_rows=5, rows={"payout_lines": 40}
    )
    sheet = fastexcel.read_excel(told).load_sheet("互助金明细").to_polars()
    assert any("共 40 行" in c for c in sheet.columns)  # the told count is the one shown


def test_a_cell_longer_than_excel_holds_is_cut_and_says_so(tmp_path: Path) -> None:
    """Excel keeps 32,767 characters in a cell; xlsxwriter cut a longer text
    silently, so the sheet differed from its CSV without a word."""
    lines = tmp_path / "payout_lines.csv"
    with lines.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["settlement_id", "member_id", "payout", "note"])
        w.writerow(["S1", "M1", "1.00", "x" * 40_000])
        w.writerow(["S2", "M2", "2.00", "short"])
    out = tmp_path / "report.xlsx"
    summary = {"period": "2024-01", "started_at": "2024-02-01T08:00:00"}
    write_report_xlsx(out, summary, {"payout_lines": lines}, lang="zh")
    notes = fastexcel.read_excel(out).load_sheet("互助金明细").to_polars()["说明"].to_list()
    assert len(notes[0]) == 32_767 and notes[0].endswith("（已截断，完整内容见 payout_lines.csv）")
    assert notes[1] == "short"


def test_the_units_sheet_says_when_it_is_capped_and_unit_codes_are_text(tmp_path: Path) -> None:
    """The by-unit sheet was cut at the cap without its note; a unit code is
    text from the roster, neutralised on the Summary sheet as everywhere."""
    out = tmp_path / "report.xlsx"
    units = {f"U{i}": {"lines": 1, "payout": "1.00"} for i in range(6)}
    units["=U9"] = {"lines": 9, "payout": "9.00"}
    summary = {"period": "2024-01", "started_at": "2024-02-01T08:00:00", "per_unit": units}
    write_report_xlsx(out, summary, {}, lang="zh", max_rows=3)
    book = fastexcel.read_excel(out)
    sheet = book.load_sheet("单位汇总").to_polars()
    assert sheet.height == 3
    assert any("仅显示前 3 行" in c and "共 7 行" in c for c in sheet.columns)
    cells = [
        v for row in book.load_sheet("汇总", header_row=None).to_polars().iter_rows() for v in row
    ]
    assert "'=U9" in cells and "=U9" not in cells


@pytest.mark.parametrize(
    "names",
    [
        ["\U00020000" * 17],  # 34 UTF-16 units: Excel's limit of 31 counts those
        ["u" * 30 + "'" + "v" * 5],  # cut at 31, it would end on an apostrophe
        ["\U00020000" * 17, "\U00020000" * 18],  # cut alike: the second gets a suffix
    ],
)
def test_sheet_names_from_unit_codes_are_always_valid_excel_names(
    names: list[str], tmp_path: Path
) -> None:
    from twopay.reports.xlsx import open_book

    book = open_book(tmp_path / "b.xlsx", None)
    sheets = [book.sheet(n) for n in names]
    book.wb.close()
    read = fastexcel.read_excel(str(tmp_path / "b.xlsx")).sheet_names
    assert read == [s.name for s in sheets] and len(set(read)) == len(names)
    for name in read:
        assert len(name.encode("utf-16-le")) // 2 <= 31 and not name.endswith("'")
