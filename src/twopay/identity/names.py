"""Names, spec section 3: NFKC, no white space, one middle dot, Traditional
equal to Simplified (opencc), homophones by toneless pinyin (pypinyin)."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from opencc import OpenCC
from pypinyin import lazy_pinyin

# the middle dots of minority names (· • ・ ･ . ．) all become ·
DOTS = "·•・･.．‧∙"
_DOT_RE = re.compile(f"[{re.escape(DOTS)}]")


def normalise_name(name: str) -> str:
    s = unicodedata.normalize("NFKC", name)
    s = re.sub(r"\s+", "", s)
    return _DOT_RE.sub("·", s)


def name_norm_sql(col: str) -> str:
    """SQL for normalise_name (the reader has applied NFKC already)."""
    dots = DOTS.replace("'", "''")
    return f"regexp_replace(regexp_replace({col}, '\\s+', '', 'g'), '[{dots}]', '·', 'g')"


@lru_cache(maxsize=1)
def _t2s() -> OpenCC:
    return OpenCC("t2s")


def to_simplified_many(names: list[str]) -> list[str]:
    """Traditional to Simplified for many names in one opencc call."""
    if not names:
        return []
    joined = "\n".join(n.replace("\n", " ") for n in names)
    out = _t2s().convert(joined).split("\n")
    if len(out) != len(names):  # opencc never merges lines; be safe anyway
        return [_t2s().convert(n) for n in names]
    return out


def pinyin_key(name: str) -> tuple[str, ...]:
    """Toneless pinyin of each character, by its default reading."""
    return tuple(lazy_pinyin(list(name)))


def one_edit_apart(a: str, b: str) -> bool:
    """Exactly one character inserted, deleted or substituted."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def compare_names(given: str, roster: str) -> str:
    """How a settlement's name compares with the roster's (both normalised):
    'exact', 'traditional', 'homophone', 'probable_name_typo' or 'name_mismatch'."""
    return compare_many([(given, roster)])[0]


def compare_many(pairs: list[tuple[str, str]]) -> list[str]:
    """compare_names for many pairs, with one opencc call for all of them."""
    simple = to_simplified_many([n for pair in pairs for n in pair])
    out = []
    for i, (given, roster) in enumerate(pairs):
        g, r = simple[2 * i], simple[2 * i + 1]
        if given == roster:
            out.append("exact")
        elif g == r:
            out.append("traditional")
        elif len(g) == len(r) and pinyin_key(g) == pinyin_key(r):
            out.append("homophone")
        elif min(len(g), len(r)) >= 2 and one_edit_apart(g, r):
            out.append("probable_name_typo")
        else:
            out.append("name_mismatch")
    return out
