"""Resident ID numbers (GB 11643-1999), spec section 3.

The same rules twice: Python functions for the residue and the tests, and SQL
builders so that millions of rows are normalised and validated inside DuckDB
without a Python call per row. The tests hold the two to each other on
generated inputs.

The SQL builders expect cells that the reader has already put through NFKC
(spec 2); the Python functions apply NFKC themselves.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"  # remainder 0..10 -> check character (ISO 7064 MOD 11-2)
EARLIEST_BIRTH = date(1900, 1, 1)

# Problem codes, in the order they are tested (the first that applies wins).
PROBLEMS = {
    "bad_length": "is not 18 characters (nor a valid 15-digit legacy number)",
    "excel_mangled": "looks like a number Excel converted (scientific notation or zeroed last "
    "digits); re-export the column as text",
    "bad_characters": "has characters other than 17 digits and a final digit or X",
    "bad_region": "starts with 0, which no region code does",
    "bad_birth_date": "has no real birth date between 1900-01-01 and the day of the run",
    "bad_check": "fails the check character",
}

# White space as Python's str.isspace() knows it, plus the invisible format
# characters that copy-and-paste from spreadsheets leaves behind. One list for
# Python and SQL, so that both strip exactly the same characters.
_SPACE_RANGES = (
    (0x09, 0x0D),
    (0x1C, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200D),  # en quad .. zero-width joiner
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x2060),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
)
SPACE_RE = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _SPACE_RANGES) + "]+")
# the same class for RE2 (DuckDB)
SPACE_CLASS_SQL = "[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in _SPACE_RANGES) + "]"


# The separators people type between the digits of an ID or account number:
# spaces (not tabs or line breaks, which separate the cells of a raw line),
# hyphens and slashes.
_SEPARATORS = " \u00a0\u3000/\\-\uff0d"


def _id_run() -> str:
    """An ID number or account written out in free text (a raw line, a
    trace): 12 or more digits, full-width or not, with spaces, hyphens or
    slashes between them as people type them, the last one possibly X. Groups
    1 and 2 are its first 6 and last 4 digits, with what separates them:
    masking keeps them and stars the rest (spec 7). The full-width characters
    are in the pattern as themselves, which Python's re and RE2 both read."""
    sep = f"[{_SEPARATORS}]*"
    digit = "[0-9\uff10-\uff19]"
    last = "[0-9\uff10-\uff19Xx\uff38\uff58]"
    return f"({digit}(?:{sep}{digit}){{5}})(?:{sep}{digit}){{2,}}((?:{sep}{digit}){{3}}{sep}{last})"


ID_RUN_SQL = _id_run()  # for RE2 (DuckDB)
ID_RUN_RE = re.compile(ID_RUN_SQL)
# An 18-character token that starts with a digit: an ID number with a
# letter typed for a digit (110105198O01011238, or 11O105198001011238 with
# the letter among its first six) is not a run of digits, but it is still
# the person's ID number (spec 7: masked wherever it appears).
ID_TOKEN_SQL = r"\b([0-9][0-9A-Za-z]{5})[0-9A-Za-z]{8}([0-9A-Za-z]{4})\b"
ID_TOKEN_RE = re.compile(ID_TOKEN_SQL, re.ASCII)
# The ID a detail sentence of the identity stage names, as it was given
# ("ID 110105198O01011238 has characters other than ..."): masked by position
# whatever it holds, since an invalid ID need not look like one.
ID_GIVEN_SQL = r"\bID (\S*[0-9]\S*?)\.?(?:\s|$)"
_ID_GIVEN_RE = re.compile(ID_GIVEN_SQL)


def mask_text(value: str) -> str:
    """``value`` with the ID a detail names, and every ID- or account-like
    run of digits, masked."""
    value = _ID_GIVEN_RE.sub(lambda m: m[0].replace(m[1], mask_id(m[1]), 1), value)
    # whole 18-character tokens first: a run of digits would stop at an X
    # inside one (1101051990030400X7) and show five characters at its end
    value = ID_TOKEN_RE.sub(r"\1********\2", value)
    return ID_RUN_RE.sub(r"\1********\2", value)


def mask_text_sql(col: str) -> str:
    """SQL for mask_text (the few rows a report or notice shows)."""
    given = f"regexp_extract({col}, '{ID_GIVEN_SQL}', 1)"
    named = (
        f"CASE WHEN {given} = '' THEN {col} "
        f"ELSE replace({col}, 'ID ' || {given}, 'ID ' || {mask_id_sql(given)}) END"
    )
    tokens = f"regexp_replace({named}, '{ID_TOKEN_SQL}', '\\1********\\2', 'g')"
    return f"regexp_replace({tokens}, '{ID_RUN_SQL}', '\\1********\\2', 'g')"


def mask_id_sql(col: str, empty: str = "''") -> str:
    """SQL for mask_id; a NULL becomes ``empty`` (an SQL expression)."""
    return (
        f"CASE WHEN {col} IS NULL THEN {empty} "
        f"WHEN length({col}) > 10 THEN left({col}, 6) || repeat('*', length({col}) - 10)"
        f" || right({col}, 4) ELSE repeat('*', length({col})) END"
    )


# A value Excel turned into a number: scientific notation, or a decimal point.
EXCEL_NUMBER = r"[0-9]+(\.[0-9]*)?[Ee][+-]?[0-9]+|[0-9]+\.[0-9]*"
_EXCEL_RE = re.compile(EXCEL_NUMBER)
ID18_SHAPE = "[0-9]{17}[0-9X]"  # 17 digits and a digit or X (a regex for Python and RE2)
_ID18_RE = re.compile(ID18_SHAPE)
_LEGACY_RE = re.compile(r"[1-9][0-9]{14}")


def check_char(first17: str) -> str:
    """The GB 11643-1999 check character of 17 digits."""
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def _real_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def clean_id(raw: str) -> str:
    """NFKC, no white space, upper-case x (spec 3). Only x is upper-cased:
    str.upper() would turn 'ß' into two letters and break the SQL twin."""
    return SPACE_RE.sub("", unicodedata.normalize("NFKC", raw)).replace("x", "X")


def normalise_id(raw: str) -> str:
    """The 18-character form of an ID number (spec 3).

    A valid 15-digit legacy number (first digit 1-9, a real date 19YYMMDD)
    gains '19' after its sixth digit and a computed check character. Anything
    else comes back cleaned but unchanged, for validate_id to judge.
    """
    s = clean_id(raw)
    if _LEGACY_RE.fullmatch(s) and _real_date(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12])):
        body = s[:6] + "19" + s[6:]
        return body + check_char(body)
    return s


def validate_id(s: str, today: date) -> str | None:
    """None when ``s`` is a valid ID number on ``today``, else a problem code
    (the keys of PROBLEMS). ``s`` is raw: it is normalised first. Pass the
    value as read, not its normal form: NFKC then stripping white space is
    not idempotent ("U \u0308" strips to "U\u0308", which a second NFKC
    composes into "Ü"), and a batch normalises once."""
    s = normalise_id(s)
    if s == "":
        return "bad_length"
    if _EXCEL_RE.fullmatch(s):
        return "excel_mangled"
    if len(s) == 15 and s.isascii() and s.isdigit():
        # a legacy number that normalise_id could not convert
        return "bad_region" if s[0] == "0" else "bad_birth_date"
    if len(s) != 18:
        return "bad_length"
    if not _ID18_RE.fullmatch(s):
        return "bad_characters"
    if s[0] == "0":
        return "bad_region"
    check_ok = check_char(s[:17]) == s[17]
    if not check_ok and s.endswith("000"):
        # Excel keeps 15 significant digits: the last three come back as zeros
        return "excel_mangled"
    born = _real_date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    if born is None or not EARLIEST_BIRTH <= born <= today:
        return "bad_birth_date"
    if not check_ok:
        return "bad_check"
    return None


def mask_id(s: str | None) -> str:
    """First 6 and last 4 characters, the rest starred (spec 7):
    110105********002X. A value of 10 characters or fewer is starred whole,
    since showing 6 + 4 of it would show all of it."""
    if not s:
        return ""
    if len(s) <= 10:
        return "*" * len(s)
    return s[:6] + "*" * (len(s) - 10) + s[-4:]


# -- SQL builders (DuckDB) ---------------------------------------------------------
#
# Each returns one SQL expression over the column (or expression) it is given.
# Column names come from this package, never from user input.


def _digit_sql(n17: str, pos: int) -> str:
    """The digit at 1-based position ``pos`` of a 17-digit number held as BIGINT
    (integer arithmetic: twice as fast as 17 substr calls on 4M rows)."""
    return f"(({n17} // {10 ** (17 - pos)}) % 10)"


def check_char_sql(n17: str) -> str:
    """The check character of the BIGINT ``n17`` (the first 17 digits)."""
    terms = " + ".join(f"{_digit_sql(n17, i + 1)} * {w}" for i, w in enumerate(WEIGHTS))
    return f"substr('{CHECK_CHARS}', (({terms}) % 11)::INTEGER + 1, 1)"


def _real_ymd_sql(y: str, m: str, d: str) -> str:
    """SQL: y-m-d (integers) is a real calendar date (Gregorian leap years)."""
    leap = f"(({y}) % 4 = 0 AND (({y}) % 100 <> 0 OR ({y}) % 400 = 0))"
    days = (
        f"CASE WHEN ({m}) = 2 THEN CASE WHEN {leap} THEN 29 ELSE 28 END "
        f"WHEN ({m}) IN (4, 6, 9, 11) THEN 30 ELSE 31 END"
    )
    return f"(({m}) BETWEEN 1 AND 12 AND ({d}) BETWEEN 1 AND {days})"


def id_clean_sql(col: str) -> str:
    """SQL for clean_id without the NFKC (the reader applied it): no white
    space, upper-case x. NULL becomes ''."""
    return f"replace(regexp_replace(coalesce({col}, ''), '{SPACE_CLASS_SQL}', '', 'g'), 'x', 'X')"


def id_from_clean_sql(clean: str) -> str:
    """SQL for normalise_id over an already cleaned value: the 15-digit legacy
    conversion, else the value itself."""
    n17 = f"TRY_CAST(left({clean}, 6) || '19' || right({clean}, 9) AS BIGINT)"
    yy = f"TRY_CAST(substr({clean}, 7, 2) AS INTEGER) + 1900"
    mm = f"TRY_CAST(substr({clean}, 9, 2) AS INTEGER)"
    dd = f"TRY_CAST(substr({clean}, 11, 2) AS INTEGER)"
    return (
        f"CASE WHEN regexp_full_match({clean}, '[1-9][0-9]{{14}}') AND {_real_ymd_sql(yy, mm, dd)} "
        f"THEN left({clean}, 6) || '19' || right({clean}, 9) || {check_char_sql(n17)} "
        f"ELSE {clean} END"
    )


def id_normalise_sql(col: str) -> str:
    """SQL for normalise_id (cells are NFKC-normalised by the reader already).
    A value already in shape is itself: one regex test for nearly every row."""
    return (
        f"CASE WHEN regexp_full_match({col}, '{ID18_SHAPE}') THEN {col} "
        f"ELSE {id_from_clean_sql(id_clean_sql(col))} END"
    )


def id_digits_sql(col: str) -> str:
    """SQL: the first 17 characters of ``col`` as a BIGINT, the input of
    check_char_sql. Meaningful only when they are 17 digits (TRY_CAST also
    reads signs and blanks): test the shape before trusting it."""
    return f"TRY_CAST(left({col}, 17) AS BIGINT)"


# the day a run checks birth dates against (a birth date after it is invalid):
# the run's, set by identity.match for its connection
TODAY_SQL = "coalesce(getvariable('identity_today'), current_date)"


def one_edit_sql(a: str, b: str) -> str:
    """SQL: ID numbers ``a`` and ``b`` (normalised, 18 characters) are one
    digit substitution or one adjacent transposition apart (spec 3 rule 4's
    typo). For a few rows: the matcher builds variants instead."""
    swapped = (
        f"list_bool_or(list_transform(range(1, 18), lambda i: left({a}, i - 1) "
        f"|| substr({a}, i + 1, 1) || substr({a}, i, 1) || substr({a}, i + 2) = {b}))"
    )
    # (hamming needs equal lengths, and DuckDB may evaluate it for every row
    # of a vector whatever the AND before it says: it is given two)
    same = f"CASE WHEN length({a}) = 18 AND length({b}) = 18 THEN hamming({a}, {b}) END"
    return f"(({same}) = 1 OR ({same}) = 2 AND {swapped})"


def id_problem_sql(col: str, today_sql: str, n17: str | None = None) -> str:
    """SQL for validate_id over an already normalised column: NULL when valid,
    else the problem code. ``today_sql`` is a DATE expression, normally a
    parameter such as ``$today`` or ``?::DATE``. ``n17`` names a column that
    holds id_digits_sql(col): pass it on large tables, since DuckDB does not
    share the repeated cast between the branches (3x slower without)."""
    n17 = n17 or f"TRY_CAST(left({col}, 17) AS BIGINT)"
    ymd = f"(({n17} // 1000) % 100000000)"  # digits 7-14 as yyyymmdd
    y, m, d = f"({ymd} // 10000)", f"(({ymd} // 100) % 100)", f"({ymd} % 100)"
    today_int = f"CAST(strftime(({today_sql})::DATE, '%Y%m%d') AS INTEGER)"
    check_ok = f"({check_char_sql(n17)} = right({col}, 1))"
    # The same order as validate_id; values in shape (nearly all) take the
    # first branch and one regex test.
    return f"""CASE
        WHEN regexp_full_match({col}, '{ID18_SHAPE}') THEN CASE
            WHEN left({col}, 1) = '0' THEN 'bad_region'
            WHEN right({col}, 3) = '000' AND NOT {check_ok} THEN 'excel_mangled'
            WHEN NOT {_real_ymd_sql(y, m, d)} OR {ymd} < 19000101 OR {ymd} > {today_int}
                THEN 'bad_birth_date'
            WHEN NOT {check_ok} THEN 'bad_check'
            END
        WHEN {col} IS NULL OR {col} = '' THEN 'bad_length'
        WHEN regexp_full_match({col}, '{EXCEL_NUMBER}') THEN 'excel_mangled'
        WHEN regexp_full_match({col}, '[0-9]{{15}}')
            THEN CASE WHEN left({col}, 1) = '0' THEN 'bad_region' ELSE 'bad_birth_date' END
        WHEN length({col}) <> 18 THEN 'bad_length'
        ELSE 'bad_characters'
    END"""
