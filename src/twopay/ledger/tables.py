"""Small helpers over the tables of a DuckDB connection."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[tuple]) -> None:  # type: ignore[type-arg]
    """Every row in one INSERT, as parameters (executemany runs one statement
    per row: ~1 ms each)."""
    if rows:
        one = "(" + ", ".join("?" * len(rows[0])) + ")"
        con.execute(
            f"INSERT INTO {table} VALUES " + ", ".join([one] * len(rows)),
            [value for row in rows for value in row],
        )


def register_table(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, list]) -> None:
    """Materialise a small Python result as a temp table (all VARCHAR except row_key)."""
    schema = pa.schema(
        [(c, pa.int64() if c in ("row_key", "record_key") else pa.string()) for c in columns]
    )
    view = f"_{name}_arrow"
    con.register(view, pa.table(columns, schema=schema))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {view}")
    finally:
        con.unregister(view)


def drop_temporaries(con: duckdb.DuckDBPyConnection) -> None:
    """Drop every temporary view and table of the connection."""
    views = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal"
    ).fetchall()
    for (view,) in views:
        con.execute(f'DROP VIEW IF EXISTS "{view}"')
    tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    for (table,) in tables:
        con.execute(f'DROP TABLE IF EXISTS "{table}"')
