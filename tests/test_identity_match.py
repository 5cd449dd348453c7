"""The identity stage (spec 3 rules 1-4) on a real DuckDB: outcomes, the record
chosen, the one-digit-away candidate search, detail and evidence."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pytest

from helpers import make_id
from twopay.identity.idnumber import mask_id, mask_text, normalise_id, validate_id
from twopay.identity.match import (
    ID_RESULT_COLUMNS,
    OUTCOMES,
    exact_detail_sql,
    exact_evidence_sql,
    match_identities,
    prepare_roster,
    roster_invalid_ids,
)

TODAY = date(2026, 11, 24)
A = make_id("11010519900101123")
B = make_id("11010519850505456")
C = make_id("11010519850505465")  # B with digits 16 and 17 swapped (and its own check)
D = make_id("65010219850303001")

Record = tuple  # (member_id, name, id_number[, valid_from, valid_to])


def identify(
    roster: list[Record],
    settlements: list[tuple[str | None, str | None] | tuple[str, str, date]],
    *,
    lazy_exact: bool = False,
) -> list[dict[str, object]]:
    """Run prepare_roster and match_identities; id_result rows as dicts."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE roster (record_key BIGINT, member_id VARCHAR, name VARCHAR,"
        " id_number VARCHAR, card_no VARCHAR, unit_code VARCHAR, unit_name VARCHAR,"
        " category VARCHAR, valid_from DATE, valid_to DATE, bank_account VARCHAR,"
        " person_key VARCHAR, name_norm VARCHAR)"
    )
    for i, rec in enumerate(roster):
        member, name, idn, *valid = rec
        start, end = valid if valid else (date(2020, 1, 1), None)
        con.execute(
            "INSERT INTO roster VALUES (?, ?, ?, ?, 'c', 'U', NULL, 'in_service', ?, ?,"
            " NULL, NULL, NULL)",
            [i + 100, member, name, idn, start, end],
        )
    con.execute(
        "CREATE TABLE id_input (row_key BIGINT, id_raw VARCHAR, name VARCHAR, service_date DATE)"
    )
    for i, row in enumerate(settlements):
        idn, name, *day = row
        con.execute(
            "INSERT INTO id_input VALUES (?, ?, ?, ?)",
            [i, idn, name, day[0] if day else date(2024, 3, 1)],
        )
    prepare_roster(con, TODAY)
    match_identities(con, TODAY, lazy_exact=lazy_exact)
    cur = con.execute("SELECT * FROM id_result ORDER BY row_key")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def outcomes(rows: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(r["outcome"], r["match"], r["candidate_member_id"]) for r in rows]


def swap(s: str, pos: int) -> str:
    return s[:pos] + s[pos + 1] + s[pos] + s[pos + 2 :]


def sub(s: str, pos: int, ch: str) -> str:
    return s[:pos] + ch + s[pos + 1 :]


ROSTER = [("M1", "张伟", A), ("M2", "李娜", B), ("M3", "李娜", C), ("M4", "买买提·艾力", D)]


def test_outcomes_in_spec_order() -> None:
    rows = identify(
        ROSTER,
        [
            (A, "张伟"),  # rule 1
            (A[:6] + A[8:17], "张 伟"),  # legacy 15 digits, spaced name
            (A.lower(), "張偉"),  # Traditional
            ("１１０１０５ １９９００１０１１２３２", "张伟"),  # full-width and spaces
            (D, "买买提•艾力"),
            (D, "買買提.艾力"),
            (A, "章玮"),  # rule 2
            (A, "张伟明"),  # rule 3
            (A, "王芳"),
            (swap(A, 10), "张伟"),  # rule 4
            (swap(A, 10), "王芳"),  # one digit away but another name
            ("1.10105E+17", "张伟"),
            (make_id("11010519700707707"), "赵六"),
        ],
    )
    assert outcomes(rows) == [
        ("exact", "exact", None),
        ("exact", "exact", None),
        ("exact", "traditional", None),
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
    assert {r["outcome"] for r in rows} <= set(OUTCOMES)
    assert rows[0]["person_key"] == A and rows[0]["record_key"] == 100
    assert rows[9]["person_key"] == A and rows[9]["record_key"] == 100
    assert rows[11]["id_problem"] == "excel_mangled"
    assert rows[12]["id_problem"] is None


def test_result_has_the_contract_columns_and_one_row_per_input() -> None:
    rows = identify(ROSTER, [(A, "张伟"), (A, "张伟"), (None, None), ("", "")])
    assert list(rows[0]) == [c.split()[0] for c in ID_RESULT_COLUMNS]
    assert [r["row_key"] for r in rows] == [0, 1, 2, 3]
    assert rows[2]["outcome"] == rows[3]["outcome"] == "invalid_id_number"


def test_two_candidates_are_rejected_and_both_named() -> None:
    probe = B[:17] + C[17]  # B with C's check: one substitution from B ...
    other = make_id(B[:16] + "7")  # ... and a person whose ID differs from it in digit 17
    probe = B[:16] + "7" + B[17]  # digit 17 replaced: one from B and one from other
    rows = identify([("M2", "李娜", B), ("M5", "李娜", other)], [(probe, "李娜")])
    assert rows[0]["outcome"] == "invalid_id_number"
    assert "2 roster members" in str(rows[0]["detail"])
    assert "M2, M5" in str(rows[0]["detail"])
    assert rows[0]["person_key"] is None and rows[0]["candidate_member_id"] is None


def test_a_valid_id_not_found_with_two_candidates_is_not_a_member() -> None:
    # Every one-edit neighbour of a valid ID fails the check (ISO 7064), so a
    # valid ID has candidates only when it came from a legacy number, whose
    # check character we computed: a typo in the 15 digits.
    body = A[:17]
    p1, p2 = make_id(sub(body, 15, "3")), make_id(sub(body, 15, "5"))
    typo = sub(body, 15, "4")
    legacy = typo[:6] + typo[8:]
    rows = identify([("M1", "张伟", p1), ("M2", "张伟", p2)], [(legacy, "张伟")])
    assert rows[0]["id_problem"] is None
    assert rows[0]["outcome"] == "not_a_member"
    assert "M1, M2" in str(rows[0]["detail"])


def test_the_candidate_is_a_person_with_any_of_their_records() -> None:
    rows = identify(
        [
            ("M1", "张伟", A, date(2010, 1, 1), date(2019, 12, 31)),
            ("M9", "张伟", A, date(2020, 1, 1), None),
        ],
        [(sub(A, 3, "7"), "张伟")],
    )
    assert rows[0]["outcome"] == "probable_id_typo"
    assert rows[0]["candidate_member_id"] == "M9"  # the record valid on the service date
    assert rows[0]["record_key"] == 101


def test_every_one_edit_of_a_member_id_finds_the_member() -> None:
    typos = {sub(A, p, ch) for p in range(18) for ch in "0123456789" + ("X" if p == 17 else "")}
    typos |= {swap(A, p) for p in range(17)}
    typos.discard(A)
    rows = identify(ROSTER, [(t, "张伟") for t in sorted(typos)])
    assert {(r["outcome"], r["candidate_member_id"]) for r in rows} == {("probable_id_typo", "M1")}


def test_a_letter_typed_for_a_digit_is_found() -> None:
    rows = identify(ROSTER, [(sub(A, 5, "O"), "张伟"), (sub(A, 16, "X"), "张伟")])
    assert [r["outcome"] for r in rows] == ["probable_id_typo", "probable_id_typo"]
    assert rows[0]["id_problem"] == "bad_characters"


def test_a_typo_in_a_legacy_number_is_found() -> None:
    legacy = A[:6] + A[8:17]
    typo = sub(legacy, 10, str((int(legacy[10]) + 3) % 10))
    rows = identify(ROSTER, [(typo, "张伟")])
    assert rows[0]["outcome"] == "probable_id_typo"
    assert rows[0]["candidate_member_id"] == "M1"


def test_every_adjacent_swap_in_a_legacy_number_is_found_and_told_as_written() -> None:
    """Spec 3 rule 4 on a 15-digit legacy number: its adjacent digits 6 and 7
    sit apart in the 18-digit form (the inserted '19' between them); a swap
    that makes the birth date impossible (so the number stays 15 digits) is
    searched too; and the detail counts digits as the member wrote them, not
    in the 18-digit form."""
    legacy = A[:6] + A[8:17]
    swaps = [(i, swap(legacy, i)) for i in range(14) if legacy[i] != legacy[i + 1]]
    assert 5 in [i for i, _ in swaps]  # digits 6 and 7, either side of '19'
    assert any(len(normalise_id(typo)) == 15 for _, typo in swaps)  # 9 and 10: month 00
    rows = identify(ROSTER, [(typo, "张伟") for _, typo in swaps])
    assert [r["outcome"] for r in rows] == ["probable_id_typo"] * len(swaps)
    assert [r["candidate_member_id"] for r in rows] == ["M1"] * len(swaps)
    for (i, typo), row in zip(swaps, rows, strict=True):
        assert str(row["detail"]).startswith(f"ID {typo} ")  # as written
        assert json.loads(str(row["evidence"]))["id_normalised"] == normalise_id(typo)
        assert f"digits {i + 1} and {i + 2} of the 15-digit number are swapped" in str(
            row["detail"]
        )


def test_candidate_names_compare_traditional_as_simplified() -> None:
    rows = identify([("M1", "張偉", A)], [(swap(A, 3), "张伟")])
    assert rows[0]["outcome"] == "probable_id_typo"


def test_excel_mangled_values_are_never_guessed() -> None:
    # a member whose ID ends in 00 and a check character other than 0: Excel's
    # zeroed form of it is one substitution away, yet must not be matched
    member = next(
        s for s in (make_id(f"1101051990010{n:02d}00") for n in range(100)) if s[17] != "0"
    )
    zeroed = member[:15] + "000"
    rows = identify(
        [("M1", "张伟", member)], [(zeroed, "张伟"), (f"{int(member[:17]):.5E}", "张伟")]
    )
    assert [r["id_problem"] for r in rows] == ["excel_mangled", "excel_mangled"]
    assert [r["outcome"] for r in rows] == ["invalid_id_number", "invalid_id_number"]
    assert rows[0]["candidate_member_id"] is None


def test_the_record_valid_on_the_service_date_else_the_latest() -> None:
    roster = [
        ("M1", "张伟", A, date(2015, 1, 1), date(2019, 12, 31)),
        ("M2", "张伟", A, date(2020, 1, 1), date(2022, 12, 31)),
        ("M3", "张卫东", A, date(2023, 6, 1), None),  # name changed on the latest record
    ]
    rows = identify(
        roster,
        [
            (A, "张伟", date(2016, 5, 1)),
            (A, "张伟", date(2021, 5, 1)),
            (A, "张伟", date(2023, 3, 1)),  # a gap: the latest record, another name
            (A, "张卫东", date(2024, 3, 1)),
            (A, "张伟", date(2010, 1, 1)),  # before any record: the latest
        ],
    )
    assert [r["record_key"] for r in rows] == [100, 101, 102, 102, 102]
    assert [r["outcome"] for r in rows] == [
        "exact",
        "exact",
        "name_mismatch",
        "exact",
        "name_mismatch",
    ]


def test_detail_names_decisive_values_with_ids_whole_for_the_ledger() -> None:
    """The ledger keeps the full values (spec 7); what shows a detail masks
    it (render, notices, why: mask_text) unless --unmask."""
    typo = swap(A, 10)
    rows = identify(
        ROSTER,
        [
            (A, "王芳"),
            (typo, "张伟"),
            (make_id("11010519700707707"), "赵六"),
            ("1.10105E+17", "张伟"),
        ],
    )
    details = [str(r["detail"]) for r in rows]
    assert "王芳" in details[0] and "张伟" in details[0] and "M1" in details[0]
    assert A in details[0]
    assert "digits 11 and 12 are swapped" in details[1] and "M1" in details[1]
    assert "not in the roster" in details[2]
    assert "Excel" in details[3]
    text = " ".join(details) + " ".join(str(r["evidence"]) for r in rows)
    for full in (A, typo, make_id("11010519700707707")):
        assert full in text and full not in mask_text(text)
        assert mask_id(full) in mask_text(text)
    for d in details:
        assert d.endswith(".") and "\n" not in d


def test_evidence_is_json_with_the_rule() -> None:
    rows = identify(ROSTER, [(A, "张伟"), (A, "章玮"), (swap(A, 10), "张伟")])
    ev = [json.loads(str(r["evidence"])) for r in rows]
    assert [e["rule"] for e in ev] == ["3.1", "3.2", "3.4"]
    assert ev[1]["pinyin"] == "zhang wei" and ev[1]["roster_name"] == "张伟"
    assert ev[2]["candidate_members"] == "M1" and ev[2]["candidates"] == 1


def test_lazy_exact_leaves_only_plain_exact_matches_to_be_spelled_out() -> None:
    """The batch asks for the plain exact case lazily and spells it out with
    exact_detail_sql / exact_evidence_sql: the same text as the eager result."""
    settlements = [
        (A, "张伟"),
        (A, "章玮"),
        (A, "張偉"),
        (swap(A, 10), "张伟"),
        (B, "李娜"),
        (None, "x"),
    ]
    eager = identify(ROSTER, settlements)
    lazy = identify(ROSTER, settlements, lazy_exact=True)
    con = duckdb.connect()
    for e, z in zip(eager, lazy, strict=True):
        plain = e["outcome"] == "exact" and e["match"] == "exact"
        assert (z["detail"] is None and z["evidence"] is None) == plain
        assert z["roster_member"] == e["roster_member"]
        if plain:
            detail, evidence = con.execute(
                f"SELECT {exact_detail_sql('$m')}, {exact_evidence_sql('$m', '$r')}",
                {"m": z["roster_member"], "r": z["record_key"]},
            ).fetchall()[0]
            assert (detail, evidence) == (e["detail"], e["evidence"])
            assert json.loads(str(evidence))["rule"] == "3.1"
        else:
            assert z == e
    # (A, 张伟) and (B, 李娜) are plain; homophone, Traditional, typo, empty are not
    assert [z["evidence"] is None for z in lazy] == [True, False, False, False, True, False]


def test_roster_preparation() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE roster AS SELECT * FROM (VALUES (1, 'M1', '张 伟', ?), (2, 'M2', '李娜', ?),"
        " (3, 'M3', '王五', ?)) t(record_key, member_id, name, id_number)",
        [A[:6] + A[8:17], "110105199001011233", "１１０１０５１９８５０５０５４５６" + B[17]],
    )
    prepare_roster(con, TODAY)  # adds the missing columns
    got = con.execute("SELECT person_key, name_norm FROM roster ORDER BY record_key").fetchall()
    assert got == [(A, "张伟"), ("110105199001011233", "李娜"), (B, "王五")]
    assert roster_invalid_ids(con) == [2]


def test_a_typo_in_the_roster_id_makes_a_candidate() -> None:
    # spec 3 rule 4 asks only that the roster person's ID be one edit away:
    # the typo may be the roster's
    bad = sub(A, 17, "0" if A[17] != "0" else "1")  # A with a wrong check character
    rows = identify([("M1", "张伟", bad)], [(A, "张伟"), (bad, "张伟")])
    assert [r["outcome"] for r in rows] == ["probable_id_typo", "invalid_id_number"]
    assert rows[0]["candidate_member_id"] == "M1"


@pytest.mark.parametrize(
    ("roster_name", "given"), [("张伟", "張偉"), ("張偉", "张伟"), ("張伟", "张偉")]
)
def test_a_typo_in_the_roster_id_is_found_whatever_script_the_names_are_in(
    roster_name: str, given: str
) -> None:
    """The roster side of the search filters the roster by the probes' names
    before validating IDs: by text alone it missed 张伟 for 張偉 (names equal
    in spec 3), and found it only when another row of the batch happened to
    be named 张伟."""
    bad = sub(A, 17, "0" if A[17] != "0" else "1")
    rows = identify([("M1", roster_name, bad)], [(A, given)])
    assert [r["outcome"] for r in rows] == ["probable_id_typo"]
    assert rows[0]["candidate_member_id"] == "M1"


def test_a_roster_id_with_its_check_x_swapped_inside_is_a_candidate() -> None:
    x_id = make_id("11010519750505005")
    assert x_id.endswith("X")
    rows = identify([("M1", "周凯", swap(x_id, 16))], [(x_id, "周凯")])
    assert [r["outcome"] for r in rows] == ["probable_id_typo"]
    assert "digits 17 and 18 are swapped" in str(rows[0]["detail"])


@pytest.mark.parametrize("pos", [7, 15])  # in the '19' a legacy number lacks; a digit it has
def test_a_typo_in_the_roster_id_is_found_from_a_legacy_number(pos: int) -> None:
    """The settlement gives the right 15-digit number; the roster's 18-digit
    ID has one wrong digit (anywhere: the typo is the roster's): compared in
    the 18-digit form the legacy number normalises to."""
    bad = sub(A, pos, str((int(A[pos]) + 1) % 10))
    assert validate_id(bad, TODAY) is not None
    legacy = A[:6] + A[8:17]
    rows = identify([("M1", "张伟", bad)], [(legacy, "张伟")])
    assert [r["outcome"] for r in rows] == ["probable_id_typo"]
    assert f"digit {pos + 1} differs" in str(rows[0]["detail"])


def test_a_typo_in_a_legacy_roster_number_is_found() -> None:
    """The roster's 15-digit number has two digits swapped (its birth date
    1980-02-30 does not exist, so it stays 15 digits); the settlement gives the
    right one, as written or in 18 digits. The roster side searched only
    18-character IDs: both were not_a_member where spec 3 rule 4 holds them."""
    right = "110105800203123"
    typo = "110105800230123"
    rows = identify(
        [("M1", "张伟", typo)], [(right, "张伟"), (make_id("110105198002031" + "23"), "张伟")]
    )
    assert [r["outcome"] for r in rows] == ["probable_id_typo", "probable_id_typo"]
    assert [r["candidate_member_id"] for r in rows] == ["M1", "M1"]
    # the roster's number is shown as written: its digits are counted there
    for r in rows:
        assert "digits 11 and 12 of the 15-digit number are swapped" in str(r["detail"])


def test_an_excel_mangled_roster_id_is_never_a_candidate() -> None:
    mangled = A[:15] + "000"
    assert validate_id(mangled, TODAY) == "excel_mangled"
    rows = identify([("M1", "张伟", mangled)], [(A, "张伟")])
    assert [r["outcome"] for r in rows] == ["not_a_member"]


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_inputs(n: int) -> None:
    rows = identify(ROSTER, [(A, "张伟")] * n)
    assert len(rows) == n
