"""Simulate a plan year under other rules (spec 8, `twopay simulate`).

Generates a year of settlements with the sample generator (12 monthly files),
runs them as 12 batches in a fresh workspace, then times `simulate` with the
shipped outpatient ratio raised from 0.5 to 0.6, in a process of its own so
that its peak memory is its own. Prints rows, lines replayed, wall time, rows
per second and peak RSS.

    python benchmarks/bench_simulate.py --settlements 5000000 --members 4000000
    python benchmarks/bench_simulate.py --settlements 200000 --members 200000   # quick
    python benchmarks/bench_simulate.py --reuse      # time simulate again on the last year
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
YEAR = 2024


def build_year(work: Path, settlements: int, members: int, seed: int) -> Path:
    """Generate the year and run it as twelve monthly batches; the workspace."""
    from twopay.ledger.workspace import init_workspace, open_workspace
    from twopay.pipeline.batch import RunOptions, run_batch
    from twopay.sample import generate

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    files = generate(
        work / "data",
        members=members,
        settlements=settlements,
        seed=seed,
        year=YEAR,
        months=12,
        fmt="parquet",
    )
    print(
        f"generated {settlements:,} settlements, {members:,} members: {time.perf_counter() - t:.1f}s"
    )
    ws = init_workspace(work / "ws")
    t = time.perf_counter()
    for month in range(1, 13):
        period = f"{YEAR}-{month:02d}"
        run_batch(
            open_workspace(ws.root),
            RunOptions(
                period=period,
                settlements=[files[f"settlements_{period}"]],
                roster=files["roster"],
                units=files["units"],
                enrollments=files["enrollments"],
                max_quarantine_rate=1.0,
            ),
        )
    print(f"12 monthly batches: {time.perf_counter() - t:.1f}s")
    rules = work / "rules"
    shutil.rmtree(rules, ignore_errors=True)
    shutil.copytree(ws.rules_dir, rules)
    for f in rules.glob("bj-*.toml"):
        f.write_text(
            f.read_text(encoding="utf-8").replace("ratio = 0.5", "ratio = 0.6"), encoding="utf-8"
        )
    return ws.root


def time_simulate(ws_root: Path, rules: Path) -> None:
    """Child process: simulate once, print one JSON line."""
    from twopay.ledger.workspace import open_workspace
    from twopay.simulate import simulate

    ws = open_workspace(ws_root)
    con = ws.connect(read_only=True)
    rows = con.execute(
        "SELECT (SELECT count(*) FROM settlements), count(DISTINCT (row_batch_id, row_key)), "
        "count(*) FROM lines WHERE plan_year = ?",
        [YEAR],
    ).fetchall()[0]
    con.close()
    t = time.perf_counter()
    report = simulate(ws, YEAR, rules)
    wall = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "input_rows": rows[0],
                "settlements": rows[1],
                "lines": rows[2],
                "wall": wall,
                "peak_mb": peak_mb,
                "total": report["total"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--settlements", type=int, default=5_000_000)
    ap.add_argument("--members", type=int, default=4_000_000)
    ap.add_argument("--work", default=str(HERE / "out" / "simulate"))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--reuse", action="store_true", help="Time simulate on the last built year.")
    ap.add_argument("--child", nargs=2, metavar=("WS", "RULES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        time_simulate(Path(args.child[0]), Path(args.child[1]))
        return

    work = Path(args.work)
    ws_root = work / "ws"
    if not (args.reuse and (ws_root / "twopay.duckdb").exists()):
        ws_root = build_year(work, args.settlements, args.members, args.seed)
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(ws_root), str(work / "rules")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    total = r["total"]
    print(
        f"simulate {YEAR}: {r['input_rows']:,} settlement rows in the ledger, "
        f"{r['settlements']:,} adjudicated ({r['lines']:,} lines replayed) in "
        f"{r['wall']:.1f}s, {r['input_rows'] / r['wall']:,.0f} rows/s, "
        f"peak RSS {r['peak_mb']:,.0f} MB; actual {total['actual']}, "
        f"simulated {total['simulated']} ({total['change_pct']} %)"
    )


if __name__ == "__main__":
    main()
