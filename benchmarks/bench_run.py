"""A monthly batch at several sizes against a large roster, beside the floor.

For each size it generates inputs with `twopay sample`, runs one batch in a
fresh workspace (each size in its own process, so peak memory is that run's),
and prints per stage wall time and rows per second; then, on the same files,
the floor: DuckDB alone loading the settlements, joining the roster on
id_number, one window sum per member and visit type, and writing the lines as
CSV. It prints run/floor. Last, "ledger": DuckDB alone writing the rows that
run committed (every batch table of its ledger, copied from temporary tables
into a fresh database), the cost of keeping what spec 6 asks the ledger to
keep with no computing at all, and its ratio to the floor.

    python benchmarks/bench_run.py --sizes 500000,1000000,2000000,5000000 --members 4000000
    python benchmarks/bench_run.py --sizes 100000 --members 200000      # a quick look
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, where Linux has it: a
    child's ru_maxrss starts at its parent's peak (it survives exec), which
    would show the generator's memory as the run's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_run(data: Path, work: Path, fmt: str, memory_limit: str) -> dict[str, object]:
    """Child process: one batch, stage by stage."""
    from twopay.ledger.workspace import init_workspace, open_workspace
    from twopay.pipeline.batch import RunOptions, run_batch

    if work.exists():
        shutil.rmtree(work)
    init_workspace(work)
    cfg = work / "twopay.toml"
    cfg.write_text(
        re.sub(r'(?m)^memory_limit = "[^"]*"', f'memory_limit = "{memory_limit}"', cfg.read_text())
    )
    ws = open_workspace(work)
    ext = "parquet" if fmt == "parquet" else "csv"
    stages: list[tuple[str, float, float]] = []
    start = time.perf_counter()

    def progress(msg: str) -> None:
        stages.append((msg, time.perf_counter(), peak_rss_mb()))

    result = run_batch(
        ws,
        RunOptions(
            period="2024-01",
            settlements=[data / f"settlements.{ext}"],
            roster=data / f"roster.{ext}",
            units=data / f"units.{ext}" if (data / f"units.{ext}").exists() else None,
            max_quarantine_rate=1.0,
        ),
        progress=progress,
    )
    end = time.perf_counter()
    marks = [("start", start, 0.0), *stages, ("end", end, peak_rss_mb())]
    # each stage's wall time, and the peak RSS of the process when it ended
    per_stage = {
        marks[i][0]: (marks[i + 1][1] - marks[i][1], marks[i + 1][2]) for i in range(len(marks) - 1)
    }
    return {
        "wall": end - start,
        "stages": per_stage,
        "peak_rss_mb": peak_rss_mb(),
        "balanced": result.summary["balance"]["balanced"],  # type: ignore[index]
        "lines": result.summary["lines"]["count"],  # type: ignore[index]
    }


def floor(data: Path, out: Path, fmt: str, memory_limit: str) -> dict[str, object]:
    """Child process: DuckDB alone doing the irreducible work of a batch."""
    import duckdb

    db = out / "floor.duckdb"
    db.unlink(missing_ok=True)  # a fresh database each time, like the run's fresh workspace
    con = duckdb.connect(str(db), config={"memory_limit": memory_limit})
    ext = "parquet" if fmt == "parquet" else "csv"
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    start = time.perf_counter()
    con.execute(f"CREATE TABLE s AS SELECT * FROM {reader}('{data / f'settlements.{ext}'}')")
    con.execute(f"CREATE TABLE r AS SELECT * FROM {reader}('{data / f'roster.{ext}'}')")
    con.execute(
        f"""
        COPY (
            SELECT s.settlement_id, r.member_id, s.visit_type, s.service_date, s.self_pay_1,
                   sum(s.self_pay_1) OVER (PARTITION BY r.member_id, s.visit_type
                                           ORDER BY s.service_date, s.settlement_id) AS ytd
            FROM s JOIN r ON r.id_number = s.id_number
        ) TO '{out / "floor_lines.csv"}' (HEADER)
        """
    )
    wall = time.perf_counter() - start
    con.close()
    return {"wall": wall, "peak_rss_mb": peak_rss_mb()}


def ledger_writes(ledger: Path, out: Path, memory_limit: str) -> dict[str, object]:
    """Child process: DuckDB alone writing the rows the run committed.

    Each batch table of the run's ledger is first copied into a temporary
    table (not timed), then written into a fresh database and committed
    (timed): what storing the ledger's rows costs with no computing at all, a
    bound under any commit that keeps what spec 6 asks the ledger to keep."""
    import duckdb

    db = out / "ledger_floor.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db), config={"memory_limit": memory_limit})
    con.execute(f"ATTACH '{ledger}' AS run (READ_ONLY)")
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'run' ORDER BY 1"
        ).fetchall()
    ]
    per_table: dict[str, tuple[int, float]] = {}
    for t in tables:
        con.execute(f"CREATE TEMP TABLE staged AS SELECT * FROM run.{t}")
        start = time.perf_counter()
        con.execute("BEGIN")
        con.execute(f"CREATE TABLE {t} AS SELECT * FROM staged")
        con.execute("COMMIT")
        secs = time.perf_counter() - start
        per_table[t] = (int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]), secs)
        con.execute("DROP TABLE staged")
    con.close()
    db.unlink(missing_ok=True)
    return {"wall": sum(s for _n, s in per_table.values()), "tables": per_table}


def child(args: argparse.Namespace) -> None:
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.child == "run":
        res = one_run(data, work / "ws", args.format, args.memory_limit)
    elif args.child == "ledger":
        res = ledger_writes(data / "twopay.duckdb", work, args.memory_limit)
    else:
        res = floor(data, work, args.format, args.memory_limit)
    print(json.dumps(res))


def in_child(kind: str, data: Path, work: Path, fmt: str, memory_limit: str) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--data",
            str(data),
            "--work",
            str(work),
            "--format",
            fmt,
            "--memory-limit",
            memory_limit,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="500000,1000000,2000000,5000000")
    ap.add_argument("--members", type=int, default=4_000_000)
    ap.add_argument("--formats", default="csv,parquet")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--work", default=str(HERE / "out"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--child")
    ap.add_argument("--data")
    ap.add_argument("--format", default="csv")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    from twopay.sample import generate

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"roster: {args.members:,} members; memory_limit {args.memory_limit}")
    header = (
        f"{'format':8} {'rows':>10} {'run s':>8} {'rows/s':>10} {'floor s':>8} {'run/floor':>9}"
        f" {'peak MB':>8} {'ledger s':>9} {'ledger/floor':>12}"
    )
    print(header)
    per_row: dict[tuple[str, int], float] = {}
    for fmt in args.formats.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            data = work / f"data_{fmt}_{size}"
            if not (data / f"settlements.{'parquet' if fmt == 'parquet' else 'csv'}").exists():
                t = time.perf_counter()
                generate(data, members=args.members, settlements=size, seed=args.seed, fmt=fmt)
                print(f"  (generated {size:,} rows as {fmt} in {time.perf_counter() - t:.1f}s)")
            res = in_child("run", data, work / f"run_{fmt}_{size}", fmt, args.memory_limit)
            flo = in_child("floor", data, work / f"floor_{fmt}_{size}", fmt, args.memory_limit)
            run_ws = work / f"run_{fmt}_{size}" / "ws"
            led = in_child("ledger", run_ws, work / f"floor_{fmt}_{size}", fmt, args.memory_limit)
            wall, floor_wall = float(res["wall"]), float(flo["wall"])  # type: ignore[arg-type]
            ledger_wall = float(led["wall"])  # type: ignore[arg-type]
            per_row[(fmt, size)] = wall / size
            print(
                f"{fmt:8} {size:>10,} {wall:>8.1f} {size / wall:>10,.0f} {floor_wall:>8.1f} "
                f"{wall / floor_wall:>9.2f} {float(res['peak_rss_mb']):>8.0f}"  # type: ignore[arg-type]
                f" {ledger_wall:>9.1f} {ledger_wall / floor_wall:>12.2f}"
            )
            written = ", ".join(
                f"{t} {n:,} rows {secs:.1f} s"
                for t, (n, secs) in led["tables"].items()  # type: ignore[attr-defined]
                if n >= 1000
            )
            print(f"{'':10}ledger rows alone: {written}")
            for name, (secs, rss) in res["stages"].items():  # type: ignore[attr-defined]
                rate = f"{size / secs:>12,.0f} rows/s" if secs > 0 else ""
                print(f"{'':10}{name:24} {secs:7.1f} s {rate}  peak so far {rss:,.0f} MB")
            if not res["balanced"]:
                print("  BOOKS DO NOT BALANCE")
    for fmt in args.formats.split(","):
        sizes = sorted(n for f, n in per_row if f == fmt)
        if len(sizes) > 1:
            # the measure: 5M against 1M, when both ran
            hi = sizes[-1]
            lo = 1_000_000 if 1_000_000 in sizes and hi != 1_000_000 else sizes[0]
            print(
                f"{fmt}: per-row cost at {hi:,} rows is {per_row[(fmt, hi)] / per_row[(fmt, lo)]:.2f}"
                f" times that at {lo:,}"
            )


if __name__ == "__main__":
    main()
