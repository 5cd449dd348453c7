"""The rule engine alone: adjudicate N lines under the shipped rules.

Lines are generated in DuckDB (deterministic), a share of people with many
visits so that caps bind and the recursive walk has work to do.

    python benchmarks/bench_engine.py --lines 1000000
    python benchmarks/bench_engine.py --lines 30000000 --people 1500000 --memory-limit 500MB

Under a --memory-limit, DuckDB spills to a temporary directory; the run
either completes or fails with DuckDB's out-of-memory error.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--people", type=int, default=200_000)
    ap.add_argument("--rules", default=str(ROOT / "config" / "rules"))
    ap.add_argument("--memory-limit", help="DuckDB memory_limit (default: DuckDB's)")
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: every core)")
    args = ap.parse_args()

    from twopay.rules.engine import LINES_DDL, OPENING_DDL, adjudicate
    from twopay.rules.loader import load_rules

    rules = load_rules(Path(args.rules))
    spill = tempfile.TemporaryDirectory(prefix="bench_engine_")
    config = {"temp_directory": spill.name}
    if args.memory_limit:
        config["memory_limit"] = args.memory_limit
    if args.threads:
        config["threads"] = str(args.threads)
    con = duckdb.connect(config=config)
    con.execute("SET enable_progress_bar = false")
    con.execute(LINES_DDL)
    con.execute(OPENING_DDL)
    con.execute(
        """
        INSERT INTO adj_lines
        SELECT i, 'P' || (hash(i) % ?)::VARCHAR, 'bj-inservice', 2024,
               CASE WHEN i % 7 = 0 THEN 'inpatient' ELSE 'outpatient' END,
               DATE '2024-01-01' + (i % 360)::INTEGER, 'S' || i::VARCHAR,
               CASE WHEN i % 7 = 0 THEN DATE '2024-01-01' + (i % 360)::INTEGER - (i % 9)::INTEGER END,
               CAST((hash(i + 1) % 900000) / 100.0 + 10 AS DECIMAL(18,2)),
               CAST((hash(i + 2) % 500000) / 100.0 AS DECIMAL(18,2)), 0, 0,
               'normal', NULL, NULL, NULL, NULL, NULL
        FROM range(?) t(i)
        """,
        [args.people, args.lines],
    )
    start = time.perf_counter()
    adjudicate(con, rules)
    wall = time.perf_counter() - start
    n, paid, capped = con.execute(
        "SELECT count(*), sum(payout), count(*) FILTER (note LIKE '%cap_reached%') FROM adj_result"
    ).fetchall()[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
    spill.cleanup()
    print(
        f"memory_limit {limit}: "
        f"{n:,} lines in {wall:.2f}s: {n / wall:,.0f} lines/s; peak RSS {peak:.0f} MB; "
        f"{capped:,} lines capped; total payout {paid}"
    )


if __name__ == "__main__":
    main()
