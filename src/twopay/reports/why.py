"""`twopay why KEY`: every decision about a settlement or a person, with its
trace (spec section 8), read from the ledger.

KEY is tried as a settlement_id, then an ID number (any accepted form,
normalised as the identity stage does), then a member_id, then a name
(several people of that name: a list to choose from). The trace shows, across
all batches in order: the identity evidence, the eligibility checks, each
payout line with its rule version, deductible, ratio or tier segments, caps
and accumulators before and after, and each rejection's code, reason and the
values that decided it. ``explain`` returns plain data (``--json``);
``render`` draws it with rich.

ID numbers (and card and account numbers) are masked unless ``unmask``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import duckdb
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from twopay.errors import RuleFileError, UsageError
from twopay.identity.idnumber import id_normalise_sql, mask_id, mask_text, one_edit_sql
from twopay.identity.idnumber import normalise_id as normalise_id_number
from twopay.identity.names import name_norm_sql, normalise_name, same_name_pattern
from twopay.ledger.workspace import Workspace
from twopay.reports import layout
from twopay.reports.reasons import reason
from twopay.rules.loader import LoadedVersion, load_rules

# Fields that name things by their own identifiers, never an ID number.
_UNMASKED_FIELDS = frozenset(
    {
        "settlement_id",
        "payment_id",
        "member_id",
        "reverses",
        "candidate_member_id",
        "settlement_ids",
        "retry_of",
        "example_settlements",
        "member_ids",
        "rule_version",
        "version",
    }
)
# Fields that hold an ID number or account whole, as given: masked by
# position (an invalid ID need not look like one: 110105198O01011238).
_ID_FIELDS = frozenset(
    {"id_number", "person", "person_key", "id_given", "id_normalised", "candidate_id",
     "bank_account"}
)  # fmt: skip
_ID_SHAPE = re.compile(r"^(?:[0-9]{17}[0-9X]|[0-9]{15})$")


# -- keys ---------------------------------------------------------------------


def normalise_id(raw: str) -> tuple[str, str]:
    """(18-character form, 15-character legacy form) of an ID-number key,
    normalised exactly as the identity stage does (spec 3)."""
    norm = normalise_id_number(raw)
    legacy = norm[:6] + norm[8:17] if len(norm) == 18 and norm[6:8] == "19" else norm
    return norm, legacy


# A settlement's ID number as the identity stage normalises it.
SETTLEMENT_ID_SQL = id_normalise_sql("id_number")

# -- resolving the key ------------------------------------------------------------

# The settlement rows a trace covers, by kind of key. The rows of a person:
# their settlements by ID number, every row decided about them, rows held with
# one of their member_ids as candidate, and the reversals of all of these.
SUBJECT_SQL = {
    "settlement_id": """
        SELECT batch_id, row_key FROM settlements
        WHERE settlement_id = $key OR reverses = $key
           OR settlement_id IN (SELECT reverses FROM settlements WHERE settlement_id = $key)
    """,
    "person": f"""
        WITH mine AS (
            SELECT batch_id, row_key FROM settlements
            WHERE {SETTLEMENT_ID_SQL} = $id18 OR upper(id_number) IN ($id15, $raw)
            UNION
            SELECT row_batch_id, row_key FROM outcomes
            WHERE person_key = $id18
               OR candidate_member_id IN (
                   SELECT member_id FROM roster_records WHERE person_key = $id18)
        )
        SELECT batch_id, row_key FROM mine
        UNION
        SELECT r.batch_id, r.row_key FROM settlements r
        WHERE r.reverses IN (
            SELECT s.settlement_id FROM settlements s JOIN mine USING (batch_id, row_key))
    """,
}

# The people a key could mean (CTE `everyone`), each with a few settlements.
_CANDIDATES_SQL = f"""
SELECT e.person_key, e.member_ids, e.name, e.unit_codes,
    (SELECT list(DISTINCT s.settlement_id ORDER BY s.settlement_id)[1:3] FROM settlements s
     WHERE {id_normalise_sql("s.id_number")} = e.person_key) AS example_settlements
FROM everyone e ORDER BY e.person_key
"""

PEOPLE_BY_NAME_SQL = f"""
WITH named_roster AS (
    SELECT person_key, member_id, name, unit_code, batch_id, valid_from, record_key FROM roster_records
    WHERE regexp_full_match({name_norm_sql("name")}, $name)
),
people AS (
    SELECT person_key, list(DISTINCT member_id ORDER BY member_id) AS member_ids,
           arg_max(name, (batch_id, valid_from, record_key)) AS name,
           list(DISTINCT unit_code ORDER BY unit_code) AS unit_codes
    FROM named_roster GROUP BY person_key
),
unmatched AS (
    -- settlements under the name that no roster person of that name accounts
    -- for: an ID that matched nobody, or a roster person of another name
    -- (name_mismatch, a name typo held for review)
    SELECT {id_normalise_sql("s.id_number")} AS person_key, [] AS member_ids, any_value(s.name) AS name,
           [] AS unit_codes
    FROM settlements s
    WHERE regexp_full_match({name_norm_sql("s.name")}, $name) AND s.id_number IS NOT NULL
      AND {id_normalise_sql("s.id_number")} NOT IN (SELECT person_key FROM people)
      AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.row_batch_id = s.batch_id
                      AND o.row_key = s.row_key
                      AND o.person_key IN (SELECT person_key FROM people))
    GROUP BY ALL
),
everyone AS (SELECT * FROM people UNION ALL SELECT * FROM unmatched)
{_CANDIDATES_SQL}
"""

# A member_id that named different people (an ID number corrected in a later
# roster, a member_id re-used): each of them, to choose from, like a name.
PEOPLE_BY_MEMBER_SQL = f"""
WITH keys AS (
    SELECT DISTINCT person_key FROM roster_records WHERE member_id = $key
    UNION
    SELECT DISTINCT person_key FROM outcomes WHERE member_id = $key AND person_key IS NOT NULL
),
everyone AS (
    SELECT k.person_key,
           list(DISTINCT r.member_id ORDER BY r.member_id) FILTER (r.member_id IS NOT NULL)
               AS member_ids,
           arg_max(r.name, (r.batch_id, r.valid_from, r.record_key)) AS name,
           list(DISTINCT r.unit_code ORDER BY r.unit_code) FILTER (r.unit_code IS NOT NULL)
               AS unit_codes
    FROM keys k LEFT JOIN roster_records r USING (person_key)
    GROUP BY k.person_key
)
{_CANDIDATES_SQL}
"""

SETTLEMENTS_SQL = """
SELECT b.period, s.batch_id, s.row_key, s.source_file, s.line_number, s.settlement_id,
       s.id_number, s.name, s.visit_type, s.service_date, s.admission_date, s.hospital_code,
       s.total_cost, s.self_pay_1, s.self_pay_2, s.out_of_pocket, s.reverses
FROM settlements s JOIN subject USING (batch_id, row_key) JOIN batches b USING (batch_id)
ORDER BY s.batch_id, s.row_key
"""

OUTCOMES_SQL = """
SELECT b.period, o.batch_id, o.row_batch_id, o.row_key, o.carried, o.outcome, o.code,
       o.detail, o.person_key, o.member_id, o.unit_code, o.match, o.candidate_member_id,
       o.identity,
       coalesce(o.eligibility, (
           SELECT e.eligibility FROM v_eligibility e
           WHERE e.batch_id = o.batch_id AND e.row_batch_id = o.row_batch_id
             AND e.row_key = o.row_key)) AS eligibility
FROM outcomes o
JOIN subject ON subject.batch_id = o.row_batch_id AND subject.row_key = o.row_key
JOIN batches b ON b.batch_id = o.batch_id
ORDER BY o.batch_id, o.carried
"""

LINES_SQL = """
SELECT b.period, l.*, p.payment_id
FROM lines l
JOIN subject ON subject.batch_id = l.row_batch_id AND subject.row_key = l.row_key
JOIN batches b ON b.batch_id = l.batch_id
LEFT JOIN payments p ON p.batch_id = l.batch_id AND p.member_id = l.member_id
    AND p.retry_of IS NULL  -- a re-issue pays an earlier batch's lines, not these
ORDER BY l.batch_id, l.line_key
"""

MEMBERS_SQL = """
SELECT member_id, name, id_number, card_no, unit_code, unit_name, category, valid_from,
       valid_to, bank_account
FROM roster_records
WHERE person_key = $id18
  AND batch_id = (SELECT max(batch_id) FROM roster_records WHERE person_key = $id18)
ORDER BY valid_from
"""

# Where each accumulator stood after the person's last line (spec 4.1).
YEAR_TO_DATE_SQL = """
SELECT scheme, plan_year, visit_type,
       arg_max(rule_version, line_key) AS rule_version,
       arg_max(base_ytd_after, line_key) AS base_ytd,
       arg_max(paid_type_after, line_key) AS paid_type,
       count(*) FILTER (kind = 'normal') AS lines
FROM lines WHERE person_key = $id18
GROUP BY ALL ORDER BY plan_year, scheme, visit_type
"""
YEAR_TOTALS_SQL = """
SELECT scheme, plan_year, arg_max(paid_total_after, line_key) AS paid_total,
       arg_max(days_after, line_key) AS allowance_days, sum(payout) AS payout,
       -- the scheme cap is the one of the version of the year's latest line,
       -- whatever its visit type (a clawback carries its original's version)
       arg_max(rule_version, line_key) FILTER (kind = 'normal') AS rule_version
FROM lines WHERE person_key = $id18
GROUP BY ALL ORDER BY plan_year, scheme
"""

RECOVERIES_SQL = f"""
SELECT b.period, r.member_id, r.amount, r.settlement_ids, r.kind
FROM recoveries r JOIN batches b USING (batch_id)
WHERE r.person_key = $id18
   -- a debt under an ID number the unit has since corrected (one edit) follows
   -- its member_id, and is offset under the corrected ID: both sides belong to
   -- the person, whichever of the two IDs is asked about
   OR (r.member_id IN (SELECT member_id FROM roster_records WHERE person_key = $id18)
       AND {one_edit_sql("r.person_key", "$id18")})
ORDER BY r.batch_id, r.kind, r.member_id
"""


# The person's payments (re-issues too) and the bank's latest answer to each
# (spec 8, reconcile): a failed payment, its re-issue, one paid after all.
PAYMENTS_SQL = """
WITH mine AS (SELECT * FROM payments WHERE person_key = $id18),
answer AS (
    -- the bank's latest answer to each: result and reason of one row
    SELECT payment_id, result AS bank_result, reason AS bank_reason
    FROM bank_returns
    WHERE payment_id IN (SELECT payment_id FROM mine) AND line_number IS NOT NULL
      AND result NOT IN ('unreadable', 'duplicate_row')
    QUALIFY row_number() OVER (
        PARTITION BY payment_id ORDER BY return_id DESC, line_number DESC) = 1
)
SELECT b.period, p.payment_id, p.member_id, p.amount, p.retry_of, a.bank_result, a.bank_reason
FROM mine p JOIN batches b USING (batch_id) LEFT JOIN answer a USING (payment_id)
ORDER BY p.batch_id, p.payment_id
"""


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, object]
) -> list[dict[str, Any]]:
    wanted = {k: v for k, v in params.items() if f"${k}" in sql}
    cur = con.execute(sql, wanted)
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


@dataclass
class Subject:
    matched_by: str  # settlement_id | id_number | member_id | name
    sql: str
    params: dict[str, object]
    person: str | None = None  # the normalised ID number of a person


def _person_params(id18: str, id15: str, raw: str) -> dict[str, object]:
    return {"id18": id18, "id15": id15, "raw": raw}


def resolve(con: duckdb.DuckDBPyConnection, key: str) -> Subject | tuple[str, list[dict[str, Any]]]:
    """The subject a key names, or the people sharing it (a name, or a
    member_id that named several people) to choose from, with how it
    matched them."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", key)).strip()
    if not text:
        raise UsageError("give a settlement_id, ID number, member_id or name to explain.")
    if _rows(con, "SELECT 1 FROM settlements WHERE settlement_id = $key LIMIT 1", {"key": text}):
        return Subject("settlement_id", SUBJECT_SQL["settlement_id"], {"key": text})

    compact = text.replace(" ", "").upper()
    if _ID_SHAPE.match(compact):
        id18, id15 = normalise_id(compact)
        params = _person_params(id18, id15, compact)
        known = _rows(
            con,
            f"SELECT 1 FROM roster_records WHERE person_key = $id18 "
            f"UNION ALL SELECT 1 FROM ({SUBJECT_SQL['person']}) LIMIT 1",
            params,
        )
        if known:
            return Subject("id_number", SUBJECT_SQL["person"], params, person=id18)

    people = _rows(
        con,
        "SELECT DISTINCT person_key FROM roster_records WHERE member_id = $key "
        "UNION SELECT DISTINCT person_key FROM outcomes WHERE member_id = $key "
        "AND person_key IS NOT NULL",
        {"key": text},
    )
    if len(people) == 1:
        pk = str(people[0]["person_key"])
        return Subject("member_id", SUBJECT_SQL["person"], _person_params(pk, pk, pk), person=pk)
    if people:
        # one member_id, several people: never "nothing matches"
        return "member_id", _rows(con, PEOPLE_BY_MEMBER_SQL, {"key": text})

    # 張偉, 张伟 and 張伟 find one another, as identity matches them (spec 3)
    named = _rows(con, PEOPLE_BY_NAME_SQL, {"name": same_name_pattern(normalise_name(text))})
    if len(named) == 1:
        pk = str(named[0]["person_key"])
        id18, id15 = (pk, pk) if not _ID_SHAPE.match(pk) else normalise_id(pk)
        return Subject("name", SUBJECT_SQL["person"], _person_params(id18, id15, pk), person=id18)
    if named:
        return "name", named
    # an ID number as a settlement gave it, however malformed (17 digits, a
    # letter O for a zero): the rows rejected invalid_id_number under it
    given = normalise_id_number(text)
    if given and _rows(
        con,
        f"SELECT 1 FROM settlements WHERE {SETTLEMENT_ID_SQL} = $given LIMIT 1",
        {"given": given},
    ):
        return Subject(
            "id_number", SUBJECT_SQL["person"], _person_params(given, given, given), person=given
        )
    raise UsageError(
        f"nothing in the ledger matches {mask_text(text)!r}: it is not a settlement_id, "
        "ID number, member_id or name of any batch."
    )


# -- masking and formatting ----------------------------------------------------


def mask_tree(value: Any, field: str | None = None) -> Any:
    """Mask every ID- or account-like digit run in every string of a trace,
    except fields that hold our own identifiers."""
    if isinstance(value, dict):
        return {k: mask_tree(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_tree(v, field) for v in value]
    if isinstance(value, str) and field in _ID_FIELDS:
        return mask_id(value)
    if isinstance(value, str) and field not in _UNMASKED_FIELDS:
        return mask_text(value)
    return value


def _plain(value: Any) -> Any:
    """JSON-ready values: money as '0.00' strings, dates as ISO text."""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _d(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


# -- the rules behind a line -----------------------------------------------------


class RuleBook:
    """The workspace's rule files, and what each batch recorded about them,
    so a line's parameters are shown only when the file is unchanged."""

    def __init__(self, ws: Workspace, con: duckdb.DuckDBPyConnection) -> None:
        try:
            versions = load_rules(ws.rules_dir).versions
        except RuleFileError:
            versions = ()
        self.current = {(v.rule.scheme, v.rule.version): v for v in versions}
        self.recorded: dict[tuple[int, str, str], str] = {}
        for batch_id, manifest in con.execute("SELECT batch_id, rules FROM batches").fetchall():
            for r in json.loads(manifest):
                self.recorded[(int(batch_id), r["scheme"], r["version"])] = r["sha256"]

    def version(self, batch_id: int, scheme: str, version: str) -> LoadedVersion | None:
        loaded = self.current.get((scheme, version))
        if loaded is None:
            return None
        recorded = self.recorded.get((batch_id, scheme, version))
        return loaded if recorded in (None, loaded.sha256) else None


def _segments(line: Mapping[str, Any], loaded: LoadedVersion) -> list[dict[str, Any]]:
    """Which parts of the ratio function the line's base fell in (spec 4.1)."""
    visit = loaded.rule.visit(line["visit_type"])
    if visit is None or line["kind"] != "normal":
        return []
    d = visit.deductible
    if visit.deductible_scope == "episode":
        x0, x1 = Decimal(0), max(Decimal(0), _d(line["base_amount"]) - d)
    else:
        x0 = max(Decimal(0), _d(line["base_ytd_before"]) - d)
        x1 = max(Decimal(0), _d(line["base_ytd_after"]) - d)
    out = []
    for lo, hi, ratio in visit.segments():
        part = min(x1, hi if hi is not None else x1) - max(x0, lo)
        if part > 0:
            out.append(
                {
                    "from": lo,
                    "to": hi,
                    "ratio": str(ratio.normalize()),
                    "amount": part,
                    # exact: the line's computed amount rounds the segments'
                    # sum once (spec 4.1), so rounded segments need not add up
                    "pays": _exact(part * ratio),
                }
            )
    return out


def _exact(v: Decimal) -> str:
    """An amount as it is: two places when that is exact, else every digit."""
    cents = v.quantize(Decimal("0.01"), ROUND_HALF_UP)
    return f"{cents:.2f}" if cents == v else format(v.normalize(), "f")


def line_trace(line: Mapping[str, Any], rules: RuleBook) -> dict[str, Any]:
    loaded = rules.version(int(line["batch_id"]), line["scheme"], line["rule_version"])
    visit = loaded.rule.visit(line["visit_type"]) if loaded else None
    out: dict[str, Any] = {
        "period": line["period"],
        "scheme": line["scheme"],
        "rule_version": line["rule_version"],
        "kind": line["kind"],
        "status": line["status"],
        "visit_type": line["visit_type"],
        "service_date": line["service_date"],
        "plan_year": line["plan_year"],
        "match": line["match"],
        "base_amount": line["base_amount"],
        "base_ytd_before": line["base_ytd_before"],
        "base_ytd_after": line["base_ytd_after"],
        "deductible_applied": line["deductible_applied"],
        "computed": line["computed"],
        "ratio_part": line["ratio_part"],
        "paid_type_before": line["paid_type_before"],
        "paid_type_after": line["paid_type_after"],
        "paid_total_before": line["paid_total_before"],
        "paid_total_after": line["paid_total_after"],
        "allowance_days": line["allowance_days"],
        "days_before": line["days_before"],
        "days_after": line["days_after"],
        "allowance": line["allowance"],
        "payout": line["payout"],
        "note": line["note"] or None,
        "payment_id": line["payment_id"],
        "rule": None,
    }
    if line["kind"] == "clawback":
        out["reverses_line"] = line["reverses_line"]
    if loaded is None or visit is None:
        # the rule file changed or is gone since the batch: the ledger figures stand
        return out
    d = visit.deductible
    rule: dict[str, Any] = {
        "deductible": d,
        "deductible_scope": visit.deductible_scope,
        "ratio": str(visit.ratio.normalize()) if visit.ratio is not None else None,
        "per_episode_cap": visit.per_episode_cap,
        "type_annual_cap": visit.annual_cap,
        "scheme_annual_cap": loaded.rule.annual_cap,
        "file": loaded.path.name,
    }
    if visit.deductible_scope == "year":
        rule["deductible_left_before"] = max(Decimal(0), d - _d(line["base_ytd_before"]))
        rule["deductible_left_after"] = max(Decimal(0), d - _d(line["base_ytd_after"]))
    if visit.allowance is not None:
        rule["allowance_per_day"] = visit.allowance.per_day
        rule["allowance_max_days"] = visit.allowance.max_days
    rule["segments"] = _segments(line, loaded)
    out["rule"] = rule
    return out


def _eligibility(raw: str | None, service_date: object, rules: RuleBook, batch_id: int) -> Any:
    data = _json_or_text(raw)
    if not isinstance(data, dict):
        return data
    valid_from, valid_to = data.get("valid_from"), data.get("valid_to")
    day = service_date.isoformat() if isinstance(service_date, date) else str(service_date)
    if valid_from:
        data["membership_valid_on_service_date"] = valid_from <= day and (
            not valid_to or day <= valid_to
        )
    dues = data.get("dues_paid_through")
    if dues:
        data["dues_paid_on_service_date"] = dues >= day
    stages = {1: "no_coverage", 2: "waiting_period", 3: "no_rule_version", 4: "passed"}
    for s in data.get("schemes") or []:
        s["result"] = stages.get(int(s.get("stage") or 0), "unknown")
        # the file as the batch read it: a file changed since then would show
        # parameters (waiting_days, cover_starts) the decision was not made with
        loaded = rules.version(batch_id, str(s.get("scheme")), str(s.get("version")))
        if loaded is not None:
            s["waiting_days"] = loaded.rule.waiting_days
            s["categories"] = list(loaded.rule.categories)
            s["enrollment"] = loaded.rule.enrollment
            start = data.get("run_start")
            if start and loaded.rule.enrollment == "automatic":
                waiting = timedelta(days=loaded.rule.waiting_days)
                s["cover_starts"] = (date.fromisoformat(start) + waiting).isoformat()
    return data


# -- the trace -----------------------------------------------------------------


def explain(ws: Workspace, key: str, *, lang: str, unmask: bool = False) -> dict[str, Any]:
    """Everything the ledger knows about KEY, as plain data."""
    con = ws.connect(read_only=True)
    try:
        subject = resolve(con, key)
        if isinstance(subject, tuple):
            matched_by, people = subject
            out: dict[str, Any] = {
                "key": key,
                "matched_by": matched_by,
                "several": True,
                "candidates": [
                    {
                        "id_number": p["person_key"],
                        "member_ids": list(p["member_ids"] or []),
                        "name": p["name"],
                        "unit_codes": list(p["unit_codes"] or []),
                        "example_settlements": list(p["example_settlements"] or []),
                    }
                    for p in people
                ],
            }
            return out if unmask else mask_tree(out)
        out = _trace(con, ws, subject, key, lang)
    finally:
        con.close()
    out = _plain(out)
    return out if unmask else mask_tree(out)


def _trace(
    con: duckdb.DuckDBPyConnection, ws: Workspace, subject: Subject, key: str, lang: str
) -> dict[str, Any]:
    con.execute(f"CREATE OR REPLACE TEMP TABLE subject AS {subject.sql}", subject.params)
    rules = RuleBook(ws, con)
    settlements = _rows(con, SETTLEMENTS_SQL, {})
    outcomes = _rows(con, OUTCOMES_SQL, {})
    lines = _rows(con, LINES_SQL, {})
    by_row: dict[tuple[int, int], dict[str, Any]] = {}
    for s in settlements:
        entry = {
            k: s[k]
            for k in (
                "settlement_id",
                "period",
                "source_file",
                "line_number",
                "id_number",
                "name",
                "visit_type",
                "service_date",
                "admission_date",
                "hospital_code",
                "total_cost",
                "self_pay_1",
                "self_pay_2",
                "out_of_pocket",
                "reverses",
            )
        }
        entry["decisions"] = []
        entry["lines"] = []
        by_row[(s["batch_id"], s["row_key"])] = entry
    for o in outcomes:
        decided = by_row.get((o["row_batch_id"], o["row_key"]))
        if decided is None:
            continue
        decided["decisions"].append(
            {
                "period": o["period"],
                "carried": o["carried"],
                "outcome": o["outcome"],
                "code": o["code"],
                "reason": reason(o["code"], lang) if o["code"] else None,
                "detail": o["detail"],
                "member_id": o["member_id"],
                "unit_code": o["unit_code"],
                "match": o["match"],
                "candidate_member_id": o["candidate_member_id"],
                "identity": _json_or_text(o["identity"]),
                "eligibility": _eligibility(
                    o["eligibility"], decided["service_date"], rules, int(o["batch_id"])
                ),
            }
        )
    for line in lines:
        owner = by_row.get((line["row_batch_id"], line["row_key"]))
        if owner is not None:
            owner["lines"].append(line_trace(line, rules))

    person = subject.person
    if person is None:
        found = {o["person_key"] for o in outcomes if o["person_key"]}
        person = found.pop() if len(found) == 1 else None
    out: dict[str, Any] = {
        "key": key,
        "matched_by": subject.matched_by,
        "several": False,
        "person": person,
        "members": [],
        "year_to_date": [],
        "recoveries": [],
        "payments": [],
        "settlements": list(by_row.values()),
    }
    if person is not None:
        p = {"id18": person}
        out["members"] = _rows(con, MEMBERS_SQL, p)
        out["year_to_date"] = _year_to_date(con, p, rules)
        out["recoveries"] = _rows(con, RECOVERIES_SQL, p)
        out["payments"] = _rows(con, PAYMENTS_SQL, p)
    return out


def _year_to_date(
    con: duckdb.DuckDBPyConnection, params: Mapping[str, object], rules: RuleBook
) -> list[dict[str, Any]]:
    """Per scheme and plan year: where the accumulators stand, and what is left
    under each cap of the version of the last line."""
    totals = {(t["scheme"], t["plan_year"]): t for t in _rows(con, YEAR_TOTALS_SQL, params)}
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for row in _rows(con, YEAR_TO_DATE_SQL, params):
        k = (row["scheme"], row["plan_year"])
        total = totals.get(k, {})
        year = out.setdefault(
            k,
            {
                "scheme": row["scheme"],
                "plan_year": row["plan_year"],
                "paid_total": total.get("paid_total"),
                "allowance_days": total.get("allowance_days"),
                "payout": total.get("payout"),
                "by_visit_type": [],
            },
        )
        loaded = rules.current.get((row["scheme"], row["rule_version"]))
        visit = loaded.rule.visit(row["visit_type"]) if loaded else None
        entry = {
            "visit_type": row["visit_type"],
            "lines": row["lines"],
            "base_ytd": row["base_ytd"],
            "paid": row["paid_type"],
        }
        if visit is not None and visit.annual_cap is not None:
            entry["cap"] = visit.annual_cap
            entry["cap_left"] = max(Decimal(0), visit.annual_cap - _d(row["paid_type"]))
        if visit is not None and visit.deductible_scope == "year":
            entry["deductible_left"] = max(Decimal(0), visit.deductible - _d(row["base_ytd"]))
        year["by_visit_type"].append(entry)
    for k, year in out.items():
        # the scheme cap of the version of the year's latest line
        version = totals.get(k, {}).get("rule_version")
        latest = rules.current.get((k[0], version)) if version is not None else None
        if latest is not None and latest.rule.annual_cap is not None:
            year["scheme_cap"] = latest.rule.annual_cap
            year["scheme_cap_left"] = max(
                Decimal(0), latest.rule.annual_cap - _d(year["paid_total"])
            )
    return list(out.values())


# -- rich rendering -----------------------------------------------------------------

LABELS: dict[str, tuple[str, str]] = {
    "matched_by": ("匹配方式", "matched by"),
    "person": ("本人", "person"),
    "members": ("会员记录", "membership records"),
    "year_to_date": ("本年累计", "year to date"),
    "recoveries": ("待追回/抵扣", "recoveries and offsets"),
    "payments": ("付款及银行回盘", "payments and bank answers"),
    "bank_result": ("回盘结果", "bank result"),
    "bank_reason": ("回盘原因", "bank reason"),
    "decisions": ("处理结果", "decisions"),
    "identity": ("身份核对", "identity"),
    "eligibility": ("资格核对", "eligibility"),
    "lines": ("互助金计算", "payout lines"),
    "several": (
        "有多人符合（同名，或同一会员编号），请用身份证号或结算流水号再查：",
        "several people match (a shared name or member_id); ask again with an ID number or "
        "settlement_id:",
    ),
    "no_lines": ("无互助金明细", "no payout lines"),
    "rule_changed": (
        "规则文件已变更，参数不再显示（账本中的数字不变）",
        "the rule file changed since; its parameters are not shown (the ledger's figures stand)",
    ),
    "deductible": ("起付线", "deductible"),
    "deductible_left_before": ("剩余起付线（前）", "deductible left before"),
    "deductible_left_after": ("剩余起付线（后）", "deductible left after"),
    "segments": ("比例分段", "ratio segments"),
    "per_episode_cap": ("单次封顶", "per-episode cap"),
    "type_annual_cap": ("类别年度封顶", "annual cap (visit type)"),
    "scheme_annual_cap": ("计划年度封顶", "annual cap (scheme)"),
    "base_ytd_before": ("累计基数（前）", "base YTD before"),
    "base_ytd_after": ("累计基数（后）", "base YTD after"),
    "ratio_part": ("比例部分", "ratio part"),
    "paid_type_before": ("类别已付（前）", "paid (visit type) before"),
    "paid_type_after": ("类别已付（后）", "paid (visit type) after"),
    "paid_total_before": ("计划已付（前）", "paid (scheme) before"),
    "paid_total_after": ("计划已付（后）", "paid (scheme) after"),
    "allowance_days": ("津贴天数", "allowance days"),
    "days_before": ("累计天数（前）", "days YTD before"),
    "days_after": ("累计天数（后）", "days YTD after"),
    "allowance_per_day": ("每日津贴", "allowance per day"),
    "allowance_max_days": ("年度最多天数", "max days per year"),
    "plan_year": ("年度", "plan year"),
    "kind": ("类型", "kind"),
    "paid_total": ("计划已付", "paid (scheme)"),
    "scheme_cap_left": ("计划封顶剩余", "scheme cap left"),
    "cap_left": ("封顶剩余", "cap left"),
    "deductible_left": ("剩余起付线", "deductible left"),
    "base_ytd": ("累计基数", "base YTD"),
    "paid": ("已付", "paid"),
    "below_deductible": ("未超过起付线", "below the deductible"),
    "cap_reached": ("已达封顶线", "a cap was reached"),
    "no_admission_date": ("缺入院日期，无住院津贴", "no admission date: no allowance"),
    "result": ("结果", "result"),
    "passed": ("通过", "passed"),
    "valid": ("有效期", "valid"),
    "membership_valid_on_service_date": ("就诊日会籍有效", "membership valid on service date"),
    "dues_paid_through": ("单位互助金缴至", "unit dues paid through"),
    "dues_paid_on_service_date": ("就诊日单位已缴费", "dues paid on service date"),
    "run_start": ("连续会籍起始", "unbroken membership since"),
    "cover_starts": ("保障起始（等待期后）", "cover starts (after waiting)"),
    "waiting_days": ("等待期天数", "waiting days"),
    "category": ("人员类别", "category"),
    # the identity stage's evidence (identity/match.py)
    "id_given": ("证件号（原样）", "ID as given"),
    "id_normalised": ("证件号（规范化）", "ID normalised"),
    "id_problem": ("证件号问题", "ID problem"),
    "name_given": ("结算单姓名", "name given"),
    "roster_name": ("名册姓名", "roster name"),
    "roster_member": ("名册会员", "roster member"),
    "name_level": ("姓名比对", "name comparison"),
    "candidates": ("一位之差的候选人数", "candidates one digit away"),
    "candidate_members": ("候选会员", "candidate members"),
    "valid_from": ("生效日期", "valid from"),
    "valid_to": ("失效日期", "valid to"),
    "reverses": ("冲销的原结算", "reverses"),
    # values shown in words
    "adjudicated": ("已审核", "adjudicated"),
    "rejected": ("拒付", "rejected"),
    "held": ("待复核", "held for review"),
    "quarantined": ("无法读取", "quarantined"),
    "zero": ("零支付", "zero"),
    "clawback": ("冲销", "clawback"),
    "normal": ("正常", "normal"),
    "outpatient": ("门诊", "outpatient"),
    "inpatient": ("住院", "inpatient"),
    "in_service": ("在职", "in service"),
    "retired": ("退休", "retired"),
    "version": ("版本", "version"),
    "line_count": ("明细行数", "lines"),
    "carried": ("复核后在本批处理", "decided in this batch after review"),
    "withdrawn": ("被冲正撤回复核", "withdrawn from review by its reversal"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
}


def label(key: str, lang: str) -> str:
    if key in LABELS:
        zh, en = LABELS[key]
        return zh if lang == "zh" else en
    if key in layout.COLUMNS:
        return layout.header(key, lang)
    return key.replace("_", " ")


def _fmt(value: Any, lang: str) -> Text:
    """A cell as plain Text: input values are never read as rich markup."""
    if value is None or value == "":
        return Text("—", style="dim")
    if isinstance(value, bool):
        return Text(label("yes" if value else "no", lang))
    if isinstance(value, list | dict):
        return Text(json.dumps(value, ensure_ascii=False))
    return Text(str(value))


def _kv(rows: list[tuple[str, Any]], lang: str) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    for k, v in rows:
        table.add_row(label(k, lang), _fmt(v, lang))
    return table


def _note(note: str | None, lang: str) -> str:
    if not note:
        return "—"
    return "; ".join(label(n, lang) for n in note.split(";"))


def _lines_table(lines: list[dict[str, Any]], lang: str) -> Table:
    """Fields down, one column per line: a line's trace reads top to bottom."""
    table = Table(show_header=True, header_style="bold")
    table.add_column("")
    for ln in lines:
        table.add_column(
            Text(f"{ln['scheme']} {ln['rule_version']}\n{ln['period']} {label(ln['kind'], lang)}")
        )
    rule_of = [ln.get("rule") or {} for ln in lines]

    def row(name: str, values: list[Any]) -> None:
        if any(v not in (None, "", []) for v in values):
            table.add_row(label(name, lang), *[_fmt(v, lang) for v in values])

    row("status", [label(ln["status"], lang) for ln in lines])
    # the accumulators below are this year's (a clawback's is its original's)
    row("plan_year", [ln["plan_year"] for ln in lines])
    row("base_amount", [ln["base_amount"] for ln in lines])
    row("deductible", [r.get("deductible") for r in rule_of])
    row("deductible_left_before", [r.get("deductible_left_before") for r in rule_of])
    row("deductible_applied", [ln["deductible_applied"] for ln in lines])
    row("deductible_left_after", [r.get("deductible_left_after") for r in rule_of])
    row("base_ytd_before", [ln["base_ytd_before"] for ln in lines])
    row("base_ytd_after", [ln["base_ytd_after"] for ln in lines])
    row(
        "segments",
        [
            "\n".join(
                f"{s['from']}–{s['to'] if s['to'] is not None else '∞'} × {s['ratio']}: "
                f"{s['amount']} → {s['pays']}"
                for s in r.get("segments", [])
            )
            or None
            for r in rule_of
        ],
    )
    row("computed", [ln["computed"] for ln in lines])
    row("per_episode_cap", [r.get("per_episode_cap") for r in rule_of])
    row("type_annual_cap", [r.get("type_annual_cap") for r in rule_of])
    row("paid_type_before", [ln["paid_type_before"] for ln in lines])
    row("paid_type_after", [ln["paid_type_after"] for ln in lines])
    row("scheme_annual_cap", [r.get("scheme_annual_cap") for r in rule_of])
    row("paid_total_before", [ln["paid_total_before"] for ln in lines])
    row("paid_total_after", [ln["paid_total_after"] for ln in lines])
    row("ratio_part", [ln["ratio_part"] for ln in lines])
    row("allowance_per_day", [r.get("allowance_per_day") for r in rule_of])
    row("allowance_max_days", [r.get("allowance_max_days") for r in rule_of])
    row("days_before", [ln["days_before"] for ln in lines])
    row("allowance_days", [ln["allowance_days"] for ln in lines])
    row("days_after", [ln["days_after"] for ln in lines])
    row("allowance", [ln["allowance"] for ln in lines])
    row("payout", [ln["payout"] for ln in lines])
    row("note", [_note(ln["note"], lang) if ln["note"] else None for ln in lines])
    row("match", [ln["match"] for ln in lines])
    row("payment_id", [ln["payment_id"] for ln in lines])
    if any(not ln.get("rule") for ln in lines):
        table.caption = Text(label("rule_changed", lang))
    return table


def _decision(d: dict[str, Any], lang: str) -> RenderableType:
    head = Text()
    head.append(f"{d['period']}  ", style="dim")
    style = {"adjudicated": "green", "held": "yellow"}.get(d["outcome"], "red")
    head.append(label(d["outcome"], lang), style=f"bold {style}")
    if d["code"]:
        head.append(f"  {d['code']}", style="bold")
    if d["reason"] and d["reason"] != d["code"]:
        head.append(f"  {d['reason']}")
    if d["carried"]:
        # a held row leaves review by a reviewer's decision or by its reversal
        withdrawn = d["code"] == "reversed"
        head.append(f"  ({label('withdrawn' if withdrawn else 'carried', lang)})", style="italic")
    parts: list[RenderableType] = [head]
    if d["detail"]:
        parts.append(Text(f"  {d['detail']}", style="italic"))
    if isinstance(d["identity"], dict) and d["identity"]:
        parts.append(Text(f"  {label('identity', lang)}", style="bold"))
        parts.append(_kv(list(d["identity"].items()), lang))
    elif d["identity"]:
        parts.append(Text(f"  {label('identity', lang)}: {_fmt(d['identity'], lang)}"))
    elig = d["eligibility"]
    if isinstance(elig, dict):
        parts.append(Text(f"  {label('eligibility', lang)}", style="bold"))
        parts.append(
            _kv(
                [
                    ("member_id", elig.get("member_id")),
                    ("unit_code", elig.get("unit_code")),
                    ("category", label(str(elig.get("category")), lang)),
                    ("valid", f"{elig.get('valid_from')} – {elig.get('valid_to') or '…'}"),
                    (
                        "membership_valid_on_service_date",
                        elig.get("membership_valid_on_service_date"),
                    ),
                    ("run_start", elig.get("run_start")),
                    ("dues_paid_through", elig.get("dues_paid_through")),
                    ("dues_paid_on_service_date", elig.get("dues_paid_on_service_date")),
                ],
                lang,
            )
        )
        schemes = Table(show_header=True, header_style="bold", box=None)
        for col in ("scheme", "version", "result", "waiting_days", "cover_starts", "detail"):
            schemes.add_column(label(col, lang))
        for s in elig.get("schemes") or []:
            schemes.add_row(
                _fmt(s.get("scheme"), lang),
                _fmt(s.get("version"), lang),
                Text(label(s.get("result", ""), lang)),
                _fmt(s.get("waiting_days"), lang),
                _fmt(s.get("cover_starts"), lang),
                _fmt(s.get("why_not"), lang),
            )
        parts.append(schemes)
    return Group(*parts)


def render(console: Console, trace: Mapping[str, Any], lang: str) -> None:
    """Draw a trace from ``explain`` on a terminal."""
    if trace.get("several"):
        console.print(label("several", lang))
        table = Table(show_header=True, header_style="bold")
        for col in ("id_number", "member_id", "name", "unit_code", "settlement_id"):
            table.add_column(label(col, lang))
        for c in trace["candidates"]:
            table.add_row(
                _fmt(c["id_number"], lang),
                _fmt(", ".join(c["member_ids"]), lang),
                _fmt(c["name"], lang),
                _fmt(", ".join(c["unit_codes"]), lang),
                _fmt(", ".join(c["example_settlements"]), lang),
            )
        console.print(table, soft_wrap=False)
        return
    console.print(
        Text.assemble(
            ("twopay why ", "bold"),
            (str(trace["key"]), "bold cyan"),
            f"  ({label('matched_by', lang)}: {trace['matched_by']})",
        )
    )
    if trace.get("person"):
        console.print(Text(f"{label('person', lang)}: {trace['person']}"))
    if trace.get("members"):
        table = Table(title=label("members", lang), title_justify="left", header_style="bold")
        cols: tuple[str, ...] = (
            "member_id",
            "name",
            "id_number",
            "card_no",
            "unit_code",
            "category",
            "valid_from",
            "valid_to",
        )
        for col in cols:
            table.add_column(label(col, lang), overflow="fold")
        for m in trace["members"]:
            m = {**m, "category": label(str(m.get("category")), lang)}
            table.add_row(*[_fmt(m.get(c), lang) for c in cols])
        console.print(table, soft_wrap=False)
    if trace.get("year_to_date"):
        table = Table(title=label("year_to_date", lang), title_justify="left", header_style="bold")
        cols = (
            "plan_year",
            "scheme",
            "visit_type",
            "lines",
            "base_ytd",
            "deductible_left",
            "paid",
            "cap_left",
            "paid_total",
            "scheme_cap_left",
            "allowance_days",
        )
        for col in cols:
            table.add_column(label("line_count" if col == "lines" else col, lang), overflow="fold")
        for y in trace["year_to_date"]:
            for v in y["by_visit_type"]:
                v = {**v, "visit_type": label(v["visit_type"], lang)}
                table.add_row(*[_fmt(v.get(c, y.get(c)), lang) for c in cols])
        console.print(table, soft_wrap=False)
    for s in trace["settlements"]:
        facts = _kv(
            [
                ("source_file", f"{s['source_file']}:{s['line_number']}"),
                ("id_number", s["id_number"]),
                ("name", s["name"]),
                ("visit_type", label(s["visit_type"], lang) if s["visit_type"] else None),
                ("admission_date", s["admission_date"]),
                ("service_date", s["service_date"]),
                ("total_cost", s["total_cost"]),
                ("self_pay_1", s["self_pay_1"]),
                ("reverses", s["reverses"]),
            ],
            lang,
        )
        body: list[RenderableType] = [facts, Text(label("decisions", lang), style="bold")]
        body += [_decision(d, lang) for d in s["decisions"]]
        if s["lines"]:
            body.append(Text(label("lines", lang), style="bold"))
            body.append(_lines_table(s["lines"], lang))
        console.print(
            Panel(
                Group(*body),
                title=Text.assemble((str(s["settlement_id"]), "bold"), f" · {s['period']}"),
                title_align="left",
            ),
            soft_wrap=False,
        )
    if trace.get("payments"):
        table = Table(title=label("payments", lang), title_justify="left", header_style="bold")
        cols = ("period", "payment_id", "member_id", "amount", "retry_of", "bank_result",
                "bank_reason")  # fmt: skip
        for col in cols:
            table.add_column(label(col, lang), overflow="fold")
        for r in trace["payments"]:
            table.add_row(*[_fmt(r.get(c), lang) for c in cols])
        console.print(table, soft_wrap=False)
    if trace.get("recoveries"):
        table = Table(title=label("recoveries", lang), title_justify="left", header_style="bold")
        for col in ("period", "member_id", "kind", "amount", "settlement_ids"):
            table.add_column(label(col, lang))
        for r in trace["recoveries"]:
            table.add_row(
                *[
                    _fmt(r.get(c), lang)
                    for c in ("period", "member_id", "kind", "amount", "settlement_ids")
                ]
            )
        console.print(table, soft_wrap=False)
