"""`twopay query`: read-only SQL over the ledger (spec 8)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from twopay.errors import UsageError
from twopay.ledger.workspace import open_workspace


def run_query(workspace: Path | None, sql: str) -> tuple[list[str], list[tuple[object, ...]]]:
    """Run ``sql`` on a read-only connection: a write fails with a clear error."""
    if not sql.strip().strip(";").strip():
        raise UsageError(
            "the query is empty; give one SQL statement, e.g. 'select * from batches'."
        )
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        statements = []  # a syntax error: the query below names it
    if len(statements) > 1:
        raise UsageError(
            f"the query holds {len(statements)} SQL statements; give one "
            "(only one result can be shown)."
        )
    ws = open_workspace(workspace)
    con = ws.connect(read_only=True)
    try:
        # read-only covers the ledger; COPY ... TO and friends would still write
        # (unmasked) files anywhere, so shut the connection off from the outside.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            cur = con.execute(sql)
            if cur is None:  # only comments: no statement to run
                raise UsageError("the query has no SQL statement to run.")
            cols = [d[0] for d in cur.description or []]
            rows = cur.fetchall()
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            if (
                "read-only" in first.lower()
                or "read only" in first.lower()
                # a write to a view (settlements, lines, ...) fails before the
                # read-only check is reached
                or _writes(sql)
            ):
                raise UsageError(
                    "the ledger is read-only in `twopay query`; it cannot be changed."
                ) from None
            raise UsageError(f"query failed: {first}") from None
        return cols, rows
    finally:
        con.close()


_WRITES = {
    duckdb.StatementType.INSERT,
    duckdb.StatementType.UPDATE,
    duckdb.StatementType.DELETE,
    duckdb.StatementType.CREATE,
    duckdb.StatementType.DROP,
    duckdb.StatementType.ALTER,
}


def _writes(sql: str) -> bool:
    """Whether ``sql`` holds a statement that would change the ledger."""
    try:
        return any(st.type in _WRITES for st in duckdb.extract_statements(sql))
    except duckdb.Error:
        return False
