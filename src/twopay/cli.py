"""The command line: parse, call the library, print (spec section 8).

Errors a user can cause are TwopayError subclasses carrying their exit code;
they are printed as one sentence (a traceback only with --debug).
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twopay import __version__
from twopay.errors import TwopayError, UsageError, disk_full, oom_advice, writing_to

F = TypeVar("F", bound=Callable[..., Any])

# markup=False: what twopay prints names files, members and cells from the
# inputs, and "[jan]" in a file name is not a style; the few styled lines
# say markup=True and escape what they quote


class _Stdout(io.TextIOBase):
    """sys.stdout as it is at each write, and a reader that goes away
    (`twopay run ... | head`) is not an error: the rest of the output is
    discarded and the command ends with its own exit code (a run's batch is
    committed before anything is printed)."""

    def write(self, text: str) -> int:
        if sys.stdout is None:  # started with stdout closed (`>&-`): nothing to show
            return len(text)
        try:
            sys.stdout.write(text)
        except BrokenPipeError:
            self._discard()
        return len(text)

    def flush(self) -> None:
        if sys.stdout is None:
            return
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            self._discard()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return sys.stdout is not None and sys.stdout.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(sys.stdout, "encoding", None) or "utf-8"

    @staticmethod
    def _discard() -> None:
        # what Python's documentation advises: point the descriptor at
        # /dev/null, so that the flush at exit does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


STDOUT = _Stdout()
console = Console(file=STDOUT, highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def _no_nan(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    """FloatRange lets nan through, and no rate is ever above nan: the
    quarantine gate would be off."""
    if value is not None and value != value:
        raise click.BadParameter("give a number from 0 to 1, e.g. 0.05")
    return value


def _workspace_option(f: F) -> F:
    return click.option(
        "--workspace",
        "-w",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="TWOPAY_WORKSPACE",
        default=None,
        help="Workspace folder (default: $TWOPAY_WORKSPACE or the current folder).",
    )(f)


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


def _lang_option(f: F) -> F:
    return click.option(
        "--lang", type=click.Choice(["zh", "en"]), default=None, help="Language of human text."
    )(f)


def handled(f: F) -> F:
    """Turn TwopayError into one sentence and its exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return f(*args, **kwargs)
        except TwopayError as exc:
            if debug:
                raise
            err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted; nothing was committed.")
            sys.exit(1)
        except Exception as exc:  # an internal error: still one sentence
            if debug:
                raise
            if type(exc).__name__ == "OutOfMemoryException":
                # (a run says where it stopped: run_batch raises OutOfMemory)
                err.print(
                    "[bold red]error:[/] "
                    + escape(
                        f"DuckDB ran out of memory within the workspace's memory_limit; {oom_advice()}"
                    ),
                    markup=True,
                )
                sys.exit(1)
            if disk_full(exc):  # (a run says whether its batch is in: DiskFull)
                err.print(
                    "[bold red]error:[/] the disk is full (ledger or temp_directory); "
                    "nothing was committed; free space and run again.",
                    markup=True,
                )
                sys.exit(1)
            err.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: "
                f"{escape(str(exc).splitlines()[0]) if str(exc) else ''} "
                "(run with --debug for details)",
                markup=True,
            )
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _jsonable(value: object) -> object:
    """Strict JSON: NaN and infinities (a query's 1.0/0) become null, and
    keys JSON cannot hold (a MAP keyed by DECIMAL) become text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {
            (k if k is None or isinstance(k, str | int | float | bool) else str(k)): _jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _unique_names(cols: list[str]) -> list[str]:
    """Keys for a query's JSON rows: a second `member_id` (a join's SELECT *)
    becomes `member_id_2` instead of overwriting the first."""
    taken: set[str] = set()
    out = []
    for c in cols:
        name, n = c, 1
        while name in taken:
            n += 1
            name = f"{c}_{n}"
        taken.add(name)
        out.append(name)
    return out


def emit_json(data: object) -> None:
    click.echo(
        json.dumps(
            _jsonable(data),
            ensure_ascii=False,
            indent=2,
            sort_keys=True,
            default=str,
            allow_nan=False,
        ),
        file=STDOUT,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="twopay")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug: bool) -> None:
    """twopay: second-reimbursement (二次报销) batches for union medical mutual aid."""


# -- init ---------------------------------------------------------------------


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@_workspace_option
@_json_option
@handled
def init(directory: Path | None, workspace: Path | None, as_json: bool) -> None:
    """Create a workspace with the shipped default rules (in DIRECTORY, else
    --workspace, $TWOPAY_WORKSPACE or the current folder)."""
    from twopay.ledger.workspace import init_workspace

    given = click.get_current_context().get_parameter_source("workspace")
    if directory is not None and given == ParameterSource.COMMANDLINE and directory != workspace:
        raise UsageError(
            f"init got two folders, {directory} and --workspace {workspace}; give one."
        )
    ws = init_workspace(directory or workspace or Path("."))
    if as_json:
        emit_json(
            {
                "workspace": str(ws.root),
                "rules": sorted(p.name for p in ws.rules_dir.glob("*.toml")),
            }
        )
    else:
        console.print(f"created workspace {ws.root}")


# -- run ----------------------------------------------------------------------


def _progress(as_json: bool) -> Callable[[str], None] | None:
    if as_json or not err.is_terminal:
        return None
    return lambda msg: err.print(f"[dim]… {escape(msg)}[/]", markup=True)


def print_summary(summary: dict[str, Any], title: str) -> None:
    bal = summary.get("balance", {})
    table = Table(title=title, show_header=True)
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    for key in ("rows_in", "quarantined", "rejected", "held", "adjudicated"):
        table.add_row(key, str(bal.get(key, 0)))
    console.print(table)
    lines = summary.get("lines", {})
    pay = summary.get("payments", {})
    money = Table(show_header=True)
    money.add_column("figure")
    money.add_column("value", justify="right")
    money.add_row("payout lines", str(lines.get("count", 0)))
    money.add_row("paid lines", str(lines.get("paid", 0)))
    money.add_row("zero lines", str(lines.get("zero", 0)))
    money.add_row("clawback lines", str(lines.get("clawback", 0)))
    money.add_row("payout total (yuan)", str(lines.get("payout_total", "0.00")))
    money.add_row("payments", f"{pay.get('count', 0)} / {pay.get('amount', '0.00')} yuan")
    money.add_row("pending review", str(summary.get("review_pending", 0)))
    if bal.get("retries_waiting"):
        # failed payments this run could not re-issue (member not in the roster)
        money.add_row(
            "failed payments not re-issued",
            f"{bal['retries_waiting']} / {bal.get('retries_waiting_total', '0.00')} yuan",
        )
    money.add_row("books balance", "yes" if bal.get("balanced") else "NO")
    console.print(money)


@main.command()
@click.option("--period", required=True, help="The batch period, YYYY-MM.")
@click.option(
    "--settlements",
    "settlements",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settlement export (repeat for several files).",
)
@click.option("--roster", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--units", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--enrollments", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--encoding", help="Force the encoding of CSV inputs (e.g. gb18030, utf-8).")
@click.option("--replace", is_flag=True, help="Redo the latest batch with other inputs.")
@click.option(
    "--max-quarantine-rate",
    type=click.FloatRange(0, 1),
    callback=_no_nan,
    default=None,
    help="Above this share of unreadable settlement rows nothing is committed (exit 3); "
    "default: run.max_quarantine_rate in twopay.toml (0.05).",
)
@click.option("--unmask", is_flag=True, help="Do not mask ID numbers and accounts in reports.")
@_lang_option
@_workspace_option
@_json_option
@handled
def run(
    period: str,
    settlements: tuple[Path, ...],
    roster: Path,
    units: Path | None,
    enrollments: Path | None,
    out: Path | None,
    encoding: str | None,
    replace: bool,
    max_quarantine_rate: float | None,
    unmask: bool,
    lang: str | None,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """Run one batch for one period."""
    from twopay.ledger.workspace import open_workspace
    from twopay.pipeline.batch import RunOptions, run_batch

    ws = open_workspace(workspace)
    result = run_batch(
        ws,
        RunOptions(
            period=period,
            settlements=list(settlements),
            roster=roster,
            units=units,
            enrollments=enrollments,
            out=out,
            encoding=encoding,
            replace=replace,
            max_quarantine_rate=max_quarantine_rate,
            lang=lang,
            unmask=unmask,
        ),
        progress=_progress(as_json),
    )
    _report_run(result, as_json)


def _report_run(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json({"noop": result.noop, "reports": str(result.reports), "summary": result.summary})
        return
    title = f"batch {result.period}" + (" (already committed: no change)" if result.noop else "")
    print_summary(result.summary, title)
    console.print(f"reports: {result.reports}")


# -- demo ---------------------------------------------------------------------


@main.command()
@click.option(
    "--out",
    "--workspace",
    "-w",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's workspace here (default: a new temporary folder).",
)
@_json_option
@handled
def demo(out: Path | None, as_json: bool) -> None:
    """Run the shipped sample data (two months) end to end."""
    from twopay.demo import run_demo

    root = out or Path(tempfile.mkdtemp(prefix="twopay-demo-"))
    results = run_demo(root, progress=_progress(as_json))
    if as_json:
        emit_json({"workspace": str(root), "batches": [r.summary for r in results]})
        return
    for r in results:
        print_summary(r.summary, f"demo batch {r.period}")
    console.print(f"workspace: {root}  (try: twopay why <settlement_id> -w {root})")


# -- sample -------------------------------------------------------------------


@main.command()
@click.option("--members", type=click.IntRange(1), required=True)
@click.option("--settlements", type=click.IntRange(0), required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=1)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv")
@click.option("--months", type=click.IntRange(1, 12), default=1)
@click.option("--year", type=click.IntRange(1900, 2100), default=2024)
@_json_option
@handled
def sample(
    members: int,
    settlements: int,
    out: Path,
    seed: int,
    fmt: str,
    months: int,
    year: int,
    as_json: bool,
) -> None:
    """Generate large realistic inputs (deterministic by seed)."""
    from twopay.sample import generate

    with writing_to(f"--out {out}"):
        paths = generate(
            out,
            members=members,
            settlements=settlements,
            seed=seed,
            fmt=fmt,
            months=months,
            year=year,
        )
    if as_json:
        emit_json({k: str(v) for k, v in paths.items()})
    else:
        for k, v in paths.items():
            console.print(f"{k}: {v}")


# -- rules --------------------------------------------------------------------


@main.group()
def rules() -> None:
    """Validate and inspect rule files."""


@rules.command("check")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@_workspace_option
@_json_option
@handled
def rules_check(directory: Path | None, workspace: Path | None, as_json: bool) -> None:
    """Validate rule files; show the version in force over time."""
    from twopay.ledger.workspace import open_workspace
    from twopay.rules.loader import load_rules

    folder = directory or open_workspace(workspace).rules_dir
    rs = load_rules(folder)
    rows = [
        {
            "scheme": v.rule.scheme,
            "version": v.rule.version,
            "from": str(v.rule.effective_from),
            "to": str(v.rule.effective_to) if v.rule.effective_to else "open",
            "enrollment": v.rule.enrollment,
            "visit_types": ",".join(t for t in ("outpatient", "inpatient") if v.rule.visit(t)),
            "file": v.path.name,
        }
        for v in rs.versions
    ]
    if as_json:
        emit_json({"ok": True, "versions": rows})
        return
    table = Table(title=f"rules in {folder}: valid")
    for col in ("scheme", "version", "from", "to", "enrollment", "visit_types", "file"):
        # the dates are what this table is for: never cut to "2024-03-…"
        table.add_column(col, no_wrap=col in ("from", "to"), overflow="fold")
    for r in rows:
        table.add_row(*r.values())
    console.print(table)


@rules.command("schema")
@handled
def rules_schema() -> None:
    """Print the JSON Schema of a rule file (for editors)."""
    from twopay.rules.loader import json_schema

    emit_json(json_schema())


@rules.command("sql")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@_workspace_option
@handled
def rules_sql(directory: Path | None, workspace: Path | None) -> None:
    """Print the SQL the rules compile to."""
    from twopay.ledger.workspace import open_workspace
    from twopay.rules.compile import all_sql
    from twopay.rules.loader import load_rules

    folder = directory or open_workspace(workspace).rules_dir
    for name, sql in all_sql(load_rules(folder)):
        click.echo(f"-- {name}\n{sql.strip()};\n", file=STDOUT)


# -- query --------------------------------------------------------------------


@main.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@_workspace_option
@_json_option
@handled
def query(sql: str, fmt: str, workspace: Path | None, as_json: bool) -> None:
    """Read-only SQL over the ledger (views: v_lines, v_rejections, v_payments, v_members)."""
    from twopay.ledger.query import run_query

    cols, rows = run_query(workspace, sql)
    if as_json or fmt == "json":
        emit_json([dict(zip(_unique_names(cols), r, strict=True)) for r in rows])
    elif fmt == "csv":
        import csv

        w = csv.writer(STDOUT)
        w.writerow(cols)
        w.writerows(rows)
    else:
        table = Table()
        for c in cols:
            table.add_column(c)
        for r in rows:
            table.add_row(*["" if v is None else str(v) for v in r])
        console.print(table)


# -- why ----------------------------------------------------------------------


@main.command()
@click.argument("key")
@click.option("--unmask", is_flag=True, help="Show full ID, card and account numbers.")
@_lang_option
@_workspace_option
@_json_option
@handled
def why(key: str, unmask: bool, lang: str | None, workspace: Path | None, as_json: bool) -> None:
    """Every decision about a settlement_id, ID number, member_id or name, with its trace."""
    from twopay.ledger.workspace import open_workspace
    from twopay.reports.why import explain, render

    ws = open_workspace(workspace)
    lang = lang or ws.settings.lang
    trace = explain(ws, key, lang=lang, unmask=unmask)
    if as_json:
        emit_json(trace)
    else:
        render(console, trace, lang)


# -- notices ------------------------------------------------------------------


@main.command()
@click.option("--period", required=True, help="The batch period, YYYY-MM.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the notices (default: reports/PERIOD/notices).",
)
@click.option("--unmask", is_flag=True, help="Show full ID and card numbers.")
@_lang_option
@_workspace_option
@_json_option
@handled
def notices(
    period: str,
    out: Path | None,
    unmask: bool,
    lang: str | None,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """One .xlsx and .csv per unit of what its officers must fix."""
    from rich.text import Text

    from twopay.ledger.workspace import open_workspace
    from twopay.reports.notices import write_notices

    result = write_notices(open_workspace(workspace), period, out=out, lang=lang, unmask=unmask)
    units = [
        {
            "unit_code": u.unit_code,
            "unit_name": u.unit_name,
            "rows": u.rows,
            "counts": u.counts,
            "csv": str(u.csv),
            "xlsx": str(u.xlsx),
        }
        for u in result.units
    ]
    if as_json:
        emit_json({"period": result.period, "out": str(result.out), "units": units})
        return
    if not units:
        console.print(f"{period}: nothing for any unit to fix; no notices written.")
        return
    table = Table(title=f"notices {period}: {result.out}")
    for col in ("unit", "rows", "rejection", "review", "payment_failed", "file"):
        table.add_column(col)
    for u in units:
        table.add_row(
            Text(u["unit_code"] or "(unknown unit)"),  # input text: never rich markup
            str(u["rows"]),
            *(str(u["counts"].get(k, 0)) for k in ("rejection", "review", "payment_failed")),
            Text(Path(u["csv"]).stem),
        )
    console.print(table)


# -- reconcile ----------------------------------------------------------------


@main.command()
@click.option(
    "--bank-return",
    "bank_return",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bank's return file (CSV, xlsx or Parquet): payment_id, card_no, amount, status, reason.",
)
@click.option("--encoding", help="Force the encoding of a CSV bank return.")
@_workspace_option
@_json_option
@handled
def reconcile(
    bank_return: Path, encoding: str | None, workspace: Path | None, as_json: bool
) -> None:
    """Match a bank return to payments; failed ones are re-issued by the next run.

    Exit 3 when any payment failed, differs, is unknown or has no return row.
    The same file twice records nothing new (unless it was given before the run
    that issued its payments).
    """
    from twopay.errors import DataQualityError
    from twopay.ledger.reconcile import reconcile as do_reconcile
    from twopay.ledger.workspace import open_workspace

    result = do_reconcile(open_workspace(workspace), bank_return, encoding=encoding)
    if as_json:
        emit_json(result.as_dict())
    else:
        if result.already_recorded:
            console.print(
                f"{bank_return.name}: this file was already reconciled (return "
                f"{result.return_id}, same SHA-256); nothing changed."
            )
        table = Table(title=f"bank return {bank_return.name} ({', '.join(result.periods) or '-'})")
        table.add_column("result")
        table.add_column("rows", justify="right")
        table.add_column("amount (yuan)", justify="right")
        for key, n in result.counts.items():
            table.add_row(key, str(n), f"{result.amounts[key]:.2f}")
        console.print(table)
        if result.problems:
            shown = Table(title="discrepancies")
            for col in ("line", "payment_id", "result", "amount", "issued", "reason"):
                shown.add_column(col)
            for p in result.problems[:50]:
                shown.add_row(
                    str(p["line_number"] or ""),
                    str(p["payment_id"] or ""),
                    str(p["result"]),
                    str(p["amount"] or ""),
                    str(p["issued_amount"] or ""),
                    str(p["reason"] or ""),
                )
            console.print(shown)
            if len(result.problems) > 50:
                console.print(f"... and {len(result.problems) - 50} more (--json lists all)")
    if not result.clean:
        failed = result.counts.get("failed", 0)
        others = len(result.problems) - failed
        raise DataQualityError(
            f"{bank_return.name}: {len(result.problems)} discrepancies ("
            + ", ".join(f"{k} {v}" for k, v in result.counts.items() if k != "success")
            + ")"
            + ("; failed payments will be re-issued by the next run" if failed else "")
            + ("; check the others with the bank" if others else "")
            + "."
        )


# -- simulate -----------------------------------------------------------------


@main.command()
@click.option("--year", type=int, required=True, help="The plan year to replay.")
@click.option(
    "--rules",
    "rules_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the other rule files.",
)
@_workspace_option
@_json_option
@handled
def simulate(year: int, rules_dir: Path, workspace: Path | None, as_json: bool) -> None:
    """Replay a plan year under other rules, beside the actual (the ledger is only read).

    The lines actually adjudicated are recomputed; who is covered (categories,
    enrollment, waiting_days, visit types) is not decided again: when the
    other rules change it, a warning says so.
    """
    from twopay.ledger.workspace import open_workspace
    from twopay.simulate import simulate as do_simulate

    report = do_simulate(open_workspace(workspace), year, rules_dir)
    if as_json:
        emit_json(report)
        return
    t = report["total"]
    table = Table(title=f"plan year {year}: actual vs simulated ({rules_dir})")
    for col in ("lines", "settlements", "members", "actual", "simulated", "change", "change %"):
        # figures are never cut to "1951345.…" at 80 columns (or in a pipe)
        money = col in ("actual", "simulated", "change")
        table.add_column(col, justify="right", no_wrap=money, overflow="fold")
    table.add_row(
        str(t["lines"]),
        str(t["settlements"]),
        str(t["members"]),
        t["actual"],
        t["simulated"],
        t["change"],
        t["change_pct"] or "-",
    )
    console.print(table)
    for warning in report.get("warnings", []):
        err.print(f"warning: {warning}")
    for title, key, group in (
        ("by visit type", "by_visit_type", "visit_type"),
        ("by scheme", "by_scheme", "scheme"),
        ("by unit (largest changes first)", "by_unit", "unit_code"),
    ):
        table = Table(title=title)
        for col in (group, "actual", "simulated", "change"):
            table.add_column(col, justify="left" if col == group else "right", no_wrap=True)
        for row in report[key][:20]:
            table.add_row(row[group], row["actual"], row["simulated"], row["change"])
        console.print(table)
    table = Table(title="by band (per person-time)")
    for col in ("band", "actual n", "actual", "simulated n", "simulated", "change"):
        table.add_column(col, justify="left" if col == "band" else "right", no_wrap=True)
    for row in report["by_band"]:
        table.add_row(
            row["band"],
            str(row["actual_person_times"]),
            row["actual"],
            str(row["simulated_person_times"]),
            row["simulated"],
            row["change"],
        )
    console.print(table)
    m = report["members"]
    console.print(
        f"members who gain: {m['gain']['count']} (+{m['gain']['amount']}), "
        f"lose: {m['lose']['count']} ({m['lose']['amount']}), unchanged: {m['same']['count']}"
    )
    table = Table(title="largest changes per member")
    for col in ("member_id", "name", "unit_code", "actual", "simulated", "change"):
        money = col in ("actual", "simulated", "change")
        table.add_column(col, justify="right" if money else "left", no_wrap=money)
    for row in report["largest_changes"]:
        table.add_row(
            row["member_id"],
            row["name"] or "",
            row["unit_code"] or "",
            row["actual"],
            row["simulated"],
            row["change"],
        )
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
