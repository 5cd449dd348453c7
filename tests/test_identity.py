"""Identity (spec 3): ID numbers, names, and the matching stage on real DuckDB."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import ric

from helpers import make_id
from twopay.identity.idnumber import (
    id_normalise_sql,
    id_problem_sql,
    mask_id,
    normalise_id,
    validate_id,
)
from twopay.identity.match import match_identities, prepare_roster
from twopay.identity.names import compare_names, normalise_name

TODAY = date(2026, 11, 24)

digits17 = st.from_regex(
    r"[1-9][0-9]{5}(19[0-9]{2}|20[01][0-9])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}",
    fullmatch=True,
)


@given(digits17)
def test_valid_ids_validate_in_python_sql_and_stdnum(first17: str) -> None:
    s = make_id(first17)
    assert validate_id(s, TODAY) is None
    assert sql_problem(s) is None
    # stdnum also insists on a region code it knows; the spec asks only for
    # the shape (first digit 1-9), so compare the check digit and birth date
    assert ric.calc_check_digit(s) == s[17]
    assert ric.get_birth_date(s).strftime("%Y%m%d") == s[6:14]


@given(st.text(alphabet="0123456789Xx .E+", min_size=0, max_size=20))
def test_python_and_sql_validators_agree_and_accept_only_what_stdnum_accepts(raw: str) -> None:
    n = normalise_id(raw, TODAY)
    problem = validate_id(n, TODAY)
    assert sql_normalise(raw) == n
    assert sql_problem(n) == problem
    if problem is None:
        assert ric.calc_check_digit(n) == n[17]
        assert ric.get_birth_date(n).strftime("%Y%m%d") == n[6:14]
    elif problem == "bad_check":
        assert ric.calc_check_digit(n) != n[17]


@given(digits17, st.integers(0, 17), st.integers(1, 9))
def test_any_single_digit_substitution_is_detected(first17: str, pos: int, delta: int) -> None:
    s = make_id(first17)
    if s[pos] == "X":
        return
    changed = s[:pos] + str((int(s[pos]) + delta) % 10) + s[pos + 1 :]
    assert validate_id(changed, TODAY) is not None


@given(digits17, st.integers(0, 16))
def test_adjacent_transposition_of_unequal_digits_is_detected(first17: str, pos: int) -> None:
    s = make_id(first17)
    if s[pos] == s[pos + 1]:
        return
    swapped = s[:pos] + s[pos + 1] + s[pos] + s[pos + 2 :]
    assert validate_id(swapped, TODAY) is not None


def test_legacy_fifteen_digit_numbers_become_eighteen() -> None:
    assert normalise_id("110105900101123", TODAY) == make_id("11010519900101123")
    assert sql_normalise("110105900101123") == make_id("11010519900101123")
    # not a real date: left as it is, and invalid
    assert validate_id(normalise_id("110105901301123", TODAY), TODAY) == "bad_length"


@pytest.mark.parametrize(
    "raw,problem",
    [
        ("1.10105E+17", "excel_mangled"),
        ("110105199001011000", "excel_mangled"),  # Excel kept 15 significant digits
        ("１１０１０５１９９００１０１１２３２", None),  # full-width digits (NFKC)
        ("1101 0519 9001 0112 32", None),
        ("11010519900101123x", "bad_check"),
        ("010105199001011234", "bad_region"),
        ("110105189912311234", "bad_birth_date"),
        ("110105203001011234", "bad_birth_date"),  # born after today
        ("11010519900101123", "bad_length"),
        ("11010519900101123Y", "bad_characters"),
    ],
)
def test_id_problems(raw: str, problem: str | None) -> None:
    assert validate_id(normalise_id(raw, TODAY), TODAY) == problem


def test_masking() -> None:
    assert mask_id("11010519900101002X") == "110105********002X"
    assert mask_id("") == ""


@pytest.mark.parametrize(
    "given_name,roster_name,level",
    [
        ("张伟", "张伟", "exact"),
        ("張偉", "张伟", "traditional"),
        ("劉德華", "刘德华", "traditional"),
        ("章玮", "张伟", "homophone"),
        ("张为", "张伟", "homophone"),  # wéi / wěi: toneless
        ("张伟明", "张伟", "probable_name_typo"),
        ("张小伟", "张伟强", "name_mismatch"),
        ("李娜", "张伟", "name_mismatch"),
        ("王", "汪", "homophone"),
        ("王", "李", "name_mismatch"),  # one character: never a typo
    ],
)
def test_name_levels(given_name: str, roster_name: str, level: str) -> None:
    assert compare_names(normalise_name(given_name), normalise_name(roster_name)) == level


def test_minority_name_dots_are_one() -> None:
    forms = [
        "买买提·艾力",
        "买买提•艾力",
        "买买提・艾力",
        "买买提.艾力",
        "买买提．艾力",
        "买买提 · 艾力",
    ]
    assert {normalise_name(f) for f in forms} == {"买买提·艾力"}
    assert (
        compare_names(normalise_name("買買提.艾力"), normalise_name("买买提·艾力")) == "traditional"
    )


def sql_normalise(raw: str) -> str:
    import unicodedata

    con = duckdb.connect()
    return con.execute(
        f"SELECT {id_normalise_sql('x')} FROM (SELECT ?::VARCHAR AS x)",
        [unicodedata.normalize("NFKC", raw)],
    ).fetchall()[0][0]


def sql_problem(s: str) -> str | None:
    con = duckdb.connect()
    return con.execute(
        f"SELECT {id_problem_sql('x', '?::DATE')} FROM (SELECT ?::VARCHAR AS x)", [TODAY, s]
    ).fetchall()[0][0]


def identify(
    roster: list[tuple[str, str, str]], settlements: list[tuple[str, str]]
) -> list[tuple[object, ...]]:
    """Run the identity stage on a real DuckDB: roster (member_id, name, id), settlements (id, name)."""
    con = duckdb.connect()
    con.execute(
        "CREATE TEMP TABLE roster (record_key BIGINT, member_id VARCHAR, name VARCHAR, id_number VARCHAR,"
        " card_no VARCHAR, unit_code VARCHAR, unit_name VARCHAR, category VARCHAR, valid_from DATE,"
        " valid_to DATE, bank_account VARCHAR, person_key VARCHAR, name_norm VARCHAR)"
    )
    for i, (member, name, idn) in enumerate(roster):
        con.execute(
            "INSERT INTO roster VALUES (?, ?, ?, ?, 'c', 'U', NULL, 'in_service', DATE '2020-01-01', NULL, NULL, NULL, NULL)",
            [i, member, name, idn],
        )
    con.execute(
        "CREATE TEMP TABLE id_input (row_key BIGINT, id_raw VARCHAR, name VARCHAR, service_date DATE)"
    )
    for i, (idn, name) in enumerate(settlements):
        con.execute("INSERT INTO id_input VALUES (?, ?, ?, DATE '2024-03-01')", [i, idn, name])
    prepare_roster(con, TODAY)
    match_identities(con, TODAY)
    return con.execute(
        "SELECT row_key, outcome, match, candidate_member_id, detail FROM id_result ORDER BY row_key"
    ).fetchall()


def test_matching_stage_outcomes() -> None:
    a = make_id("11010519900101123")
    b = make_id("11010519850505456")
    c = make_id("11010519850505465")
    typo_of_a = a[:10] + a[11] + a[10] + a[12:]  # adjacent transposition of a
    legacy_a = a[:6] + a[8:17]  # the 15-digit form of a
    roster = [
        ("M1", "张伟", a),
        ("M2", "李娜", b),
        ("M3", "李娜", c),
        ("M4", "艾力", make_id("65010219850303001")),
    ]
    rows = identify(
        roster,
        [
            (a, "张伟"),
            (legacy_a, "张 伟"),
            (a.lower(), "張偉"),
            (a, "章玮"),
            (a, "张伟明"),
            (a, "王芳"),
            (typo_of_a, "张伟"),
            (typo_of_a, "王芳"),  # one digit away but another name: not a candidate
            ("1.10105E+17", "张伟"),
            (make_id("11010519700707707"), "赵六"),
        ],
    )
    got = [(r[1], r[2], r[3]) for r in rows]
    assert got == [
        ("exact", "exact", None),
        ("exact", "exact", None),
        ("exact", "traditional", None),
        ("homophone", "homophone", None),
        ("probable_name_typo", None, "M1"),
        ("name_mismatch", None, None),
        ("probable_id_typo", None, "M1"),
        ("invalid_id_number", None, None),
        ("invalid_id_number", None, None),
        ("not_a_member", None, None),
    ]
    assert "Excel" in rows[8][4]
    assert a not in " ".join(str(r[4]) for r in rows)  # details never carry a full ID


def test_two_candidates_are_not_a_match_and_are_named() -> None:
    b = make_id("11010519850505456")
    c = make_id("11010519850505457")  # differs from b in the last digit and the check
    probe = b[:17] + c[17]  # one substitution from each of them
    rows = identify([("M2", "李娜", b), ("M3", "李娜", c)], [(probe, "李娜")])
    assert rows[0][1] == "invalid_id_number"
    assert "2 roster people" in rows[0][4] and "M2, M3" in rows[0][4]
