"""Everything engine-specific in the generated SQL (style: one dialect seam).

The rule compiler asks the dialect for these fragments; running the engine on
another SQL engine is a new subclass, not a rewrite.
"""

from __future__ import annotations

from decimal import Decimal


class DuckDBDialect:
    name = "duckdb"
    money_type = "DECIMAL(18,2)"
    ratio_type = "DECIMAL(9,6)"
    # A cap that is not set: larger than any sum of money we can hold.
    unbounded = "CAST(1000000000000 AS DECIMAL(18,2))"

    # A macro (see setup_sql) so generated SQL can say to_money(x).
    money_fn = "to_money"

    def setup_sql(self) -> list[str]:
        return [f"CREATE OR REPLACE TEMP MACRO to_money(x) AS CAST(x AS {self.money_type})"]

    def money(self, expr: str) -> str:
        return f"CAST({expr} AS {self.money_type})"

    def round_half_up(self, expr: str) -> str:
        # DuckDB rounds DECIMAL half away from zero; the amounts rounded here are
        # never negative, so that is half-up (spec 4.1 step 1).
        return self.money(f"round({expr}, 2)")

    def days_between(self, start: str, end: str) -> str:
        return f"date_diff('day', {start}, {end})"

    def decimal_literal(self, value: Decimal) -> str:
        # Only validated Decimals from rule models reach here, never user text.
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {value}")
        return f"CAST({format(value, 'f')} AS DECIMAL(18,6))"

    def recursive_with(self) -> str:
        return "WITH RECURSIVE"


DIALECT = DuckDBDialect()
