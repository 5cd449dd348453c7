"""Rule files as data (spec section 4): one scheme version per TOML file.

The models are the single source of truth for what a rule file may say; the
JSON Schema that editors use (`twopay rules schema`) is generated from them.

The loader validates rule files in pydantic's strict mode, so a TOML boolean
or string where a number is expected (``max_days = true``, ``ratio = "0.5"``)
and a string where a date is expected are refused rather than coerced. Built
from Python (the engine tests do), the models stay lax.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


def _number_as_decimal(value: object) -> object:
    """A TOML integer or float becomes a Decimal through its decimal text, so
    ``ratio = 0.5`` is exactly 0.5 (as pydantic's lax mode does it), and strict
    validation still accepts it. Anything else (a string, a boolean) is left to
    the Decimal validator, which refuses it in strict mode."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    return value


_AsDecimal = BeforeValidator(_number_as_decimal)

# The constraints come before the converter so that they stay on the Decimal
# schema (and in the JSON Schema as minimum/maximum).
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2), _AsDecimal]
Ratio = Annotated[Decimal, Field(ge=0, le=1, max_digits=8, decimal_places=6), _AsDecimal]
Bound = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2), _AsDecimal]
# Day counts go to the ledger as INTEGER and are added to dates: bounded to
# a century, so a typo is a rule-file error (exit 2), not an overflow at run time.
Count = Annotated[int, Field(ge=0, le=36600)]

VisitType = Literal["outpatient", "inpatient"]
VISIT_TYPES: tuple[VisitType, ...] = ("outpatient", "inpatient")
Category = Literal["in_service", "retired"]
BaseColumn = Literal["self_pay_1", "self_pay_2", "out_of_pocket", "total_cost"]


def _problem(message: str, **ctx: object) -> PydanticCustomError:
    """A rule-file problem, worded as what was expected (no "Value error, ")."""
    return PydanticCustomError("rule_file", message, ctx or None)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    """One band of a tiered ratio. ``up_to`` is measured on the amount above the
    deductible (spec 4.1), must be above 0 and above the tier before; the last
    tier may leave it out (unbounded) or set it (nothing is paid above it)."""

    up_to: Bound | None = None
    ratio: Ratio


class Allowance(_Strict):
    """Per-day hospital allowance (住院津贴)."""

    per_day: Money
    max_days: Count


class VisitRule(_Strict):
    """Benefit for one visit type."""

    deductible: Money = Decimal(0)
    deductible_scope: Literal["year", "episode"] = "year"
    ratio: Ratio | None = None
    tiers: list[Tier] | None = None
    annual_cap: Money | None = None
    per_episode_cap: Money | None = None
    allowance: Allowance | None = None

    @field_validator("tiers")
    @classmethod
    def _tiers_in_order(cls, tiers: list[Tier] | None) -> list[Tier] | None:
        """Every tier but the last sets ``up_to``; the ``up_to`` values (each
        above 0, by type) increase strictly, a bounded last tier included."""
        if tiers is None:
            return None
        if not tiers:
            raise _problem("expected at least one tier")
        for i, tier in enumerate(tiers[:-1]):
            if tier.up_to is None:
                raise _problem(
                    "expected `up_to` on every tier but the last; tiers.{i} has none", i=i
                )
        bounded = [(i, t.up_to) for i, t in enumerate(tiers) if t.up_to is not None]
        for (i, low), (j, high) in zip(bounded, bounded[1:], strict=False):
            if high <= low:
                raise _problem(
                    "expected tiers in increasing order of `up_to`, but tiers.{j}.up_to"
                    " ({high}) is not above tiers.{i}.up_to ({low})",
                    i=i,
                    j=j,
                    low=str(low),
                    high=str(high),
                )
        return tiers

    @model_validator(mode="after")
    def _one_ratio_function(self) -> VisitRule:
        if self.ratio is not None and self.tiers is not None:
            raise _problem("expected exactly one of `ratio` or `tiers`, not both")
        if self.ratio is None and self.tiers is None:
            raise _problem("expected exactly one of `ratio` or `tiers`, but neither is given")
        return self

    def segments(self) -> list[tuple[Decimal, Decimal | None, Decimal]]:
        """The ratio function F as (lower, upper, ratio) segments over the amount
        above the deductible; upper None means unbounded."""
        if self.ratio is not None:
            return [(Decimal(0), None, self.ratio)]
        out: list[tuple[Decimal, Decimal | None, Decimal]] = []
        lower = Decimal(0)
        for tier in self.tiers or []:
            out.append((lower, tier.up_to, tier.ratio))
            if tier.up_to is None:
                return out
            lower = tier.up_to
        return out  # the last tier was bounded: nothing is paid above it


class RuleVersion(_Strict):
    """One version of one scheme, in force from ``effective_from`` to
    ``effective_to`` (inclusive, by service date)."""

    scheme: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    title: str = ""
    version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"\S")]  # not blank
    effective_from: date
    effective_to: date | None = None
    enrollment: Literal["automatic", "required"] = "automatic"
    # an empty list would cover nobody: every settlement rejected no_coverage
    categories: list[Category] = Field(default_factory=lambda: ["in_service"], min_length=1)
    base: BaseColumn = "self_pay_1"
    annual_cap: Money | None = None
    waiting_days: Count = 0
    outpatient: VisitRule | None = None
    inpatient: VisitRule | None = None

    @field_validator("effective_to")
    @classmethod
    def _dates_in_order(cls, v: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("effective_from")
        if v is not None and start is not None and v < start:
            raise _problem(
                "expected a date on or after `effective_from` ({start}), got {end}",
                start=str(start),
                end=str(v),
            )
        return v

    @field_validator("outpatient")
    @classmethod
    def _no_outpatient_allowance(cls, v: VisitRule | None) -> VisitRule | None:
        if v is not None and v.allowance is not None:
            raise _problem("expected no `allowance`: the allowance is for inpatient only")
        return v

    @model_validator(mode="after")
    def _some_benefit(self) -> RuleVersion:
        if self.outpatient is None and self.inpatient is None:
            raise _problem(
                "expected a table `[outpatient]` or `[inpatient]` (or both), but the file has"
                " neither"
            )
        return self

    def visit(self, visit_type: str) -> VisitRule | None:
        return self.outpatient if visit_type == "outpatient" else self.inpatient

    def in_force(self, day: date) -> bool:
        return self.effective_from <= day and (
            self.effective_to is None or day <= self.effective_to
        )

    @property
    def key(self) -> str:
        return f"{self.scheme}@{self.version}"
