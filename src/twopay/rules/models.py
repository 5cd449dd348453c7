"""Rule files as data (spec section 4): one scheme version per TOML file.

The models are the single source of truth for what a rule file may say; the
JSON Schema that editors use (`twopay rules schema`) is generated from them.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]
Ratio = Annotated[Decimal, Field(ge=0, le=1, max_digits=8, decimal_places=6)]

VisitType = Literal["outpatient", "inpatient"]
VISIT_TYPES: tuple[VisitType, ...] = ("outpatient", "inpatient")
Category = Literal["in_service", "retired"]
BaseColumn = Literal["self_pay_1", "self_pay_2", "out_of_pocket", "total_cost"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    """One band of a tiered ratio. ``up_to`` is measured on the amount above the
    deductible (spec 4.1); the last tier has no ``up_to``."""

    up_to: Money | None = None
    ratio: Ratio


class Allowance(_Strict):
    """Per-day hospital allowance (住院津贴)."""

    per_day: Money
    max_days: Annotated[int, Field(ge=0)]


class VisitRule(_Strict):
    """Benefit for one visit type."""

    deductible: Money = Decimal(0)
    deductible_scope: Literal["year", "episode"] = "year"
    ratio: Ratio | None = None
    tiers: list[Tier] | None = None
    annual_cap: Money | None = None
    per_episode_cap: Money | None = None
    allowance: Allowance | None = None

    @model_validator(mode="after")
    def _one_ratio_function(self) -> VisitRule:
        if (self.ratio is None) == (self.tiers is None):
            raise ValueError("give exactly one of `ratio` or `tiers`")
        if self.tiers is not None:
            if not self.tiers:
                raise ValueError("`tiers` must list at least one tier")
            bounds = [t.up_to for t in self.tiers[:-1]]
            if any(b is None for b in bounds):
                raise ValueError("only the last tier may leave out `up_to`")
            if any(b is not None and b <= 0 for b in bounds):
                raise ValueError("tier `up_to` must be above 0")
            if any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):  # type: ignore[operator]
                raise ValueError("tiers must be in increasing order of `up_to`")
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
    version: Annotated[str, Field(min_length=1, max_length=64)]
    effective_from: date
    effective_to: date | None = None
    enrollment: Literal["automatic", "required"] = "automatic"
    categories: list[Category] = Field(default_factory=lambda: ["in_service"])
    base: BaseColumn = "self_pay_1"
    annual_cap: Money | None = None
    waiting_days: Annotated[int, Field(ge=0)] = 0
    outpatient: VisitRule | None = None
    inpatient: VisitRule | None = None

    @field_validator("outpatient")
    @classmethod
    def _no_outpatient_allowance(cls, v: VisitRule | None) -> VisitRule | None:
        if v is not None and v.allowance is not None:
            raise ValueError("`allowance` is for inpatient only")
        return v

    @model_validator(mode="after")
    def _dates_in_order(self) -> RuleVersion:
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError("`effective_to` is before `effective_from`")
        if self.outpatient is None and self.inpatient is None:
            raise ValueError("a scheme must list `outpatient` or `inpatient` (or both)")
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
