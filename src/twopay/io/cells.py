"""SQL that turns normalised text cells into typed values (spec section 2).

Each builder returns an expression that is NULL when the cell cannot be read,
so that validation can name the failing column without a second parse.
"""

from __future__ import annotations

from twopay.io.schemas import CATEGORY_VALUES, VISIT_TYPE_VALUES

# 1234.5 / 1,234.50 / ¥1234.50 / 1234.50元 / -12.00 ; NFKC has already turned ￥ into ¥.
# The currency goes first (a sign may stand before it), then the amount must
# be plain or grouped by thousands: a comma anywhere else (12,34, a decimal
# comma) is not read as one, and the amount is bad_amount.
_MONEY_CLEAN = (
    "regexp_replace(regexp_replace({c}, '^(-?)\\s*(?:RMB|CNY|¥|\\$)\\s*', '\\1'), '\\s*元$', '')"
)
# Two places; trailing zeros beyond them are fine, other digits are not.
# (at most 13 digits before the point, grouped or not: DECIMAL(18,2) and the
# sums of a year of them must fit)
_MONEY_OK = (
    "^-?(?:[0-9]{{1,3}}(?:,[0-9]{{3}}){{1,3}}|[0-9](?:,[0-9]{{3}}){{4}}|[0-9]{{1,13}})"
    "(\\.[0-9]{{0,2}}0*)?$"
)


def money_sql(col: str) -> str:
    """The cell as DECIMAL(18,2), or NULL when it is not a readable amount."""
    clean = _MONEY_CLEAN.format(c=col)
    # the plain form (what most exports and Parquet give) is one cast; the
    # cleaning regexes run only for the other cells
    return (
        f"CASE WHEN regexp_full_match({col}, '[0-9]{{1,13}}(\\.[0-9]{{1,2}})?') "
        f"THEN CAST({col} AS DECIMAL(18,2)) "
        f"WHEN regexp_matches({clean}, '{_MONEY_OK.format()}') "
        f"THEN CAST(regexp_replace(replace({clean}, ',', ''), '(\\.[0-9]{{0,2}})0*$', '\\1') "
        "AS DECIMAL(18,2)) END"
    )


_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y%m%d",
    "%Y年%m月%d日",
    "%Y.%m.%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    # what hospital systems and Excel's own display give: no seconds, or
    # milliseconds
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y/%m/%d %H:%M:%S.%f",
)


def date_sql(col: str) -> str:
    """The cell as DATE, or NULL. Excel serial numbers (a date cell exported as
    its number, 20000..80000, i.e. 1954..2119) are read as dates too."""
    # %m and %d take one or two digits: without separators only the full
    # eight-digit form is unambiguous ('2024123' is 1-23 or 12-3)
    tries = ", ".join(
        f"CASE WHEN regexp_full_match({col}, '[0-9]{{8}}') THEN try_strptime({col}, '{f}') END"
        if f == "%Y%m%d"
        else f"try_strptime({col}, '{f}')"
        for f in _DATE_FORMATS
    )
    # a date-time serial (45296.4375) is the day it falls on: what calamine
    # gives for a date cell in a CJK built-in date format (numFmtId 27-36, 50-58)
    serial = (
        f"CASE WHEN regexp_matches({col}, '^[2-7][0-9]{{4}}(\\.[0-9]+)?$') "
        f"THEN DATE '1899-12-30' + CAST(floor(CAST({col} AS DOUBLE)) AS INTEGER) END"
    )
    # the ISO form (what most exports and Parquet give) is one fast cast; the
    # other forms are tried only for the cells that are not ISO
    return (
        f"CASE WHEN regexp_full_match({col}, '(?:[12][0-9]{{3}}|9999)-[0-9]{{2}}-[0-9]{{2}}') "
        f"THEN try_cast({col} AS DATE) "
        # %Y takes one to four digits: a year is four, from 1000 ('24-03-05'
        # is not a date of year 24), or 9999, the usual "no end" of a valid_to
        # (9999-12-31); a five-digit serial starting 1 or 2 is tried too
        f"WHEN regexp_matches({col}, '^(?:[12][0-9]{{3}}|9999)') "
        f"THEN coalesce(CAST(coalesce({tries}) AS DATE), {serial}) "
        f"ELSE {serial} END"
    )


def _mapping_sql(col: str, values: dict[str, str]) -> str:
    whens = " ".join(f"WHEN '{k.lower()}' THEN '{v}'" for k, v in values.items())
    return f"CASE lower({col}) {whens} END"


def visit_type_sql(col: str) -> str:
    return _mapping_sql(col, VISIT_TYPE_VALUES)


def category_sql(col: str) -> str:
    return _mapping_sql(col, CATEGORY_VALUES)
