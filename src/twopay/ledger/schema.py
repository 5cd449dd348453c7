"""The ledger: every batch's inputs, decisions and payouts (spec section 6).

Every row that a batch adds carries its batch_id, so replacing the latest
batch is one DELETE per table, and every derived figure (accumulators,
pending reviews, outstanding recoveries) is computed from these rows rather
than kept by hand in a second place.
"""

from __future__ import annotations

import duckdb

from twopay.errors import UsageError
from twopay.identity.match import exact_evidence_sql

SCHEMA_VERSION = 2

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);

-- stage_id: the stage of the batch's rows (see below); roster_stage: the
-- stage of its roster records, its own or, when the roster file and the
-- reading of it are the same as an earlier batch's (roster_key), that batch's
CREATE TABLE IF NOT EXISTS batches (
    batch_id INTEGER PRIMARY KEY, period VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL,
    inputs VARCHAR NOT NULL, rules VARCHAR NOT NULL, twopay_version VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP NOT NULL, summary VARCHAR NOT NULL,
    stage_id INTEGER, roster_stage INTEGER, roster_key VARCHAR
);

-- every row of every input file of a batch that could not be read
CREATE TABLE IF NOT EXISTS quarantine (
    batch_id INTEGER, file_kind VARCHAR, source_file VARCHAR, line_number BIGINT,
    error_code VARCHAR, detail VARCHAR, raw VARCHAR
);

-- The large tables of a batch (its input rows, decisions, eligibility checks
-- and lines) are written once, as the batch makes them, under the batch's
-- stage_id: its later stages read them there instead of holding copies of
-- millions of rows in memory to the commit. Committing the batch (its batches
-- row names the stage_id, in the commit's one transaction) is what makes them
-- part of the ledger: they are read through views (STAGED) that join
-- batches, so the rows of a stage no batch names, a run that did not commit,
-- are invisible, and the next run deletes them.
--
-- The input rows: q_code and q_detail say why a row was quarantined
-- (settlement_rows keeps every row, roster_records only the readable ones);
-- name_norm and line_number serve the batch's matching.
CREATE TABLE IF NOT EXISTS settlement_rows (
    stage_id INTEGER, row_key BIGINT, source_file VARCHAR, line_number BIGINT, raw VARCHAR,
    settlement_id VARCHAR, id_number VARCHAR, name VARCHAR, visit_type VARCHAR,
    service_date DATE, admission_date DATE, hospital_code VARCHAR,
    total_cost DECIMAL(18,2), self_pay_1 DECIMAL(18,2), self_pay_2 DECIMAL(18,2),
    out_of_pocket DECIMAL(18,2), reverses VARCHAR, content_hash UBIGINT,
    q_code VARCHAR, q_detail VARCHAR
);

CREATE TABLE IF NOT EXISTS roster_rows (
    stage_id INTEGER, record_key BIGINT, member_id VARCHAR, name VARCHAR, id_number VARCHAR,
    person_key VARCHAR, card_no VARCHAR, unit_code VARCHAR, unit_name VARCHAR,
    category VARCHAR, valid_from DATE, valid_to DATE, bank_account VARCHAR,
    source_file VARCHAR, line_number BIGINT, raw VARCHAR, q_code VARCHAR, q_detail VARCHAR,
    name_norm VARCHAR
);

-- one decision per settlement row handled by a batch (its own rows, and held
-- rows of earlier batches decided in it: carried = true); view outcomes
-- identity: the evidence (JSON); for a plain exact match (most rows) it is
-- NULL and exact_record names the roster record, and the view spells it out
CREATE TABLE IF NOT EXISTS outcome_rows (
    stage_id INTEGER, row_batch_id INTEGER, row_key BIGINT, settlement_id VARCHAR,
    carried BOOLEAN, outcome VARCHAR, code VARCHAR, detail VARCHAR,
    person_key VARCHAR, member_id VARCHAR, unit_code VARCHAR, match VARCHAR,
    candidate_member_id VARCHAR, identity VARCHAR, eligibility VARCHAR,
    exact_record BIGINT
);

-- the eligibility checks of every identified row (spec 5), kept flat:
-- the roster record, run start and dues; and each scheme's stage reached
-- (views eligibility_members, eligibility_schemes)
CREATE TABLE IF NOT EXISTS eligibility_member_rows (
    stage_id INTEGER, row_batch_id INTEGER, row_key BIGINT, member_id VARCHAR,
    unit_code VARCHAR, category VARCHAR, valid_from DATE, valid_to DATE, run_start DATE,
    dues_paid_through DATE
);
CREATE TABLE IF NOT EXISTS eligibility_scheme_rows (
    stage_id INTEGER, row_batch_id INTEGER, row_key BIGINT, scheme VARCHAR, version VARCHAR,
    stage INTEGER, why_not VARCHAR
);

-- one line per (settlement, scheme) adjudicated (spec 4.1); view lines
CREATE TABLE IF NOT EXISTS line_rows (
    stage_id INTEGER, line_key BIGINT, row_batch_id INTEGER, row_key BIGINT,
    settlement_id VARCHAR, scheme VARCHAR, rule_version VARCHAR, kind VARCHAR,
    reverses_line BIGINT, person_key VARCHAR, member_id VARCHAR, unit_code VARCHAR,
    plan_year INTEGER, visit_type VARCHAR, service_date DATE, match VARCHAR,
    base_amount DECIMAL(18,2), deductible_applied DECIMAL(18,2), computed DECIMAL(18,2),
    ratio_part DECIMAL(18,2), allowance DECIMAL(18,2), allowance_days INTEGER,
    payout DECIMAL(18,2), status VARCHAR, note VARCHAR,
    base_ytd_before DECIMAL(18,2), base_ytd_after DECIMAL(18,2),
    paid_type_before DECIMAL(18,2), paid_type_after DECIMAL(18,2),
    paid_total_before DECIMAL(18,2), paid_total_after DECIMAL(18,2),
    days_before INTEGER, days_after INTEGER
);

CREATE TABLE IF NOT EXISTS payments (
    batch_id INTEGER, payment_id VARCHAR, member_id VARCHAR, person_key VARCHAR,
    name VARCHAR, card_no VARCHAR, unit_code VARCHAR, bank_account VARCHAR,
    amount DECIMAL(18,2), lines INTEGER, gross DECIMAL(18,2), offset_amount DECIMAL(18,2),
    retry_of VARCHAR
);

-- negative nets to recover (amount > 0 owed by the member), and offsets
-- taken from later payments (amount < 0): outstanding = sum(amount)
CREATE TABLE IF NOT EXISTS recoveries (
    batch_id INTEGER, person_key VARCHAR, member_id VARCHAR, amount DECIMAL(18,2),
    settlement_ids VARCHAR, kind VARCHAR
);

CREATE TABLE IF NOT EXISTS bank_returns (
    return_id INTEGER, source_file VARCHAR, sha256 VARCHAR, line_number BIGINT,
    payment_id VARCHAR, card_no VARCHAR, amount DECIMAL(18,2), status VARCHAR,
    reason VARCHAR, result VARCHAR, recorded_at TIMESTAMP
);
"""

# view -> the table of stage rows behind it
STAGED = {
    "settlements": "settlement_rows",
    "roster_records": "roster_rows",
    "outcomes": "outcome_rows",
    "eligibility_members": "eligibility_member_rows",
    "eligibility_schemes": "eligibility_scheme_rows",
    "lines": "line_rows",
}

VIEWS = f"""
CREATE OR REPLACE VIEW outcomes AS
SELECT b.batch_id, o.* EXCLUDE (stage_id, exact_record) REPLACE (
    coalesce(o.identity, {exact_evidence_sql("o.member_id", "o.exact_record")}) AS identity)
FROM outcome_rows o JOIN batches b USING (stage_id);
CREATE OR REPLACE VIEW eligibility_members AS
SELECT b.batch_id, m.* EXCLUDE (stage_id)
FROM eligibility_member_rows m JOIN batches b USING (stage_id);
CREATE OR REPLACE VIEW eligibility_schemes AS
SELECT b.batch_id, s.* EXCLUDE (stage_id)
FROM eligibility_scheme_rows s JOIN batches b USING (stage_id);
CREATE OR REPLACE VIEW lines AS
SELECT b.batch_id, l.* EXCLUDE (stage_id) FROM line_rows l JOIN batches b USING (stage_id);
-- every settlement row of every committed batch, as read
CREATE OR REPLACE VIEW settlements AS
SELECT b.batch_id, s.row_key, s.source_file, s.line_number, s.raw, s.settlement_id,
       s.id_number, s.name, s.visit_type, s.service_date, s.admission_date, s.hospital_code,
       s.total_cost, s.self_pay_1, s.self_pay_2, s.out_of_pocket, s.reverses, s.content_hash
FROM settlement_rows s JOIN batches b USING (stage_id);
-- every readable roster record of every committed batch
CREATE OR REPLACE VIEW roster_records AS
SELECT b.batch_id, r.record_key, r.member_id, r.name, r.id_number, r.person_key, r.card_no,
       r.unit_code, r.unit_name, r.category, r.valid_from, r.valid_to, r.bank_account
FROM roster_rows r JOIN batches b ON b.roster_stage = r.stage_id
WHERE r.q_code IS NULL;
CREATE OR REPLACE VIEW v_lines AS
SELECT b.period, l.* EXCLUDE (batch_id), l.batch_id FROM lines l JOIN batches b USING (batch_id);
CREATE OR REPLACE VIEW v_rejections AS
SELECT b.period, o.batch_id, o.settlement_id, o.code AS reason_code, o.detail, o.member_id,
       o.unit_code
FROM outcomes o JOIN batches b USING (batch_id) WHERE o.outcome = 'rejected';
CREATE OR REPLACE VIEW v_eligibility AS
SELECT m.batch_id, m.row_batch_id, m.row_key,
    to_json({{
        'member_id': m.member_id, 'unit_code': m.unit_code, 'category': m.category,
        'valid_from': m.valid_from, 'valid_to': m.valid_to, 'run_start': m.run_start,
        'dues_paid_through': m.dues_paid_through,
        'schemes': (SELECT list({{'scheme': s.scheme, 'version': s.version, 'stage': s.stage,
                                 'why_not': s.why_not}} ORDER BY s.scheme)
                    FROM eligibility_schemes s
                    WHERE s.batch_id = m.batch_id AND s.row_batch_id = m.row_batch_id
                      AND s.row_key = m.row_key)}})::VARCHAR AS eligibility
FROM eligibility_members m;
CREATE OR REPLACE VIEW v_payments AS
SELECT b.period, p.* EXCLUDE (batch_id, bank_account), p.batch_id
FROM payments p JOIN batches b USING (batch_id);
CREATE OR REPLACE VIEW v_members AS
SELECT r.* EXCLUDE (batch_id, bank_account)
FROM roster_records r WHERE r.batch_id = (SELECT max(batch_id) FROM batches);
"""


def batch_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The ledger tables whose rows belong to a batch (they carry batch_id):
    what replacing a batch deletes, read from the catalogue so that a table
    added later cannot be forgotten."""
    return [
        r[0]
        for r in con.execute(
            """
            SELECT c.table_name FROM duckdb_columns() c
            JOIN duckdb_tables() t USING (database_oid, schema_oid, table_oid)
            WHERE c.column_name = 'batch_id' AND NOT t.temporary
              AND t.database_name = current_database()
            ORDER BY c.table_name
            """
        ).fetchall()
    ]


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ledger or check its version (a newer twopay upgrades older
    ledgers here; a ledger from a newer twopay is refused)."""
    con.execute(TABLES)
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    if not rows:
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    else:
        found = int(rows[0][0])
        if found > SCHEMA_VERSION:
            raise UsageError(
                f"the ledger has schema version {found}, newer than this twopay understands "
                f"({SCHEMA_VERSION}); upgrade twopay (pip install -U twopay)."
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            con.execute("BEGIN TRANSACTION")  # a migration is done whole or not at all
            try:
                for stmt in MIGRATIONS.get(version, []):
                    con.execute(stmt)
                con.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version)]
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    con.execute(VIEWS)


def clear_uncommitted_stages(con: duckdb.DuckDBPyConnection) -> None:
    """Delete the stage rows that no batches row names: those of a run that
    did not commit (killed, or unable to delete its own), and, inside a
    replacing commit, those of the batch it replaces."""
    for table in STAGED.values():
        con.execute(
            f"DELETE FROM {table} WHERE stage_id NOT IN (SELECT {stage_column(table)} "
            f"FROM batches WHERE {stage_column(table)} IS NOT NULL)"
        )


def stage_column(table: str) -> str:
    """The column of batches that names the stage of ``table``'s rows (a
    roster's records can serve several batches)."""
    return "roster_stage" if table == "roster_rows" else "stage_id"


def next_stage_id(con: duckdb.DuckDBPyConnection) -> int:
    """A stage_id no batch and no stage row has used."""
    maxima = ", ".join(f"(SELECT max(stage_id) FROM {t})" for t in ("batches", *STAGED.values()))
    row = con.execute(f"SELECT coalesce(greatest({maxima}), 0) + 1").fetchall()
    return int(row[0][0])


# version -> statements that bring a ledger of version-1 to it
MIGRATIONS: dict[int, list[str]] = {
    # 2: a batch's large tables are written as it makes them, under
    # batches.stage_id, and read through views (STAGED)
    2: [
        "ALTER TABLE batches ADD COLUMN stage_id INTEGER",
        "ALTER TABLE batches ADD COLUMN roster_stage INTEGER",
        "ALTER TABLE batches ADD COLUMN roster_key VARCHAR",
        "UPDATE batches SET stage_id = batch_id, roster_stage = batch_id",
        *(
            stmt
            for view, table in STAGED.items()
            for stmt in (
                f"INSERT INTO {table} BY NAME "
                f"SELECT batch_id AS stage_id, * EXCLUDE (batch_id) FROM {view}",
                f"DROP TABLE {view}",
            )
        ),
    ],
}
