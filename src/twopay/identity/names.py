"""Names, spec section 3: NFKC, no white space, one middle dot, Traditional
equal to Simplified (opencc), homophones by toneless pinyin (pypinyin).

normalise_name and name_norm_sql are twins (the tests hold them together);
everything else here runs only on the residue, in batches.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import product

from opencc import OpenCC
from pypinyin import lazy_pinyin

from twopay.identity.idnumber import SPACE_CLASS_SQL, SPACE_RE

# The middle dot of minority names in its many spellings (spec 3 lists
# · • ・ . ．; after NFKC ． is . and ･ is ・). A run of them is one dot.
DOTS = "·•・･.．‧∙⋅"
MIDDLE_DOT = "·"
_DOTS_RE = re.compile(f"[{re.escape(DOTS)}]+")

# Levels of a name comparison, best first.
LEVELS = ("exact", "traditional", "homophone", "probable_name_typo", "name_mismatch")


def normalise_name(name: str | None) -> str:
    """NFKC, no white space, one middle dot (spec 3). None becomes ''."""
    if not name:
        return ""
    s = SPACE_RE.sub("", unicodedata.normalize("NFKC", name))
    return _DOTS_RE.sub(MIDDLE_DOT, s)


# A name needs work when it has white space, a dot other than ·, or two dots
# in a row; most names have none, and one regex search is cheaper than two
# replacements (4M roster names).
_NEEDS_WORK_SQL = (
    f"[{SPACE_CLASS_SQL[1:-1]}{DOTS.replace(MIDDLE_DOT, '')}]|{MIDDLE_DOT}{MIDDLE_DOT}"
)


def name_norm_sql(col: str) -> str:
    """SQL for normalise_name without the NFKC (the reader applied it)."""
    c = f"coalesce({col}, '')"
    return (
        f"CASE WHEN regexp_matches({c}, '{_NEEDS_WORK_SQL}') THEN "
        f"regexp_replace(regexp_replace({c}, '{SPACE_CLASS_SQL}', '', 'g'), "
        f"'[{DOTS}]+', '{MIDDLE_DOT}', 'g') ELSE {c} END"
    )


@lru_cache(maxsize=1)
def _t2s() -> OpenCC:
    return OpenCC("t2s")


def to_simplified_many(names: list[str]) -> list[str]:
    """Traditional to Simplified for many names in one opencc call (joined by
    new lines: one call per name would cost more than the conversion)."""
    if not names:
        return []
    joined = "\n".join(n.replace("\n", "") for n in names)
    out = _t2s().convert(joined).split("\n")
    if len(out) != len(names):  # opencc keeps lines; never trust that blindly
        return [_t2s().convert(n) for n in names]
    return out


@lru_cache(maxsize=4)
def _converter(config: str) -> OpenCC:
    return OpenCC(config)


@lru_cache(maxsize=65536)
def _char_forms(ch: str) -> tuple[str, ...]:
    """A character and the ones it equals in the other script: its
    Simplified form and the Traditional forms of that (张 -> 张, 張)."""
    simple = _t2s().convert(ch)
    forms = {ch, simple} | {_converter(c).convert(simple) for c in ("s2t", "s2tw", "s2hk")}
    return tuple(sorted(f for f in forms if len(f) == 1))


def same_name_pattern(name: str) -> str:
    """A regex (RE2, for DuckDB) matching a normalised name written in any mix
    of Simplified and Traditional characters (spec 3: they compare equal):
    each character's class holds its Simplified form and the Traditional
    forms of it (张 -> [张張]), so 張伟 finds 张伟 and 張偉 alike."""
    classes = []
    for ch in name:
        body = "".join("\\" + f if f in "\\]^-[" else f for f in _char_forms(ch))
        classes.append(f"[{body}]")
    return "".join(classes)


def name_forms(name: str, limit: int = 64) -> list[str]:
    """The spellings of a normalised name in any mix of Simplified and
    Traditional characters (张伟 -> 张伟, 張伟, 张偉, 張偉): the texts an
    equal name (spec 3) may have, for an SQL filter (`IN`) where a regex
    per name would cost too much. A name with more than ``limit`` spellings
    keeps the ones with each character in one script."""
    options = [_char_forms(ch) for ch in name]
    count = 1
    for o in options:
        count *= len(o)
    if count > limit:
        simple = "".join(_t2s().convert(ch) for ch in name)
        both = {name, simple} | {_converter(c).convert(simple) for c in ("s2t", "s2tw", "s2hk")}
        return sorted(both)
    return ["".join(p) for p in product(*options)]


@lru_cache(maxsize=65536)
def _char_pinyin(ch: str) -> str:
    return lazy_pinyin(ch)[0]


def pinyin_key(name: str) -> tuple[str, ...]:
    """Toneless pinyin of each character by its default reading (spec 3 rule 2:
    character by character, so no phrase context). A character without a
    reading (a dot, a Latin letter) stands for itself."""
    return tuple(_char_pinyin(ch) for ch in name)


def one_edit_apart(a: str, b: str) -> bool:
    """Exactly one character inserted, deleted or substituted (Levenshtein 1)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


def homophone_key(
    given: str, roster: str, given_simple: str, roster_simple: str
) -> tuple[str, ...] | None:
    """The toneless pinyin two names share character by character (spec 3
    rule 2), else None. Each character's default reading as written is
    tried first: Simplified conversion may change a reading (乾 qian becomes
    干 gan), then the Simplified forms (a Traditional name against a
    Simplified homophone)."""
    for a, b in ((given, roster), (given_simple, roster_simple)):
        if len(a) == len(b) and pinyin_key(a) == pinyin_key(b):
            return pinyin_key(a)
    return None


def level_of(given: str, roster: str, given_simple: str, roster_simple: str) -> str:
    """The level of two normalised names and their Simplified forms (spec 3
    rules 1-3, in order)."""
    if given == roster:
        return "exact"
    if given_simple == roster_simple:
        return "traditional"
    if homophone_key(given, roster, given_simple, roster_simple) is not None:
        return "homophone"
    if min(len(given_simple), len(roster_simple)) >= 2 and one_edit_apart(
        given_simple, roster_simple
    ):
        return "probable_name_typo"
    return "name_mismatch"


def compare_many(pairs: list[tuple[str | None, str | None]]) -> list[str]:
    """The level of each (given, roster) pair of names, with one opencc call
    for all of them. Names are normalised here (NFKC included), so raw or
    SQL-normalised names may be passed."""
    norm = [normalise_name(n) for pair in pairs for n in pair]
    simple = to_simplified_many(norm)
    return [
        level_of(norm[2 * i], norm[2 * i + 1], simple[2 * i], simple[2 * i + 1])
        for i in range(len(pairs))
    ]


def compare_names(given: str | None, roster: str | None) -> str:
    """compare_many for one pair (tests and `twopay why`)."""
    return compare_many([(given, roster)])[0]
