"""`twopay reconcile`: match a bank return to the payments (spec 8).

Each return row is matched by payment_id: success, failed (with the bank's
reason), amount_mismatch or unknown_payment; every payment of the batches the
file speaks of that has no return row is no_return_row. Results are kept in
bank_returns; a failed payment is re-issued by the next run (see
pipeline.batch payments). The same file twice changes nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from twopay.io.readers import file_sha256, load_input
from twopay.io.schemas import BANK_RETURN
from twopay.ledger.workspace import Workspace
from twopay.pipeline.validate import install_macros, typed_simple_sql


@dataclass
class ReconcileResult:
    return_id: int
    already_recorded: bool
    counts: dict[str, int]
    problems: list[dict[str, object]]

    @property
    def clean(self) -> bool:
        return not self.problems


RESULTS_SQL = """
SELECT result, count(*) FROM bank_returns WHERE return_id = ? GROUP BY ALL ORDER BY 1
"""
PROBLEMS_SQL = """
SELECT line_number, payment_id, amount, status, reason, result FROM bank_returns
WHERE return_id = ? AND result <> 'success' ORDER BY line_number NULLS LAST, payment_id
"""


def reconcile(ws: Workspace, path: Path, *, encoding: str | None = None) -> ReconcileResult:
    digest = file_sha256(path)
    with ws.lock(f"reconcile {path.name}"):
        con = ws.connect()
        try:
            seen = con.execute(
                "SELECT min(return_id) FROM bank_returns WHERE sha256 = ?", [digest]
            ).fetchall()[0][0]
            if seen is not None:
                return _result(con, int(seen), already=True)
            ws.temp_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=ws.temp_dir) as tmp:
                install_macros(con)
                load_input(
                    con,
                    path,
                    BANK_RETURN,
                    "br_in0",
                    workdir=Path(tmp),
                    encoding=encoding,
                    aliases=ws.settings.aliases,
                )
            con.execute(
                "CREATE OR REPLACE TEMP TABLE br_in AS SELECT line_number AS row_key, * FROM br_in0"
            )
            con.execute(typed_simple_sql("br_in", "br", BANK_RETURN))
            return_id = int(
                con.execute("SELECT coalesce(max(return_id), 0) + 1 FROM bank_returns").fetchall()[
                    0
                ][0]
            )
            now = datetime.now().replace(microsecond=0)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    """
                    INSERT INTO bank_returns
                    SELECT ?, r.source_file, ?, r.line_number, r.payment_id, r.card_no, r.amount,
                        r.status, coalesce(r.reason, r.q_detail),
                        CASE WHEN r.q_code IS NOT NULL THEN 'unreadable'
                             WHEN p.payment_id IS NULL THEN 'unknown_payment'
                             WHEN r.amount <> p.amount THEN 'amount_mismatch'
                             WHEN r.status = 'failed' THEN 'failed'
                             ELSE 'success' END,
                        ?
                    FROM br r LEFT JOIN payments p USING (payment_id)
                    """,
                    [return_id, digest, now],
                )
                # payments of the batches this file speaks of, with no row in it
                con.execute(
                    """
                    INSERT INTO bank_returns
                    SELECT ?, ?, ?, NULL, p.payment_id, p.card_no, p.amount, NULL,
                           'the bank return has no row for this payment', 'no_return_row', ?
                    FROM payments p
                    WHERE p.batch_id IN (SELECT p2.batch_id FROM br JOIN payments p2 USING (payment_id))
                      AND p.payment_id NOT IN (SELECT payment_id FROM br WHERE payment_id IS NOT NULL)
                    """,
                    [return_id, path.name, digest, now],
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return _result(con, return_id, already=False)
        finally:
            con.close()


def _result(con: object, return_id: int, *, already: bool) -> ReconcileResult:
    counts = {r[0]: int(r[1]) for r in con.execute(RESULTS_SQL, [return_id]).fetchall()}  # type: ignore[attr-defined]
    cur = con.execute(PROBLEMS_SQL, [return_id])  # type: ignore[attr-defined]
    cols = [d[0] for d in cur.description]
    problems = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    return ReconcileResult(return_id, already, counts, problems)
