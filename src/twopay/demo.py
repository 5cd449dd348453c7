"""`twopay demo`: the shipped sample data, two months, in a fresh workspace."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from twopay.ledger.workspace import init_workspace
from twopay.pipeline.batch import Progress, RunOptions, RunResult, run_batch


def sample_dir() -> Path:
    """The sample_data folder shipped beside the package (source checkout) or inside it."""
    packaged = Path(str(resources.files("twopay") / "defaults" / "sample_data"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sample_data"


def run_demo(root: Path, progress: Progress | None = None) -> list[RunResult]:
    data = sample_dir()
    ws = init_workspace(root)
    results = []
    for period in ("2024-01", "2024-02"):
        results.append(
            run_batch(
                ws,
                RunOptions(
                    period=period,
                    settlements=[data / f"settlements_{period}.csv"],
                    roster=data / "roster.csv",
                    units=data / "units.csv",
                    enrollments=data / "enrollments.csv",
                ),
                progress=progress,
            )
        )
    return results
