"""Names (spec 3): normalisation and its SQL twin, Traditional->Simplified in
batches, toneless pinyin, and the comparison levels."""

from __future__ import annotations

import unicodedata

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opencc import OpenCC

from twopay.identity.names import (
    compare_names,
    name_norm_sql,
    normalise_name,
    one_edit_apart,
    pinyin_key,
    to_simplified_many,
)

# Characters names are made of: common Simplified and Traditional hanzi, the
# dots of minority names, Latin letters, white space of several kinds.
NAME_CHARS = "张章伟玮刘劉德華华买買提艾力李娜王汪·•・･.．‧ A\u3000\t\u200b"
names = st.text(alphabet=NAME_CHARS, max_size=8)


@pytest.mark.parametrize(
    "raw",
    ["买买提·艾力", "买买提•艾力", "买买提・艾力", "买买提.艾力", "买买提．艾力", "买买提 · 艾力"],
)
def test_every_minority_dot_is_one_middle_dot(raw: str) -> None:
    assert normalise_name(raw) == "买买提·艾力"


def test_white_space_of_any_kind_is_removed() -> None:
    assert normalise_name(" 张\u3000伟\u00a0 ") == "张伟"
    assert normalise_name("张\u200b伟") == "张伟"  # zero-width space from a spreadsheet
    assert normalise_name("ＡＢ") == "AB"  # NFKC
    assert normalise_name(None) == ""


_con = duckdb.connect()


@settings(max_examples=60)
@given(st.lists(names, min_size=1, max_size=30))
def test_sql_twin_agrees(raw: list[str]) -> None:
    cells = [unicodedata.normalize("NFKC", n) for n in raw]  # the reader's NFKC (spec 2)
    got = _con.execute(
        f"SELECT {name_norm_sql('x')} FROM unnest($xs) WITH ORDINALITY t(x, i) ORDER BY i",
        {"xs": cells},
    ).fetchall()
    assert [g[0] for g in got] == [normalise_name(n) for n in cells]


@given(st.lists(st.text(alphabet="張偉劉德華買提艾力\n李娜乾隆后", max_size=6), max_size=20))
def test_batched_simplification_equals_one_by_one(batch: list[str]) -> None:
    t2s = OpenCC("t2s")
    got = to_simplified_many(batch)
    assert len(got) == len(batch)
    assert got == [t2s.convert(n.replace("\n", "")) for n in batch]


def test_pinyin_is_toneless_by_default_reading_of_each_character() -> None:
    assert pinyin_key("张伟") == ("zhang", "wei")
    assert pinyin_key("章玮") == ("zhang", "wei")
    assert pinyin_key("重庆") == ("zhong", "qing")  # each character alone, no phrase
    assert pinyin_key("艾力·A") == ("ai", "li", "·", "A")


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@given(st.text(alphabet="张伟明李", max_size=5), st.text(alphabet="张伟明李", max_size=5))
def test_one_edit_apart_is_levenshtein_one(a: str, b: str) -> None:
    assert one_edit_apart(a, b) == (levenshtein(a, b) == 1)


@pytest.mark.parametrize(
    "given_name,roster_name,level",
    [
        ("张伟", "张伟", "exact"),
        ("张 伟", "张伟", "exact"),
        ("張偉", "张伟", "traditional"),
        ("劉德華", "刘德华", "traditional"),
        ("買買提.艾力", "买买提·艾力", "traditional"),
        ("买买提•艾力", "买买提·艾力", "exact"),
        ("章玮", "张伟", "homophone"),  # same length, same toneless pinyin
        ("张为", "张伟", "homophone"),  # wéi / wěi: tones do not count
        ("張為", "张伟", "homophone"),  # Traditional and homophone at once
        ("王", "汪", "homophone"),
        ("李前", "李乾", "homophone"),  # 乾 reads qian as written (opencc would make it 干 gan)
        ("张伟明", "张伟", "probable_name_typo"),  # one inserted
        ("张明", "张伟", "probable_name_typo"),  # one substituted
        ("刘德", "劉德華", "probable_name_typo"),  # one deleted, after simplification
        ("买买提艾力", "买买提·艾力", "probable_name_typo"),  # the dot left out
        ("张小伟", "张伟强", "name_mismatch"),  # two edits
        ("伟张", "张伟", "name_mismatch"),  # a swap is two edits
        ("李娜", "张伟", "name_mismatch"),
        ("王", "李", "name_mismatch"),  # one character: never a typo
        ("张伟", "张", "name_mismatch"),  # one edit, but the roster name is one character
        ("张伟伟", "章玮", "name_mismatch"),  # different length: never a homophone
        (
            "张先",
            "张西安",
            "name_mismatch",
        ),  # the same pinyin joined (zhangxian), not per character
        ("", "张伟", "name_mismatch"),
    ],
)
def test_levels(given_name: str, roster_name: str, level: str) -> None:
    assert compare_names(given_name, roster_name) == level
