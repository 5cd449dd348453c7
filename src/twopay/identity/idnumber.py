"""Resident ID numbers (GB 11643-1999), spec section 3.

The same rules twice: Python functions for the residue and the tests, and SQL
builders so that millions of rows are normalised and validated inside DuckDB.
The tests hold the two to each other.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"  # remainder 0..10 -> check character
EARLIEST_BIRTH = date(1900, 1, 1)

PROBLEMS = {
    "excel_mangled": "looks like a number Excel converted (scientific notation or zeroed last "
    "digits); re-export the column as text",
    "bad_length": "is not 18 characters (nor a valid 15-digit legacy number)",
    "bad_characters": "has characters other than digits and a final X",
    "bad_region": "starts with 0, which no region code does",
    "bad_birth_date": "has no real birth date between 1900-01-01 and today",
    "bad_check": "fails the check character",
}


def check_char(first17: str) -> str:
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def _birth_ok(yyyymmdd: str, today: date) -> bool:
    try:
        born = date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return False
    return EARLIEST_BIRTH <= born <= today


def clean_id(raw: str) -> str:
    """NFKC, no white space, upper-case X."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", raw)).upper()


def normalise_id(raw: str, today: date | None = None) -> str:
    """The 18-character form; a valid 15-digit legacy number gains '19' after
    its sixth digit and a computed check character. Anything else is returned
    cleaned but unchanged, to be reported by validate_id."""
    s = clean_id(raw)
    if len(s) == 15 and s.isdigit() and _birth_ok("19" + s[6:12], today or date.today()):
        body = s[:6] + "19" + s[6:]
        return body + check_char(body)
    return s


def validate_id(s: str, today: date) -> str | None:
    """None when ``s`` (already normalised) is a valid ID number, else a problem code."""
    if re.search(r"[eE][+-]?\d+$", s) or re.fullmatch(r"\d+\.\d*", s):
        return "excel_mangled"
    if len(s) != 18:
        return "bad_length"
    if not re.fullmatch(r"\d{17}[\dX]", s):
        return "bad_characters"
    if s[0] == "0":
        return "bad_region"
    if not _birth_ok(s[6:14], today):
        return "bad_birth_date"
    if check_char(s[:17]) != s[17]:
        # Excel keeps 15 significant digits: a long number comes back with zeros
        return "excel_mangled" if s.endswith("000") else "bad_check"
    return None


def mask_id(s: str | None) -> str:
    """First 6 and last 4 characters, the rest starred (spec 7)."""
    if not s:
        return ""
    if len(s) <= 10:
        return s
    return s[:6] + "*" * (len(s) - 10) + s[-4:]


# -- SQL builders (DuckDB) ---------------------------------------------------------


def _check_char_sql(first17: str) -> str:
    terms = " + ".join(
        f"CAST(substr({first17}, {i + 1}, 1) AS INTEGER) * {w}" for i, w in enumerate(WEIGHTS)
    )
    return f"substr('{CHECK_CHARS}', (({terms}) % 11) + 1, 1)"


def id_clean_sql(col: str) -> str:
    return f"upper(regexp_replace({col}, '\\s+', '', 'g'))"


def id_normalise_sql(col: str) -> str:
    """SQL for normalise_id (cells are NFKC-normalised by the reader already)."""
    c = id_clean_sql(col)
    legacy = f"(left({c}, 6) || '19' || right({c}, 9))"
    return (
        f"CASE WHEN regexp_full_match({c}, '[0-9]{{15}}') "
        f"AND try_strptime('19' || substr({c}, 7, 6), '%Y%m%d') IS NOT NULL "
        f"THEN {legacy} || {_check_char_sql(legacy)} ELSE {c} END"
    )


def id_problem_sql(col: str, today_sql: str) -> str:
    """SQL for validate_id over an already normalised column; ``today_sql`` is
    a DATE expression (a parameter or a literal)."""
    born = f"CAST(try_strptime(substr({col}, 7, 8), '%Y%m%d') AS DATE)"
    return f"""CASE
        WHEN regexp_matches({col}, '[eE][+-]?[0-9]+$') OR regexp_full_match({col}, '[0-9]+\\.[0-9]*')
            THEN 'excel_mangled'
        WHEN length({col}) <> 18 THEN 'bad_length'
        WHEN NOT regexp_full_match({col}, '[0-9]{{17}}[0-9X]') THEN 'bad_characters'
        WHEN left({col}, 1) = '0' THEN 'bad_region'
        WHEN {born} IS NULL OR {born} < DATE '1900-01-01' OR {born} > {today_sql}
            THEN 'bad_birth_date'
        WHEN {_check_char_sql(col)} <> right({col}, 1)
            THEN CASE WHEN right({col}, 3) = '000' THEN 'excel_mangled' ELSE 'bad_check' END
    END"""


def mask_id_sql(col: str) -> str:
    return (
        f"CASE WHEN length({col}) > 10 THEN left({col}, 6) || repeat('*', length({col}) - 10)"
        f" || right({col}, 4) ELSE {col} END"
    )
