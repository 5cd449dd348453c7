"""The columns of every input (spec section 2) and their header aliases.

One place says which columns a file kind has, which are required, what type
each cell must parse to and which headers name it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

CellType = Literal["text", "money", "date", "visit_type", "category", "decision", "status"]


@dataclass(frozen=True)
class Column:
    name: str
    type: CellType = "text"
    required: bool = False
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileKind:
    name: str
    label: str
    columns: tuple[Column, ...]
    # groups of columns of which the file must have at least one, and each
    # row at least one filled (enrollments: id_number or member_id)
    one_of: tuple[tuple[str, ...], ...] = ()

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


ROSTER = FileKind(
    "roster",
    "roster (会员名册)",
    (
        Column("member_id", required=True, aliases=("会员编号",)),
        Column("name", required=True, aliases=("姓名",)),
        Column("id_number", required=True, aliases=("身份证号", "公民身份号码", "证件号码")),
        Column("card_no", required=True, aliases=("服务卡号", "互助服务卡号", "卡号")),
        Column("unit_code", required=True, aliases=("单位编码", "单位代码")),
        Column("unit_name", aliases=("单位名称",)),
        Column("category", "category", aliases=("人员类别",)),
        Column("valid_from", "date", required=True, aliases=("入会日期", "生效日期")),
        Column("valid_to", "date", aliases=("失效日期", "调出日期")),
        Column("bank_account", aliases=("银行账号",)),
    ),
)

SETTLEMENTS = FileKind(
    "settlements",
    "settlements (医保结算明细)",
    (
        Column("settlement_id", required=True, aliases=("结算流水号", "结算编号")),
        Column("id_number", required=True, aliases=("身份证号", "公民身份号码")),
        Column("name", required=True, aliases=("姓名",)),
        Column("visit_type", "visit_type", required=True, aliases=("就诊类型", "医疗类别")),
        Column("service_date", "date", required=True, aliases=("结算日期", "就诊日期", "出院日期")),
        Column("admission_date", "date", aliases=("入院日期",)),
        Column("hospital_code", aliases=("医院编码",)),
        Column("total_cost", "money", required=True, aliases=("医疗费总额",)),
        Column("self_pay_1", "money", required=True, aliases=("自付一",)),
        Column("self_pay_2", "money", aliases=("自付二",)),
        Column("out_of_pocket", "money", aliases=("自费",)),
        Column("reverses", aliases=("原结算流水号",)),
    ),
)

UNITS = FileKind(
    "units",
    "units (单位)",
    (
        Column("unit_code", required=True, aliases=("单位编码", "单位代码")),
        Column("dues_paid_through", "date", required=True, aliases=("会费缴至", "缴费截至日期")),
        Column("unit_name", aliases=("单位名称",)),
    ),
)

ENROLLMENTS = FileKind(
    "enrollments",
    "enrollments (参保登记)",
    (
        Column("id_number", aliases=("身份证号", "公民身份号码")),
        Column("member_id", aliases=("会员编号",)),
        Column("scheme", required=True, aliases=("方案", "保障计划")),
        Column("valid_from", "date", required=True, aliases=("参保开始日期", "生效日期")),
        Column("valid_to", "date", required=True, aliases=("参保结束日期", "失效日期")),
    ),
    one_of=(("id_number", "member_id"),),
)

OVERRIDES = FileKind(
    "overrides",
    "overrides (人工复核结论)",
    (
        Column("settlement_id", required=True, aliases=("结算流水号",)),
        Column("decision", "decision", required=True, aliases=("结论",)),
        Column("member_id", aliases=("会员编号",)),
        Column("note", aliases=("备注",)),
        Column("decided_by", aliases=("复核人",)),
    ),
)

BANK_RETURN = FileKind(
    "bank_return",
    "bank return (银行回盘)",
    (
        Column("payment_id", required=True, aliases=("支付编号", "付款编号")),
        Column("card_no", aliases=("服务卡号", "卡号")),
        Column("amount", "money", required=True, aliases=("金额",)),
        Column("status", "status", required=True, aliases=("状态",)),
        Column("reason", aliases=("原因", "失败原因")),
    ),
)

KINDS = {k.name: k for k in (ROSTER, SETTLEMENTS, UNITS, ENROLLMENTS, OVERRIDES, BANK_RETURN)}

VISIT_TYPE_VALUES = {
    "outpatient": "outpatient",
    "门诊": "outpatient",
    "急诊": "outpatient",
    "门急诊": "outpatient",
    "inpatient": "inpatient",
    "住院": "inpatient",
}
CATEGORY_VALUES = {
    "in_service": "in_service",
    "在职": "in_service",
    "retired": "retired",
    "退休": "retired",
}


def header_key(text: str) -> str:
    """How headers are compared: NFKC, case-folded, no white space, no BOM."""
    text = unicodedata.normalize("NFKC", text).replace("\ufeff", "")
    return "".join(text.split()).casefold()


def header_map(
    kind: FileKind, extra_aliases: Mapping[str, list[str]] | None = None
) -> dict[str, str]:
    """Header key -> canonical column name, including workspace aliases."""
    out: dict[str, str] = {}
    for col in kind.columns:
        for name in (col.name, *col.aliases, *(extra_aliases or {}).get(col.name, [])):
            out[header_key(name)] = col.name
    return out
