"""Where a batch spends its time: every SQL statement of one run, timed.

Wraps the workspace's connection so that each ``execute`` is timed, runs one
batch on inputs made by ``twopay sample`` (or bench_run.py's data folders),
and prints the time per stage and the slowest statements with the line that
issued them.

    python benchmarks/profile_run.py benchmarks/out/data_parquet_5000000 --format parquet
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
import traceback
from collections import defaultdict
from pathlib import Path

from twopay.ledger import workspace as wsmod
from twopay.ledger.workspace import init_workspace, open_workspace
from twopay.pipeline.batch import RunOptions, run_batch


def print_operators(profile: dict) -> None:
    """One line per operator of an EXPLAIN (ANALYZE, FORMAT JSON) profile:
    its CPU time (summed over threads), rows out, and what it reads or
    writes, indented as the plan nests; the wide box drawing of the text
    format does not fit a terminal for these statements."""
    query = profile.get("query", {})
    print(f"  total {query.get('total_time', 0.0):.2f} s, CPU {query.get('cpu_time', 0.0):.2f} s")

    def walk(op: dict, depth: int) -> None:
        extra = op.get("extra_info", {})
        what = extra.get("Table") or extra.get("CTE Name") or extra.get("Join Type") or ""
        if op.get("name") not in ("RESULT_COLLECTOR", "EXPLAIN_ANALYZE"):
            print(
                f"  {op.get('timing', 0.0):7.2f} s {op.get('intermediate_rows', 0):>12,} "
                f"{'  ' * depth}{op.get('name', '?')} {what}"
            )
            depth += 1
        for child in op.get("children", []):
            walk(child, depth)

    for op in profile.get("operator", []):
        walk(op, 0)


class TimedConnection:
    """A DuckDB connection whose execute calls are timed into ``log``."""

    def __init__(
        self, con: object, log: list[tuple[float, str, str]], explain: str | None = None
    ) -> None:
        self._con = con
        self._log = log
        self._explain = re.compile(explain) if explain else None

    def execute(self, sql: str, *args: object, **kwargs: object) -> object:
        text = " ".join(sql.split())
        if self._explain and self._explain.search(text) and text.startswith(("CREATE", "INSERT")):
            # EXPLAIN ANALYZE runs the statement too: its operators' times are printed
            plan = self._con.execute(  # type: ignore[attr-defined]
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args, **kwargs
            )
            print(f"=== {text[:100]}")
            print_operators(json.loads(plan.fetchall()[0][1]))
            self._log.append((0.0, "EXPLAINED", text[:90]))
            return self._con  # a DDL/DML statement has no rows to fetch
        start = time.perf_counter()
        result = self._con.execute(sql, *args, **kwargs)  # type: ignore[attr-defined]
        caller = traceback.extract_stack(limit=3)[-2]
        where = f"{Path(caller.filename).name}:{caller.lineno}"
        spill = ""
        if text.startswith(("CREATE", "INSERT")):
            # what DuckDB has spilled to its temp files after the statement
            # (a result still to be fetched must not be interrupted: only DDL/DML)
            size = self._con.execute(  # type: ignore[attr-defined]
                "SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()"
            ).fetchall()[0][0]
            spill = f"[spill {size / 2**20:,.0f} MB] "
        self._log.append((time.perf_counter() - start, where, spill + text[:90]))
        return result

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data", type=Path)
    ap.add_argument("--format", default="parquet", choices=["csv", "parquet"])
    ap.add_argument(
        "--work", type=Path, default=Path(__file__).resolve().parent / "out" / "profile_ws"
    )
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--explain",
        metavar="REGEX",
        help="print EXPLAIN ANALYZE (operator times) of the CREATE/INSERT statements matching this",
    )
    ap.add_argument(
        "--memory-limit",
        default=None,
        help="DuckDB memory_limit for this run (default: twopay.toml's)",
    )
    args = ap.parse_args()
    log: list[tuple[float, str, str]] = []
    connect = wsmod.Workspace.connect
    wsmod.Workspace.connect = lambda self, *a, **k: TimedConnection(
        connect(self, *a, **k), log, args.explain
    )  # type: ignore[assignment,method-assign,return-value]
    if args.work.exists():
        shutil.rmtree(args.work)
    init_workspace(args.work)
    if args.memory_limit:
        cfg = args.work / "twopay.toml"
        cfg.write_text(
            re.sub(
                r'(?m)^memory_limit = "[^"]*"',
                f'memory_limit = "{args.memory_limit}"',
                cfg.read_text(),
            )
        )
    ext = args.format
    units = args.data / f"units.{ext}"
    start = time.perf_counter()
    run_batch(
        open_workspace(args.work),
        RunOptions(
            period="2024-01",
            settlements=[args.data / f"settlements.{ext}"],
            roster=args.data / f"roster.{ext}",
            units=units if units.exists() else None,
            max_quarantine_rate=1.0,
        ),
        progress=lambda msg: log.append((-1.0, "STAGE", msg)),
    )
    print(f"run: {time.perf_counter() - start:.1f} s")
    stage, per_stage = "start", defaultdict(lambda: [0.0, 0])
    for secs, _where, text in log:
        if secs < 0:
            stage = text
            continue
        per_stage[stage][0] += secs
        per_stage[stage][1] += 1
    for name, (secs, n) in per_stage.items():
        print(f"  {name:24} {secs:7.2f} s in SQL  ({n} statements)")
    print("slowest statements:")
    for secs, where, text in sorted((e for e in log if e[0] >= 0), reverse=True)[: args.top]:
        print(f"  {secs:7.2f} s  {where:26} {text}")


if __name__ == "__main__":
    main()
