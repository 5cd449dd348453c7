"""Re-make the shipped sample data (two months of a small Beijing union):

    python sample_data/make_sample.py [OUT_DIR]

Writes roster.csv, units.csv, enrollments.csv, settlements_2024-01.csv
(Chinese headers, GB18030, mixed cell forms), settlements_2024-02.csv
(English headers, UTF-8) and README.md. The README's tables are built from
the same definitions as the rows, so they cannot drift apart. Ordinary rows
are drawn with a fixed seed; the special rows are written out by hand below.
A small script, not product code: plain loops over rows are fine here.
"""

from __future__ import annotations

import csv
import io
import random
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240229
rng = random.Random(SEED)

# -- helpers ------------------------------------------------------------------------

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def check_char(body17: str) -> str:
    """GB 11643-1999: weighted sum of the first 17 digits, mod 11."""
    return "10X98765432"[sum(int(d) * w for d, w in zip(body17, WEIGHTS, strict=True)) % 11]


def id18(region: str, born: date, seq: int) -> str:
    body = f"{region}{born:%Y%m%d}{seq:03d}"
    return body + check_char(body)


def legacy_to_18(id15: str) -> str:
    """A 15-digit legacy number: insert 19 before the year, add the check character."""
    body = id15[:6] + "19" + id15[6:]
    return body + check_char(body)


def luhn_complete(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # the rightmost payload digit is doubled
            d = d * 2 - 9 if d >= 5 else d * 2
        total += d
    return payload + str((10 - total % 10) % 10)


def digits(n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def yuan(x: float | str | Decimal) -> Decimal:
    return Decimal(str(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def one_digit_wrong(ident: str, pos: int = 15) -> str:
    return ident[:pos] + str((int(ident[pos]) + 3) % 10) + ident[pos + 1 :]


def adjacent_swapped(ident: str, pos: int = 14) -> str:
    assert ident[pos] != ident[pos + 1], "swap two different digits"
    return ident[:pos] + ident[pos + 1] + ident[pos] + ident[pos + 2 :]


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() or c == "." else c for c in text)


# -- units --------------------------------------------------------------------------

UNITS = [  # code, name, dues paid through, ordinary members
    ("1101050001", "北京市朝阳区望京科技有限公司", date(2024, 12, 31), 75),
    ("1101080002", "北京市海淀区中关村第一中学", date(2024, 12, 31), 55),
    ("1101020003", "北京市西城区金融街街道办事处", date(2024, 12, 31), 48),
    ("1101010004", "北京市东城区鼓楼物业管理有限公司", date(2024, 12, 31), 42),
    ("1101060005", "北京市丰台区永定机械厂", date(2024, 12, 31), 38),
    # Dues paid only through 2023: each 2024 settlement of its members is
    # rejected unit_dues_unpaid (spec 2.3).
    ("1101140006", "北京市昌平区北辰商贸有限公司", date(2023, 12, 31), 10),
]
UNIT_NAME = {code: name for code, name, _, _ in UNITS}
UNPAID = "1101140006"

# -- members ------------------------------------------------------------------------

SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏"
)
GIVEN_MALE = list("伟强磊军勇杰斌超明刚平辉鹏飞鑫波宇浩凯健俊帆旭宁龙林阳东建志文亮成博")
GIVEN_FEMALE = list("芳娜敏丽艳娟霞秀英玲燕红梅萍莉雪琳慧颖洁倩丹月凤欣雨晶蕾璐瑶佳怡思梦琪晓美兰")
REGIONS = ["110101", "110102", "110105", "110106", "110107", "110108", "110109",
           "120101", "120104", "310104", "110105", "110108"]  # fmt: skip
HOSPITALS = ["11010100101", "11010200203", "11010500112", "11010500347", "11010600018",
             "11010800021", "11010800456", "11010900007", "11011400033", "11011200015"]  # fmt: skip


@dataclass
class Member:
    key: str  # a handle for this script and the README ("" for ordinary members)
    name: str
    id_number: str  # as the roster stores it
    unit_code: str
    category: str = "在职"  # 在职 in service / 退休 retired
    valid_from: date = date(2012, 5, 1)
    valid_to: date | None = None
    moved: tuple[str, date] | None = None  # (new unit, first day there): two records
    enrolled: date | None = None  # wh-hospital enrolment start
    note: str = ""
    member_id: str = ""
    cards: list[str] = field(default_factory=list)
    bank_account: str = ""

    @property
    def id18(self) -> str:
        return legacy_to_18(self.id_number) if len(self.id_number) == 15 else self.id_number


JOIN_2023 = date(2023, 7, 1)  # the wh-hospital period (期) 2023-07-01 .. 2024-06-30
JOIN_2024 = date(2024, 1, 1)  # the period 2024-01-01 .. 2024-12-31
d = date
LEGACY = "110105660312021"  # born 1966-03-12, issued before 1999

SPECIAL = [
    Member("legacy", "李建国", LEGACY, "1101050001", valid_from=d(1996, 9, 1),
           note=f"roster keeps his legacy 15-digit ID (18-digit form {legacy_to_18(LEGACY)})"),
    Member("moved", "王秀英", id18("110108", d(1975, 6, 18), 42), "1101050001",
           valid_from=d(2015, 4, 1), moved=("1101080002", d(2024, 1, 16)),
           note="moved from unit 1101050001 to 1101080002: records to 2024-01-15 and from "
           "2024-01-16 (new card)"),
    Member("retired", "张桂兰", id18("110102", d(1963, 11, 5), 86), "1101020003",
           category="退休", valid_from=d(1998, 3, 1), enrolled=JOIN_2023,
           note="retired (退休); in wh-hospital since 2023-07-01"),
    Member("retired_new", "刘淑珍", id18("110106", d(1962, 2, 14), 128), "1101060005",
           category="退休", valid_from=d(2001, 7, 1), enrolled=JOIN_2024,
           note="retired; in wh-hospital from 2024-01-01 (90-day waiting period)"),
    Member("ended", "赵志强", id18("110107", d(1971, 8, 23), 55), "1101010004",
           valid_from=d(2009, 3, 1), valid_to=d(2024, 1, 20),
           note="membership ended: valid_to 2024-01-20"),
    Member("recent", "刘洋", id18("110105", d(1998, 4, 9), 17), "1101050001",
           valid_from=d(2024, 1, 10), enrolled=JOIN_2024,
           note="joined 2024-01-10; in wh-hospital from 2024-01-01"),
    Member("trad_roster", "鄭國華", id18("110101", d(1968, 12, 1), 33), "1101010004",
           valid_from=d(2003, 5, 1), note="roster name in Traditional characters"),
    Member("trad_claim", "陈丽华", id18("110106", d(1980, 3, 27), 206), "1101060005",
           valid_from=d(2006, 10, 1), note="a settlement writes her name in Traditional (陳麗華)"),
    Member("uyghur", "买买提·艾力", id18("650102", d(1985, 7, 7), 15), "1101080002",
           valid_from=d(2011, 9, 1), note="minority name with a middle dot"),
    Member("uyghur_f", "阿依古丽·吐尔逊", id18("650104", d(1990, 1, 30), 24), "1101020003",
           valid_from=d(2016, 2, 1), note="minority name with a middle dot"),
    Member("homophone", "周婷", id18("110108", d(1988, 5, 20), 64), "1101080002",
           valid_from=d(2013, 7, 1), note="a settlement writes 周庭 (same pinyin: zhou ting)"),
    Member("name_typo", "吴海峰", id18("110109", d(1979, 10, 2), 91), "1101050001",
           valid_from=d(2005, 1, 1), note="a settlement writes 吴海涛 (one character off)"),
    Member("id_typo", "孙建军", id18("110105", d(1976, 2, 29), 37), "1101020003",
           valid_from=d(2000, 6, 1), note="a settlement has one digit of his ID wrong"),
    Member("id_swap", "徐静", id18("110102", d(1984, 9, 13), 148), "1101010004",
           valid_from=d(2010, 8, 1), note="a settlement has two adjacent digits of her ID swapped"),
    Member("mismatch", "黄丽", id18("110106", d(1983, 6, 8), 222), "1101060005",
           valid_from=d(2007, 4, 1), note="a settlement carries her ID with another name (马超)"),
    Member("excel", "高明", id18("110105", d(1988, 7, 12), 123), "1101050001",
           valid_from=d(2012, 1, 1), note="his ID reaches the settlements mangled by Excel"),
    Member("unpaid", "林志伟", id18("110114", d(1982, 1, 19), 71), UNPAID,
           valid_from=d(2014, 5, 1), note="member of unit 1101140006, whose dues are unpaid"),
    Member("big", "马建华", id18("110107", d(1966, 4, 1), 13), "1101050001",
           valid_from=d(1999, 11, 1), note="a long hospital stay"),
    Member("clawback", "何伟", id18("110108", d(1970, 10, 10), 99), "1101080002",
           valid_from=d(2008, 2, 1), note="his January stay is reversed in February"),
    Member("two_schemes", "郭丽娟", id18("110102", d(1974, 3, 3), 40), "1101020003",
           valid_from=d(2002, 9, 1), enrolled=JOIN_2023,
           note="in service and in wh-hospital since 2023-07-01: paid by both schemes"),
]  # fmt: skip

# Members who pass the 1,800 yuan yearly outpatient deductible of
# bj-inservice over the two months: their visits (January, February).
CROSSERS = [
    (["420.00", "380.50", "510.00"], ["690.00", "350.00"]),
    (["800.00", "650.00"], ["520.00", "300.00", "280.00"]),
    (["1200.00", "900.00"], ["400.00"]),  # passes it in January already
    (["300.00", "250.00", "330.00", "410.00"], ["760.00"]),
    (["150.00", "220.00"], ["1800.00"]),
]


def random_member(used: set[str], unit: str) -> Member:
    retired = rng.random() < 0.08
    while True:
        male = rng.random() < 0.5
        if retired:  # men retire at 60, women at 55
            born = d(1955, 1, 1) + timedelta(rng.randrange(365 * (8 if male else 13)))
        else:
            lo = d(1965, 1, 1) if male else d(1970, 1, 1)
            born = lo + timedelta(rng.randrange((d(2001, 12, 31) - lo).days))
        ident = id18(rng.choice(REGIONS), born, rng.randrange(500) * 2 + male)  # odd: men
        if ident not in used:
            break
    used.add(ident)
    given = GIVEN_MALE if male else GIVEN_FEMALE
    name = rng.choice(SURNAMES) + "".join(rng.choice(given) for _ in range(rng.choice((1, 2, 2))))
    joined = d(1995, 1, 1) + timedelta(rng.randrange((d(2023, 6, 30) - d(1995, 1, 1)).days))
    return Member("", name, ident, unit, "退休" if retired else "在职", joined)


def build_members() -> list[Member]:
    used = {m.id18 for m in SPECIAL}
    members = [random_member(used, code) for code, _, _, n in UNITS for _ in range(n)]
    for m in SPECIAL:  # spread through the roster, not in one block
        members.insert(rng.randrange(len(members) + 1), m)
    for i, m in enumerate(members, start=1):
        m.member_id = f"M{i:08d}"
        m.cards = [luhn_complete("6228" + digits(14)) for _ in range(2 if m.moved else 1)]
        m.bank_account = "6217" + digits(15) if rng.random() < 0.9 else ""
    return members


def roster_rows(members: list[Member]) -> list[list[str]]:
    rows = []
    for m in members:
        records = [(m.unit_code, m.valid_from, m.valid_to)]
        if m.moved:
            unit, start = m.moved
            records = [(m.unit_code, m.valid_from, start - timedelta(1)), (unit, start, m.valid_to)]
        for (unit, start, end), card in zip(records, m.cards, strict=True):
            rows.append([m.member_id, m.name, m.id_number, card, unit, UNIT_NAME[unit], m.category,
                         start.isoformat(), end.isoformat() if end else "", m.bank_account])  # fmt: skip
    return rows


# -- settlements --------------------------------------------------------------------


@dataclass
class Visit:
    month: int
    id_number: str
    name: str
    kind: str  # outpatient / emergency / inpatient
    service: date
    self_pay_1: Decimal
    admitted: date | None = None
    total: Decimal | None = None
    self_pay_2: Decimal = Decimal("0.00")
    out_of_pocket: Decimal = Decimal("0.00")
    hospital: str = ""
    reverses: Visit | str | None = None
    copy_of: Visit | None = None  # a duplicate: same settlement_id
    exact: bool = False  # an exact copy repeats its original's line byte for byte
    cells: dict[str, str] = field(default_factory=dict)  # raw text that replaces a cell
    shows: str = ""  # README: what the row demonstrates ...
    outcome: str = ""  # ... and what the spec makes of it
    sid: str = ""
    line: int = 0

    def __post_init__(self) -> None:
        if not self.hospital:
            self.hospital = rng.choice(HOSPITALS)
        if self.total is None:
            # What basic insurance paid comes on top of the member's shares.
            if rng.random() < 0.4:
                self.self_pay_2 = yuan(float(self.self_pay_1) * rng.uniform(0.02, 0.2))
            if rng.random() < 0.35:
                top = 3000 if self.kind == "inpatient" else 300
                self.out_of_pocket = yuan(rng.uniform(10, top))
            fund = yuan(float(self.self_pay_1) * rng.uniform(0.6, 3.0))
            self.total = self.self_pay_1 + self.self_pay_2 + self.out_of_pocket + fund


def reversal(of: Visit, month: int, day: date, shows: str, outcome: str) -> Visit:
    """A 冲销 row: the original's amounts negated, its settlement_id in reverses."""
    assert of.total is not None
    return Visit(month, of.id_number, of.name, of.kind, day, -of.self_pay_1, of.admitted,
                 -of.total, -of.self_pay_2, -of.out_of_pocket, of.hospital, reverses=of,
                 shows=shows, outcome=outcome)  # fmt: skip


def outpatient_amount() -> Decimal:
    return yuan(round(50 * 60 ** (rng.random() ** 1.8), 1))


def ordinary_visits(month: int, pool: list[Member], count: int) -> list[Visit]:
    last = 31 if month == 1 else 29
    weights = [rng.random() ** 3 + 0.05 for _ in pool]  # a few people visit often
    visits = []
    for _ in range(count):
        m = rng.choices(pool, weights)[0]
        day = d(2024, month, rng.randint(1, last))
        if rng.random() < 0.14:
            admitted = day - timedelta(rng.randint(2, 15)) if rng.random() < 0.9 else None
            amount = yuan(round(2000 * 12 ** (rng.random() ** 1.5), 2))
            visits.append(Visit(month, m.id18, m.name, "inpatient", day, amount, admitted))
        else:
            kind = "emergency" if month == 1 and rng.random() < 0.08 else "outpatient"
            visits.append(Visit(month, m.id18, m.name, kind, day, outpatient_amount()))
    return visits


def special_visits(s: dict[str, Member], pool: list[Member]) -> list[Visit]:
    v = Visit
    legacy, moved, excel = s["legacy"], s["moved"], s["excel"]
    stranger = id18("110105", d(1987, 3, 15), 258)
    bad_check = "11010819900101123" + ("5" if check_char("11010819900101123") != "5" else "6")
    clawed = v(1, s["clawback"].id18, "何伟", "inpatient", d(2024, 1, 10), yuan(12000),
               d(2024, 1, 3), shows="hospital stay that February reverses",
               outcome="bj-inservice pays 10,000 x 50 % + 700 x 60 % = 5,420.00")  # fmt: skip
    feb_visit = v(2, s["two_schemes"].id18, "郭丽娟", "outpatient", d(2024, 2, 2), yuan(730),
                  shows="visit reversed later in the same month", outcome="rejected reversed")  # fmt: skip
    dup = v(1, pool[3].id18, pool[3].name, "outpatient", d(2024, 1, 15), yuan(264.3),
            shows="first of two identical rows", outcome="adjudicated (the first copy counts)")  # fmt: skip
    clash = v(1, pool[7].id18, pool[7].name, "outpatient", d(2024, 1, 18), yuan(530),
              shows="settlement_id sent twice with different amounts (first copy)",
              outcome="rejected conflicting_duplicate")  # fmt: skip
    resent = v(1, pool[11].id18, pool[11].name, "outpatient", d(2024, 1, 30), yuan(315),
               shows="January visit that February's file sends again",
               outcome="adjudicated in January")  # fmt: skip
    fw = pool[15]
    q = pool[20:27]  # members of the unreadable rows
    rows = [
        # -- identity (spec 3)
        v(1, legacy.id18, legacy.name, "outpatient", d(2024, 1, 9), yuan(236.5),
          shows="legacy member (roster: 15-digit ID) billed under the 18-digit form",
          outcome="exact match"),
        v(2, legacy.id_number, legacy.name, "outpatient", d(2024, 2, 19), yuan(318),
          shows="legacy member billed under the 15-digit form",
          outcome="normalised to 18 digits: exact match"),
        v(1, moved.id18, moved.name, "outpatient", d(2024, 1, 8), yuan(612.4),
          shows="moved member, before the move",
          outcome="exact; the record of unit 1101050001 (valid to 2024-01-15)"),
        v(1, moved.id18, moved.name, "outpatient", d(2024, 1, 25), yuan(455),
          shows="moved member, after the move",
          outcome="exact; the record of unit 1101080002; one person, one deductible"),
        v(2, moved.id18, moved.name, "outpatient", d(2024, 2, 6), yuan(980),
          shows="moved member in February",
          outcome="her outpatient base for the year passes 1,800: paid 50 % of 247.40 = 123.70"),
        v(1, stranger, "钱晓东", "outpatient", d(2024, 1, 11), yuan(275),
          shows="valid ID number of someone not in the roster", outcome="rejected not_a_member"),
        v(1, bad_check, "方志远", "outpatient", d(2024, 1, 18), yuan(160),
          shows="ID number with a wrong check character, nobody in the roster near it",
          outcome="rejected invalid_id_number"),
        v(1, excel.id18, excel.name, "outpatient", d(2024, 1, 23), yuan(342),
          cells={"id_number": "1.10105E+17"},
          shows="ID number that Excel turned into 1.10105E+17",
          outcome="rejected invalid_id_number (never guessed)"),
        v(2, excel.id18, excel.name, "outpatient", d(2024, 2, 7), yuan(210),
          cells={"id_number": excel.id18[:14] + "0000"},
          shows=f"ID number whose last digits Excel zeroed ({excel.id18[:14]}0000)",
          outcome="rejected invalid_id_number"),
        v(1, one_digit_wrong(s["id_typo"].id18), "孙建军", "outpatient", d(2024, 1, 17), yuan(520),
          shows="ID number with one digit wrong, right name",
          outcome=f"held: probable_id_typo, candidate {s['id_typo'].member_id}"),
        v(2, adjacent_swapped(s["id_swap"].id18), "徐静", "outpatient", d(2024, 2, 13), yuan(430),
          shows="ID number with two adjacent digits swapped, right name",
          outcome=f"held: probable_id_typo, candidate {s['id_swap'].member_id}"),
        v(1, s["trad_claim"].id18, "陳麗華", "outpatient", d(2024, 1, 12), yuan(295),
          shows="name in Traditional characters (roster: 陈丽华)", outcome="match = traditional"),
        v(2, s["trad_roster"].id18, "郑国华", "outpatient", d(2024, 2, 20), yuan(640),
          shows="roster name in Traditional (鄭國華), settlement in Simplified",
          outcome="match = traditional"),
        v(1, s["uyghur"].id18, "买买提•艾力", "outpatient", d(2024, 1, 19), yuan(188),
          shows="minority name with a bullet (•) for the middle dot",
          outcome="exact once the dot is unified"),
        v(2, s["uyghur_f"].id18, "阿依古丽.吐尔逊", "outpatient", d(2024, 2, 8), yuan(266),
          shows="minority name with a full stop for the middle dot",
          outcome="exact once the dot is unified"),
        v(1, s["homophone"].id18, "周庭", "outpatient", d(2024, 1, 24), yuan(350),
          shows="homophone 周庭 (roster 周婷, both zhou ting)",
          outcome="accepted, match = homophone"),
        v(1, s["name_typo"].id18, "吴海涛", "outpatient", d(2024, 1, 26), yuan(410),
          shows="name one character off (roster 吴海峰)", outcome="held: probable_name_typo"),
        v(2, s["mismatch"].id18, "马超", "outpatient", d(2024, 2, 9), yuan(150),
          shows="a member's ID number with an unrelated name (roster 黄丽)",
          outcome="rejected name_mismatch"),
        v(1, fw.id18, fw.name, "outpatient", d(2024, 1, 5), yuan(123.5),
          cells={"id_number": fullwidth(fw.id18), "self_pay_1": fullwidth("123.50")},
          shows="full-width digits in the ID number and in 自付一",
          outcome="read after NFKC: exact match"),
        # -- membership, units, coverage (spec 5)
        v(1, s["ended"].id18, "赵志强", "outpatient", d(2024, 1, 12), yuan(560),
          shows="visit before the membership ended (valid_to 2024-01-20)",
          outcome="adjudicated"),
        v(2, s["ended"].id18, "赵志强", "outpatient", d(2024, 2, 6), yuan(470),
          shows="visit after the membership ended", outcome="rejected membership_inactive"),
        v(1, s["unpaid"].id18, "林志伟", "outpatient", d(2024, 1, 15), yuan(380),
          shows="member of unit 1101140006 (dues paid through 2023-12-31)",
          outcome="rejected unit_dues_unpaid"),
        v(2, s["unpaid"].id18, "林志伟", "inpatient", d(2024, 2, 16), yuan(5200), d(2024, 2, 12),
          shows="the unpaid unit again, a hospital stay", outcome="rejected unit_dues_unpaid"),
        v(1, s["retired"].id18, "张桂兰", "outpatient", d(2024, 1, 16), yuan(388),
          shows="retired member, outpatient",
          outcome="rejected no_coverage (bj-inservice: in service only; wh-hospital: inpatient only)"),
        v(2, s["retired"].id18, "张桂兰", "inpatient", d(2024, 2, 15), yuan(9800), d(2024, 2, 5),
          shows="retired member in wh-hospital since 2023-07-01, 10 days in hospital",
          outcome="wh-hospital only: 5,000 x 30 % + 4,300 x 40 % = 3,220.00 plus 10 x 30 = 300.00"),
        v(2, s["retired_new"].id18, "刘淑珍", "inpatient", d(2024, 2, 22), yuan(6400), d(2024, 2, 14),
          shows="retired member in wh-hospital only from 2024-01-01",
          outcome="rejected waiting_period (90 days from the enrolment)"),
        v(1, s["recent"].id18, "刘洋", "outpatient", d(2024, 1, 22), yuan(260),
          shows="member who joined 2024-01-10, twelve days before",
          outcome="adjudicated: bj-inservice has waiting_days = 0"),
        v(2, s["recent"].id18, "刘洋", "inpatient", d(2024, 2, 21), yuan(7600), d(2024, 2, 17),
          shows="the recent member's hospital stay; his wh-hospital enrolment began 2024-01-01",
          outcome="bj-inservice pays 3,150.00; no wh-hospital line (waiting period)"),
        # -- amounts and rules (spec 4)
        v(1, s["big"].id18, "马建华", "inpatient", d(2024, 1, 29), yuan(68000), d(2023, 12, 28),
          out_of_pocket=yuan(9400), total=yuan(131260),
          shows="32-day stay, self_pay_1 68,000.00: through the 50 %, 60 % and 70 % tiers",
          outcome="bj-inservice: 5,000 + 24,000 + 11,690 = 40,690.00"),
        v(1, s["two_schemes"].id18, "郭丽娟", "inpatient", d(2024, 1, 20), yuan(8600),
          shows="hospital stay without an admission date, member of both schemes",
          outcome="bj-inservice 3,650.00; wh-hospital 1,500 + 1,240 = 2,740.00, note no_admission_date"),
        v(2, s["two_schemes"].id18, "郭丽娟", "inpatient", d(2024, 2, 27), yuan(4300), d(2024, 2, 20),
          shows="hospital stay with an admission date, same member",
          outcome="bj-inservice 2,310.00 (base past the deductible since January); "
          "wh-hospital 1,140.00 + 7 days x 30 = 1,350.00"),
        # -- duplicates and reversals (spec 4.1, 5)
        clawed,
        reversal(clawed, 2, d(2024, 2, 5), shows="reversal (冲销) of 何伟's January stay",
                 outcome="clawback -5,420.00; in recoveries.csv, not payouts.csv"),
        v(2, id18("110105", d(1979, 1, 1), 45), "宋佳", "outpatient", d(2024, 2, 10), yuan(-200),
          total=yuan(-260), reverses="JS2312099999",
          shows="reversal of a settlement never seen", outcome="rejected reversal_unmatched"),
        feb_visit,
        reversal(feb_visit, 2, d(2024, 2, 23), shows="reversal of that visit in the same month",
                 outcome="rejected reversed"),
        dup,
        v(1, dup.id_number, dup.name, dup.kind, dup.service, dup.self_pay_1, copy_of=dup,
          exact=True, shows="exact copy of the line above", outcome="rejected duplicate_settlement"),
        clash,
        v(1, clash.id_number, clash.name, "outpatient", d(2024, 1, 18), yuan(580), copy_of=clash,
          shows="same settlement_id, other amounts", outcome="rejected conflicting_duplicate"),
        resent,
        v(2, resent.id_number, resent.name, "outpatient", resent.service, resent.self_pay_1,
          total=resent.total, self_pay_2=resent.self_pay_2, out_of_pocket=resent.out_of_pocket,
          hospital=resent.hospital, copy_of=resent,
          shows="January's settlement sent again in February",
          outcome="rejected duplicate_settlement (processed in an earlier batch)"),
        # -- unreadable rows (quarantine, spec 5)
        v(1, q[0].id18, q[0].name, "outpatient", d(2024, 1, 4), yuan(99), cells={"settlement_id": ""},
          shows="no 结算流水号", outcome="quarantined missing_field"),
        v(1, q[1].id18, q[1].name, "outpatient", d(2024, 1, 14), yuan(200),
          cells={"self_pay_1": "12.345"}, shows="自付一 12.345 (three decimals)",
          outcome="quarantined bad_amount"),
        v(1, q[2].id18, q[2].name, "outpatient", d(2024, 1, 27), yuan(180),
          cells={"visit_type": "体检"}, shows="就诊类型 体检 (a health check)",
          outcome="quarantined bad_visit_type"),
        v(2, q[3].id18, q[3].name, "outpatient", d(2024, 2, 3), yuan(300),
          cells={"total_cost": "abc"}, shows="total_cost abc", outcome="quarantined bad_amount"),
        v(2, q[4].id18, q[4].name, "outpatient", d(2024, 2, 28), yuan(120),
          cells={"service_date": "2024-02-30"}, shows="service_date 2024-02-30",
          outcome="quarantined bad_date"),
        v(2, q[5].id18, q[5].name, "outpatient", d(2024, 2, 14), yuan(900), total=yuan(650),
          shows="self_pay_1 900.00 above total_cost 650.00",
          outcome="quarantined inconsistent_amounts"),
        v(2, q[6].id18, q[6].name, "inpatient", d(2024, 2, 26), yuan(3100), d(2024, 2, 21),
          cells={"admission_date": "2024-13-01"}, shows="admission_date 2024-13-01",
          outcome="quarantined bad_date (an optional date counts too)"),
    ]  # fmt: skip
    return rows


def crosser_visits(crossers: list[Member]) -> list[Visit]:
    out = []
    for m, (jan, feb) in zip(crossers, CROSSERS, strict=True):
        for month, amounts in ((1, jan), (2, feb)):
            days = sorted(rng.sample(range(2, 28), len(amounts)))
            for day, amount in zip(days, amounts, strict=True):
                out.append(
                    Visit(month, m.id18, m.name, "outpatient", d(2024, month, day), yuan(amount))
                )
    return out


# -- rendering ----------------------------------------------------------------------

ZH_HEADER = ["结算流水号", "身份证号", "姓名", "就诊类型", "结算日期", "入院日期", "医院编码",
             "医疗费总额", "自付一", "自付二", "自费", "原结算流水号"]  # fmt: skip
EN_HEADER = ["settlement_id", "id_number", "name", "visit_type", "service_date", "admission_date",
             "hospital_code", "total_cost", "self_pay_1", "self_pay_2", "out_of_pocket", "reverses"]  # fmt: skip
ZH_KIND = {"outpatient": "门诊", "emergency": "急诊", "inpatient": "住院"}


def zh_date(x: date) -> str:
    """The forms an export from a hospital system mixes."""
    return rng.choice(
        [
            f"{x.year}/{x.month}/{x.day}",
            f"{x:%Y%m%d}",
            f"{x.year}年{x.month}月{x.day}日",
            x.isoformat(),
        ]
    )


def zh_money(x: Decimal) -> str:
    form = rng.randrange(5)
    if form == 0 and abs(x) >= 1000:
        return f"{x:,.2f}"
    if form == 1:
        return f"¥{x:.2f}"
    if form == 2 and x == x.to_integral_value():
        return f"{int(x)}元"
    return f"{x:.2f}"


def render(v: Visit, zh: bool) -> list[str]:
    assert v.total is not None
    amount = zh_money if zh else (lambda x: f"{x:.2f}")
    day = zh_date if zh else date.isoformat
    ref = v.reverses.sid if isinstance(v.reverses, Visit) else (v.reverses or "")
    cells = {
        "settlement_id": v.sid,
        "id_number": v.id_number,
        "name": v.name,
        "visit_type": ZH_KIND[v.kind] if zh else v.kind.replace("emergency", "outpatient"),
        "service_date": day(v.service),
        "admission_date": day(v.admitted) if v.admitted else "",
        "hospital_code": v.hospital,
        "total_cost": amount(v.total),
        "self_pay_1": amount(v.self_pay_1),
        "self_pay_2": amount(v.self_pay_2),
        "out_of_pocket": amount(v.out_of_pocket),
        "reverses": ref,
    }
    cells.update(v.cells)
    return [cells[c] for c in EN_HEADER]


def number_month(visits: list[Visit], month: int) -> list[Visit]:
    """File order is by date, settlement ids follow it. An exact copy goes on
    the line after its original, a conflicting one three lines further."""
    rows = [x for x in visits if x.month == month]
    rng.shuffle(rows)  # same-day rows in no particular order, as exports come
    copies = [x for x in rows if x.copy_of is not None and x.copy_of.month == month]
    ordered = sorted((x for x in rows if x not in copies), key=lambda x: x.service)
    seq = 0
    for x in ordered:
        if x.copy_of is None:
            seq += 1
            x.sid = f"JS24{month:02d}{seq:05d}"
        else:  # sent again from an earlier month
            x.sid = x.copy_of.sid
    for x in copies:
        assert x.copy_of is not None
        x.sid = x.copy_of.sid
        ordered.insert(ordered.index(x.copy_of) + (1 if x.exact else 3), x)
    for i, x in enumerate(ordered, start=2):  # line 1 is the header
        x.line = i
    return ordered


# -- files --------------------------------------------------------------------------


def write_csv(
    path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8"
) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))


def outpatient_payouts(
    amounts: list[Decimal], deductible: Decimal = Decimal(1800)
) -> list[Decimal]:
    """bj-inservice outpatient, scope year, ratio 0.5 (spec 4.1, shipped rules)."""
    out, ytd = [], Decimal(0)
    for b in amounts:
        before, ytd = ytd, ytd + b
        gain = max(Decimal(0), ytd - deductible) - max(Decimal(0), before - deductible)
        out.append(yuan(gain / 2))
    return out


def readme(members: list[Member], months: dict[int, list[Visit]], crossers: list[Member],
           crosser_rows: list[Visit]) -> str:  # fmt: skip
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    special = [m for m in members if m.key]

    def count(rows: list[Visit], word: str) -> int:
        return sum(x.outcome.startswith(word) for x in rows)

    totals = [
        "| file | rows | quarantined | rejected | held (new) | adjudicated |",
        "|---|---|---|---|---|---|",
    ]
    for month, rows in months.items():
        q, r, h = (count(rows, w) for w in ("quarantined", "rejected", "held"))
        totals.append(f"| settlements_2024-{month:02d}.csv | {len(rows)} | {q} ({q / len(rows):.1%}) "
                      f"| {r} | {h} | {len(rows) - q - r - h} |")  # fmt: skip
    out = [
        "# Sample data",
        "",
        "A small union in Beijing, two months of settlements. Re-make every file with",
        "`python sample_data/make_sample.py` (fixed seed; this README is written by it too).",
        "`twopay demo` runs both months in a fresh workspace.",
        "",
        "| file | what |",
        "|---|---|",
        f"| roster.csv | {len(members)} members, {sum(2 if m.moved else 1 for m in members)} records "
        "in 6 units; UTF-8, English headers, category 在职 / 退休 |",
        "| units.csv | unit_code, unit_name, dues_paid_through; 1101140006 has paid only through "
        "2023-12-31 |",
        "| enrollments.csv | who is in the Weihai-style wh-hospital scheme: the period "
        "2023-07-01 .. 2024-06-30, or new from 2024-01-01 .. 2024-12-31 (90-day waiting) |",
        f"| settlements_2024-01.csv | {len(months[1])} rows; Chinese headers, **GB18030**; amounts "
        "as `1,234.50`, `¥88.00`, `300元`; dates as `2024/1/5`, `20240105`, `2024年1月5日`; "
        "门诊 / 急诊 / 住院 |",
        f"| settlements_2024-02.csv | {len(months[2])} rows; English headers, UTF-8 |",
        "",
        "Outcomes below follow the spec under the shipped rules (`config/rules`:",
        "bj-inservice 2018: outpatient deductible 1,800 a year at 50 %, inpatient 1,300 a",
        "year with tiers 50 / 60 / 70 %, in-service members only; wh-hospital 2024:",
        "enrolment required, inpatient only, 500 per stay, tiers 30 / 40 / 50 %, 30 yuan",
        "a day, 90 days' waiting from the enrolment). Ordinary rows (not listed) are",
        "members' visits; most outpatient ones stay below the deductible and are paid",
        "zero (`below_deductible`).",
        "",
        "Every ordinary row is adjudicated, so the special rows below make up all other",
        "outcomes (held: newly held that month; review.csv lists all still pending):",
        "",
        *totals,
        "",
        "## Special members",
        "",
        "| member_id | name | id_number (roster) | unit | shows |",
        "|---|---|---|---|---|",
    ]
    for m in special:
        out.append(f"| {m.member_id} | {m.name} | {m.id_number} | {m.unit_code} | {cell(m.note)} |")
    for month, rows in months.items():
        name = f"settlements_2024-{month:02d}.csv"
        out += ["", f"## {name}", "", "| line | settlement_id | name | shows | outcome |",
                "|---|---|---|---|---|"]  # fmt: skip
        for x in rows:
            if x.shows:
                sid = x.cells.get("settlement_id", x.sid) or "(empty)"
                out.append(
                    f"| {x.line} | {sid} | {cell(x.name)} | {cell(x.shows)} | {cell(x.outcome)} |"
                )
    out += [
        "",
        "## Passing the outpatient deductible",
        "",
        "Members whose outpatient self_pay_1 adds up past 1,800 yuan over the two",
        "months (bj-inservice pays 50 % of what lies above it; earlier lines are zero,",
        "`below_deductible`):",
        "",
        "| member_id | name | settlement_id: self_pay_1 -> payout |",
        "|---|---|---|",
    ]
    for m in crossers:
        rows = sorted((x for x in crosser_rows if x.id_number == m.id18), key=lambda x: x.service)
        pays = outpatient_payouts([x.self_pay_1 for x in rows])
        out.append(f"| {m.member_id} | {m.name} | "
                   + ", ".join(f"{x.sid}: {x.self_pay_1} -> {p}" for x, p in zip(rows, pays, strict=True))
                   + " |")  # fmt: skip
    return "\n".join(out) + "\n"


def main(out: Path = HERE) -> None:
    rng.seed(SEED)
    out.mkdir(parents=True, exist_ok=True)
    members = build_members()
    special = {m.key: m for m in members if m.key}
    ordinary = [m for m in members if not m.key and m.category == "在职" and m.unit_code != UNPAID]
    crossers = ordinary[:: len(ordinary) // len(CROSSERS)][: len(CROSSERS)]
    pool = [m for m in ordinary if m not in crossers]
    enrolled = rng.sample(pool, 30)
    for m in enrolled:
        m.enrolled = JOIN_2023 if rng.random() < 0.8 else JOIN_2024

    crosser_rows = crosser_visits(crossers)
    visits = (
        ordinary_visits(1, pool, 160) + ordinary_visits(2, pool, 158)
        + special_visits(special, pool) + crosser_rows
    )  # fmt: skip
    months = {m: number_month(visits, m) for m in (1, 2)}

    # Checks that the special rows mean what the README says.
    excel = special["excel"].id18
    assert check_char(excel[:14] + "000") != "0", "the zeroed ID must fail its check"
    assert len({m.id18 for m in members}) == len(members)

    write_csv(out / "units.csv", ["unit_code", "unit_name", "dues_paid_through"],
              [[c, n, p.isoformat()] for c, n, p, _ in UNITS])  # fmt: skip
    write_csv(out / "roster.csv", ["member_id", "name", "id_number", "card_no", "unit_code",
              "unit_name", "category", "valid_from", "valid_to", "bank_account"],
              roster_rows(members))  # fmt: skip
    periods = {JOIN_2023: date(2024, 6, 30), JOIN_2024: date(2024, 12, 31)}
    write_csv(out / "enrollments.csv", ["id_number", "scheme", "valid_from", "valid_to"],
              [[m.id18, "wh-hospital", m.enrolled.isoformat(), periods[m.enrolled].isoformat()]
               for m in members if m.enrolled])  # fmt: skip
    for month, header, zh, encoding in (
        (1, ZH_HEADER, True, "gb18030"),
        (2, EN_HEADER, False, "utf-8"),
    ):
        lines: dict[int, list[str]] = {}
        for x in months[month]:
            lines[id(x)] = lines[id(x.copy_of)] if x.exact else render(x, zh)
        write_csv(out / f"settlements_2024-{month:02d}.csv", header,
                  [lines[id(x)] for x in months[month]], encoding)  # fmt: skip
    (out / "README.md").write_text(
        readme(members, months, crossers, crosser_rows), encoding="utf-8"
    )


if __name__ == "__main__":
    # An optional folder to write to instead (the tests re-make the files there).
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
