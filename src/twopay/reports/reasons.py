"""Human reasons for every outcome code (spec section 5), in Chinese and English."""

from __future__ import annotations

QUARANTINE_CODES = (
    "missing_field",
    "bad_amount",
    "bad_date",
    "bad_visit_type",
    "inconsistent_amounts",
)
REJECTION_CODES = (
    "invalid_id_number",
    "not_a_member",
    "name_mismatch",
    "membership_inactive",
    "unit_dues_unpaid",
    "no_coverage",
    "waiting_period",
    "no_rule_version",
    "duplicate_settlement",
    "conflicting_duplicate",
    "reversed",
    "reversal_unmatched",
)
REVIEW_CODES = ("probable_id_typo", "probable_name_typo")

REASONS: dict[str, tuple[str, str]] = {
    "missing_field": (
        "必填项缺失或行格式错误",
        "a required field is missing or the row is malformed",
    ),
    "bad_amount": ("金额无法识别", "an amount cannot be read"),
    "bad_date": ("日期无法识别", "a date cannot be read"),
    "bad_visit_type": ("就诊类型无法识别", "the visit type is not outpatient or inpatient"),
    "inconsistent_amounts": ("金额前后矛盾", "the amounts contradict each other"),
    "invalid_id_number": ("身份证号码无效", "the ID number is not a valid ID number"),
    "not_a_member": ("非互助会员", "the ID number is not in the member roster"),
    "name_mismatch": ("姓名与会员名册不符", "the name does not match the member roster"),
    "membership_inactive": ("就诊日不在会籍有效期内", "no membership in force on the service date"),
    "unit_dues_unpaid": ("所在单位未按期缴纳互助金", "the member's unit has not paid its dues"),
    "no_coverage": ("不在保障范围内", "no scheme covers this member and visit type"),
    "waiting_period": ("处于等待期", "the service date is within the waiting period"),
    "no_rule_version": (
        "就诊日无适用的报销规则",
        "no rule version is in force on the service date",
    ),
    "duplicate_settlement": ("重复的结算记录", "this settlement was already processed"),
    "conflicting_duplicate": (
        "结算流水号重复且内容不一致",
        "the settlement id repeats with different content",
    ),
    "reversed": ("结算已冲销", "the settlement was reversed"),
    "reversal_unmatched": ("冲销记录找不到原结算", "the reversal's original settlement is unknown"),
    "probable_id_typo": (
        "身份证号疑似录入错误，待人工复核",
        "probable ID number typo, held for review",
    ),
    "probable_name_typo": ("姓名疑似录入错误，待人工复核", "probable name typo, held for review"),
}

FIXES: dict[str, tuple[str, str]] = {
    "invalid_id_number": (
        "核对会员身份证号并更正卡面信息",
        "check the member's ID number and correct the card",
    ),
    "not_a_member": (
        "确认是否会员；如是请补录入会信息",
        "confirm membership; enrol the member if due",
    ),
    "name_mismatch": ("核对姓名并更正会员名册", "check the name and correct the roster"),
    "membership_inactive": ("核对会籍有效期（调入调出）", "check the membership dates (transfers)"),
    "unit_dues_unpaid": ("补缴单位互助金", "pay the unit's outstanding dues"),
    "probable_id_typo": (
        "确认身份证号并在复核表中给出结论",
        "confirm the ID number and decide in overrides.csv",
    ),
    "probable_name_typo": (
        "确认姓名并在复核表中给出结论",
        "confirm the name and decide in overrides.csv",
    ),
    "payment_failed": (
        "核对服务卡号（卡号变更请更新名册）",
        "check the service card (update the roster if re-issued)",
    ),
    "roster_record": (
        "更正会员名册中的该条记录（如服务卡号、日期）",
        "correct this record in the roster (card number, dates)",
    ),
}


def reason(code: str, lang: str) -> str:
    zh, en = REASONS.get(code, (code, code))
    return zh if lang == "zh" else en
