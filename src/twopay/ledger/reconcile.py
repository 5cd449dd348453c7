"""`twopay reconcile`: match a bank return (银行回盘) to the payments (spec 2.3, 8).

Each readable return row is matched to ``payments`` by payment_id and gets one
result, the first that applies:

* ``unreadable``: the row could not be read (missing payment_id, amount or
  status, an amount that is not money); the detail is kept as its reason;
* ``unknown_payment``: no payment has that payment_id;
* ``duplicate_row``: an earlier row of the same file already answered this
  payment (the first row in file order counts);
* ``failed``: the bank could not pay; its reason is kept (whatever amount
  it writes on the row: no money moved, the issued amount is re-issued);
* ``amount_mismatch``: the bank paid an amount other than the one issued;
* ``card_mismatch``: the bank says it paid another card than the one the
  payment was issued to (spaces and hyphens aside; a card the bank masks with
  ``*`` is compared on the characters it shows at each end); a row without a
  card_no is not compared, and a failed row is ``failed`` whatever its card
  (it is re-issued to the member's current card);
* ``paid_after_reissue``: the bank says a payment went through that twopay
  had already re-issued as failed (the member may be paid twice);
* ``success``.

Every payment of the batches the file answers (a batch is answered when at
least one readable row matches one of its payments) that has no row in the
file, and no row in any earlier return, is recorded as ``no_return_row``: a
bank that splits one batch's answers over several files raises no false alarm.

Anything but ``success`` is a discrepancy (the CLI exits 3). The results are
kept in ``bank_returns``; the file's SHA-256 identifies it, so the same file
given twice (under any name) records nothing new and reports what was recorded
the first time; unless rows of it named no payment then and name one now (it
was reconciled before the run that issued them): then it is read again.

Re-issue (read by ``pipeline.batch._Batch.payments``): a payment whose latest
answer from the bank (the latest return's row, ignoring unreadable and
duplicate rows and missing rows) is ``failed``, that no earlier batch has
re-issued, and none of whose earlier payments (the one it re-issues, and so
on) the bank has since answered paid after all (FAILED_SQL), is paid again by the next run with retry_of = its payment_id, to the
card the member's roster record holds in that run; the retry's payment_id is
``<period>-<member_id>-R<n>`` (n counts that member's re-issues in the batch),
so it never collides with the member's regular ``<period>-<member_id>``. A
retry that fails is re-issued in turn, with retry_of naming the retry.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from twopay.errors import UsageError
from twopay.identity.idnumber import mask_text
from twopay.io.readers import file_sha256, load_input
from twopay.io.schemas import BANK_RETURN
from twopay.ledger.workspace import Workspace
from twopay.pipeline.validate import install_macros, typed_simple_sql

RESULTS = (
    "success",
    "failed",
    "amount_mismatch",
    "card_mismatch",
    "paid_after_reissue",
    "duplicate_row",
    "unknown_payment",
    "unreadable",
    "no_return_row",
)

# Readable rows, the first per payment_id in file order counting (spec 5's rule
# for duplicate settlements, applied to the bank's rows).
RECORD_ROWS_SQL = """
INSERT INTO bank_returns
WITH numbered AS (
    SELECT r.*,
        row_number() OVER (
            PARTITION BY r.payment_id, r.q_code IS NULL ORDER BY r.line_number) AS nth
    FROM br AS r
)
SELECT
    $return_id, r.source_file, $sha256, r.line_number, r.payment_id, r.card_no, r.amount,
    r.status,
    -- an unreadable row says why it could not be read, beside the bank's own reason
    CASE WHEN r.q_code IS NOT NULL
        THEN r.q_detail || coalesce(' (bank: ' || r.reason || ')', '') ELSE r.reason END AS reason,
    CASE
        WHEN r.q_code IS NOT NULL THEN 'unreadable'
        WHEN p.payment_id IS NULL THEN 'unknown_payment'
        WHEN r.nth > 1 THEN 'duplicate_row'
        -- a failed row moved no money, whatever amount the bank writes on it
        -- (0.00 on many returns): the issued amount is re-issued
        WHEN r.status = 'failed' THEN 'failed'
        WHEN r.amount <> p.amount THEN 'amount_mismatch'
        WHEN NOT card_matches(p.card_no, r.card_no) THEN 'card_mismatch'
        WHEN EXISTS (SELECT 1 FROM payments AS q WHERE q.retry_of = p.payment_id)
            THEN 'paid_after_reissue'
        ELSE 'success'
    END AS result,
    $now
FROM numbered AS r
LEFT JOIN payments AS p USING (payment_id)
"""

# Payments of the answered batches that no row of this or any earlier return
# answered.
RECORD_MISSING_SQL = """
INSERT INTO bank_returns
SELECT $return_id, $source_file, $sha256, NULL, p.payment_id, p.card_no, p.amount, NULL, NULL,
       'no_return_row', $now
FROM payments AS p
WHERE p.batch_id IN (
        SELECT q.batch_id FROM br JOIN payments AS q USING (payment_id) WHERE br.q_code IS NULL)
  AND NOT EXISTS (SELECT 1 FROM br WHERE br.payment_id = p.payment_id)
  AND NOT EXISTS (
        SELECT 1 FROM bank_returns AS e
        WHERE e.payment_id = p.payment_id AND e.return_id < $return_id
          AND e.line_number IS NOT NULL AND e.result NOT IN ('unreadable', 'duplicate_row'))
"""

# The issued card against the bank's (spaces and hyphens aside): equal, or,
# where the bank masks the middle with '*', the same at both ends.
CARD_MACROS_SQL = (
    r"CREATE OR REPLACE TEMP MACRO card_clean(x) AS regexp_replace(x, '[\s\-]', '', 'g')",
    r"CREATE OR REPLACE TEMP MACRO card_tail(b) AS regexp_extract(b, '\*([^*]*)$', 1)",
    """
    CREATE OR REPLACE TEMP MACRO card_matches(issued, told) AS CASE
        WHEN told IS NULL OR issued IS NULL THEN true
        WHEN strpos(told, '*') = 0 THEN card_clean(issued) = card_clean(told)
        ELSE starts_with(card_clean(issued), split_part(card_clean(told), '*', 1))
             AND ends_with(card_clean(issued), card_tail(card_clean(told)))
             AND length(card_clean(issued)) >= length(split_part(card_clean(told), '*', 1))
                                               + length(card_tail(card_clean(told)))
    END
    """,
)

# The bank's answer on each payment, as the next run reads it to re-issue
# and as notices tell units of failures: the latest return's first readable
# row; duplicate, unreadable and unknown rows are discrepancies, not answers
# (a query, for a WITH).
LATEST_ANSWER_SQL = """
SELECT * FROM bank_returns
WHERE line_number IS NOT NULL
  AND result NOT IN ('unreadable', 'duplicate_row', 'unknown_payment')
QUALIFY row_number() OVER (PARTITION BY payment_id ORDER BY return_id DESC, line_number) = 1
"""

# The failures still owed: the bank's latest answer is `failed`, and no
# earlier payment of the payment's re-issue chain (retry_of, retry_of's
# retry_of, ...) has since been answered paid after all: then the member has
# the money, and re-issuing the failed re-issue would pay them twice. What
# the next run re-issues (once), and what notices tell units of.
FAILED_SQL = f"""
WITH RECURSIVE answered AS ({LATEST_ANSWER_SQL}),
chain(payment_id, ancestor) AS (
    SELECT payment_id, retry_of FROM payments WHERE retry_of IS NOT NULL
    UNION ALL
    SELECT c.payment_id, q.retry_of
    FROM chain AS c JOIN payments AS q ON q.payment_id = c.ancestor
    WHERE q.retry_of IS NOT NULL
)
SELECT a.* FROM answered AS a
WHERE a.result = 'failed'
  AND a.payment_id NOT IN (
        SELECT c.payment_id FROM chain AS c JOIN answered AS e ON e.payment_id = c.ancestor
        WHERE e.status = 'success')
"""

SEEN_SQL = "SELECT max(return_id) FROM bank_returns WHERE sha256 = ?"
# rows of a recorded return that named no payment then but name one now (the
# file was reconciled before the run that issued them): the file is read again
STALE_SQL = """
SELECT count(*) FROM bank_returns AS b JOIN payments AS p USING (payment_id)
WHERE b.return_id = ? AND b.result = 'unknown_payment'
"""
NEXT_ID_SQL = "SELECT coalesce(max(return_id), 0) + 1 FROM bank_returns"

SUMMARY_SQL = """
SELECT result, count(*), coalesce(sum(amount), 0)
FROM bank_returns WHERE return_id = ?
GROUP BY result
"""

PROBLEMS_SQL = """
SELECT b.line_number, b.payment_id, p.member_id, p.unit_code, b.amount,
       p.amount AS issued_amount, b.status, b.reason, b.result
FROM bank_returns AS b
LEFT JOIN payments AS p USING (payment_id)
WHERE b.return_id = ? AND b.result <> 'success'
ORDER BY b.line_number NULLS LAST, b.payment_id
"""

PERIODS_SQL = """
SELECT DISTINCT bt.period
FROM bank_returns AS b
JOIN payments AS p USING (payment_id)
JOIN batches AS bt USING (batch_id)
WHERE b.return_id = ?
ORDER BY 1
"""


@dataclass
class ReconcileResult:
    """What one bank return said, as recorded in the ledger."""

    return_id: int
    source_file: str
    already_recorded: bool
    periods: list[str]
    counts: dict[str, int]
    amounts: dict[str, Decimal]
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "return_id": self.return_id,
            "source_file": self.source_file,
            "already_recorded": self.already_recorded,
            "periods": self.periods,
            "counts": self.counts,
            "amounts": {k: f"{v:.2f}" for k, v in self.amounts.items()},
            "clean": self.clean,
            "problems": self.problems,
        }


def reconcile(ws: Workspace, path: Path, *, encoding: str | None = None) -> ReconcileResult:
    """Record the bank return ``path`` in the ledger (once per file content)."""
    if not path.exists():  # (click refuses a folder)
        raise UsageError(f"{path}: no such file (--bank-return).")
    digest = file_sha256(path)
    with ws.lock(f"reconcile --bank-return {path.name}"):
        con = ws.connect()
        try:
            seen = con.execute(SEEN_SQL, [digest]).fetchall()[0][0]
            if seen is not None and not con.execute(STALE_SQL, [seen]).fetchall()[0][0]:
                return _result(con, int(seen), already=True)
            ws.temp_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=ws.temp_dir) as tmp:
                install_macros(con)
                load_input(
                    con,
                    path,
                    BANK_RETURN,
                    "br_loaded",
                    workdir=Path(tmp),
                    encoding=encoding,
                    aliases=ws.settings.aliases,
                )
            con.execute(
                "CREATE OR REPLACE TEMP TABLE br_in AS "
                "SELECT line_number AS row_key, * FROM br_loaded"
            )
            if not con.execute("SELECT count(*) FROM br_in").fetchall()[0][0]:
                # not "clean": no batch can be matched to a file without rows
                raise UsageError(
                    f"{path}: the bank return has no rows (a header only); nothing to reconcile."
                )
            con.execute(typed_simple_sql("br_in", "br", BANK_RETURN))
            return_id = int(con.execute(NEXT_ID_SQL).fetchall()[0][0])
            params = {
                "return_id": return_id,
                "sha256": digest,
                "now": datetime.now().replace(microsecond=0),
            }
            for macro in CARD_MACROS_SQL:
                con.execute(macro)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(RECORD_ROWS_SQL, params)
                con.execute(RECORD_MISSING_SQL, {**params, "source_file": path.name})
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return _result(con, return_id, already=False)
        finally:
            con.close()


def _result(con: duckdb.DuckDBPyConnection, return_id: int, *, already: bool) -> ReconcileResult:
    summary = con.execute(SUMMARY_SQL, [return_id]).fetchall()
    counts = {r: int(n) for r, n, _ in summary}
    amounts = {r: Decimal(a) for r, _, a in summary}
    source = con.execute(
        "SELECT any_value(source_file) FROM bank_returns WHERE return_id = ? "
        "AND line_number IS NOT NULL",
        [return_id],
    ).fetchall()[0][0]
    periods = [r[0] for r in con.execute(PERIODS_SQL, [return_id]).fetchall()]
    cur = con.execute(PROBLEMS_SQL, [return_id])
    cols = [d[0] for d in cur.description]
    problems = [
        {
            # the bank's free text may quote a card or ID number: masked like
            # every other text twopay shows (spec 7); the ledger keeps it whole.
            # So may a payment_id that names no payment (a column of card or
            # ID numbers taken for the payment_id)
            k: (
                f"{v:.2f}"
                if isinstance(v, Decimal)
                else mask_text(v)
                if isinstance(v, str)
                and (k == "reason" or (k == "payment_id" and row["member_id"] is None))
                else v
            )
            for k, v in row.items()
        }
        for row in (dict(zip(cols, r, strict=True)) for r in cur.fetchall())
    ]
    ordered = {k: counts[k] for k in RESULTS if k in counts}
    return ReconcileResult(
        return_id=return_id,
        source_file=str(source or ""),
        already_recorded=already,
        periods=periods,
        counts=ordered,
        amounts={k: amounts[k] for k in ordered},
        problems=problems,
    )
