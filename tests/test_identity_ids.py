"""ID numbers (spec 3): the Python validator against python-stdnum, its
error-detection properties, and its SQL twin on generated inputs.

Deliberate differences from stdnum.cn.ric (documented in the differential test):
- stdnum looks the first six digits up in its table of place codes (as of the
  birth year); the spec asks only that the first digit be 1-9, since union
  rosters carry codes retired since or missing from any table;
- stdnum accepts any calendar birth date; the spec bounds it by
  1900-01-01..the day of the run;
- stdnum strips '-' and some dashes as separators; we strip only white space,
  so a dash is a bad character;
- stdnum knows nothing of 15-digit legacy numbers, which we convert first.
"""

from __future__ import annotations

import unicodedata
from datetime import date

import duckdb
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from stdnum.cn import ric
from stdnum.exceptions import ValidationError

from helpers import make_id
from twopay.identity.idnumber import (
    PROBLEMS,
    SPACE_RE,
    id_normalise_sql,
    id_problem_sql,
    mask_id,
    normalise_id,
    validate_id,
)

TODAY = date(2026, 11, 24)

# 17 digits: first digit 1-9, a real birth date 1900-2026 (day <= 28 keeps it real)
first17 = st.builds(
    lambda region, y, m, d, seq: f"{region}{y:04d}{m:02d}{d:02d}{seq:03d}",
    st.integers(100000, 999999).map(str),
    st.integers(1900, 2026),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 999),
).filter(lambda s: s[6:14] <= TODAY.strftime("%Y%m%d"))
valid_ids = first17.map(make_id)

ID_CHARS = "0123456789X"


@st.composite
def raw_ids(draw: st.DrawFn) -> str:
    """Strings near ID numbers: valid ones, one edit away, legacy, spaced,
    full-width, Excel-mangled, truncated, and junk."""
    s = draw(valid_ids)
    kind = draw(
        st.sampled_from(
            ["valid", "sub", "swap", "drop", "add", "legacy", "spaced", "lower", "wide", "excel"]
            + ["zeros", "junk", "date"]
        )
    )
    pos = draw(st.integers(0, 17))
    ch = draw(st.sampled_from(ID_CHARS + "xYO- .E"))
    if kind == "sub":
        return s[:pos] + ch + s[pos + 1 :]
    if kind == "swap":
        pos = min(pos, 16)
        return s[:pos] + s[pos + 1] + s[pos] + s[pos + 2 :]
    if kind == "drop":
        return s[:pos] + s[pos + 1 :]
    if kind == "add":
        return s[:pos] + ch + s[pos:]
    if kind == "legacy":
        return s[:6] + s[8:17]
    if kind == "spaced":
        return s[:6] + " " + s[6:14] + "\u3000" + s[14:]
    if kind == "lower":
        return s.lower()
    if kind == "wide":
        return s.translate(str.maketrans(ID_CHARS, "０１２３４５６７８９Ｘ"))
    if kind == "excel":
        return f"{int(s[:17]):.5E}"
    if kind == "zeros":
        return s[:15] + "000"
    if kind == "date":  # any digits in the birth date, real or not
        return make_id(s[:6] + draw(st.from_regex(r"[0-9]{8}", fullmatch=True)) + s[14:17])
    return draw(st.text(alphabet=ID_CHARS + "x .Ee+-１", max_size=20))


def stdnum_verdict(n: str) -> bool:
    """stdnum.cn.ric.validate without the place lookup, plus the spec's
    bounds on the birth date and the first digit (see the module docstring)."""
    if ric.compact(n) != n:  # stdnum would strip separators we do not
        return False
    try:
        if len(n) != 18 or not n[:17].isascii() or not n[:17].isdigit():
            return False
        if ric.calc_check_digit(n) != n[17]:
            return False
        born = ric.get_birth_date(n)
    except ValidationError:
        return False
    return n[0] != "0" and date(1900, 1, 1) <= born <= TODAY


@settings(max_examples=400)
@given(raw_ids())
def test_validator_agrees_with_stdnum(raw: str) -> None:
    n = normalise_id(raw)
    assert (validate_id(n, TODAY) is None) == stdnum_verdict(n), n


@given(
    st.sampled_from(["110101", "110102", "110105", "110108"]),
    st.dates(date(1946, 1, 1), date(2005, 12, 31)),
    st.integers(0, 999),
)
def test_valid_ids_are_valid_for_stdnum_too(region: str, born: date, seq: int) -> None:
    # with place codes stdnum knows for these years, its full check agrees
    s = make_id(f"{region}{born:%Y%m%d}{seq:03d}")
    assert validate_id(s, TODAY) is None
    assert ric.is_valid(s)


@given(valid_ids, st.integers(0, 17), st.sampled_from(ID_CHARS))
def test_any_single_substitution_is_detected(s: str, pos: int, ch: str) -> None:
    if ch == s[pos]:
        return
    assert validate_id(s[:pos] + ch + s[pos + 1 :], TODAY) is not None


@given(valid_ids, st.integers(0, 16))
def test_any_adjacent_transposition_of_unequal_characters_is_detected(s: str, pos: int) -> None:
    if s[pos] == s[pos + 1]:
        return
    assert validate_id(s[:pos] + s[pos + 1] + s[pos] + s[pos + 2 :], TODAY) is not None


@given(valid_ids.filter(lambda s: s[6:8] == "19"))
def test_legacy_fifteen_digits_become_the_eighteen_digit_number(s: str) -> None:
    legacy = s[:6] + s[8:17]
    assert normalise_id(legacy) == s
    assert validate_id(legacy, TODAY) is None


def test_legacy_numbers_that_are_not_valid_stay_as_they_are() -> None:
    assert normalise_id("110105901301123") == "110105901301123"  # month 13
    assert validate_id("110105901301123", TODAY) == "bad_birth_date"
    assert validate_id("010105900101123", TODAY) == "bad_region"
    assert normalise_id("110105000229123") == "110105000229123"  # 1900 was not a leap year
    assert normalise_id("110105960229123") == make_id("11010519960229123")


@given(valid_ids.filter(lambda s: s[17] != "X"))
def test_excel_mangled_forms_are_never_valid(s: str) -> None:
    assert validate_id(f"{int(s):.5E}", TODAY) == "excel_mangled"  # 1.10105E+17
    assert validate_id(f"{int(s):.14e}", TODAY) == "excel_mangled"
    rounded = str(round(int(s), -3))  # Excel keeps 15 significant digits
    if len(rounded) == 18 and rounded != s:
        assert validate_id(rounded, TODAY) in ("excel_mangled", None)
        if rounded[17] != make_id(rounded[:17])[17]:
            assert validate_id(rounded, TODAY) == "excel_mangled"


@pytest.mark.parametrize(
    "raw,problem",
    [
        ("11010519900101123X", "bad_check"),
        ("11010519491001004X", None),
        ("1.10105E+17", "excel_mangled"),
        ("1.10105e+17", "excel_mangled"),
        ("110105199001011232.0", "excel_mangled"),
        ("110105199001011000", "excel_mangled"),
        ("１１０１０５１９９００１０１１２３２", None),  # full-width digits (NFKC)
        ("1101 0519 9001 0112 32", None),
        ("110105\u00a0199001011232\u200b", None),  # no-break and zero-width spaces
        ("11010519900101123Y", "bad_characters"),
        ("110105-19900101123", "bad_characters"),
        ("010105199001011234", "bad_region"),
        ("110105189912311234", "bad_birth_date"),
        ("110105202612011234", "bad_birth_date"),  # born after the run
        ("110105199002301234", "bad_birth_date"),
        ("11010519900101123", "bad_length"),
        ("", "bad_length"),
    ],
)
def test_id_problems(raw: str, problem: str | None) -> None:
    assert validate_id(raw, TODAY) == problem
    assert problem is None or problem in PROBLEMS
    assert sql_problems([unicodedata.normalize("NFKC", raw)]) == [(normalise_id(raw), problem)]


def test_x_is_upper_cased_and_only_x() -> None:
    assert normalise_id("11010519491001004x") == "11010519491001004X"
    assert normalise_id("ß") == "ß"  # str.upper() would make it 'SS'


def test_space_class_covers_every_python_white_space() -> None:
    spaces = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    assert SPACE_RE.sub("", spaces) == ""


@pytest.mark.parametrize(
    "raw,masked",
    [
        ("11010519491001004X", "110105********004X"),
        ("110105900101123", "110105*****1123"),
        ("1.10105E+17", "1.1010*E+17"),
        ("1234567890", "**********"),
        ("", ""),
    ],
)
def test_masking(raw: str, masked: str) -> None:
    assert mask_id(raw) == masked


# -- SQL twins ------------------------------------------------------------------------

_con = duckdb.connect()


def sql_problems(raws: list[str]) -> list[tuple[str, str | None]]:
    """(normalised, problem) of each (NFKC'd) value by the SQL builders, in one query."""
    return [
        (r[0], r[1])
        for r in _con.execute(
            f"""
            SELECT n, {id_problem_sql("n", "$today")}
            FROM (SELECT i, {id_normalise_sql("x")} AS n FROM unnest($xs) WITH ORDINALITY t(x, i))
            ORDER BY i
            """,
            {"xs": raws, "today": TODAY},
        ).fetchall()
    ]


@settings(max_examples=60)  # one query per example: ~50 ms of planning each
@given(st.lists(raw_ids() | st.text(max_size=20), min_size=1, max_size=80))
@example(["0000000000000000U\u00a8"])  # a space that NFKC puts before a combining mark
def test_sql_and_python_agree(raws: list[str]) -> None:
    # the reader NFKCs every cell before SQL sees it (spec 2)
    cells = [unicodedata.normalize("NFKC", r) for r in raws]
    # normalised once, as a batch does: NFKC then stripping white space is not
    # idempotent (a stripped space can expose a combining mark that a second
    # NFKC would compose), so validate_id is given the cell, not its normal form
    expected = [(normalise_id(c), validate_id(c, TODAY)) for c in cells]
    assert sql_problems(cells) == expected


def test_sql_reads_null_as_an_empty_id() -> None:
    row = _con.execute(
        f"SELECT n, {id_problem_sql('n', '$t')} "
        f"FROM (SELECT {id_normalise_sql('x')} AS n FROM (SELECT NULL::VARCHAR x))",
        {"t": TODAY},
    ).fetchone()
    assert row == ("", "bad_length")
