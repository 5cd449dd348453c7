"""Report layouts as data (spec section 7; house style: "report layouts as
data in one place").

What report.xlsx, the unit notices and `twopay why` show, in which order,
under which Chinese and English headers, and which charts the Summary sheet
carries. The writers (xlsx.py, notices.py, why.py) only read these tables,
so a new column or a renamed header is a change here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "money", "int", "date"]
ChartKind = Literal["column", "bar", "pie"]

# Excel stops at 1,048,576 rows, and xlsxwriter writes cell by cell (about
# 20,000 rows of 14 columns a second): a sheet shows at most this many rows and
# says so; the CSVs stay complete. 20,000 rows keep a million-row batch's
# workbook to a few seconds; an analyst filtering more rows uses the CSV or
# `twopay query`.
MAX_SHEET_ROWS = 20_000
# The Summary sheet's by-unit chart shows the units with the largest payouts.
TOP_UNITS = 20


@dataclass(frozen=True)
class Column:
    zh: str
    en: str
    kind: Kind = "text"
    width: int = 14


# Every column any report, notice or trace shows, by its canonical name.
COLUMNS: dict[str, Column] = {
    "payment_id": Column("支付编号", "payment id", width=22),
    "member_id": Column("会员编号", "member id"),
    "name": Column("姓名", "name", width=12),
    "card_no": Column("服务卡号", "card no", width=22),
    "unit_code": Column("单位编码", "unit code"),
    "unit_name": Column("单位名称", "unit name", width=24),
    "amount": Column("金额(元)", "amount (yuan)", "money"),
    "lines": Column("明细行数", "lines", "int", 10),
    "retry_of": Column("重发自", "retry of", width=22),
    "settlement_ids": Column("结算流水号", "settlement ids", width=30),
    "settlement_id": Column("结算流水号", "settlement id", width=20),
    "scheme": Column("互助计划", "scheme", width=16),
    "rule_version": Column("规则版本", "rule version", width=12),
    "visit_type": Column("就诊类型", "visit type", width=10),
    "service_date": Column("结算日期", "service date", "date", 12),
    "admission_date": Column("入院日期", "admission date", "date", 12),
    "base_amount": Column("报销基数", "base amount", "money"),
    "deductible_applied": Column("本次计入起付线", "deductible applied", "money"),
    "computed": Column("按比例计算", "computed", "money"),
    "allowance": Column("住院津贴", "allowance", "money"),
    "payout": Column("互助金", "payout", "money"),
    "status": Column("状态", "status", width=10),
    "note": Column("说明", "note", width=24),
    "match": Column("身份匹配", "match", width=12),
    "id_number": Column("身份证号", "ID number", width=22),
    "reason_code": Column("原因代码", "reason code", width=22),
    "reason": Column("原因", "reason", width=30),
    "detail": Column("详情", "detail", width=50),
    "candidate_member_id": Column("候选会员编号", "candidate member id"),
    "held_since": Column("挂起期次", "held since", width=10),
    "source_file": Column("来源文件", "source file", width=24),
    "line_number": Column("行号", "line number", "int", 8),
    "error_code": Column("错误代码", "error code", width=20),
    "raw": Column("原始内容", "raw row", width=60),
    "kind": Column("类别", "kind", width=14),
    "fix": Column("处理办法", "what to do", width=36),
    "total_cost": Column("医疗费总额", "total cost", "money"),
    "self_pay_1": Column("自付一", "self pay 1", "money"),
    "person_times": Column("人次", "person-times", "int", 10),
    "period": Column("期次", "period", width=10),
    "rows_in": Column("结算行数", "rows in", "int", 10),
    "quarantined": Column("无法读取", "quarantined", "int", 10),
    "rejected": Column("拒付", "rejected", "int", 10),
    "held": Column("待复核", "held", "int", 10),
    "adjudicated": Column("已审核", "adjudicated", "int", 10),
    "payout_total": Column("互助金合计", "payout total", "money"),
    "payments_amount": Column("支付金额", "payments", "money"),
    "band": Column("档次(元/人次)", "band (yuan per person-time)", width=16),
    "count": Column("数量", "count", "int", 10),
}


def header(key: str, lang: str) -> str:
    col = COLUMNS.get(key)
    if col is None:
        return key
    return col.zh if lang == "zh" else col.en


def kind_of(key: str) -> Kind:
    col = COLUMNS.get(key)
    return col.kind if col else "text"


@dataclass(frozen=True)
class Sheet:
    """One CSV report shown as a sheet of report.xlsx."""

    table: str
    zh: str
    en: str

    def title(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


# report.xlsx, after the Summary sheet, in this order; any other table the
# renderer passes follows under its own name.
SHEETS: tuple[Sheet, ...] = (
    Sheet("payouts", "支付清单", "Payouts"),
    Sheet("payout_lines", "互助金明细", "Payout lines"),
    Sheet("rejections", "拒付清单", "Rejections"),
    Sheet("review", "待复核", "Review"),
    Sheet("quarantine", "无法读取", "Quarantine"),
    Sheet("recoveries", "待追回", "Recoveries"),
)
SUMMARY_SHEET = Sheet("summary", "汇总", "Summary")
UNITS_SHEET = Sheet("by_unit", "单位汇总", "By unit")


@dataclass(frozen=True)
class Chart:
    """A native Excel chart on the Summary sheet over one of its data blocks."""

    block: str  # which data block of the Summary sheet (see xlsx.summary_blocks)
    kind: ChartKind
    zh: str
    en: str
    value: str  # the block's column charted
    min_categories: int = 1  # below this many categories the chart is left out

    def title(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


CHARTS: tuple[Chart, ...] = (
    Chart("rejections", "bar", "拒付原因", "Rejections by reason", "count"),
    Chart(
        "bands", "column", "互助金档次（人次）", "Payouts by band (person-times)", "person_times"
    ),
    Chart("visit_types", "column", "按就诊类型的互助金", "Payouts by visit type", "payout"),
    Chart("units", "bar", "互助金最多的单位", "Payouts by unit (largest)", "payout"),
    Chart("months", "column", "本年各月互助金", "Payouts by month this year", "payout_total", 2),
)

# Block titles and the label of each Summary-sheet figure.
TEXT: dict[str, tuple[str, str]] = {
    "report_title": ("二次报销批次报告", "Second-reimbursement batch report"),
    "balance": ("行数核对", "Rows balance"),
    "money": ("金额", "Money"),
    "rejections": ("拒付原因", "Rejections by reason"),
    "bands": ("互助金档次", "Payouts by band"),
    "visit_types": ("就诊类型", "By visit type"),
    "units": ("单位（互助金最多者）", "Units (largest payouts)"),
    "months": ("本年各月", "Months of the year"),
    "balanced": ("账目平衡", "books balance"),
    "yes": ("是", "yes"),
    "no": ("否", "NO"),
    "lines_count": ("互助金明细行", "payout lines"),
    "paid_lines": ("支付行", "paid lines"),
    "zero_lines": ("零支付行", "zero lines"),
    "clawback_lines": ("冲销行", "clawback lines"),
    "payout_total": ("互助金合计", "payout total"),
    "payments_count": ("支付笔数", "payments"),
    "payments_amount": ("支付金额", "payments amount"),
    "recoveries_new": ("新增待追回", "new recoveries"),
    "offset_amount": ("已抵扣", "offset against payments"),
    "review_pending": ("待复核（累计）", "pending review (all periods)"),
    "capped": (
        "本表仅显示前 {shown:,} 行（共 {total:,} 行）；完整数据见 {file}",
        "This sheet shows the first {shown:,} of {total:,} rows; {file} has them all",
    ),
    "cut": (" …（已截断，完整内容见 {file}）", " … (cut; {file} has it whole)"),
    "outpatient": ("门诊", "outpatient"),
    "inpatient": ("住院", "inpatient"),
    "notice_title": ("单位 {unit} 需处理事项（{period}）", "What unit {unit} must fix ({period})"),
    "rejection": ("拒付", "rejection"),
    "review": ("待复核", "review"),
    "payment_failed": ("支付失败", "failed payment"),
    "roster_record": ("名册记录", "roster record"),
    "roster_record_unreadable": ("会员名册记录无法读取", "a roster record cannot be read"),
    "unassigned": ("（无法确定单位）", "(unit unknown)"),
}


def text(key: str, lang: str, **fmt: object) -> str:
    zh, en = TEXT.get(key, (key, key))
    out = zh if lang == "zh" else en
    return out.format(**fmt) if fmt else out


# -- unit notices (spec 8: `twopay notices`) ----------------------------------

# Rejection codes a unit's officers can fix (identity and card problems).
NOTICE_CODES: tuple[str, ...] = (
    "invalid_id_number",
    "not_a_member",
    "name_mismatch",
    "membership_inactive",
    "unit_dues_unpaid",
)
NOTICE_COLUMNS: tuple[str, ...] = (
    "kind",
    "settlement_id",
    "payment_id",
    "member_id",
    "name",
    "id_number",
    "card_no",
    "service_date",
    "self_pay_1",
    "amount",
    "reason_code",
    "reason",
    "fix",
    "detail",
    "held_since",
)
