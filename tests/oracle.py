"""The sequential reference definition of spec section 4.1, for tests.

Written straight from the spec text, one line at a time, with Decimal, so that
it is obviously right; the SQL engine (twopay.rules.engine) must agree with it
to the fen. Same contract as the engine:

* ``lines``: dicts with the columns of ``adj_lines`` (line_key, person_key,
  scheme, plan_year, visit_type, service_date, settlement_id, admission_date,
  total_cost, self_pay_1, self_pay_2, out_of_pocket, kind, orig_rule_version,
  orig_base_amount, orig_ratio_part, orig_allowance, orig_allowance_days);
* ``opening``: dicts with the columns of ``adj_opening``: the accumulators of
  earlier batches (no row for a group means all zero);
* the answer: ``{line_key: row}`` with the columns of ``adj_result``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from twopay.rules.loader import RuleSet
from twopay.rules.models import RuleVersion, VisitRule

ZERO = Decimal(0)
CENT = Decimal("0.01")

# The order of notes when several apply (spec 4.1 step 4).
NOTE_ORDER = ("below_deductible", "cap_reached", "no_admission_date")


def money(x: Decimal) -> Decimal:
    """Round half-up to 0.01 yuan."""
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def dec(x: object) -> Decimal:
    """An amount from an input row; a missing one counts as zero."""
    return ZERO if x is None else Decimal(str(x))


@dataclass
class Accumulators:
    """The year-to-date state of one (person, scheme, plan year), spec 4.1."""

    base_ytd: dict[str, Decimal] = field(
        default_factory=lambda: {"outpatient": ZERO, "inpatient": ZERO}
    )
    paid_ytd: dict[str, Decimal] = field(
        default_factory=lambda: {"outpatient": ZERO, "inpatient": ZERO}
    )
    paid_ytd_total: Decimal = ZERO
    allowance_days_ytd: int = 0


def ratio_function(visit: VisitRule, x: Decimal) -> Decimal:
    """F(x): r * x for a single ratio; for tiers, the integral of the tier ratio
    from 0 to x, where x is the amount above the deductible."""
    if visit.ratio is not None:
        return visit.ratio * x
    total = ZERO
    lower = ZERO
    for tier in visit.tiers or []:
        upper = tier.up_to
        if upper is None:
            total += tier.ratio * max(ZERO, x - lower)
            break
        total += tier.ratio * max(ZERO, min(x, upper) - lower)
        lower = upper
    return total  # beyond a bounded last tier nothing more is paid


def base_of(rule: RuleVersion, line: dict) -> Decimal:
    """b: the scheme's `base` column of the settlement."""
    return dec(line[rule.base])


def version_in_force(rules: RuleSet, scheme: str, day: object) -> RuleVersion:
    for loaded in rules.versions:
        if loaded.rule.scheme == scheme and loaded.rule.in_force(day):  # type: ignore[arg-type]
            return loaded.rule
    raise AssertionError(f"no version of {scheme} in force on {day}")


def adjudicate_normal(rule: RuleVersion, line: dict, acc: Accumulators) -> dict:
    t = line["visit_type"]
    visit = rule.visit(t)
    assert visit is not None, f"{rule.key} does not list {t}"
    b = base_of(rule, line)
    d = visit.deductible
    base_before = acc.base_ytd[t]
    paid_type_before = acc.paid_ytd[t]
    paid_total_before = acc.paid_ytd_total
    days_before = acc.allowance_days_ytd

    # 1. computed
    if visit.deductible_scope == "year":
        raw = ratio_function(visit, max(ZERO, base_before + b - d)) - ratio_function(
            visit, max(ZERO, base_before - d)
        )
        deductible_applied = min(b, max(ZERO, d - base_before))
    else:  # "episode": each settlement is an episode
        raw = ratio_function(visit, max(ZERO, b - d))
        deductible_applied = min(b, d)
    acc.base_ytd[t] += b
    computed = money(raw)

    # 2. caps, each only where the version sets it
    limits = [computed]
    if visit.per_episode_cap is not None:
        limits.append(visit.per_episode_cap)
    if visit.annual_cap is not None:
        limits.append(visit.annual_cap - acc.paid_ytd[t])
    if rule.annual_cap is not None:
        limits.append(rule.annual_cap - acc.paid_ytd_total)
    ratio_part = max(ZERO, min(limits))
    acc.paid_ytd[t] += ratio_part
    acc.paid_ytd_total += ratio_part

    # 3. allowance (inpatient, when configured)
    allowance = ZERO
    payable = 0
    asked = ZERO  # what the days asked for would pay before any cap
    no_admission_date = False
    if visit.allowance is not None:
        if line["admission_date"] is None:
            no_admission_date = True
        else:
            days = max(1, (line["service_date"] - line["admission_date"]).days)
            asked = days * visit.allowance.per_day
            payable = max(0, min(days, visit.allowance.max_days - acc.allowance_days_ytd))
            allowance = payable * visit.allowance.per_day
            if rule.annual_cap is not None:
                allowance = min(allowance, rule.annual_cap - acc.paid_ytd_total)
            allowance = max(ZERO, allowance)
            acc.allowance_days_ytd += payable
            acc.paid_ytd_total += allowance

    # 4. payout, status, note
    payout = ratio_part + allowance
    notes = []
    if computed == 0:
        notes.append("below_deductible")
    if ratio_part < computed or allowance < asked:
        notes.append("cap_reached")
    if no_admission_date:
        notes.append("no_admission_date")
    return {
        "rule_version": rule.version,
        "base_amount": b,
        "deductible_applied": deductible_applied,
        "computed": computed,
        "ratio_part": ratio_part,
        "allowance": allowance,
        "allowance_days": payable,
        "payout": payout,
        "status": "paid" if payout > 0 else "zero",
        "note": ";".join(n for n in NOTE_ORDER if n in notes),
        "base_ytd_before": base_before,
        "base_ytd_after": acc.base_ytd[t],
        "paid_type_before": paid_type_before,
        "paid_type_after": acc.paid_ytd[t],
        "paid_total_before": paid_total_before,
        "paid_total_after": acc.paid_ytd_total,
        "days_before": days_before,
        "days_after": acc.allowance_days_ytd,
    }


def adjudicate_clawback(line: dict, acc: Accumulators) -> dict:
    """A reversal of a line paid in an earlier batch: at its place in the order
    it removes exactly what that line added (spec 4.1, Reversals)."""
    t = line["visit_type"]
    base = -dec(line["orig_base_amount"])
    ratio_part = -dec(line["orig_ratio_part"])
    allowance = -dec(line["orig_allowance"])
    days = -int(line["orig_allowance_days"] or 0)
    before = (acc.base_ytd[t], acc.paid_ytd[t], acc.paid_ytd_total, acc.allowance_days_ytd)
    acc.base_ytd[t] += base
    acc.paid_ytd[t] += ratio_part
    acc.paid_ytd_total += ratio_part + allowance
    acc.allowance_days_ytd += days
    return {
        "rule_version": line["orig_rule_version"],
        "base_amount": base,
        "deductible_applied": ZERO,
        "computed": ZERO,
        "ratio_part": ratio_part,
        "allowance": allowance,
        "allowance_days": days,
        "payout": ratio_part + allowance,
        "status": "clawback",
        "note": "",
        "base_ytd_before": before[0],
        "base_ytd_after": acc.base_ytd[t],
        "paid_type_before": before[1],
        "paid_type_after": acc.paid_ytd[t],
        "paid_total_before": before[2],
        "paid_total_after": acc.paid_ytd_total,
        "days_before": before[3],
        "days_after": acc.allowance_days_ytd,
    }


def opening_accumulators(opening: list[dict]) -> dict[tuple, Accumulators]:
    state: dict[tuple, Accumulators] = {}
    for row in opening:
        key = (row["person_key"], row["scheme"], row["plan_year"])
        state[key] = Accumulators(
            base_ytd={
                "outpatient": dec(row["base_outpatient"]),
                "inpatient": dec(row["base_inpatient"]),
            },
            paid_ytd={
                "outpatient": dec(row["paid_outpatient"]),
                "inpatient": dec(row["paid_inpatient"]),
            },
            paid_ytd_total=dec(row["paid_total"]),
            allowance_days_ytd=int(row["allowance_days"] or 0),
        )
    return state


def oracle_adjudicate(rules: RuleSet, lines: list[dict], opening: list[dict]) -> dict[int, dict]:
    """Every line, in the order of spec 4.1: per (person, scheme, plan year),
    the opening balance first, then lines by (service_date, settlement_id,
    line_key)."""
    state = opening_accumulators(opening)
    ordered = sorted(
        lines,
        key=lambda ln: (
            ln["person_key"],
            ln["scheme"],
            ln["plan_year"],
            ln["service_date"],
            ln["settlement_id"],
            ln["line_key"],
        ),
    )
    results: dict[int, dict] = {}
    for line in ordered:
        key = (line["person_key"], line["scheme"], line["plan_year"])
        acc = state.setdefault(key, Accumulators())
        if line["kind"] == "clawback":
            row = adjudicate_clawback(line, acc)
        else:
            rule = version_in_force(rules, line["scheme"], line["service_date"])
            row = adjudicate_normal(rule, line, acc)
        results[line["line_key"]] = {"line_key": line["line_key"], **row}
    return results


def closing_balances(
    opening: list[dict], results: dict[int, dict], lines: list[dict]
) -> list[dict]:
    """The accumulators after a batch, as adj_opening rows for the next one:
    the opening plus what each line added."""
    state = opening_accumulators(opening)
    for line in lines:
        key = (line["person_key"], line["scheme"], line["plan_year"])
        acc = state.setdefault(key, Accumulators())
        r = results[line["line_key"]]
        t = line["visit_type"]
        acc.base_ytd[t] += r["base_amount"]
        acc.paid_ytd[t] += r["ratio_part"]
        acc.paid_ytd_total += r["payout"]
        acc.allowance_days_ytd += r["allowance_days"]
    return [
        {
            "person_key": k[0],
            "scheme": k[1],
            "plan_year": k[2],
            "base_outpatient": a.base_ytd["outpatient"],
            "base_inpatient": a.base_ytd["inpatient"],
            "paid_outpatient": a.paid_ytd["outpatient"],
            "paid_inpatient": a.paid_ytd["inpatient"],
            "paid_total": a.paid_ytd_total,
            "allowance_days": a.allowance_days_ytd,
        }
        for k, a in sorted(state.items())
    ]
