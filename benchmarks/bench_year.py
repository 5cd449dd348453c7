"""A whole plan year in ONE batch under a low memory_limit: it spills, it does not fail.

Generates a year of settlements with the sample generator (12 monthly files),
then runs them as a single batch (every file given as --settlements) in a
fresh workspace whose twopay.toml sets the memory_limit. Prints the rows, wall
time, rows per second, peak resident memory, the most DuckDB had spilled to
temp_directory at any moment (sampled every half second), the ledger's size
and whether the books balance.

    python benchmarks/bench_year.py --settlements 60000000 --memory-limit 1GB
    python benchmarks/bench_year.py --settlements 2000000 --members 200000   # quick
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from bench_run import peak_rss_mb

HERE = Path(__file__).resolve().parent
YEAR = 2024


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass  # a spill file removed while we looked
    return total


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--settlements", type=int, default=60_000_000)
    ap.add_argument("--members", type=int, default=4_000_000)
    ap.add_argument("--memory-limit", default="1GB")
    ap.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: every core)")
    ap.add_argument("--work", type=Path, default=HERE / "out" / "year")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from twopay.errors import OutOfMemory
    from twopay.ledger.workspace import init_workspace, open_workspace
    from twopay.pipeline.batch import RunOptions, run_batch
    from twopay.sample import generate

    data = args.work / f"data_{args.settlements}"
    if not (data / "roster.parquet").exists():
        t = time.perf_counter()
        generate(
            data,
            members=args.members,
            settlements=args.settlements,
            seed=args.seed,
            year=YEAR,
            months=12,
            fmt="parquet",
        )
        print(f"generated {args.settlements:,} settlements: {time.perf_counter() - t:.1f} s")
    files = sorted(data.glob("settlements_*.parquet"))
    ws_root = args.work / "ws"
    shutil.rmtree(ws_root, ignore_errors=True)
    init_workspace(ws_root)
    cfg = ws_root / "twopay.toml"
    text = re.sub(
        r'(?m)^memory_limit = "[^"]*"', f'memory_limit = "{args.memory_limit}"', cfg.read_text()
    )
    cfg.write_text(re.sub(r"(?m)^threads = \d+", f"threads = {args.threads}", text))
    ws = open_workspace(ws_root)

    spilled = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            spilled[0] = max(spilled[0], folder_bytes(ws.temp_dir))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stages: list[tuple[str, float]] = []
    start = time.perf_counter()
    try:
        result = run_batch(
            ws,
            RunOptions(
                period=f"{YEAR}-12",
                settlements=files,
                roster=data / "roster.parquet",
                units=data / "units.parquet",
                max_quarantine_rate=1.0,
            ),
            progress=lambda msg: stages.append((msg, time.perf_counter())),
        )
    except OutOfMemory as exc:
        result = None
        failure = str(exc.__cause__).splitlines()[0]  # DuckDB's own words
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    marks = [*stages, ("end", start + wall)]
    for (name, t0), (_next, t1) in zip(marks, marks[1:], strict=False):
        print(f"  {name:44} {t1 - t0:8.1f} s")
    if result is None:
        print(
            f"{args.settlements:,} rows in one batch under memory_limit {args.memory_limit}"
            f" (threads: {args.threads or 'all'}): FAILED after {wall:.1f} s in {stages[-1][0]!r} ({failure}); peak RSS "
            f"{peak_rss_mb():,.0f} MB, spilled at most {spilled[0] / 2**30:.1f} GB"
        )
        sys.exit(1)
    balance = result.summary["balance"]  # type: ignore[index]
    print(
        f"{args.settlements:,} rows in one batch under memory_limit {args.memory_limit}"
        f" (threads: {args.threads or 'all'}): {wall:.1f} s, {args.settlements / wall:,.0f} rows/s, peak RSS {peak_rss_mb():,.0f} MB, "
        f"spilled at most {spilled[0] / 2**30:.1f} GB, ledger "
        f"{(ws_root / 'twopay.duckdb').stat().st_size / 2**30:.1f} GB, "
        f"books balance: {balance['balanced']} ({balance['rows_in']:,} rows in)"  # type: ignore[index]
    )


if __name__ == "__main__":
    main()
