"""Rule files as data (spec section 4): what a rule file may say, and how a bad
one is reported (exit 2, naming the file, the key and what was expected)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import cli
from twopay.errors import RuleFileError, UsageError
from twopay.rules.loader import json_schema, load_rule_file, load_rules
from twopay.rules.models import RuleVersion, VisitRule

D = Decimal

GOOD = """\
scheme = "bj-inservice"
title = "北京市在职职工医疗互助保障计划"
version = "2018"
effective_from = 2018-01-01
effective_to = 2018-12-31
enrollment = "automatic"
categories = ["in_service"]
base = "self_pay_1"
annual_cap = 200000
waiting_days = 0

[outpatient]
deductible = 1800
deductible_scope = "year"
ratio = 0.5
annual_cap = 20000
per_episode_cap = 5000

[inpatient]
deductible = 1300
deductible_scope = "year"
tiers = [ { up_to = 10000, ratio = 0.5 }, { up_to = 50000, ratio = 0.6 }, { ratio = 0.7 } ]
annual_cap = 180000

[inpatient.allowance]
per_day = 50
max_days = 180
"""


TIERS = (
    "tiers = [ { up_to = 10000, ratio = 0.5 }, { up_to = 50000, ratio = 0.6 }, { ratio = 0.7 } ]"
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


# -- a good file ------------------------------------------------------------------------


def test_the_spec_example_loads(tmp_path: Path) -> None:
    loaded = load_rule_file(write(tmp_path, "bj.toml", GOOD))
    rule = loaded.rule
    assert rule.key == "bj-inservice@2018"
    assert (rule.effective_from, rule.effective_to) == (date(2018, 1, 1), date(2018, 12, 31))
    assert rule.outpatient is not None and rule.outpatient.ratio == D("0.5")
    assert rule.inpatient is not None and rule.inpatient.allowance is not None
    assert rule.inpatient.allowance.max_days == 180
    assert len(loaded.sha256) == 64


def test_defaults(tmp_path: Path) -> None:
    text = 'scheme = "x"\nversion = "1"\neffective_from = 2024-01-01\n[inpatient]\nratio = 1\n'
    rule = load_rule_file(write(tmp_path, "x.toml", text)).rule
    assert rule.enrollment == "automatic"
    assert rule.categories == ["in_service"]
    assert rule.base == "self_pay_1"
    assert rule.annual_cap is None and rule.waiting_days == 0 and rule.effective_to is None
    assert rule.outpatient is None
    assert rule.inpatient is not None
    assert (rule.inpatient.deductible, rule.inpatient.deductible_scope) == (0, "year")


def test_in_force_is_inclusive_at_both_ends(tmp_path: Path) -> None:
    rule = load_rule_file(write(tmp_path, "bj.toml", GOOD)).rule
    assert not rule.in_force(date(2017, 12, 31))
    assert rule.in_force(date(2018, 1, 1))
    assert rule.in_force(date(2018, 12, 31))
    assert not rule.in_force(date(2019, 1, 1))


def test_visit_picks_the_visit_type(tmp_path: Path) -> None:
    rule = load_rule_file(write(tmp_path, "bj.toml", GOOD)).rule
    assert rule.visit("outpatient") is rule.outpatient
    assert rule.visit("inpatient") is rule.inpatient


def test_segments_of_a_single_ratio() -> None:
    assert VisitRule(ratio=D("0.5")).segments() == [(0, None, D("0.5"))]


def test_segments_of_tiers_open_and_bounded() -> None:
    open_ended = VisitRule(tiers=[{"up_to": 100, "ratio": D("0.5")}, {"ratio": D("0.7")}])
    assert open_ended.segments() == [(0, 100, D("0.5")), (100, None, D("0.7"))]
    bounded = VisitRule(tiers=[{"up_to": 100, "ratio": D("0.5")}, {"up_to": 300, "ratio": 1}])
    assert bounded.segments() == [(0, 100, D("0.5")), (100, 300, 1)]


def test_models_are_frozen(tmp_path: Path) -> None:
    rule = load_rule_file(write(tmp_path, "bj.toml", GOOD)).rule
    with pytest.raises(ValueError):
        rule.version = "2019"  # type: ignore[misc]


def test_json_schema_describes_the_file() -> None:
    schema = json_schema()
    assert schema["title"] == "RuleVersion"
    assert {"scheme", "version", "effective_from", "outpatient", "inpatient"} <= set(
        schema["properties"]  # type: ignore[arg-type]
    )
    assert set(schema["required"]) == {"scheme", "version", "effective_from"}  # type: ignore[arg-type]


def test_rule_file_error_is_a_usage_error_exit_2() -> None:
    assert issubclass(RuleFileError, UsageError)
    assert RuleFileError("x").exit_code == 2


# -- bad files: the message names the file and the key ----------------------------------

BAD_FILES = {
    # wrong types
    "ratio not a number": (
        edit("ratio = 0.5", 'ratio = "half"'),
        "outpatient.ratio",
        'expected a number, got the string "half"',
    ),
    "ratio a boolean": (
        edit("ratio = 0.5", "ratio = true"),
        "outpatient.ratio",
        "expected a number, got the boolean true",
    ),
    "version blank": (
        edit('version = "2018"', 'version = "  "'),
        "version",
        'expected a version label that is not blank, got the string "  "',
    ),
    "version a number": (edit('version = "2018"', "version = 2018"), "version", "string"),
    "categories empty": (  # it would cover nobody: every claim rejected no_coverage
        edit('categories = ["in_service"]', "categories = []"),
        "categories",
        "at least 1 item",
    ),
    "categories not a list": (
        edit('categories = ["in_service"]', 'categories = "in_service"'),
        "categories",
        "list",
    ),
    "waiting_days a fraction": (
        edit("waiting_days = 0", "waiting_days = 1.5"),
        "waiting_days",
        "integer",
    ),
    # day counts are INTEGER in the ledger and added to dates: a run died
    # with "out of range for INT32" on a file `rules check` called valid
    "waiting_days beyond a century": (
        edit("waiting_days = 0", "waiting_days = 2147483648"),
        "waiting_days",
        "36600",
    ),
    "effective_from not a date": (
        edit("effective_from = 2018-01-01", 'effective_from = "soon"'),
        "effective_from",
        "date",
    ),
    "outpatient not a table": (
        GOOD.split("[outpatient]")[0] + "outpatient = 5\n",
        "outpatient",
        "",
    ),
    # unknown keys, at each level
    "unknown top-level key": (
        edit("waiting_days = 0", "waiting_dayz = 0"),
        "waiting_dayz",
        "unknown key",
    ),
    "unknown visit key": (
        edit("per_episode_cap = 5000", "per_visit_cap = 5000"),
        "outpatient.per_visit_cap",
        "unknown key",
    ),
    "unknown tier key": (
        edit("{ ratio = 0.7 }", "{ ratio = 0.7, cap = 1 }"),
        "inpatient.tiers.2.cap",
        "unknown key",
    ),
    "unknown allowance key": (
        edit("per_day = 50", "per_day = 50\nper_night = 5"),
        "inpatient.allowance.per_night",
        "unknown key",
    ),
    "unknown visit type": (GOOD + "\n[dental]\nratio = 0.5\n", "dental", "unknown key"),
    # required keys
    "no scheme": (edit('scheme = "bj-inservice"\n', ""), "scheme", "required key is missing"),
    "no version": (edit('version = "2018"\n', ""), "version", "required key is missing"),
    "no effective_from": (edit("effective_from = 2018-01-01\n", ""), "effective_from", "missing"),
    "no per_day": (edit("per_day = 50\n", ""), "inpatient.allowance.per_day", "missing"),
    # ratios
    "negative ratio": (
        edit("ratio = 0.5", "ratio = -0.5"),
        "outpatient.ratio",
        "greater than or equal to 0",
    ),
    "ratio above 1": (
        edit("ratio = 0.5", "ratio = 1.5"),
        "outpatient.ratio",
        "less than or equal to 1",
    ),
    "tier ratio above 1": (
        edit("{ ratio = 0.7 }", "{ ratio = 7 }"),
        "inpatient.tiers.2.ratio",
        "less than or equal to 1",
    ),
    "ratio too precise": (
        edit("ratio = 0.5", "ratio = 0.1234567"),
        "outpatient.ratio",
        "6 decimal",
    ),
    "both ratio and tiers": (
        edit("ratio = 0.5", "ratio = 0.5\ntiers = [ { ratio = 0.5 } ]"),
        "outpatient",
        "expected exactly one of `ratio` or `tiers`, not both",
    ),
    "neither ratio nor tiers": (
        edit("ratio = 0.5\n", ""),
        "outpatient",
        "expected exactly one of `ratio` or `tiers`, but neither is given",
    ),
    # money
    "negative scheme cap": (
        edit("annual_cap = 200000", "annual_cap = -1"),
        "annual_cap",
        "greater than or equal to 0",
    ),
    "negative type cap": (
        edit("annual_cap = 20000\n", "annual_cap = -20000\n"),
        "outpatient.annual_cap",
        "",
    ),
    "negative per-episode cap": (
        edit("per_episode_cap = 5000", "per_episode_cap = -5"),
        "outpatient.per_episode_cap",
        "",
    ),
    "negative deductible": (
        edit("deductible = 1800", "deductible = -1800"),
        "outpatient.deductible",
        "",
    ),
    "negative per_day": (edit("per_day = 50", "per_day = -50"), "inpatient.allowance.per_day", ""),
    "negative max_days": (
        edit("max_days = 180", "max_days = -1"),
        "inpatient.allowance.max_days",
        "",
    ),
    "negative waiting_days": (edit("waiting_days = 0", "waiting_days = -90"), "waiting_days", ""),
    "money in mills": (
        edit("deductible = 1800", "deductible = 1800.005"),
        "outpatient.deductible",
        "2 decimal",
    ),
    "money too large": (edit("annual_cap = 200000", "annual_cap = 1e20"), "annual_cap", "digits"),
    # tiers
    "tiers out of order": (
        edit("{ up_to = 50000, ratio = 0.6 }", "{ up_to = 5000, ratio = 0.6 }"),
        "inpatient.tiers",
        "increasing order of `up_to`, but tiers.1.up_to (5000) is not above tiers.0.up_to (10000)",
    ),
    "tiers repeat a bound": (
        edit("{ up_to = 50000, ratio = 0.6 }", "{ up_to = 10000, ratio = 0.6 }"),
        "inpatient.tiers",
        "increasing order",
    ),
    "open tier before the last": (
        edit("{ up_to = 10000, ratio = 0.5 }", "{ ratio = 0.5 }"),
        "inpatient.tiers",
        "expected `up_to` on every tier but the last; tiers.0 has none",
    ),
    "tier bound of zero": (
        edit("{ up_to = 10000, ratio = 0.5 }", "{ up_to = 0, ratio = 0.5 }"),
        "inpatient.tiers.0.up_to",
        "greater than 0",
    ),
    "no tiers": (edit(TIERS, "tiers = []"), "inpatient.tiers", "expected at least one tier"),
    # a bounded last tier is allowed (nothing is paid above it), but it is checked too
    "bounded last tier below the one before": (
        edit(TIERS, "tiers = [ { up_to = 10000, ratio = 0.5 }, { up_to = 5000, ratio = 0.6 } ]"),
        "inpatient.tiers",
        "tiers.1.up_to (5000) is not above tiers.0.up_to (10000)",
    ),
    "bounded last tier repeats the one before": (
        edit(TIERS, "tiers = [ { up_to = 10000, ratio = 0.5 }, { up_to = 10000, ratio = 0.6 } ]"),
        "inpatient.tiers",
        "tiers.1.up_to (10000) is not above tiers.0.up_to (10000)",
    ),
    "bounded last tier of zero": (
        edit("{ ratio = 0.7 }", "{ up_to = 0, ratio = 0.7 }"),
        "inpatient.tiers.2.up_to",
        "greater than 0",
    ),
    "single tier bound of zero": (
        edit(TIERS, "tiers = [ { up_to = 0, ratio = 0.5 } ]"),
        "inpatient.tiers.0.up_to",
        "greater than 0",
    ),
    "negative tier bound": (
        edit("{ up_to = 10000, ratio = 0.5 }", "{ up_to = -10000, ratio = 0.5 }"),
        "inpatient.tiers.0.up_to",
        "greater than 0",
    ),
    # choices
    "unknown scope": (
        edit('deductible_scope = "year"', 'deductible_scope = "month"'),
        "outpatient.deductible_scope",
        "year",
    ),
    "unknown enrollment": (
        edit('enrollment = "automatic"', 'enrollment = "sometimes"'),
        "enrollment",
        "required",
    ),
    "unknown category": (edit('["in_service"]', '["student"]'), "categories.0", "retired"),
    "unknown base column": (
        edit('base = "self_pay_1"', 'base = "self_pay_3"'),
        "base",
        "self_pay_2",
    ),
    "bad scheme id": (
        edit('scheme = "bj-inservice"', 'scheme = "北京 scheme"'),
        "scheme",
        "expected an id of lower-case letters, digits, '-' and '_' (at most 64), "
        'got the string "北京 scheme"',
    ),
    "empty version": (edit('version = "2018"', 'version = ""'), "version", "at least 1"),
    "outpatient allowance": (
        edit(
            "per_episode_cap = 5000",
            "per_episode_cap = 5000\nallowance = { per_day = 1, max_days = 1 }",
        ),
        "outpatient",
        "inpatient only",
    ),
    # dates
    "effective_to before effective_from": (
        edit("effective_to = 2018-12-31", "effective_to = 2017-12-31"),
        "effective_to",
        "expected a date on or after `effective_from` (2018-01-01), got 2017-12-31",
    ),
    # no benefit at all: a whole-file check, the message names both keys instead
    "no visit types": (
        GOOD.split("[outpatient]")[0],
        "",
        "expected a table `[outpatient]` or `[inpatient]` (or both), but the file has neither",
    ),
}


@pytest.mark.parametrize(("text", "key", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_names_the_file_and_the_key(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = write(tmp_path, "bad-rule.toml", text)
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    message = info.value.message
    assert str(path) in message
    if key:
        assert f"key `{key}`" in message, message
    else:
        assert "key `" not in message, message
    assert expected in message, message
    # one sentence in our words: none of pydantic's wrapping leaks through
    assert "Value error" not in message and "(top level)" not in message, message
    assert message.endswith(".") and "\n" not in message, message


def test_several_problems_are_counted(tmp_path: Path) -> None:
    text = edit("ratio = 0.5", "ratio = -1").replace("annual_cap = 200000", "annual_cap = -1")
    with pytest.raises(RuleFileError, match=r"and 1 more problems"):
        load_rule_file(write(tmp_path, "two.toml", text))


# -- numbers are numbers, dates are dates: no coercion from TOML --------------------------

# (text in GOOD, the same with @ for the value, the key it sets, what it expects)
NUMBER_KEYS = [
    ("annual_cap = 200000", "annual_cap = @", "annual_cap", "a number"),
    ("waiting_days = 0", "waiting_days = @", "waiting_days", "an integer"),
    ("deductible = 1800", "deductible = @", "outpatient.deductible", "a number"),
    ("ratio = 0.5", "ratio = @", "outpatient.ratio", "a number"),
    ("annual_cap = 20000\n", "annual_cap = @\n", "outpatient.annual_cap", "a number"),
    ("per_episode_cap = 5000", "per_episode_cap = @", "outpatient.per_episode_cap", "a number"),
    ("deductible = 1300", "deductible = @", "inpatient.deductible", "a number"),
    ("{ up_to = 50000,", "{ up_to = @,", "inpatient.tiers.1.up_to", "a number"),
    ("{ ratio = 0.7 }", "{ ratio = @ }", "inpatient.tiers.2.ratio", "a number"),
    ("annual_cap = 180000", "annual_cap = @", "inpatient.annual_cap", "a number"),
    ("per_day = 50", "per_day = @", "inpatient.allowance.per_day", "a number"),
    ("max_days = 180", "max_days = @", "inpatient.allowance.max_days", "an integer"),
]
NOT_NUMBERS = [
    ("true", "the boolean true"),
    ("false", "the boolean false"),
    ('"1"', 'the string "1"'),
]


@pytest.mark.parametrize(("value", "shown"), NOT_NUMBERS, ids=[v for v, _ in NOT_NUMBERS])
@pytest.mark.parametrize(
    ("old", "new", "key", "kind"), NUMBER_KEYS, ids=[k for _, _, k, _ in NUMBER_KEYS]
)
def test_a_boolean_or_string_is_not_a_number(
    tmp_path: Path, old: str, new: str, key: str, kind: str, value: str, shown: str
) -> None:
    """`max_days = true` used to load as 1, `ratio = "1"` as 1: both are refused."""
    path = write(tmp_path, "bad-rule.toml", edit(old, new.replace("@", value)))
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    assert info.value.message == f"{path}: key `{key}`: expected {kind}, got {shown}."


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        (
            "max_days = 180",
            "max_days = 180.0",
            "inpatient.allowance.max_days",
            "expected an integer, got the number 180.0",
        ),
        ("waiting_days = 0", "waiting_days = 1.0", "waiting_days", "got the number 1.0"),
        (
            "effective_from = 2018-01-01",
            'effective_from = "2018-01-01"',
            "effective_from",
            'expected a date such as 2024-01-01 (unquoted), got the string "2018-01-01"',
        ),
        (
            "effective_to = 2018-12-31",
            "effective_to = 2018-12-31T00:00:00",
            "effective_to",
            "expected a date such as 2024-01-01 (unquoted), got a date-time",
        ),
    ],
    ids=["integer as float", "waiting_days as float", "date as string", "date-time"],
)
def test_no_coercion_of_whole_floats_or_quoted_dates(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    path = write(tmp_path, "bad-rule.toml", edit(old, new))
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    assert info.value.message.startswith(f"{path}: key `{key}`: "), info.value.message
    assert expected in info.value.message, info.value.message


def test_toml_numbers_still_load_exactly(tmp_path: Path) -> None:
    """Strict validation keeps TOML integers and floats: a float becomes the
    Decimal of its text (0.1 is 0.1, not 0.1000000000000000055...)."""
    text = (
        edit("ratio = 0.5", "ratio = 0.1")
        .replace("deductible = 1800", "deductible = 1800.05")
        .replace(TIERS, "tiers = [ { up_to = 1e4, ratio = 0.35 }, { ratio = 0.000001 } ]")
        .replace("per_day = 50", "per_day = 50.5")
    )
    rule = load_rule_file(write(tmp_path, "exact.toml", text)).rule
    assert rule.outpatient is not None and rule.inpatient is not None
    assert str(rule.outpatient.ratio) == "0.1"
    assert str(rule.outpatient.deductible) == "1800.05"
    assert rule.inpatient.segments() == [
        (0, D("10000"), D("0.35")),
        (D("10000"), None, D("0.000001")),
    ]
    assert rule.inpatient.allowance is not None
    assert rule.inpatient.allowance.per_day == D("50.5")
    assert rule.inpatient.allowance.max_days == 180 and type(rule.waiting_days) is int
    assert rule.annual_cap == D(200000) and isinstance(rule.annual_cap, Decimal)


def test_models_built_in_python_stay_lax() -> None:
    """Only rule files are validated strictly; the engine tests build rules
    from Python with decimal strings."""
    visit = VisitRule.model_validate({"deductible": "1800", "ratio": "0.5"})
    assert (visit.deductible, visit.ratio) == (D("1800"), D("0.5"))


@pytest.mark.parametrize(
    "tiers",
    [
        "tiers = [ { up_to = 10000, ratio = 0.5 }, { up_to = 50000, ratio = 0.6 } ]",
        "tiers = [ { up_to = 0.01, ratio = 1 } ]",
    ],
    ids=["two bounded", "one bounded"],
)
def test_a_bounded_last_tier_is_allowed(tmp_path: Path, tiers: str) -> None:
    rule = load_rule_file(write(tmp_path, "bounded.toml", edit(TIERS, tiers))).rule
    assert rule.inpatient is not None
    assert rule.inpatient.segments()[-1][1] is not None  # nothing is paid above it


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "max_days = 180",
            "max_days = true",
            "key `inpatient.allowance.max_days`: expected an integer, got the boolean true.",
        ),
        (
            TIERS,
            "tiers = [ { up_to = 10000, ratio = 0.5 }, { up_to = 5000, ratio = 0.6 } ]",
            "key `inpatient.tiers`: expected tiers in increasing order of `up_to`, but"
            " tiers.1.up_to (5000) is not above tiers.0.up_to (10000).",
        ),
        (
            "effective_to = 2018-12-31",
            "effective_to = 2017-12-31",
            "key `effective_to`: expected a date on or after `effective_from` (2018-01-01),"
            " got 2017-12-31.",
        ),
    ],
    ids=["boolean max_days", "bounded tiers out of order", "effective_to too early"],
)
def test_rules_check_refuses_a_bad_file_exit_2(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    write(tmp_path, "a-good.toml", version_file("2017", "2017-01-01", "2017-12-31"))
    bad = write(tmp_path, "b-bad.toml", edit(old, new))
    result = cli("rules", "check", tmp_path)
    assert result.exit_code == 2, result.output
    assert f"error: {bad}: {expected}" in result.output, result.output
    assert "Value error" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "text",
    [
        'scheme = "x"\nversion = \n',  # a key without a value
        'scheme = "x"\n[outpatient\nratio = 0.5\n',  # an unclosed table header
        'scheme = "x"\nscheme = "y"\n',  # a key given twice
        "effective_from = 2018-13-01\n",  # not a date
    ],
    ids=["no value", "unclosed table", "duplicate key", "bad date"],
)
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "broken.toml", text)
    with pytest.raises(RuleFileError, match="not valid TOML") as info:
        load_rule_file(path)
    assert str(path) in info.value.message
    assert "line" in info.value.message  # tomllib says where


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gbk.toml"
    path.write_bytes(GOOD.encode("gb18030"))
    with pytest.raises(RuleFileError, match="not UTF-8") as info:
        load_rule_file(path)
    assert str(path) in info.value.message


# -- a folder of versions ------------------------------------------------------------------


def version_file(label: str, start: str, end: str | None, scheme: str = "bj-inservice") -> str:
    text = edit('version = "2018"', f'version = "{label}"')
    text = text.replace('scheme = "bj-inservice"', f'scheme = "{scheme}"')
    text = text.replace("effective_from = 2018-01-01", f"effective_from = {start}")
    return text.replace("effective_to = 2018-12-31\n", f"effective_to = {end}\n" if end else "")


def test_folder_of_versions_in_order(tmp_path: Path) -> None:
    write(tmp_path, "b.toml", version_file("2019", "2019-01-01", None))
    write(tmp_path, "a.toml", version_file("2018", "2018-01-01", "2018-12-31"))
    write(tmp_path, "other.toml", version_file("2018", "2018-01-01", None, scheme="other"))
    write(tmp_path, "notes.txt", "not a rule file")
    rules = load_rules(tmp_path)
    assert [v.rule.key for v in rules.versions] == [
        "bj-inservice@2018",
        "bj-inservice@2019",
        "other@2018",
    ]
    assert rules.schemes == ("bj-inservice", "other")
    assert rules.in_force("bj-inservice", date(2018, 12, 31)).rule.version == "2018"  # type: ignore[union-attr]
    assert rules.in_force("bj-inservice", date(2019, 1, 1)).rule.version == "2019"  # type: ignore[union-attr]
    assert rules.in_force("bj-inservice", date(2017, 1, 1)) is None
    assert [m["file"] for m in rules.manifest()] == ["a.toml", "b.toml", "other.toml"]
    assert len(rules.fingerprint()) == 64


def test_fingerprint_changes_with_any_file(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", GOOD)
    before = load_rules(tmp_path).fingerprint()
    write(tmp_path, "a.toml", GOOD.replace("ratio = 0.5", "ratio = 0.55"))
    assert load_rules(tmp_path).fingerprint() != before


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("2018", "2018-01-01", "2018-12-31"), ("2019", "2018-12-31", None)),  # one shared day
        (("2018", "2018-01-01", None), ("2019", "2019-01-01", None)),  # open-ended first
        (("2018", "2018-01-01", "2020-12-31"), ("2019", "2019-06-01", "2019-06-30")),  # inside
        (("2018", "2018-01-01", "2018-12-31"), ("2019", "2018-01-01", "2018-12-31")),  # same span
    ],
    ids=["shared day", "open-ended", "inside", "same span"],
)
def test_overlapping_versions_name_both_files(tmp_path: Path, first: tuple, second: tuple) -> None:
    a = write(tmp_path, "bj-a.toml", version_file(*first))
    b = write(tmp_path, "bj-b.toml", version_file(*second))
    with pytest.raises(RuleFileError, match="overlap") as info:
        load_rules(tmp_path)
    assert str(a) in info.value.message and str(b) in info.value.message


def test_adjacent_versions_do_not_overlap(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", version_file("2018", "2018-01-01", "2018-06-30"))
    write(tmp_path, "b.toml", version_file("2018b", "2018-07-01", None))
    assert len(load_rules(tmp_path).versions) == 2


def test_versions_of_different_schemes_may_overlap(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", version_file("2018", "2018-01-01", None))
    write(tmp_path, "b.toml", version_file("2018", "2018-01-01", None, scheme="wh-hospital"))
    assert load_rules(tmp_path).schemes == ("bj-inservice", "wh-hospital")


def test_duplicate_version_labels_name_both_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", version_file("2018", "2018-01-01", "2018-12-31"))
    b = write(tmp_path, "b.toml", version_file("2018", "2019-01-01", None))
    with pytest.raises(RuleFileError, match="both are version '2018'") as info:
        load_rules(tmp_path)
    assert str(a) in info.value.message and str(b) in info.value.message


def test_duplicate_version_labels_apart_in_time(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", version_file("2018", "2018-01-01", "2018-12-31"))
    write(tmp_path, "b.toml", version_file("2019", "2019-01-01", "2019-12-31"))
    write(tmp_path, "c.toml", version_file("2018", "2020-01-01", None))
    with pytest.raises(RuleFileError, match="both are version '2018'"):
        load_rules(tmp_path)


def test_a_bad_file_in_a_folder_is_named(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", GOOD)
    bad = write(tmp_path, "z.toml", edit("ratio = 0.5", "ratio = 2"))
    with pytest.raises(RuleFileError) as info:
        load_rules(tmp_path)
    assert str(bad) in info.value.message and "outpatient.ratio" in info.value.message


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="does not exist"):
        load_rules(tmp_path / "nowhere")
    with pytest.raises(RuleFileError, match="no rule files"):
        load_rules(tmp_path)


def test_rule_version_validates_directly() -> None:
    """The models work without files too (the engine tests build them so)."""
    rule = RuleVersion.model_validate(
        {
            "scheme": "s",
            "version": "1",
            "effective_from": date(2024, 1, 1),
            "outpatient": {"ratio": 1},
        }
    )
    assert rule.key == "s@1"
    with pytest.raises(ValueError):
        RuleVersion.model_validate(
            {"scheme": "s", "version": "1", "effective_from": date(2024, 1, 1)}
        )
