"""`twopay sample`: large, realistic, deterministic inputs for benchmarks.

Every row is computed inside DuckDB from its row number and the seed, by
hashing (row, salt) under a key derived from the seed: no ``random()`` (its
sequence depends on the threads) and no Python loop over rows. The same
arguments give byte-identical files, whatever the number of threads.

Identity, card and account numbers are a keyed permutation (a small Feistel
network) of the row number into their number space, so they are unique by
construction (two people sharing an ID number would be an overlapping-record
error, spec 2.1) yet look scattered. ID numbers carry a valid GB 11643-1999 check
character (spec 3); card numbers a Luhn digit.

Files (canonical English headers, spec 2): roster, units, enrollments
(scheme ``wh-hospital``) and settlements. One month gives
``settlements.<ext>``; several give ``settlements_YYYY-MM.<ext>`` each.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date
from pathlib import Path

import duckdb

FORMATS = ("csv", "parquet")

# Administrative-division codes (GB/T 2260) for the first six ID digits:
# Beijing's old city districts and a spread of others, each one that existed
# for every birth year generated (1960-2002), so python-stdnum's stricter
# cn.ric check (place code valid in the birth year) accepts them too.
REGIONS = [
    "110101", "110102", "110103", "110104", "110105", "110106", "110107", "110108",
    "110109", "120101", "120102", "120103", "120104", "120105", "120106", "310101",
    "310104", "310105", "310106", "310107", "310109", "140121", "150121", "222401",
    "330122", "340121", "350121", "360121", "430121", "510121", "530124", "650121",
]  # fmt: skip
DISTRICTS = [
    ("110101", "东城区"), ("110102", "西城区"), ("110105", "朝阳区"), ("110106", "丰台区"),
    ("110107", "石景山区"), ("110108", "海淀区"), ("110109", "门头沟区"), ("110111", "房山区"),
    ("110112", "通州区"), ("110113", "顺义区"), ("110114", "昌平区"), ("110115", "大兴区"),
    ("110116", "怀柔区"), ("110117", "平谷区"), ("110118", "密云区"), ("110119", "延庆区"),
]  # fmt: skip
UNIT_WORDS = list("华信京能首创燕山长城望京永定潮白新源远洋和平光明东方北辰天坛鼓楼西苑")
UNIT_WORDS = [UNIT_WORDS[i] + UNIT_WORDS[i + 1] for i in range(0, len(UNIT_WORDS) - 1, 2)]
UNIT_KINDS = [
    "科技有限公司", "建设集团有限公司", "医院", "第一中学", "实验小学", "街道办事处",
    "物业管理有限公司", "商贸有限公司", "供电公司", "公交分公司", "设计研究院", "出版社",
    "食品有限公司", "机械厂", "汽车服务有限公司", "社区卫生服务中心", "图书馆", "热力公司",
]  # fmt: skip

_SURNAMES_BY_FREQUENCY = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
    "龚邵万钱严武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申"
)
# Drawing from a list with repeats approximates the real frequency skew.
SURNAMES = (
    [s for s in _SURNAMES_BY_FREQUENCY[:10] for _ in range(4)]
    + [s for s in _SURNAMES_BY_FREQUENCY[10:30] for _ in range(2)]
    + list(_SURNAMES_BY_FREQUENCY[30:])
    + ["欧阳", "司马", "上官", "诸葛"]
)
GIVEN_MALE = list(
    "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆旭宁龙林阳东建国志文海峰亮成博晨毅振德彬永庆昊然轩泽睿子一天家嘉立新春生兵锋"
)
GIVEN_FEMALE = list(
    "芳娜敏静丽艳娟霞秀英玲燕红梅萍莉婷雪琳慧颖洁倩丹月凤欣雨晶蕾璐瑶佳怡思梦琪晓美兰桂翠云玉珍春华小文淑"
)
# Minority names (Uyghur, Mongolian, Tibetan) are written with a middle dot.
MINORITY_GIVEN = [
    "买买提", "艾力", "阿不都", "热合曼", "吐尔逊", "依明", "努尔", "古丽", "阿依古丽",
    "迪丽拜尔", "帕提古丽", "巴特尔", "其其格", "乌云", "扎西", "次仁", "卓玛",
]  # fmt: skip
MINORITY_FAMILY = ["艾买提", "热合木", "阿布拉", "吐尔洪", "斯迪克", "克里木", "尼亚孜", "玉素甫"]

GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"  # by weighted sum mod 11


def check_char(body17: str) -> str:
    """The GB 11643-1999 check character of the first 17 digits."""
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(body17, GB11643_WEIGHTS, strict=True)) % 11]


BIRTH_FIRST = date(1960, 1, 1)
BIRTH_DAYS = (date(2002, 12, 31) - BIRTH_FIRST).days + 1
# An ID number's first 17 digits: (region, birth date) x a 3-digit sequence.
ID_SPACE = len(REGIONS) * BIRTH_DAYS * 1000

# Shares, chosen to look like a month's export of a large city union.
RATE = {
    "mover": 0.01,  # two roster records: moved between units
    "left": 0.015,  # membership ended (valid_to set)
    "recent": 0.02,  # joined shortly before or during the period
    "no_bank_account": 0.1,
    "enrolled": 0.3,  # enrolled in the wh-hospital scheme
    "unit_behind": 0.03,  # units whose dues are not paid up
    "frequent_pool": 0.05,  # chronic patients: a pool of members ...
    "frequent_share": 0.3,  # ... that makes this share of the visits
    "non_member": 0.02,
    "inpatient": 0.15,
    "no_admission_date": 0.03,
    "zero_self_pay": 0.02,
    "id_typo": 0.001,
    "name_typo": 0.0005,
    "missing_name": 0.0001,
    "inconsistent": 0.0002,
    "duplicate": 0.001,
    "conflicting_duplicate": 0.0002,
    "reversal": 0.002,
}


def default_unit_count(members: int) -> int:
    """A few hundred units for a big roster, a handful for a small one."""
    return max(3, min(400, members // 200))


def _outsiders(members: int) -> int:
    """How many people outside the roster the non-member rows draw from."""
    return max(1000, members // 5)


def seed_key(seed: int) -> int:
    """A 62-bit key per seed (splitmix64), so nearby seeds share no draws."""
    z = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) >> 2


def _variables(
    *, seed: int, members: int, settlements: int, year: int, months: int, units: int
) -> dict[str, object]:
    """Everything the SQL reads through getvariable(): values, never SQL text."""
    first = date(year, 1, 1)
    last = date(year, months, calendar.monthrange(year, months)[1])
    lists = {
        "surnames": SURNAMES,
        "given_male": GIVEN_MALE,
        "given_female": GIVEN_FEMALE,
        "minority_given": MINORITY_GIVEN,
        "minority_family": MINORITY_FAMILY,
        "unit_words": UNIT_WORDS,
        "unit_kinds": UNIT_KINDS,
    }
    return {
        "seed_key": seed_key(seed),
        "members": members,
        "n_settlements": max(settlements, 1),
        "n_units": units,
        "year": year,
        "period_first": first,
        "period_days": (last - first).days + 1,
        "year_last": date(year, 12, 31),
        "month_starts": [date(year, m, 1) for m in range(1, 13)],
        # Statutory retirement age: men 60, women 55.
        "retired_born_male": date(year - 60, 1, 1),
        "retired_born_female": date(year - 55, 1, 1),
        "outsiders": _outsiders(members),
        "frequent_pool": max(1, int(members * RATE["frequent_pool"])),
        # A reversal undoes a settlement of the last twenty days or so.
        "reversal_window": max(1, settlements * 20 // ((last - first).days + 1)),
        "region_codes": [int(r) for r in REGIONS],
        # Each region's share of the check sum (digits 1-6).
        "region_sums": [
            sum(int(d) * w for d, w in zip(r, GB11643_WEIGHTS[:6], strict=True)) for r in REGIONS
        ],
        "n_regions": len(REGIONS),
        "birth_first": BIRTH_FIRST,
        "districts": [c for c, _ in DISTRICTS],
        "district_names": [n for _, n in DISTRICTS],
        **{f"n_{k}": len(v) for k, v in lists.items()},
        **lists,
        **{f"r_{k}": v for k, v in RATE.items()},
    }


# Scalar macros: pure functions of (seed, row number). ``salt`` keeps the
# draws for different attributes of one row independent.
MACROS_SQL = """
-- One 64-bit value per (row, salt) through DuckDB's one-argument hash (a good
-- finaliser): its multi-argument hash(a, b, c) combines too weakly, so draws
-- with neighbouring salts came out strongly correlated. Salts are < 1024.
CREATE OR REPLACE TEMP MACRO tp_hash(x, salt) AS
    hash(xor(x::BIGINT * 1024 + salt, getvariable('seed_key')));
CREATE OR REPLACE TEMP MACRO tp_u(x, salt) AS
    (tp_hash(x, salt) >> 11)::DOUBLE / 9007199254740992.0;
-- n as UBIGINT like the hash: mixed types would widen the modulo to HUGEINT,
-- which made it the slowest operation of the generator.
CREATE OR REPLACE TEMP MACRO tp_h(x, salt, n) AS (tp_hash(x, salt) % n::UBIGINT)::BIGINT;
CREATE OR REPLACE TEMP MACRO tp_pick(lst, n, x, salt) AS lst[1 + tp_h(x, salt, n)];
CREATE OR REPLACE TEMP MACRO tp_d(s, i) AS ascii(substr(s, i, 1)) - 48;
CREATE OR REPLACE TEMP MACRO tp_given(x, male, salt) AS CASE WHEN male
    THEN tp_pick(getvariable('given_male'), getvariable('n_given_male'), x, salt)
    ELSE tp_pick(getvariable('given_female'), getvariable('n_given_female'), x, salt) END;
CREATE OR REPLACE TEMP MACRO tp_name(x, male) AS CASE
    WHEN tp_u(x, 11) < 0.003
    THEN tp_pick(getvariable('minority_given'), getvariable('n_minority_given'), x, 12)
        || '·' || tp_pick(getvariable('minority_family'), getvariable('n_minority_family'), x, 13)
    ELSE tp_pick(getvariable('surnames'), getvariable('n_surnames'), x, 14)
        || tp_given(x, male, 15)
        || CASE WHEN tp_u(x, 16) < 0.3 THEN '' ELSE tp_given(x, male, 17) END
    END;
-- Unit sizes are skewed: a few big employers, many small ones.
CREATE OR REPLACE TEMP MACRO tp_unit(x) AS least(
    floor(getvariable('n_units') * pow(tp_u(x, 20), 1.6))::BIGINT, getvariable('n_units') - 1);
CREATE OR REPLACE TEMP MACRO tp_unit_code(u) AS
    getvariable('districts')[1 + u % 16] || lpad((u + 1)::VARCHAR, 4, '0');
-- Unit u is district u % 16; within a district, (word, kind) is distinct for
-- every u // 16 below len(words) * len(kinds), so names do not repeat.
CREATE OR REPLACE TEMP MACRO tp_unit_name(u) AS '北京市'
    || getvariable('district_names')[1 + u % 16]
    || getvariable('unit_words')[1 + (u // 16 + u % 16) % getvariable('n_unit_words')]
    || getvariable('unit_kinds')[1 + (u // 16 // getvariable('n_unit_words') + u % 16)
                                 % getvariable('n_unit_kinds')];
CREATE OR REPLACE TEMP MACRO tp_money(v) AS round(v, 2)::DECIMAL(18, 2);
CREATE OR REPLACE TEMP MACRO tp_day(x) AS getvariable('period_first')
    + (x * getvariable('period_days') // getvariable('n_settlements'))::INTEGER;
CREATE OR REPLACE TEMP MACRO tp_settlement_id(x) AS
    'JS' || (getvariable('year') * 10000000000 + x + 1)::VARCHAR;
CREATE OR REPLACE TEMP MACRO tp_special(x) AS x >= 0 AND tp_u(x, 100) <
    getvariable('r_duplicate') + getvariable('r_conflicting_duplicate') + getvariable('r_reversal');
"""


# Rows come from a table of numbers rather than range(): a table scan runs on
# every thread (range() is a single-threaded source); order is kept anyway.
NUMBERS_SQL = "CREATE OR REPLACE TEMP TABLE tp_numbers AS SELECT range AS n FROM range($1)"
MEMBERS_SOURCE = "(SELECT n AS x FROM tp_numbers WHERE n < getvariable('members'))"


def permute_sql(source: str, value: str, size_a: int, size_b: int, salt: int, out: str) -> str:
    """``source`` plus ``out_a``, ``out_b``: ``value`` (0 <= value < size_a *
    size_b) permuted by four Feistel-like rounds. Each round adds a keyed hash
    of one half to the other modulo its size, which is invertible, so the map
    is a bijection: distinct values give distinct outputs."""
    a, b = f"{out}_a", f"{out}_b"
    sql = f"SELECT *, ({value}) % {size_a} AS {a}, ({value}) // {size_a} AS {b} FROM (SELECT * FROM {source})"
    for r in range(4):
        this, other, size = (a, b, size_a) if r % 2 == 0 else (b, a, size_b)
        sql = (
            f"SELECT * REPLACE (({this} + tp_h({other}, {salt + r}, {size})) % {size} AS {this}) "
            f"FROM ({sql})"
        )
    return sql


def _digits_sql(col: str, ndigits: int, term: Callable[[int, str], str]) -> str:
    """Sum of term(k, k-th digit of the ndigits-digit integer ``col``), k from the left."""
    return " + ".join(
        term(k, f"(({col} // {10 ** (ndigits - 1 - k)}) % 10)") for k in range(ndigits)
    )


def people_sql(source: str) -> str:
    """``source`` (a relation with a person number ``x``) plus that person's
    id_number, name, birth date and sex: the same for the roster and for the
    person of a settlement, so settlements need no join to the roster.
    Members are 0 .. members-1; outsiders are numbered after them.

    The 17 digits are region (6), birth date (8) and sequence (3); the check
    character's weighted sum is added up part by part with integer arithmetic
    (string digit extraction was the slowest step of the generator)."""
    points = permute_sql(source, "x", len(REGIONS) * BIRTH_DAYS, 1000, 200, "pt")
    date_sum = _digits_sql("ymd", 8, lambda k, d: f"{GB11643_WEIGHTS[6 + k]} * {d}")
    seq_sum = _digits_sql("pt_b", 3, lambda k, d: f"{GB11643_WEIGHTS[14 + k]} * {d}")
    return f"""
        SELECT * EXCLUDE (pt_a, pt_b, ri, ymd),
            (getvariable('region_codes')[1 + ri] * 100000000000 + ymd * 1000 + pt_b)::VARCHAR
            || {list(CHECK_CHARS)}[1 + (getvariable('region_sums')[1 + ri] + {date_sum} + {seq_sum})
                                   % 11] AS id_number,
            tp_name(x, male) AS name
        FROM (
            SELECT *, year(birth) * 10000 + month(birth) * 100 + day(birth) AS ymd
            FROM (
                SELECT *, pt_a % getvariable('n_regions') AS ri,
                    getvariable('birth_first') + (pt_a // getvariable('n_regions'))::INTEGER
                        AS birth,
                    -- The sequence's last digit is odd for men (GB 11643-1999).
                    pt_b % 2 = 1 AS male
                FROM ({points})
            )
        )
    """


def _card_sql() -> str:
    """19-digit card number: BIN 6228, the permuted record number (card_b,
    card_a: 7 digits each) and a Luhn check digit, in integer arithmetic."""

    def luhn(double: bool, d: str) -> str:
        return f"(2 * {d} - 9 * ({d} >= 5)::INTEGER)" if double else d

    # Payload positions 1..18 (6228 = 1..4, card_b = 5..11, card_a = 12..18):
    # Luhn doubles every second digit leftwards from position 18, the even ones.
    prefix = sum(
        (2 * int(c) - 9 * (int(c) >= 5)) if (1 + i) % 2 == 0 else int(c)
        for i, c in enumerate("6228")
    )
    b_sum = _digits_sql("card_b", 7, lambda k, d: luhn((5 + k) % 2 == 0, d))
    a_sum = _digits_sql("card_a", 7, lambda k, d: luhn((12 + k) % 2 == 0, d))
    payload = "(6228 * 100000000000000 + card_b * 10000000 + card_a)"
    return f"({payload} * 10 + (10 - ({prefix} + {b_sum} + {a_sum}) % 10) % 10)::VARCHAR"


def roster_sql() -> str:
    """One row per membership record (spec 2.1), by member then record."""
    people = people_sql(MEMBERS_SOURCE)
    return f"""
    WITH m AS (
        SELECT *,
            tp_u(x, 30) < getvariable('r_mover') AS mover,
            tp_u(x, 31) < getvariable('r_left') AS left_union,
            tp_u(x, 32) < getvariable('r_recent') AS recent,
            -- Joined at 18 or later, not before 1990.
            greatest(birth + 6575, DATE '1990-01-01') AS join_base,
            tp_unit(x) AS unit0,
            getvariable('period_first') AS first_day
        FROM ({people})
    ),
    j AS (
        SELECT *,
            CASE WHEN recent
                 THEN first_day - 90 + tp_h(x, 33, 90 + getvariable('period_days'))::INTEGER
                 ELSE join_base + tp_h(x, 34, greatest(first_day - 1 - join_base, 1))::INTEGER
            END AS joined,
            -- Moves and departures fall in the year before the period or in it.
            first_day - 365 + tp_h(x, 35, 365 + getvariable('period_days'))::INTEGER AS event_day
        FROM m
    ),
    r AS (
        SELECT *, unnest(CASE WHEN mover THEN [0, 1] ELSE [0] END) AS rec FROM j
    ),
    -- 18 digits of a card: a bank BIN and the permuted record number.
    c AS ({permute_sql("r", "2 * x + rec", 10**7, 10**7, 210, "card")}),
    a AS ({permute_sql("c", "x", 10**7, 10**8, 220, "acct")}),
    u AS (
        SELECT *,
            CASE WHEN rec = 0 OR getvariable('n_units') = 1 THEN unit0
                 ELSE (unit0 + 1 + tp_h(x, 37, getvariable('n_units') - 1)) % getvariable('n_units')
            END AS unit,
            greatest(event_day, joined + 1) AS move_day
        FROM a
    )
    SELECT
        -- M00000001: lpad would cut a ninth digit, so only pad below it.
        'M' || CASE WHEN x < 99999999 THEN lpad((x + 1)::VARCHAR, 8, '0')
                    ELSE (x + 1)::VARCHAR END AS member_id,
        name,
        id_number,
        {_card_sql()} AS card_no,
        tp_unit_code(unit) AS unit_code,
        tp_unit_name(unit) AS unit_name,
        -- Statutory retirement: men at 60, women at 55.
        CASE WHEN birth < CASE WHEN male THEN getvariable('retired_born_male')
                               ELSE getvariable('retired_born_female') END
             THEN 'retired' ELSE 'in_service' END AS category,
        CASE WHEN rec = 0 THEN joined ELSE move_day END AS valid_from,
        CASE WHEN mover AND rec = 0 THEN move_day - 1
             WHEN NOT mover AND left_union THEN greatest(event_day, joined) END AS valid_to,
        CASE WHEN tp_u(x, 36) >= getvariable('r_no_bank_account')
             THEN (6217 * 1000000000000000 + acct_b * 10000000 + acct_a)::VARCHAR
             END AS bank_account
    FROM u
    """


def units_sql() -> str:
    """Every unit with the date its dues are paid through (spec 2.3)."""
    return """
    SELECT tp_unit_code(u) AS unit_code, tp_unit_name(u) AS unit_name,
        CASE WHEN tp_u(u, 80) >= getvariable('r_unit_behind')
             THEN make_date(getvariable('year'), 12, 31)
             WHEN tp_u(u, 81) < 0.5 THEN make_date(getvariable('year') - 1, 12, 31)
             ELSE make_date(getvariable('year') - 1, 6, 30) END AS dues_paid_through
    FROM range(getvariable('n_units')) AS t(u)
    """


def enrollments_sql() -> str:
    """Members enrolled in the Weihai-style hospital scheme for the year."""
    people = people_sql(MEMBERS_SOURCE)
    return f"""
    SELECT id_number, 'wh-hospital' AS scheme,
        CASE WHEN tp_u(x, 71) < 0.85 THEN getvariable('period_first')
             ELSE getvariable('month_starts')[2 + tp_h(x, 72, 11)] END AS valid_from,
        getvariable('year_last') AS valid_to
    FROM ({people})
    WHERE tp_u(x, 70) < getvariable('r_enrolled')
    """


def settlements_sql() -> str:
    """Settlement rows $1 <= j < $2 (spec 2.2). Row j falls on day
    j * days / n of the period, so the file is in date order without a sort
    and each month is a range of rows. A duplicate copies row j-1, a
    reversal negates a row of the last weeks: both read that row's content,
    computed again from its number rather than joined."""
    people = people_sql("kinds")
    return f"""
    WITH rows AS (
        SELECT j, tp_u(j, 100) AS k,
            j - 1 - tp_h(j, 101, greatest(1, least(j, getvariable('reversal_window')))) AS target
        FROM (SELECT n AS j FROM tp_numbers WHERE n >= $1 AND n < $2)
    ),
    kinds AS (
        SELECT j, kind,
            CASE kind WHEN 'normal' THEN j WHEN 'reversal' THEN target ELSE j - 1 END AS c,
            -- The person of the content row c: a member, often a frequent one,
            -- or an outsider (numbered after the members).
            CASE WHEN tp_u(c, 40) < getvariable('r_non_member')
                 THEN getvariable('members') + tp_h(c, 41, getvariable('outsiders'))
                 WHEN tp_u(c, 42) < getvariable('r_frequent_share')
                 THEN tp_h(c, 43, getvariable('frequent_pool'))
                 ELSE tp_h(c, 44, getvariable('members')) END::BIGINT AS x
        FROM (
            SELECT j, target, CASE
                WHEN j > 0 AND NOT tp_special(j - 1) AND k < getvariable('r_duplicate')
                    THEN 'duplicate'
                WHEN j > 0 AND NOT tp_special(j - 1)
                     AND k < getvariable('r_duplicate') + getvariable('r_conflicting_duplicate')
                    THEN 'conflicting'
                WHEN j > 0 AND NOT tp_special(target) AND k < getvariable('r_duplicate')
                     + getvariable('r_conflicting_duplicate') + getvariable('r_reversal')
                    THEN 'reversal'
                ELSE 'normal' END AS kind
            FROM rows
        )
    ),
    p AS ({people}),
    v AS (
        SELECT *,
            x < getvariable('members') AS member,
            tp_u(c, 52) < getvariable('r_inpatient') AS inpatient,
            1 + tp_h(c, 46, 17) AS typo_pos,
            tp_u(c, 53) AS a,
            -- Fund share: what basic insurance paid, as a multiple of self_pay_1.
            tp_u(c, 55) AS f
        FROM p
    ),
    amounts AS (
        SELECT *,
            tp_money(CASE
                WHEN inpatient THEN 2000 * pow(40, pow(a, 1.5))
                WHEN tp_u(c, 54) < getvariable('r_zero_self_pay') THEN 0
                ELSE 50 * pow(60, pow(a, 1.7)) END) AS sp1
        FROM v
    ),
    content AS (
        SELECT *,
            tp_money(CASE WHEN tp_u(c, 56) < 0.6 THEN 0 ELSE sp1 * 0.3 * tp_u(c, 57) END) AS sp2,
            tp_money(CASE WHEN tp_u(c, 58) < 0.5 THEN 0
                          WHEN inpatient THEN 500 * pow(40, tp_u(c, 59))
                          ELSE 20 * pow(50, tp_u(c, 59)) END) AS oop,
            tp_money(sp1 * CASE WHEN inpatient THEN 1.5 + 4 * f ELSE 0.5 + 3 * f END) AS fund,
            CASE WHEN member AND tp_u(c, 45) < getvariable('r_id_typo')
                 -- One digit changed: the check character then always fails.
                 THEN substr(id_number, 1, typo_pos - 1)
                      || ((tp_d(id_number, typo_pos) + 1 + tp_h(c, 47, 9)) % 10)::VARCHAR
                      || substr(id_number, typo_pos + 1)
                 ELSE id_number END AS id_shown,
            CASE WHEN tp_u(c, 51) < getvariable('r_missing_name') THEN NULL
                 WHEN member AND tp_u(c, 48) < getvariable('r_name_typo')
                 THEN substr(name, 1, length(name) - 1) || CASE
                      WHEN tp_given(c, male, 49) <> right(name, 1) THEN tp_given(c, male, 49)
                      ELSE '曦' END
                 ELSE name END AS name_shown,
            tp_day(c) AS day_c,
            CASE WHEN inpatient AND tp_u(c, 61) >= getvariable('r_no_admission_date')
                 THEN tp_day(c) - (1 + floor(29 * pow(tp_u(c, 62), 2)))::INTEGER END AS admitted,
            'H' || (100001 + floor(600 * pow(tp_u(c, 63), 1.8))::INTEGER)::VARCHAR AS hospital
        FROM amounts
    )
    SELECT
        tp_settlement_id(CASE WHEN kind IN ('duplicate', 'conflicting') THEN c ELSE j END)
            AS settlement_id,
        id_shown AS id_number,
        name_shown AS name,
        CASE WHEN inpatient THEN 'inpatient' ELSE 'outpatient' END AS visit_type,
        CASE WHEN kind = 'reversal' THEN tp_day(j) ELSE day_c END AS service_date,
        admitted AS admission_date,
        hospital AS hospital_code,
        sign * (CASE
            WHEN tp_u(c, 60) < getvariable('r_inconsistent') THEN tp_money(sp1 / 2)
            ELSE sp1 + sp2 + oop + fund END
            + CASE WHEN kind = 'conflicting' THEN 10 ELSE 0 END)::DECIMAL(18, 2) AS total_cost,
        sign * sp1 AS self_pay_1,
        sign * sp2 AS self_pay_2,
        sign * oop AS out_of_pocket,
        CASE WHEN kind = 'reversal' THEN tp_settlement_id(c) END AS reverses
    FROM (SELECT *, CASE WHEN kind = 'reversal' THEN -1 ELSE 1 END AS sign FROM content)
    """


def _month_bounds(n: int, year: int, months: int) -> list[tuple[str, int, int]]:
    """(YYYY-MM, first row, end row) for each month: row j falls on day
    floor(j * days / n), so month m starts at row ceil(first day of m * n / days)."""
    first = date(year, 1, 1)
    days = (date(year, months, calendar.monthrange(year, months)[1]) - first).days + 1
    starts = [(date(year, m, 1) - first).days for m in range(1, months + 1)] + [days]
    rows = [-(-s * n // days) for s in starts]  # ceiling division
    return [(f"{year}-{m:02d}", rows[m - 1], rows[m]) for m in range(1, months + 1)]


def _write(rel: duckdb.DuckDBPyRelation, path: Path, fmt: str) -> None:
    if fmt == "csv":
        rel.write_csv(str(path), header=True)
    else:
        # A fixed row-group size keeps the bytes independent of the thread count.
        rel.write_parquet(str(path), compression="zstd", row_group_size=1_000_000)


def generate(
    out_dir: Path,
    *,
    members: int,
    settlements: int,
    seed: int,
    fmt: str = "csv",
    year: int = 2024,
    months: int = 1,
    unit_count: int | None = None,
    threads: int | None = None,
) -> dict[str, Path]:
    """Write roster, units, enrollments and settlements into ``out_dir``.

    Returns the paths by kind: ``roster``, ``units``, ``enrollments`` and
    ``settlements`` (one month) or ``settlements_YYYY-MM`` (several).
    ``threads`` caps DuckDB's threads (default: every core); the files do
    not depend on it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not 1 <= months <= 12:
        raise ValueError(f"months must be 1 to 12, not {months}")
    if members < 1 or settlements < 0:
        raise ValueError("members must be at least 1 and settlements at least 0")
    units = unit_count if unit_count is not None else default_unit_count(members)
    if units < 1:
        raise ValueError("unit_count must be at least 1")
    variables = _variables(
        seed=seed, members=members, settlements=settlements, year=year, months=months, units=units
    )
    if members + _outsiders(members) > ID_SPACE:
        raise ValueError(f"at most {ID_SPACE * 5 // 6:,} members fit in the ID number space")
    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": threads} if threads else {})
    try:
        for name, value in variables.items():
            con.execute(f"SET VARIABLE {name} = ?", [value])
        con.execute(MACROS_SQL)
        con.execute(NUMBERS_SQL, [max(members, settlements)])
        paths: dict[str, Path] = {}
        for kind, sql in (
            ("roster", roster_sql()),
            ("units", units_sql()),
            ("enrollments", enrollments_sql()),
        ):
            paths[kind] = out_dir / f"{kind}.{fmt}"
            _write(con.sql(sql), paths[kind], fmt)
        for period, lo, hi in _month_bounds(max(settlements, 1), year, months):
            key = "settlements" if months == 1 else f"settlements_{period}"
            paths[key] = out_dir / f"{key}.{fmt}"
            hi = min(hi, settlements)
            lo = min(lo, hi)
            _write(con.sql(settlements_sql(), params=[lo, hi]), paths[key], fmt)
    finally:
        con.close()
    return paths
