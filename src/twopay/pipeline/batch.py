"""One batch for one period (spec sections 5 and 6):
load -> validate -> duplicates -> reversal link -> identity -> eligibility ->
rules -> payments -> commit -> reports.

Every stage is SQL on the ledger's connection: temp tables, and the ledger's
stage tables for what the ledger keeps of millions of rows (inputs, outcomes,
eligibility checks, lines), written once as they are made. The batch is
committed in one transaction, whose batches row names that stage (until then
no view shows its rows), and reports are rendered from the ledger after the
commit.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb

from twopay import __version__
from twopay.errors import (
    BatchConflict,
    BooksDoNotBalance,
    DataQualityError,
    DiskFull,
    Interrupted,
    OutOfMemory,
    UsageError,
    disk_full,
    oom_advice,
)
from twopay.faults import fault_point
from twopay.identity.idnumber import (
    TODAY_SQL,
    id_normalise_sql,
    id_problem_sql,
    mask_text,
    one_edit_sql,
)
from twopay.identity.match import (
    exact_detail_sql,
    exact_evidence_sql,
    fix_roster_keys,
    match_identities,
    roster_keys_sql,
)
from twopay.identity.names import name_norm_sql, to_simplified_many
from twopay.io.readers import LoadedFile, drop_loaded, file_sha256, load_input
from twopay.io.schemas import ENROLLMENTS, OVERRIDES, ROSTER, SETTLEMENTS, UNITS, FileKind
from twopay.ledger.reconcile import FAILED_SQL
from twopay.ledger.schema import STAGED, batch_tables, clear_uncommitted_stages, next_stage_id
from twopay.ledger.tables import drop_temporaries, register_table
from twopay.ledger.workspace import Workspace
from twopay.pipeline import eligibility, validate
from twopay.reports.notices import remove_notice_files
from twopay.reports.render import check_out_folder, render_batch_reports
from twopay.rules.engine import LINES_DDL, OPENING_DDL, adjudicate
from twopay.rules.loader import RuleSet, load_rules

PERIOD_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")  # ASCII digits only: \d takes "２０２４"


Progress = Callable[[str], None]


@dataclass
class RunOptions:
    period: str
    settlements: Sequence[Path]
    roster: Path
    units: Path | None = None
    enrollments: Path | None = None
    out: Path | None = None
    encoding: str | None = None
    replace: bool = False
    max_quarantine_rate: float | None = None
    lang: str | None = None
    unmask: bool = False
    today: date = field(default_factory=date.today)


@dataclass
class RunResult:
    batch_id: int
    period: str
    summary: dict[str, object]
    reports: Path
    noop: bool = False


def _q(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> list[tuple]:  # type: ignore[type-arg]
    return con.execute(sql, list(params)).fetchall()


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> object:
    return _q(con, sql, params)[0][0]


def run_batch(ws: Workspace, opts: RunOptions, progress: Progress | None = None) -> RunResult:
    """One batch (spec 6). DuckDB running out of memory is raised as
    OutOfMemory, naming the stage it stopped in and the settings to change."""
    where = _Where(progress or (lambda _msg: None))
    try:
        return _run_batch(ws, opts, where)
    except (KeyboardInterrupt, duckdb.InterruptException, RuntimeError) as exc:
        # Ctrl-C lands in Python (KeyboardInterrupt) or inside a DuckDB query
        # (RuntimeError 'Query interrupted'); either way, say whether the
        # batch is in the ledger: after the commit only the reports are missing
        if isinstance(exc, RuntimeError) and "interrupted" not in str(exc).lower():
            raise
        if where.committed:
            raise Interrupted(
                "interrupted while writing the reports; the batch is committed; run the "
                "same command again to write its reports."
            ) from None
        raise Interrupted("interrupted; nothing was committed.") from None
    except duckdb.OutOfMemoryException as exc:
        settings = ws.settings.duckdb
        done = (
            "the batch is committed but its reports could not be written"
            if where.committed
            else "nothing was committed"
        )
        raise OutOfMemory(
            f"DuckDB ran out of memory while {where.stage} (memory_limit "
            f"{settings.memory_limit}, threads {settings.threads or 'all cores'}); {done}; "
            f"{oom_advice(settings.threads)}"
        ) from exc
    except (OSError, duckdb.Error) as exc:
        if not disk_full(exc):
            raise
        if where.committed:  # after the commit (spec 6)
            raise DiskFull(
                "the disk is full: the batch is committed but its reports could not be "
                "written; free space and run the same command again to write them."
            ) from exc
        raise DiskFull(
            "the disk is full (ledger or temp_directory); nothing was committed; free space "
            "and run again."
        ) from exc


@dataclass
class _Where:
    """How far a run got: the stage it last announced, and whether its batch
    is in the ledger (what an error must say about it)."""

    shown: Progress
    stage: str = "preparing the batch"
    committed: bool = False

    def say(self, msg: str) -> None:
        self.stage = msg
        self.shown(msg)


def _run_batch(ws: Workspace, opts: RunOptions, where: _Where) -> RunResult:
    say = where.say
    if not PERIOD_RE.match(opts.period):
        raise UsageError(f"--period {opts.period!r}: expected YYYY-MM, e.g. 2024-03.")
    if not opts.settlements:
        raise UsageError("--settlements: give at least one settlement file.")
    lang = opts.lang or ws.settings.lang
    rules = load_rules(ws.rules_dir)
    max_q = (
        opts.max_quarantine_rate
        if opts.max_quarantine_rate is not None
        else ws.settings.run.max_quarantine_rate
    )
    inputs = _input_manifest(ws, opts)
    basis: dict[str, object] = {
        "inputs": [(i["role"], i["sha256"]) for i in inputs],
        "rules": rules.fingerprint(),
    }
    # how the bytes are read is part of the inputs: a --replace after fixing
    # --encoding or a header alias must redo the batch, not rewrite the old
    # reports (only when set, so that fingerprints of existing batches stand)
    if opts.encoding or ws.settings.aliases:
        basis["read"] = {"encoding": opts.encoding, "aliases": ws.settings.aliases}
    fingerprint = _fingerprint(basis)
    # absolute: the reports are renamed into place beside it ('--out .' too)
    out_dir = (opts.out or ws.reports_dir(opts.period)).absolute()
    check_out_folder(out_dir)

    with ws.lock(f"run --period {opts.period}"):
        con = ws.connect()
        try:
            existing = _q(
                con,
                "SELECT batch_id, fingerprint, inputs, rules FROM batches WHERE period = ?",
                [opts.period],
            )
            latest = _scalar(con, "SELECT max(batch_id) FROM batches")
            replacing: int | None = None
            if existing:
                batch_id, old_fp, old_inputs, old_rules = existing[0]
                reordered = _in_committed_order(old_inputs, inputs)
                if reordered is not None and old_fp == _fingerprint(dict(basis, inputs=reordered)):
                    # the same settlement files named in another order are
                    # byte-identical inputs (spec 6)
                    fingerprint = old_fp
                # the same files read another way: --encoding or [aliases]
                changed = _changed_inputs(old_inputs, old_rules, inputs, rules) or [READ_SETTINGS]
                if (
                    old_fp != fingerprint
                    and set(changed) <= {"overrides", READ_SETTINGS}
                    and batch_id != latest
                ):
                    # overrides.csv grows as reviews are decided, and aliases
                    # are added as exports change: a batch that can no longer
                    # be redone has its reports rewritten, as committed
                    say(
                        f"{' and '.join(changed)} changed since batch {batch_id}, which is not "
                        "the latest and stands as committed"
                    )
                    old_fp = fingerprint
                if old_fp == fingerprint:
                    where.committed = True  # long ago
                    say("same inputs as the committed batch: rewriting its reports")
                    summary = render_batch_reports(
                        con, batch_id, out_dir, lang=lang, unmask=opts.unmask
                    )
                    return RunResult(batch_id, opts.period, summary, out_dir, noop=True)
                if not opts.replace:
                    raise BatchConflict(
                        f"period {opts.period} is already committed (batch {batch_id}) with other "
                        f"inputs ({', '.join(changed)} differ); pass "
                        "--replace to redo it (only the latest batch can be replaced)."
                    )
                if batch_id != latest:
                    raise BatchConflict(
                        f"period {opts.period} (batch {batch_id}) is not the latest batch "
                        f"(batch {latest}); only the latest batch can be replaced."
                    )
                answered = _q(
                    con,
                    "SELECT min(b.return_id), count(DISTINCT b.payment_id) FROM bank_returns b "
                    "JOIN payments p USING (payment_id) WHERE p.batch_id = ? "
                    "AND b.line_number IS NOT NULL",
                    [batch_id],
                )
                if answered and answered[0][1]:
                    # money has moved (or failed to): the bank's answers would
                    # attach to the new batch's payments of the same payment_id
                    raise BatchConflict(
                        f"period {opts.period} (batch {batch_id}) cannot be replaced: the bank "
                        f"has answered {answered[0][1]} of its payments (bank return "
                        f"{answered[0][0]}); correct it in the next period instead."
                    )
                replacing = batch_id
            batch_id = replacing if replacing is not None else int(latest or 0) + 1
            started = datetime.now().replace(microsecond=0)
            clear_uncommitted_stages(con)  # the rows of a run that never committed
            roster_sha = next(i["sha256"] for i in inputs if i["role"] == "roster")
            stage = _Batch(con, ws, opts, rules, batch_id, replacing, lang, say, roster_sha)
            try:
                summary = stage.run(inputs, started, max_q, out_dir)
                finished = datetime.now().replace(microsecond=0)
                summary["started_at"] = started.isoformat()
                summary["finished_at"] = finished.isoformat()
                say("committing")
                stage.commit(fingerprint, inputs, started, finished, summary)
            except BaseException:
                stage.discard_stage()
                raise
            where.committed = True
            if replacing is not None:
                # the notices of the batch replaced name rows it no longer
                # holds: they go (`twopay notices` writes the new batch's),
                # at once: a run that dies while writing the reports is
                # finished by a no-op re-run, which would leave them behind
                remove_notice_files(ws.reports_dir(opts.period) / "notices")
            # the batch is in the ledger now: its working tables (GBs at a
            # Beijing-sized month, partly spilled) would only crowd the report
            # queries, which read the ledger
            drop_temporaries(con)
            say("writing reports")
            summary = render_batch_reports(con, batch_id, out_dir, lang=lang, unmask=opts.unmask)
            return RunResult(batch_id, opts.period, summary, out_dir)
        finally:
            con.close()


READ_SETTINGS = "the reading settings (--encoding, [aliases])"


def _changed_inputs(
    old_inputs: str, old_rules: str, inputs: list[dict[str, str]], rules: RuleSet
) -> list[str]:
    """The roles (settlements, roster, ..., overrides, rules) whose files differ
    from those a committed batch read."""

    def by_role(items: list[dict[str, str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i in items:
            out.setdefault(i["role"], []).append(i["sha256"])
        return out

    old, new = by_role(json.loads(old_inputs)), by_role(inputs)
    changed = [r for r in sorted(old.keys() | new.keys()) if old.get(r) != new.get(r)]
    if json.loads(old_rules) != json.loads(json.dumps(rules.manifest(), ensure_ascii=False)):
        changed.append("rules")
    return changed


def _fingerprint(basis: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def _in_committed_order(
    old_inputs: str, inputs: list[dict[str, str]]
) -> list[tuple[str, str]] | None:
    """The fingerprint's (role, sha256) of ``inputs`` with the settlement
    files in the order a committed batch listed the same files (None when
    they are not the same files)."""
    old = [i["sha256"] for i in json.loads(old_inputs) if i["role"] == "settlements"]
    new = [i["sha256"] for i in inputs if i["role"] == "settlements"]
    if sorted(old) != sorted(new):
        return None
    others = [(i["role"], i["sha256"]) for i in inputs if i["role"] != "settlements"]
    return [("settlements", sha) for sha in old] + others


def _input_manifest(ws: Workspace, opts: RunOptions) -> list[dict[str, str]]:
    files: list[tuple[str, Path]] = [("settlements", p) for p in opts.settlements]
    files.append(("roster", opts.roster))
    if opts.units:
        files.append(("units", opts.units))
    if opts.enrollments:
        files.append(("enrollments", opts.enrollments))
    if ws.overrides_path.exists():
        files.append(("overrides", ws.overrides_path))
    for role, path in files:
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "no such file"
            given = "the workspace's review decisions" if role == "overrides" else f"--{role}"
            raise UsageError(f"{path}: {what} ({given}).")
    # side by side: hashlib lets go of the GIL, and a month's CSVs are GBs
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        digests = list(pool.map(file_sha256, [path for _, path in files]))
    return [
        {"role": role, "file": path.name, "sha256": digest}
        for (role, path), digest in zip(files, digests, strict=True)
    ]


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A lazily loaded file is read by the statement that types its cells: a
    file DuckDB cannot decode (a corrupt Parquet page, ...) is the input's
    fault (exit 2, naming it), not an internal error."""
    try:
        yield
    except (duckdb.InvalidInputException, duckdb.IOException) as exc:
        first = " ".join(str(exc).split())[:300]
        raise UsageError(f"{path}: cannot be read ({first}).") from None


class _Batch:
    """The stages of one batch over one connection."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        ws: Workspace,
        opts: RunOptions,
        rules: RuleSet,
        batch_id: int,
        replacing: int | None,
        lang: str,
        say: Progress,
        roster_sha256: str,
    ) -> None:
        self.con = con
        self.ws = ws
        self.opts = opts
        self.rules = rules
        self.batch_id = batch_id
        self.replacing = replacing
        self.lang = lang
        self.say = say
        # Earlier batches only: a replaced batch's rows do not count.
        self.prior = "batch_id < ?" if replacing is not None else "batch_id <= ?"
        self.prior_arg = batch_id if replacing is not None else batch_id - 1
        # the batch's large tables go straight to the ledger's stage tables
        # (ledger.schema.STAGED) under this stage_id; the commit's batches row
        # names it, which is what puts them in the ledger
        self.stage_id = next_stage_id(con)
        # The roster: read into this stage, or, when an earlier batch read the
        # same file the same way (same bytes, --encoding, header aliases and
        # twopay version), its records are this batch's too. A monthly roster
        # of millions of records is then read and stored once, not monthly.
        self.roster_key = hashlib.sha256(
            json.dumps(
                {
                    "sha256": roster_sha256,
                    "encoding": opts.encoding,
                    "aliases": ws.settings.aliases,
                    "twopay": __version__,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        known = _q(
            con,
            "SELECT roster_stage, batch_id FROM batches WHERE roster_key = ? "
            "ORDER BY batch_id DESC LIMIT 1",
            [self.roster_key],
        )
        self.roster_from: int | None = int(known[0][1]) if known else None
        self.roster_stage = int(known[0][0]) if known else self.stage_id

    def discard_stage(self) -> None:
        """A run that does not commit leaves no stage rows (best effort: a
        run that cannot even delete them leaves them to the next run, which
        deletes the rows of every stage no batch names)."""
        try:
            for table in STAGED.values():
                self.con.execute(f"DELETE FROM {table} WHERE stage_id = ?", [self.stage_id])
        except duckdb.Error:
            pass

    # -- loading ---------------------------------------------------------

    def _load(self, path: Path, kind: FileKind, table: str, workdir: Path) -> LoadedFile:
        # lazy: the file is read once, by the statement that types its cells
        return load_input(
            self.con,
            path,
            kind,
            table,
            workdir=workdir,
            encoding=self.opts.encoding,
            aliases=self.ws.settings.aliases,
            lazy=True,
        )

    def load(self, workdir: Path) -> None:
        con = self.con
        stage = self.stage_id
        validate.install_macros(con)
        self.say("reading settlements")
        # One statement per file: its raw text and typed cells are its own
        # columns. The rows are written once, into the ledger (spec 6 keeps
        # them), and the stages read them there: a temp copy of millions of
        # rows would be held to the commit, spilled, and copied again.
        for i, path in enumerate(self.opts.settlements):
            loaded = self._load(path, SETTLEMENTS, f"in_settle_{i}", workdir)
            # row_key orders rows by file then line without a sort (files < 10^12 lines)
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW s_in AS SELECT {i} * 1000000000000 + line_number "
                f"AS row_key, * FROM {loaded.table}"
            )
            typed = validate.typed_settlements_query(
                "s_in", SETTLEMENTS, raw=loaded.raw_sql, typed=loaded.typed
            )
            with _reading(path):
                con.execute(
                    f"INSERT INTO settlement_rows BY NAME SELECT {stage} AS stage_id, * "
                    f"FROM ({typed})"
                )
            con.execute("DROP VIEW s_in")
            drop_loaded(con, loaded.table)
        con.execute(
            "CREATE OR REPLACE TEMP VIEW s_typed AS "
            f"SELECT * EXCLUDE (stage_id) FROM settlement_rows WHERE stage_id = {stage}"
        )

        self.say("reading the roster")
        con.execute("SET VARIABLE identity_today = ?::DATE", [self.opts.today])
        if self.roster_from is None:
            self._load_roster(workdir)
        else:
            self.say(f"the roster is batch {self.roster_from}'s: its records are reused")
        # the readable records (quarantined ones go to q_rows)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP VIEW roster AS
            SELECT record_key, member_id, name, id_number, card_no, unit_code, unit_name,
                   category, valid_from, valid_to, bank_account, person_key, name_norm,
                   line_number
            FROM roster_rows WHERE stage_id = {self.roster_stage} AND q_code IS NULL
            """
        )
        self._refuse_a_file_without_records(
            self.opts.roster, f"(SELECT * FROM roster_rows WHERE stage_id = {self.roster_stage})",
            "roster has no member", "not_a_member", "fix the file",
        )  # fmt: skip
        self._load_others(workdir)

    def _load_roster(self, workdir: Path) -> None:
        con, stage = self.con, self.stage_id
        loaded = self._load(self.opts.roster, ROSTER, "r_in0", workdir)
        con.execute(
            "CREATE OR REPLACE TEMP VIEW r_in AS SELECT line_number AS row_key, * FROM r_in0"
        )
        # the matching keys are computed as the records are written (spec 3)
        person_key, name_norm = roster_keys_sql()
        typed = validate.typed_roster_query("r_in", ROSTER, raw=loaded.raw_sql, typed=loaded.typed)
        with _reading(self.opts.roster):
            con.execute(
                f"""
                INSERT INTO roster_rows BY NAME
                SELECT {stage} AS stage_id, *,
                       CASE WHEN q_code IS NULL THEN {person_key} END AS person_key,
                       CASE WHEN q_code IS NULL THEN {name_norm} END AS name_norm
                FROM ({typed})
                """
            )
        con.execute("DROP VIEW r_in")
        drop_loaded(con, "r_in0")
        # the keys of IDs that NFKC had not reached (almost never any)
        fix_roster_keys(con, "roster_rows", f"stage_id = {stage} AND q_code IS NULL")

    def _explain_not_a_member(self) -> None:
        """A not_a_member whose ID is on a roster record that could not be
        read, or on one whose ID Excel turned into a number (15 digits kept,
        the rest zeroed; never guessed, spec 3), is not "valid but not in the
        roster": the detail names that record, for the unit's officers. Both
        kinds of record are few; the 5M-row id_result is touched only when
        there are some."""
        con = self.con
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE unmatched_records AS
            SELECT {id_normalise_sql("id_number")} AS id_norm, NULL::VARCHAR AS head,
                   min(line_number) AS line,
                   'is on roster line ' || min(line_number)::VARCHAR
                       || ', which could not be read (' || arg_min(q_code, line_number)
                       || '; see quarantine.csv)' AS says
            FROM roster_rows
            WHERE stage_id = {self.roster_stage} AND q_code IS NOT NULL
            GROUP BY ALL
            UNION ALL
            SELECT NULL, left(person_key, 15), min(line_number),
                   'is not in the roster; roster line ' || min(line_number)::VARCHAR
                       || ' (member ' || arg_min(member_id, line_number) || ') has an ID '
                       || 'number Excel turned into a number with the same first 15 digits: '
                       || 'export the roster''s ID column as text'
            FROM roster
            WHERE right(person_key, 3) = '000'
              AND {id_problem_sql("person_key", "$today")} = 'excel_mangled'
            GROUP BY ALL
            """,
            {"today": self.opts.today},
        )
        if _scalar(con, "SELECT count(*) FROM unmatched_records"):
            con.execute(
                """
                UPDATE id_result SET detail = replace(id_result.detail,
                    'is valid but not in the roster', u.says)
                FROM (
                    SELECT row_key, arg_min(says, line) AS says FROM (
                        SELECT r.row_key, u.says, u.line
                        FROM id_result r JOIN unmatched_records u ON u.id_norm = r.id_norm
                        WHERE r.outcome = 'not_a_member'
                        UNION ALL
                        SELECT r.row_key, u.says, u.line
                        FROM id_result r JOIN unmatched_records u
                            ON u.head = left(r.id_norm, 15)
                        WHERE r.outcome = 'not_a_member'
                    ) GROUP BY ALL
                ) u
                WHERE id_result.row_key = u.row_key
                """
            )
        # a member found on another record and rejected membership_inactive:
        # the detail names their unreadable record too (eligibility.check);
        # one row per ID number
        con.execute(
            "CREATE OR REPLACE TEMP TABLE roster_unread AS "
            "SELECT id_norm, line FROM unmatched_records WHERE id_norm IS NOT NULL"
        )
        _drop(con, "unmatched_records")

    def _load_others(self, workdir: Path) -> None:
        con = self.con
        for kind, path, table in (
            (UNITS, self.opts.units, "units"),
            (ENROLLMENTS, self.opts.enrollments, "enrollments"),
        ):
            if path is None:
                continue
            loaded = self._load(path, kind, f"{table}_in0", workdir)
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {table}_in AS SELECT line_number AS row_key, * "
                f"FROM {table}_in0"
            )
            with _reading(path):
                con.execute(
                    validate.typed_simple_sql(
                        f"{table}_in",
                        f"{table}_typed",
                        kind,
                        raw=loaded.raw_sql,
                        typed=loaded.typed,
                    )
                )
            con.execute(f"DROP VIEW {table}_in")
            drop_loaded(con, f"{table}_in0")
        if self.opts.units is not None:
            self._refuse_a_file_without_records(
                self.opts.units, "units_typed", "units file has no unit", "unit_dues_unpaid",
                "fix the file, or run without --units",
            )  # fmt: skip
        if self.opts.enrollments is not None:
            self._refuse_enrollments_of_unknown_schemes(self.opts.enrollments)
        if self.ws.overrides_path.exists():
            loaded = self._load(self.ws.overrides_path, OVERRIDES, "ovr_in0", workdir)
            con.execute(
                "CREATE OR REPLACE TEMP VIEW ovr_in AS SELECT line_number AS row_key, * "
                "FROM ovr_in0"
            )
            con.execute(
                validate.typed_simple_sql("ovr_in", "ovr_typed", OVERRIDES, raw=loaded.raw_sql)
            )
            con.execute("DROP VIEW ovr_in")
            drop_loaded(con, "ovr_in0")
            bad = _q(
                con,
                "SELECT line_number, q_detail FROM ovr_typed WHERE q_code IS NOT NULL "
                "ORDER BY line_number LIMIT 1",
            )
            if bad:
                raise UsageError(
                    f"{self.ws.overrides_path}: line {bad[0][0]}: {mask_text(bad[0][1] or '')}; "
                    "fix the override."
                )
        else:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE ovr_typed (line_number BIGINT, settlement_id VARCHAR,"
                " decision VARCHAR, member_id VARCHAR, note VARCHAR, decided_by VARCHAR)"
            )

    def _refuse_a_file_without_records(
        self, path: Path, table: str, what: str, code: str, fix: str
    ) -> None:
        """A roster with no readable record, or a units file with no readable
        unit, would reject every settlement (not_a_member, unit_dues_unpaid),
        for good: a settlement re-sent later is a duplicate. The file is
        wrong: exit 2, naming its first unreadable line."""
        read, line, detail = _q(
            self.con,
            "SELECT count(*) FILTER (WHERE q_code IS NULL), "
            "min(line_number) FILTER (WHERE q_code IS NOT NULL), "
            f"arg_min(q_detail, line_number) FILTER (WHERE q_code IS NOT NULL) FROM {table}",
        )[0]
        if read:
            return
        why = (
            f"none of its rows can be read (line {line}: {mask_text(detail or '')})"
            if line is not None
            else "it has no rows under its header"
        )
        raise UsageError(
            f"{path}: the {what}, {why}; every settlement would be rejected {code}: {fix}."
        )

    def _refuse_enrollments_of_unknown_schemes(self, path: Path) -> None:
        """An enrollment names its scheme by a rule file's `scheme` id. One
        that names no scheme of the rules (its title 威海市..., another case)
        is never read: every member of that scheme would be rejected
        no_coverage "no enrollment in force", for good (a settlement re-sent
        later is a duplicate). The file is wrong: exit 2 naming the line."""
        known = sorted(self.rules.schemes)
        bad = _q(
            self.con,
            "SELECT line_number, scheme FROM enrollments_typed WHERE q_code IS NULL "
            "AND NOT list_contains(?::VARCHAR[], scheme) ORDER BY line_number LIMIT 1",
            [known],
        )
        if bad:
            raise UsageError(
                f"{path}: line {bad[0][0]}: scheme {mask_text(repr(bad[0][1]))} is not a scheme of "
                "the rules; "
                f"expected one of: {', '.join(known)} (the `scheme` key of a rule file)."
            )

    # -- quarantine ------------------------------------------------------

    def quarantine(self, max_rate: float, out_dir: Path) -> None:
        con = self.con
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE q_rows AS
            SELECT 'settlements' AS file_kind, source_file, line_number, q_code AS error_code,
                   q_detail AS detail, raw, row_key
            FROM s_typed WHERE q_code IS NOT NULL
            UNION ALL
            SELECT 'roster', ?, line_number, q_code, q_detail, raw, NULL
            FROM roster_rows WHERE stage_id = ? AND q_code IS NOT NULL
            """,
            # a reused roster's rows are this batch's file's (the same bytes)
            [self.opts.roster.name, self.roster_stage],
        )
        for table in ("units", "enrollments"):
            if _table_exists(con, f"{table}_typed"):
                con.execute(
                    f"INSERT INTO q_rows SELECT '{table}', source_file, line_number, q_code, "
                    f"q_detail, raw, NULL FROM {table}_typed WHERE q_code IS NOT NULL"
                )
        total = int(_scalar(con, "SELECT count(*) FROM s_typed"))  # type: ignore[arg-type]
        bad = int(_scalar(con, "SELECT count(*) FROM s_typed WHERE q_code IS NOT NULL"))  # type: ignore[arg-type]
        if total and bad / total > max_rate:
            from twopay.reports.render import write_quarantine_only

            written = write_quarantine_only(con, out_dir, unmask=self.opts.unmask)
            raise DataQualityError(
                f"{bad} of {total} settlement rows ({bad / total:.1%}) could not be read, above "
                f"--max-quarantine-rate {max_rate:.1%}; nothing was committed; see {written}."
            )

    # -- duplicates and reversals (spec 5, 4.1) --------------------------

    def link(self) -> None:
        con = self.con
        # Earlier decisions on a settlement_id (any outcome but quarantine):
        # its first row (file order within the first batch: identical copies
        # after it are duplicates), how that row was first decided, and how
        # it stands now (a held row is decided again in a later batch)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE prior_seen AS
            WITH asked AS (
                -- only the settlement_ids this batch names: a year's ledger holds
                -- tens of millions, of which a month repeats or reverses a few
                SELECT settlement_id FROM s_typed WHERE q_code IS NULL
                UNION SELECT reverses FROM s_typed WHERE q_code IS NULL AND reverses IS NOT NULL
            ),
            firsts AS (
                SELECT o.settlement_id, arg_min(o.row_batch_id, (o.batch_id, o.row_key))
                           AS first_batch,
                       arg_min(o.row_key, (o.batch_id, o.row_key)) AS first_key,
                       arg_min(o.outcome, (o.batch_id, o.row_key)) AS first_outcome
                FROM outcomes o SEMI JOIN asked USING (settlement_id)
                WHERE o.{self.prior} AND NOT o.carried AND o.outcome <> 'quarantined'
                GROUP BY o.settlement_id
            ),
            later AS (
                SELECT row_batch_id, row_key, arg_max(outcome, batch_id) AS outcome,
                       max(batch_id) AS batch_id
                FROM outcomes WHERE {self.prior} AND carried
                GROUP BY row_batch_id, row_key
            )
            SELECT f.*, coalesce(d.outcome, f.first_outcome) AS final_outcome,
                   coalesce(d.batch_id, f.first_batch) AS final_batch
            FROM firsts f
            LEFT JOIN later d ON d.row_batch_id = f.first_batch AND d.row_key = f.first_key
            """,
            [self.prior_arg, self.prior_arg],
        )
        # Repeated settlement_ids are few: found by one narrow aggregate and
        # described apart, so the readable rows are a view, not a copy.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE dup_groups AS
            WITH repeated AS (
                SELECT settlement_id FROM s_typed WHERE q_code IS NULL
                GROUP BY settlement_id HAVING count(*) > 1
            )
            SELECT settlement_id, count(*) AS copies,
                   count(DISTINCT hash(content_hash, {id_normalise_sql("id_number")},
                                       {name_norm_sql("name")})) AS versions,
                   min(row_key) AS first_key,
                   arg_min(line_number, row_key) AS first_line,
                   arg_min(source_file, row_key) AS first_file,
                   -- where the copies are, for a conflict's detail
                   list(source_file || ' line ' || line_number::VARCHAR ORDER BY row_key)
                       AS places
            FROM s_typed SEMI JOIN repeated USING (settlement_id)
            WHERE q_code IS NULL
            GROUP BY settlement_id
            """
        )
        self._same_names_in_either_script()
        con.execute(
            """
            CREATE OR REPLACE TEMP VIEW s_ok AS
            SELECT s.*, coalesce(d.copies, 1) AS copies, coalesce(d.versions, 1) AS versions,
                   d.first_key IS NOT NULL AND s.row_key <> d.first_key AS is_copy,
                   coalesce(d.first_line, s.line_number) AS first_line,
                   coalesce(d.first_file, s.source_file) AS first_file,
                   coalesce(d.first_key, s.row_key) AS first_key, d.places
            FROM s_typed s LEFT JOIN dup_groups d USING (settlement_id)
            WHERE s.q_code IS NULL
            """
        )
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE decided AS
            SELECT s.row_key, s.settlement_id, 'rejected' AS outcome,
                CASE WHEN p.settlement_id IS NOT NULL THEN 'duplicate_settlement'
                     WHEN s.versions > 1 THEN 'conflicting_duplicate'
                     ELSE 'duplicate_settlement' END AS code,
                CASE WHEN p.settlement_id IS NOT NULL
                        THEN 'already processed in batch ' || p.first_batch::VARCHAR
                             || ' (' || p.first_outcome
                             -- a held row decided since: how it stands now
                             || CASE WHEN p.final_batch <> p.first_batch
                                     THEN ', then ' || p.final_outcome || ' in batch '
                                          || p.final_batch::VARCHAR ELSE '' END || ')'
                     WHEN s.versions > 1
                        THEN s.copies::VARCHAR || ' rows carry this settlement_id with different '
                             || 'content (' || array_to_string(s.places[:5], ', ')
                             || CASE WHEN s.copies > 5 THEN ', ...' ELSE '' END || ')'
                     ELSE 'identical copy of line ' || s.first_line::VARCHAR
                          -- row_key // 10^12 is the file's place among --settlements
                          || CASE WHEN s.first_key // 1000000000000 = s.row_key // 1000000000000
                                  THEN ''
                                  WHEN s.first_file <> s.source_file THEN ' of ' || s.first_file
                                  ELSE ' of ' || s.first_file || ' (--settlements file '
                                       || (s.first_key // 1000000000000 + 1)::VARCHAR || ')'
                             END END AS detail
            FROM s_ok s LEFT JOIN prior_seen p USING (settlement_id)
            WHERE p.settlement_id IS NOT NULL OR s.versions > 1 OR s.is_copy
            """
        )
        # The earlier lines of the originals this batch reverses: how many
        # normal lines each has (a reversal has none: it cannot be reversed)
        # and which reversal, if any, already clawed them back.
        reversals = _scalar(con, "SELECT count(*) FROM s_ok WHERE reverses IS NOT NULL")
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rev_orig AS
            WITH orig AS (
                SELECT l.settlement_id, l.line_key FROM lines l
                WHERE l.{self.prior} AND l.kind = 'normal'
                  AND l.settlement_id IN (SELECT reverses FROM s_ok WHERE reverses IS NOT NULL)
            )
            SELECT o.settlement_id, count(DISTINCT o.line_key) AS normal_lines,
                   arg_min(c.settlement_id, c.line_key) AS clawed_by,
                   arg_min(c.batch_id, c.line_key) AS clawed_in
            FROM orig o
            LEFT JOIN lines c ON c.reverses_line = o.line_key AND c.kind = 'clawback'
                             AND c.{self.prior}
            GROUP BY o.settlement_id
            {"" if reversals else "LIMIT 0"}
            """,
            [self.prior_arg, self.prior_arg],
        )
        # Reversal link: rows with `reverses`, not already decided.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rev AS
            SELECT s.row_key, s.settlement_id, s.reverses, s.service_date,
                -- an original decided in an earlier batch wins over a copy in this one
                CASE WHEN p.settlement_id IS NULL THEN
                    (SELECT min(t.row_key) FROM s_typed t
                      WHERE t.settlement_id = s.reverses AND t.q_code IS NULL)
                END AS same_batch_row,
                -- unreadable here, or in an earlier batch (its quarantine.csv)
                EXISTS (SELECT 1 FROM s_typed t
                  WHERE t.settlement_id = s.reverses AND t.q_code IS NOT NULL)
                OR EXISTS (SELECT 1 FROM outcomes q
                  WHERE q.{self.prior} AND q.settlement_id = s.reverses
                    AND q.outcome = 'quarantined') AS orig_quarantined,
                p.final_outcome AS prior_outcome, p.final_batch AS prior_batch,
                coalesce(o.normal_lines, 0) AS normal_lines, o.clawed_by, o.clawed_in
            FROM s_ok s
            LEFT JOIN prior_seen p ON p.settlement_id = s.reverses
            LEFT JOIN rev_orig o ON o.settlement_id = s.reverses
            WHERE s.reverses IS NOT NULL
              AND s.row_key NOT IN (SELECT row_key FROM decided)
            """,
            [self.prior_arg],
        )
        _drop(con, "rev_orig")
        con.execute(
            """
            INSERT INTO decided
            SELECT row_key, settlement_id, 'rejected',
                CASE WHEN same_batch_row IS NULL AND prior_outcome IS NULL
                     THEN 'reversal_unmatched' ELSE 'reversed' END,
                CASE WHEN same_batch_row IS NOT NULL
                        THEN 'reverses ' || reverses || ' in the same batch; neither is paid'
                     WHEN prior_outcome IS NULL AND orig_quarantined
                        THEN 'the original ' || reverses || ' could not be read (quarantined)'
                     WHEN prior_outcome IS NULL
                        THEN 'no settlement ' || reverses || ' in this or an earlier batch'
                     WHEN prior_outcome <> 'adjudicated'
                        THEN 'the original ' || reverses || ' was ' || prior_outcome
                             || ' in batch ' || prior_batch::VARCHAR || '; nothing to claw back'
                     WHEN normal_lines = 0
                        THEN reverses || ' is itself a reversal; it cannot be reversed'
                     ELSE 'settlement ' || reverses || ' was already reversed by ' || clawed_by
                          || ' in batch ' || clawed_in::VARCHAR
                END
            FROM rev
            WHERE same_batch_row IS NOT NULL OR prior_outcome IS NULL
               OR prior_outcome <> 'adjudicated' OR normal_lines = 0 OR clawed_by IS NOT NULL
            """
        )
        # Several reversals of one original in this batch: the first in file
        # order claws it back, the others find nothing left to claw back.
        con.execute(
            """
            INSERT INTO decided
            SELECT row_key, settlement_id, 'rejected', 'reversed',
                   'settlement ' || reverses || ' is reversed by ' || first_id || ' in this batch'
            FROM (
                SELECT row_key, settlement_id, reverses,
                       arg_min(settlement_id, row_key) OVER (PARTITION BY reverses) AS first_id,
                       min(row_key) OVER (PARTITION BY reverses) AS first_key
                FROM rev WHERE row_key NOT IN (SELECT row_key FROM decided)
            )
            WHERE row_key <> first_key
            """
        )
        # An original reversed within the batch is rejected too (unless already decided).
        con.execute(
            """
            INSERT INTO decided
            SELECT t.row_key, t.settlement_id, 'rejected', 'reversed',
                   'reversed by ' || string_agg(r.settlement_id, ', ' ORDER BY r.settlement_id)
                   || ' in the same batch'
            FROM rev r JOIN s_ok t ON t.row_key = r.same_batch_row
            WHERE t.row_key NOT IN (SELECT row_key FROM decided)
            GROUP BY t.row_key, t.settlement_id
            """
        )
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE clawback_rows AS
            SELECT r.row_key, r.settlement_id, r.reverses, r.service_date
            FROM rev r WHERE r.row_key NOT IN (SELECT row_key FROM decided)
            """
        )
        # Held originals of earlier batches withdrawn from review by their reversal.
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE withdrawn AS
            SELECT h.row_batch_id, h.row_key, h.settlement_id, r.settlement_id AS by_settlement
            FROM rev r
            JOIN pending_reviews h ON h.settlement_id = r.reverses
            WHERE r.prior_outcome = 'held'
            -- several reversals of one held original: the first in file order
            -- withdraws it (one decision per row, spec 5)
            QUALIFY row_number() OVER (
                PARTITION BY h.row_batch_id, h.row_key ORDER BY r.row_key) = 1
            """
        )

    def _same_names_in_either_script(self) -> None:
        """Copies whose names differ only in Traditional and Simplified
        characters are the same copy (spec 3: those names are equal; spec 5:
        the same values after normalisation). Only the few settlement_ids
        whose copies seemed to differ are looked at again, their names
        converted by opencc in one call."""
        con = self.con
        if not _scalar(con, "SELECT count(*) FROM dup_groups WHERE versions > 1"):
            return  # no copies differ (most months): nothing to look at again
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE dup_differing AS
            SELECT s.settlement_id, s.content_hash, {id_normalise_sql("s.id_number")} AS id_norm,
                   {name_norm_sql("s.name")} AS name_norm
            FROM s_typed s SEMI JOIN (SELECT settlement_id FROM dup_groups WHERE versions > 1)
                USING (settlement_id)
            WHERE s.q_code IS NULL
            """
        )
        names = [r[0] or "" for r in _q(con, "SELECT DISTINCT name_norm FROM dup_differing")]
        simple = to_simplified_many(names)
        if names != simple:  # a Traditional character among them
            register_table(con, "dup_names", {"norm": names, "simple": simple})
            con.execute(
                """
                UPDATE dup_groups g SET versions = v.versions
                FROM (
                    SELECT d.settlement_id,
                           count(DISTINCT hash(d.content_hash, d.id_norm, n.simple)) AS versions
                    FROM dup_differing d JOIN dup_names n ON n.norm = coalesce(d.name_norm, '')
                    GROUP BY d.settlement_id
                ) v
                WHERE g.settlement_id = v.settlement_id
                """
            )
            _drop(con, "dup_names")
        _drop(con, "dup_differing")

    def pending(self) -> None:
        """Held rows of earlier batches still waiting for a decision."""
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE pending_reviews AS
            SELECT o.*
            FROM outcomes o
            WHERE o.{self.prior} AND o.outcome = 'held'
              AND NOT EXISTS (
                SELECT 1 FROM outcomes d
                WHERE d.{self.prior} AND d.carried
                  AND d.row_batch_id = o.row_batch_id AND d.row_key = o.row_key)
            """,
            [self.prior_arg, self.prior_arg],
        )

    # -- identity (spec 3) -----------------------------------------------

    def identity(self) -> None:
        con = self.con
        self.say("matching identities")
        con.execute(eligibility.ROSTER_TIME_SQL)
        eligibility.check_roster_overlaps(con, self.opts.roster)
        eligibility.check_roster_member_ids(con, self.opts.roster)
        # Rows to identify: this batch's undecided non-reversal rows, and held
        # rows of earlier batches that an override now decides. wid is one
        # key for both: the row_key of a row of this batch (positive), a
        # negative number for a carried row. A view: the matcher, the
        # override check and identified2 each read a few of its columns, so
        # it is not copied out of s_typed (5M rows, ~2 s) to be read thrice.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP VIEW work AS
            SELECT s.row_key AS wid, {self.batch_id} AS row_batch_id, s.row_key, s.settlement_id,
                   s.id_number, s.name, s.visit_type, s.service_date, s.admission_date,
                   s.total_cost, s.self_pay_1, s.self_pay_2, s.out_of_pocket, false AS carried
            FROM s_typed s
            WHERE s.q_code IS NULL AND s.reverses IS NULL
              AND s.row_key NOT IN (SELECT row_key FROM decided)
            UNION ALL
            SELECT -row_number() OVER (ORDER BY h.row_batch_id, h.row_key), h.row_batch_id,
                   h.row_key, h.settlement_id, st.id_number, st.name,
                   st.visit_type, st.service_date, st.admission_date, st.total_cost,
                   st.self_pay_1, st.self_pay_2, st.out_of_pocket, true
            FROM pending_reviews h
            JOIN settlements st ON st.batch_id = h.row_batch_id AND st.row_key = h.row_key
            WHERE h.settlement_id IN (SELECT settlement_id FROM ovr_typed)
              AND NOT EXISTS (SELECT 1 FROM withdrawn w
                              WHERE w.row_batch_id = h.row_batch_id AND w.row_key = h.row_key)
            """
        )
        con.execute("DROP VIEW s_ok")
        _drop(con, "dup_groups")
        con.execute(
            "CREATE OR REPLACE TEMP VIEW id_input AS "
            "SELECT wid AS row_key, id_number AS id_raw, name, service_date FROM work"
        )
        match_identities(con, self.opts.today, lazy_exact=True)
        con.execute("DROP VIEW id_input")
        self._explain_not_a_member()
        scratch = [
            r[0]
            for r in _q(
                con,
                "SELECT table_name FROM duckdb_tables() WHERE temporary "
                "AND starts_with(table_name, 'identity_')",
            )
        ]
        _drop(con, *scratch)
        # Overrides (spec 3 rule 5) win over the identity rules.
        unknown = _q(
            con,
            """
            -- the line that counts for each settlement_id: its last
            SELECT o.line_number, o.member_id
            FROM (SELECT * FROM ovr_typed QUALIFY row_number() OVER (
                      PARTITION BY settlement_id ORDER BY line_number DESC) = 1) o
            WHERE o.decision = 'accept'
              AND o.settlement_id IN (SELECT settlement_id FROM work)
              AND (o.member_id IS NULL OR o.member_id NOT IN (SELECT member_id FROM roster))
            ORDER BY o.line_number LIMIT 1
            """,
        )
        if unknown:
            line, member = unknown[0]
            raise UsageError(
                f"{self.ws.overrides_path}: line {line}: accept names member_id "
                f"{mask_text(repr(member))}, "
                "which is not in the roster."
                if member is not None
                else f"{self.ws.overrides_path}: line {line}: accept needs the member_id of the "
                "member to pay, and its member_id is empty."
            )
        # The identity result joined to its rows once, with the overrides
        # applied in the same statement.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE identified2 AS
            WITH ovr AS (
                SELECT * FROM ovr_typed
                QUALIFY row_number() OVER (PARTITION BY settlement_id ORDER BY line_number DESC) = 1
            ),
            -- the member_id names a person (check_roster_member_ids): the
            -- record is theirs valid on the service date, else their latest
            -- (spec 5), whichever of their member_ids the reviewer wrote. Only
            -- a valid ID number names a person; records under an invalid one
            -- (1.10105E+17 is many people) are the member_id's own.
            named AS (
                SELECT DISTINCT member_id, person_key FROM roster
                WHERE member_id IN (SELECT member_id FROM ovr WHERE decision = 'accept')
            ),
            member_rec AS (
                SELECT w.wid, r.record_key, r.person_key,
                       row_number() OVER (
                           PARTITION BY w.wid
                           ORDER BY (r.valid_from <= w.service_date
                                     AND (r.valid_to IS NULL OR w.service_date <= r.valid_to)) DESC,
                                    r.member_id = o.member_id DESC,
                                    r.valid_from DESC, r.record_key DESC) AS pick
                FROM work w
                JOIN ovr o ON o.settlement_id = w.settlement_id AND o.decision = 'accept'
                JOIN named p ON p.member_id = o.member_id
                JOIN roster r ON r.person_key = p.person_key
                WHERE r.member_id = o.member_id OR {id_problem_sql("r.person_key", TODAY_SQL)} IS NULL
            )
            -- what eligibility reads: not the ID number and name as given,
            -- which identity has done with (at a year in one batch, GBs)
            SELECT w.* EXCLUDE (wid, id_number, name),
                CASE WHEN o.decision = 'accept' THEN 'override'
                     WHEN o.decision = 'reject' THEN
                        CASE WHEN i.outcome IN ('probable_name_typo', 'name_mismatch',
                                                'exact', 'homophone')
                             THEN 'name_mismatch'
                             WHEN i.id_problem IS NOT NULL THEN 'invalid_id_number'
                             ELSE 'not_a_member' END
                     ELSE i.outcome END AS id_outcome,
                CASE WHEN o.decision = 'accept' THEN 'override' ELSE i.match END AS match,
                CASE WHEN o.decision = 'accept' THEN m.person_key ELSE i.person_key END
                    AS person_key,
                CASE WHEN o.decision = 'accept' THEN m.record_key ELSE i.record_key END
                    AS record_key,
                i.candidate_member_id,
                CASE WHEN o.decision IS NOT NULL
                    THEN 'review decision ' || o.decision
                         || coalesce(' by ' || o.decided_by, '')
                         || coalesce(': ' || o.note, '') || ' (was: '
                         || coalesce(i.detail, {exact_detail_sql("i.roster_member")}) || ')'
                    ELSE i.detail END AS id_detail,
                -- a review decision is evidence too: who decided what, and what the
                -- identity rules had found; NULL for a plain exact match, spelled
                -- out as it goes to the ledger (batch_outcomes)
                CASE WHEN o.decision IS NOT NULL THEN json_object(
                    'rule', '3.5', 'outcome', 'override', 'decision', o.decision,
                    'member_id', o.member_id, 'record_key', m.record_key,
                    'decided_by', o.decided_by, 'note', o.note,
                    'was', json(coalesce(
                        i.evidence, {exact_evidence_sql("i.roster_member", "i.record_key")}))
                )::VARCHAR ELSE i.evidence END AS evidence,
                i.roster_member AS id_member, i.record_key AS id_record
            FROM work w
            JOIN id_result i ON i.row_key = w.wid
            LEFT JOIN ovr o ON o.settlement_id = w.settlement_id
            LEFT JOIN member_rec m ON m.wid = w.wid AND m.pick = 1
            """
        )
        con.execute("DROP VIEW work")
        _drop(con, "id_result")

    # -- the whole run -----------------------------------------------------

    def run(
        self, inputs: list[dict[str, str]], started: datetime, max_q: float, out_dir: Path
    ) -> dict[str, object]:
        con = self.con
        self.ws.temp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.ws.temp_dir) as tmp:
            self.load(Path(tmp))
        fault_point("load")
        self.quarantine(max_q, out_dir)
        self.pending()
        self.link()
        self.identity()
        self.say("checking eligibility")
        eligibility.check(
            con,
            self.rules,
            has_units=self.opts.units is not None,
            has_enrollments=self.opts.enrollments is not None,
            unread="roster_unread",
        )
        _drop(con, "identified2", "roster_unread")
        self.write_outcomes()
        self.say("applying rules")
        self.adjudicate()
        fault_point("adjudicate")
        self.payments()
        self.say("balancing the books")
        return self.summarise(inputs)

    # -- rules (spec 4) ----------------------------------------------------

    def adjudicate(self) -> None:
        con = self.con
        con.execute("DROP TABLE IF EXISTS adj_lines")
        con.execute("DROP TABLE IF EXISTS adj_opening")
        con.execute(LINES_DDL)
        con.execute(OPENING_DDL)
        # keys follow the earlier batches' (a replaced batch's lines do not count)
        base_key = int(
            _scalar(  # type: ignore[arg-type]
                con,
                f"SELECT coalesce(max(line_key), 0) FROM lines WHERE {self.prior}",
                [self.prior_arg],
            )
        )
        # Normal lines: one per (row, passing scheme).
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE new_lines AS
            SELECT e.row_batch_id, e.row_key, e.settlement_id, e.scheme, 'normal' AS kind,
                   NULL::BIGINT AS reverses_line, e.person_key, e.member_id, e.unit_code,
                   year(e.service_date) AS plan_year, e.visit_type, e.service_date,
                   e.admission_date, e.total_cost, e.self_pay_1, e.self_pay_2, e.out_of_pocket,
                   e.match, NULL::VARCHAR AS orig_rule_version,
                   NULL::DECIMAL(18,2) AS orig_base_amount, NULL::DECIMAL(18,2) AS orig_ratio_part,
                   NULL::DECIMAL(18,2) AS orig_allowance, NULL::INTEGER AS orig_allowance_days
            FROM eligible_lines e
            """
        )
        con.execute("DROP VIEW eligible_lines")
        # what the ledger keeps of the member checks, written now (the line
        # columns they also held are in new_lines): they need not wait in
        # memory for the commit
        stage = self.stage_id
        con.execute(
            f"""
            INSERT INTO eligibility_member_rows
            SELECT {stage}, row_batch_id, row_key, member_id, unit_code, category, valid_from,
                   valid_to, run_start, dues_paid_through
            FROM member_checks WHERE identified
            """
        )
        con.execute(
            f"""
            INSERT INTO eligibility_scheme_rows
            SELECT {stage}, row_batch_id, row_key, scheme, version, stage, why_not
            FROM ({eligibility.scheme_checks_sql(self.rules, "member_checks")})
            """
        )
        _drop(con, "member_checks")
        # Clawback lines: one per line of the original not yet clawed back.
        con.execute(
            f"""
            INSERT INTO new_lines
            SELECT {self.batch_id}, c.row_key, c.settlement_id, l.scheme, 'clawback',
                   l.line_key, l.person_key, l.member_id, l.unit_code, l.plan_year,
                   l.visit_type, c.service_date, NULL, NULL, NULL, NULL, NULL, l.match,
                   l.rule_version, l.base_amount, l.ratio_part, l.allowance, l.allowance_days
            FROM clawback_rows c
            JOIN lines l ON l.settlement_id = c.reverses AND l.kind = 'normal'
                        AND l.{self.prior}
            """,
            [self.prior_arg],
        )
        # line_key: the keys alone are sorted (sorting every column costs
        # twice as much); the engine's columns go to adj_lines, the few it
        # does not read wait in line_extra: no third copy of the lines
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE line_order AS
            SELECT rowid AS rid, {base_key} + row_number() OVER (
                ORDER BY person_key, scheme, plan_year, service_date, settlement_id,
                         kind, reverses_line) AS line_key
            FROM new_lines
            """
        )
        con.execute(
            """
            INSERT INTO adj_lines
            SELECT k.line_key, l.person_key, l.scheme, l.plan_year, l.visit_type, l.service_date,
                   l.settlement_id, l.admission_date, l.total_cost, l.self_pay_1, l.self_pay_2,
                   l.out_of_pocket, l.kind, l.orig_rule_version, l.orig_base_amount,
                   l.orig_ratio_part, l.orig_allowance, l.orig_allowance_days
            FROM new_lines l JOIN line_order k ON l.rowid = k.rid
            """
        )
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE line_extra AS
            SELECT k.line_key, l.row_batch_id, l.row_key, l.reverses_line, l.member_id,
                   l.unit_code, l.match
            FROM new_lines l JOIN line_order k ON l.rowid = k.rid
            """
        )
        _drop(con, "new_lines", "line_order")
        # Accumulators from the lines of earlier batches (derived, never stored twice).
        con.execute(
            f"""
            INSERT INTO adj_opening
            SELECT l.person_key, l.scheme, l.plan_year,
                sum(CASE WHEN l.visit_type = 'outpatient' THEN l.base_amount ELSE 0 END),
                sum(CASE WHEN l.visit_type = 'inpatient' THEN l.base_amount ELSE 0 END),
                sum(CASE WHEN l.visit_type = 'outpatient' THEN l.ratio_part ELSE 0 END),
                sum(CASE WHEN l.visit_type = 'inpatient' THEN l.ratio_part ELSE 0 END),
                sum(l.ratio_part + l.allowance), sum(l.allowance_days)
            FROM lines l
            WHERE l.{self.prior}
              AND (l.person_key, l.scheme, l.plan_year) IN (
                  SELECT (person_key, scheme, plan_year) FROM adj_lines)
            GROUP BY ALL
            """,
            [self.prior_arg],
        )
        adjudicate(con, self.rules)
        # the lines go to the ledger's line_rows as they are made; the
        # payments and the summary read them there (batch_lines)
        con.execute(
            f"""
            INSERT INTO line_rows
            SELECT {stage}, r.line_key, x.row_batch_id, x.row_key,
                r.settlement_id, r.scheme, r.rule_version, r.kind, x.reverses_line,
                r.person_key, x.member_id, x.unit_code, r.plan_year, r.visit_type,
                r.service_date, x.match, r.base_amount, r.deductible_applied, r.computed,
                r.ratio_part, r.allowance, r.allowance_days, r.payout, r.status, r.note,
                r.base_ytd_before, r.base_ytd_after, r.paid_type_before, r.paid_type_after,
                r.paid_total_before, r.paid_total_after, r.days_before, r.days_after
            FROM adj_result r JOIN line_extra x USING (line_key)
            """
        )
        _drop(con, "line_extra", "adj_result")
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW batch_lines AS SELECT {self.batch_id} AS batch_id, "
            f"* EXCLUDE (stage_id) FROM line_rows WHERE stage_id = {stage}"
        )
        # the reversals' outcomes: one per reversal row, from its clawback lines
        b = self.batch_id
        con.execute(
            f"""
            INSERT INTO outcome_rows
            SELECT {stage}, {b}, c.row_key, c.settlement_id, false, 'adjudicated', 'clawback',
                   'reverses ' || c.reverses, any_value(l.person_key), any_value(l.member_id),
                   any_value(l.unit_code), any_value(l.match), NULL, NULL, NULL, NULL
            FROM clawback_rows c JOIN batch_lines l ON l.row_batch_id = {b} AND l.row_key = c.row_key
            GROUP BY ALL
            """
        )

    # -- payments (spec 7) -------------------------------------------------

    def payments(self) -> None:
        con = self.con
        period = self.opts.period
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE batch_failed AS
            SELECT p.payment_id, p.member_id, p.person_key, p.amount
            FROM payments p JOIN ({FAILED_SQL}) a USING (payment_id)
            WHERE p.{self.prior}
              AND NOT EXISTS (SELECT 1 FROM payments q
                              WHERE q.{self.prior} AND q.retry_of = p.payment_id)
            """,
            [self.prior_arg, self.prior_arg],
        )
        # where a member is paid: the card of their latest roster record now,
        # looked up for the members this batch pays or re-pays
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE member_cards AS
            SELECT member_id, person_key, name, card_no, unit_code, bank_account FROM roster
            WHERE member_id IN (SELECT member_id FROM batch_lines
                                UNION SELECT member_id FROM batch_failed)
            QUALIFY row_number() OVER (
                PARTITION BY member_id ORDER BY valid_from DESC, record_key DESC) = 1
            """
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE member_net AS
            WITH net AS (
                -- a member_id re-used by another person since (a clawback of the
                -- earlier holder's line): each person's lines are netted apart
                SELECT member_id, person_key, sum(payout) AS gross, count(*) AS n_lines
                FROM batch_lines GROUP BY member_id, person_key
            ),
            debts AS (SELECT * FROM recoveries WHERE {self.prior}),
            -- a debt under an ID number the roster has since corrected follows
            -- its member_id to the corrected record, as a failed payment does
            moved AS (
                SELECT d.member_id, d.person_key AS old_key, r.person_key AS new_key
                FROM (SELECT DISTINCT member_id, person_key FROM debts) d
                JOIN roster r ON r.member_id = d.member_id AND r.person_key IS NOT NULL
                WHERE {_id_corrected_sql("d.person_key", "r.person_key")}
                QUALIFY row_number() OVER (
                    PARTITION BY d.member_id, d.person_key
                    ORDER BY r.valid_from DESC, r.record_key DESC) = 1
            ),
            owed AS (
                SELECT coalesce(m.new_key, d.person_key) AS person_key,
                       sum(d.amount) AS outstanding
                FROM debts d LEFT JOIN moved m
                    ON m.member_id = d.member_id AND m.old_key = d.person_key
                GROUP BY ALL
            ),
            ranked AS (
                SELECT n.*, coalesce(o.outstanding, 0) AS outstanding,
                    -- a person with several member_ids: offset against them in order
                    coalesce(sum(greatest(n.gross, 0)) OVER (
                        PARTITION BY n.person_key ORDER BY n.member_id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                FROM net n LEFT JOIN owed o USING (person_key)
            )
            SELECT r.*, c.name, c.card_no, c.unit_code, c.bank_account,
                CASE WHEN r.gross > 0
                    THEN least(r.gross, greatest(r.outstanding - r.before, 0)) ELSE 0 END
                    AS offset_amount
            FROM ranked r LEFT JOIN member_cards c USING (member_id, person_key)
            """,
            [self.prior_arg],
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE batch_payments AS
            SELECT {self.batch_id} AS batch_id, ? || '-' || member_id AS payment_id, member_id,
                   person_key, name, card_no, unit_code, bank_account,
                   CAST(gross - offset_amount AS DECIMAL(18,2)) AS amount,
                   CAST(n_lines AS INTEGER) AS lines, gross, offset_amount,
                   NULL::VARCHAR AS retry_of
            FROM member_net WHERE gross - offset_amount > 0
            """,
            [period],
        )
        # Re-issue (spec 8, reconcile; see ledger/reconcile.py): a payment of an
        # earlier batch whose latest answer from the bank is 'failed' and that no
        # earlier batch re-issued is paid again, same amount, to the card this
        # run's roster holds for the member. payment_id <period>-<member_id>-R<n>
        # cannot be the member's regular <period>-<member_id>. Retries sit
        # outside this batch's lines: summarise balances them apart. A member
        # missing from this roster has no card to pay to: the retry waits
        # (batch_retries_waiting) for a run whose roster lists them.
        # the card of the person the failed payment was for: a member_id the
        # roster has since given to someone else must not take their money
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE retry_cards AS
            WITH owed AS (SELECT DISTINCT member_id, person_key FROM batch_failed)
            -- the member_id's record of the person it was owed to, or of their
            -- corrected ID number
            SELECT o.member_id, o.person_key, r.name, r.card_no, r.unit_code, r.bank_account
            FROM owed o JOIN roster r ON r.member_id = o.member_id
            WHERE r.person_key = o.person_key
               OR {_id_corrected_sql("o.person_key", "r.person_key")}
            QUALIFY row_number() OVER (
                PARTITION BY o.member_id, o.person_key
                ORDER BY r.person_key = o.person_key DESC, r.valid_from DESC,
                         r.record_key DESC) = 1
            """
        )
        con.execute(
            f"""
            INSERT INTO batch_payments
            SELECT {self.batch_id}, ? || '-' || f.member_id || '-R' || row_number() OVER (
                       PARTITION BY f.member_id ORDER BY f.payment_id)::VARCHAR,
                   f.member_id, f.person_key, c.name, c.card_no, c.unit_code, c.bank_account,
                   f.amount, 0, f.amount, 0, f.payment_id
            FROM batch_failed f JOIN retry_cards c USING (member_id, person_key)
            """,
            [period],
        )
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE batch_retries_waiting AS
            SELECT f.* FROM batch_failed f
            WHERE NOT EXISTS (SELECT 1 FROM retry_cards c
                              WHERE c.member_id = f.member_id AND c.person_key = f.person_key)
            """
        )
        clash = _q(
            con,
            "SELECT payment_id FROM batch_payments GROUP BY payment_id HAVING count(*) > 1 "
            "ORDER BY 1 LIMIT 1",
        )
        if clash:
            raise UsageError(
                f"payment_id {clash[0][0]} would be issued twice in period {period} (a member_id "
                "ending in '-R<n>' meets another member's re-issue); rename that member_id in "
                "the roster."
            )
        # the settlements behind a recovery are spelled out for the few
        # members who have one, not for every member paid
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE batch_recoveries AS
            WITH owing AS (
                SELECT member_id, person_key, gross, offset_amount FROM member_net
                WHERE gross < 0 OR offset_amount > 0
            ),
            ids AS (
                SELECT member_id, person_key,
                       string_agg(DISTINCT settlement_id, ';' ORDER BY settlement_id)
                           AS settlement_ids
                FROM batch_lines SEMI JOIN owing USING (member_id, person_key)
                GROUP BY member_id, person_key
            ),
            m AS (SELECT * FROM owing JOIN ids USING (member_id, person_key))
            SELECT {self.batch_id} AS batch_id, person_key, member_id,
                   CAST(-gross AS DECIMAL(18,2)) AS amount, settlement_ids, 'owed' AS kind
            FROM m WHERE gross < 0
            UNION ALL
            SELECT {self.batch_id}, person_key, member_id, CAST(-offset_amount AS DECIMAL(18,2)),
                   settlement_ids, 'offset'
            FROM m WHERE offset_amount > 0
            """
        )
        _drop(con, "member_net", "member_cards", "retry_cards")  # the commit reads their results

    # -- outcomes and summary ---------------------------------------------

    def write_outcomes(self) -> None:
        """Every row's outcome but the reversals' (written with their clawback
        lines), into the ledger's outcome_rows as soon as the eligibility
        decided them: the decisions need not wait in memory for the commit."""
        con = self.con
        b, stage = self.batch_id, self.stage_id
        con.execute(
            f"""
            INSERT INTO outcome_rows
            SELECT {stage}, {b}, row_key, settlement_id, false, 'quarantined', q_code, q_detail,
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
            FROM s_typed WHERE q_code IS NOT NULL
            UNION ALL
            SELECT {stage}, {b}, row_key, settlement_id, false, outcome, code, detail,
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
            FROM decided
            UNION ALL
            SELECT {stage}, row_batch_id, row_key, settlement_id, true, 'rejected', 'reversed',
                   'withdrawn from review: reversed by ' || by_settlement,
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
            FROM withdrawn
            UNION ALL
            -- a plain exact match's evidence is its roster record: the view
            -- outcomes spells it out (from member_id, the same member)
            SELECT {stage}, row_batch_id, row_key, settlement_id, carried, outcome, code, detail,
                   person_key, member_id, unit_code, match, candidate_member_id,
                   CASE WHEN identity IS NULL AND id_member IS DISTINCT FROM member_id
                        THEN {exact_evidence_sql("id_member", "id_record")}
                        ELSE identity END,
                   eligibility,
                   CASE WHEN identity IS NULL AND id_member = member_id THEN id_record END
            FROM decisions
            """
        )
        con.execute("DROP VIEW decisions")
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW batch_outcomes AS SELECT {b} AS batch_id, "
            f"* EXCLUDE (stage_id) FROM outcome_rows WHERE stage_id = {stage}"
        )

    def summarise(self, inputs: list[dict[str, str]]) -> dict[str, object]:
        con = self.con
        counts = dict(
            _q(
                con,
                "SELECT outcome, count(*) FROM batch_outcomes WHERE NOT carried GROUP BY outcome",
            )
        )
        rows_in = int(_scalar(con, "SELECT count(*) FROM s_typed"))  # type: ignore[arg-type]
        placed = sum(int(v) for v in counts.values())
        per_row = int(
            _scalar(  # type: ignore[arg-type]
                con,
                # a carried row (decided after review, withdrawn) counts too:
                # one decision per row, whichever batch read it
                "SELECT count(*) FROM (SELECT 1 FROM batch_outcomes "
                "GROUP BY row_batch_id, row_key HAVING count(*) > 1)",
            )
        )
        lines_total = _scalar(con, "SELECT coalesce(sum(payout), 0) FROM batch_lines")
        paid_total = _scalar(
            con, "SELECT coalesce(sum(amount), 0) FROM batch_payments WHERE retry_of IS NULL"
        )
        retries = _q(
            con,
            "SELECT count(*), coalesce(sum(amount), 0) FROM batch_payments "
            "WHERE retry_of IS NOT NULL",
        )[0]
        recov = _scalar(con, "SELECT coalesce(sum(amount), 0) FROM batch_recoveries")
        # failed payments this run could not re-issue (the member is not in
        # its roster): still owed, and the analyst must be told (spec 8)
        waiting = _q(
            con,
            "SELECT count(*), coalesce(sum(amount), 0), "
            "coalesce(list(payment_id ORDER BY payment_id), []) FROM batch_retries_waiting",
        )[0]
        # roster, units and enrollment records that could not be read: not
        # settlement rows (outside the balance), but they decide rows' outcomes
        other_q = dict(
            _q(
                con,
                "SELECT file_kind, count(*) FROM q_rows WHERE file_kind <> 'settlements' "
                "GROUP BY ALL ORDER BY 1",
            )
        )
        # lines = payments + offsets taken - new debts  (spec 5: books balance)
        money_balances = lines_total == paid_total - recov  # type: ignore[operator]
        balanced = placed == rows_in and per_row == 0 and money_balances
        if not balanced:
            twice = [
                r[0]
                for r in _q(
                    con,
                    "SELECT settlement_id FROM batch_outcomes "
                    "GROUP BY row_batch_id, row_key, settlement_id HAVING count(*) > 1 "
                    "ORDER BY 1 LIMIT 5",
                )
            ]
            raise BooksDoNotBalance(
                f"the books do not balance: {rows_in} rows in, {placed} placed "
                f"({per_row} rows placed twice{': ' + ', '.join(twice) if twice else ''}); lines {lines_total} vs payments {paid_total} "
                f"and recoveries {recov}; nothing was committed."
            )
        return {
            "inputs": inputs,
            "rules": self.rules.manifest(),
            "bands_edges": list(self.ws.settings.run.bands),
            "twopay_version": __version__,
            "balance": {
                "rows_in": rows_in,
                "quarantined": int(counts.get("quarantined", 0)),
                "rejected": int(counts.get("rejected", 0)),
                "held": int(counts.get("held", 0)),
                "adjudicated": int(counts.get("adjudicated", 0)),
                "balanced": balanced,
                "lines_total": str(lines_total),
                "payments_total": str(paid_total),
                "recoveries_net": str(recov),
                "retries": int(retries[0]),
                "retries_total": str(retries[1]),
                "retries_waiting": int(waiting[0]),
                "retries_waiting_total": str(waiting[1]),
                "retries_waiting_payment_ids": list(waiting[2]),
                "other_records_quarantined": {k: int(v) for k, v in other_q.items()},
            },
        }

    # -- commit (spec 6) ----------------------------------------------------

    def commit(
        self,
        fingerprint: str,
        inputs: list[dict[str, str]],
        started: datetime,
        finished: datetime,
        summary: dict[str, object],
    ) -> None:
        con = self.con
        b = self.batch_id
        con.execute("BEGIN TRANSACTION")
        try:
            if self.replacing is not None:
                # every row naming the replaced batch (its batches row too);
                # its stage rows go below, once no batch names them
                for table in batch_tables(con):
                    con.execute(f"DELETE FROM {table} WHERE batch_id = ?", [b])
            # this batch's large tables are in the ledger's stage tables already
            # (written as they were made): naming their stage_id here is what
            # commits them
            con.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    b,
                    self.opts.period,
                    fingerprint,
                    json.dumps(inputs, ensure_ascii=False),
                    json.dumps(self.rules.manifest(), ensure_ascii=False),
                    __version__,
                    started,
                    finished,
                    json.dumps(summary, ensure_ascii=False, sort_keys=True),
                    self.stage_id,
                    self.roster_stage,
                    self.roster_key,
                ],
            )
            if self.replacing is not None:
                # the replaced batch's stage rows (its roster records only when
                # no batch still uses them)
                clear_uncommitted_stages(con)
            con.execute(
                f"INSERT INTO quarantine SELECT {b}, file_kind, source_file, line_number, "
                "error_code, detail, raw FROM q_rows"
            )
            con.execute("INSERT INTO payments SELECT * FROM batch_payments")
            con.execute("INSERT INTO recoveries SELECT * FROM batch_recoveries")
            fault_point("commit")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def _id_corrected_sql(old: str, new: str) -> str:
    """SQL: what was owed under ID number ``old`` (a failed payment, a debt)
    now goes to the member_id's record with ID ``new``: no roster record
    holds ``old`` any more, and ``new`` is ``old`` corrected (one digit
    substituted or two adjacent swapped, spec 3's typo). Anything else (an
    Excel-mangled ID replaced, another person given the member_id) waits: a
    failed payment in retries_waiting, a debt under the old ID."""
    return (
        f"({old} NOT IN (SELECT person_key FROM roster WHERE person_key IS NOT NULL) "
        f"AND {one_edit_sql(old, new)})"
    )


def _drop(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """Free a stage's tables as soon as the next stage has read them: a
    batch of millions of rows keeps only what later stages and the commit
    need, so it stays within DuckDB's memory_limit instead of spilling."""
    for table in tables:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(_scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]))


def clean_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
