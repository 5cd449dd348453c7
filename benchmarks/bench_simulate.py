"""Simulate a plan year under other rules.

Generates a year of settlements (`twopay sample --months 12`), runs the twelve
monthly batches, then times `simulate` with the outpatient ratio raised, and
prints rows, wall time, rows per second and peak memory.

    python benchmarks/bench_simulate.py --settlements 5000000 --members 4000000
    python benchmarks/bench_simulate.py --settlements 200000 --members 200000   # quick
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--settlements", type=int, default=5_000_000)
    ap.add_argument("--members", type=int, default=4_000_000)
    ap.add_argument("--work", default=str(HERE / "out" / "simulate"))
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    from twopay.ledger.workspace import init_workspace, open_workspace
    from twopay.pipeline.batch import RunOptions, run_batch
    from twopay.sample import generate
    from twopay.simulate import simulate

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = generate(
        work / "data", members=args.members, settlements=args.settlements, seed=args.seed, months=12
    )
    ws = init_workspace(work / "ws")
    t = time.perf_counter()
    for month in range(1, 13):
        period = f"2024-{month:02d}"
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
    print(f"12 monthly batches of {args.settlements:,} rows in all: {time.perf_counter() - t:.1f}s")
    rules = work / "rules"
    shutil.copytree(ws.rules_dir, rules)
    for f in rules.glob("bj-*.toml"):
        f.write_text(
            f.read_text(encoding="utf-8").replace("ratio = 0.5", "ratio = 0.6"), encoding="utf-8"
        )
    t = time.perf_counter()
    report = simulate(open_workspace(ws.root), 2024, rules)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = report["total"][0]
    print(
        f"simulate 2024: {args.settlements:,} rows, {wall:.1f}s, {args.settlements / wall:,.0f} rows/s, "
        f"peak RSS {peak:.0f} MB; actual {total['actual']}, simulated {total['simulated']}"
    )


if __name__ == "__main__":
    main()
