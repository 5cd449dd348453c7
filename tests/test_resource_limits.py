"""Running out of resources (issue 9): a full disk, a settlement file larger than
DuckDB's memory_limit (read streaming), and a workbook whose used range no memory could hold.
Each is a real resource: a small tmpfs mounted for the test, a workspace whose
twopay.toml sets a low memory_limit, a real .xlsx file; the CLI is the real one
and the ledger is read back to see what was committed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
import xlsxwriter
from click.testing import Result

from helpers import cli, init_workspace
from twopay.io.readers import load_input
from twopay.io.schemas import SETTLEMENTS
from twopay.sample import generate

PERIOD = "2024-01"

Mount = Callable[[Path, str], Path]


@pytest.fixture
def tmpfs() -> Iterator[Mount]:
    """mount(dir, size) mounts a tmpfs of that size on dir; all are unmounted
    at teardown. Skips when this machine does not let the test mount."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                capture_output=True,
                text=True,
            )
        except (FileNotFoundError, PermissionError) as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc}")
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip()
            if os.geteuid() != 0 or any(
                w in why.lower() for w in ("permission denied", "not permitted", "only root")
            ):
                pytest.skip(f"cannot mount a tmpfs here: {why}")
            pytest.fail(f"mount -t tmpfs failed: {why}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


@pytest.fixture(scope="module")
def batch_20k(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One month of sample inputs, 20 000 settlements: a ledger of about 7 MB
    and reports of about 4 MB once run."""
    return generate(tmp_path_factory.mktemp("in20k"), members=4000, settlements=20_000, seed=3)


def run(ws: Path, inputs: dict[str, Path], *extra: object) -> Result:
    return cli(
        "run", "-w", ws, "--period", PERIOD,
        "--settlements", inputs["settlements"], "--roster", inputs["roster"],
        "--units", inputs["units"], "--enrollments", inputs["enrollments"],
        "--json", *extra,
    )  # fmt: skip


def committed(ws: Path) -> int:
    """Batches of PERIOD in the ledger, through `twopay query` (read-only)."""
    result = cli(
        "query", "-w", ws, "--json", f"SELECT count(*) AS n FROM batches WHERE period = '{PERIOD}'"
    )
    assert result.exit_code == 0, result.output
    return int(json.loads(result.output)[0]["n"])


def one_sentence(result: Result) -> str:
    text = result.output.strip()
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    return text


def balance(result: Result, expect_rows: int) -> dict[str, object]:
    bal: dict[str, object] = json.loads(result.output)["summary"]["balance"]
    placed = sum(int(bal[k]) for k in ("quarantined", "rejected", "held", "adjudicated"))  # type: ignore[call-overload]
    assert bal["balanced"] is True and bal["rows_in"] == expect_rows == placed, bal
    return bal


# -- a full disk -------------------------------------------------------------------


def test_a_full_disk_under_the_ledger_is_one_sentence_and_commits_nothing(
    tmp_path: Path, tmpfs: Mount, batch_20k: dict[str, Path]
) -> None:
    disk = tmpfs(tmp_path / "disk", "3m")  # the new ledger is 0.8 MB; this batch needs 7
    ws = init_workspace(disk / "ws")
    result = run(ws, batch_20k)
    assert result.exit_code == 1, result.output
    text = one_sentence(result)
    assert text.startswith("error: the disk is full") and "nothing was committed" in text
    assert committed(ws) == 0
    assert not (ws / "reports" / PERIOD).exists() and not (ws / "twopay.lock").exists()
    # nothing was left half-done: with room again, the same command runs the batch
    resize(disk, "64m")
    again = run(ws, batch_20k)
    assert again.exit_code == 0, again.output
    balance(again, 20_000)
    assert committed(ws) == 1


def test_a_full_disk_under_the_reports_says_the_batch_is_committed_and_a_rerun_writes_them(
    tmp_path: Path, tmpfs: Mount, batch_20k: dict[str, Path]
) -> None:
    ws = init_workspace(tmp_path / "ws")
    out = tmpfs(tmp_path / "out", "1m") / PERIOD  # the reports need about 4 MB
    result = run(ws, batch_20k, "--out", out)
    assert result.exit_code == 1, result.output
    text = one_sentence(result)
    assert text.startswith("error: the disk is full")
    # the ledger committed before the reports were written (spec 6): the
    # message must say so rather than "nothing was committed"
    assert committed(ws) == 1
    assert "nothing was committed" not in text and "committed" in text, text
    assert not out.exists() or not any(out.iterdir())  # no half-written report folder
    resize(out.parent, "64m")
    again = run(ws, batch_20k, "--out", out)
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["noop"] is True
    balance(again, 20_000)
    written = json.loads((out / "summary.json").read_text(encoding="utf-8"))["balance"]
    assert written["balanced"] is True and written["rows_in"] == 20_000
    assert committed(ws) == 1


# -- a settlement file larger than memory --------------------------------------------


class TempWatcher:
    """Polls a folder for DuckDB's spill files while a run goes on: the largest
    total size seen (DuckDB deletes them when it is done with them)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            total = 0
            for root, _dirs, files in os.walk(self.folder):
                for name in files:
                    if name.startswith("duckdb_temp"):
                        try:
                            total += os.path.getsize(os.path.join(root, name))
                        except OSError:
                            pass  # deleted meanwhile
            self.peak = max(self.peak, total)
            self._stop.wait(0.02)

    def __enter__(self) -> TempWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


MEMORY_LIMIT_MB = 24


def test_a_settlement_csv_larger_than_memory_limit_is_read_streaming(tmp_path: Path) -> None:
    """The reader does not hold a CSV in memory: a 31 MB file reads under a
    24 MB memory_limit (DuckDB's MB is 1000**2), every row at its line. (The
    whole batch needs more than this: see the next test.)"""
    inputs = generate(tmp_path / "in", members=3_000, settlements=300_000, seed=5)
    path = inputs["settlements"]
    assert path.stat().st_size > MEMORY_LIMIT_MB * 1000**2
    spill_dir = tmp_path / "spill"
    con = duckdb.connect(
        config={
            "memory_limit": f"{MEMORY_LIMIT_MB}MB",
            "threads": 1,
            "temp_directory": str(spill_dir),
            "preserve_insertion_order": False,
        }
    )
    with TempWatcher(spill_dir) as spill:
        loaded = load_input(con, path, SETTLEMENTS, "s", workdir=tmp_path)
    assert loaded.rows == 300_000
    lines = con.execute(
        "SELECT min(line_number), max(line_number), count(DISTINCT line_number), "
        "count(*) FILTER (parse_error IS NOT NULL) FROM s"
    ).fetchall()[0]
    assert lines == (2, 300_001, 300_000, 0)
    assert spill.peak > 0  # the rows went through temp_directory, not memory


def test_a_whole_batch_larger_than_memory_limit_spills_and_gives_the_same_answer(
    tmp_path: Path,
) -> None:
    """A year in one batch (issue 8), in small: 200,000 rows under a 96 MB
    memory_limit with one thread go through temp_directory, and the batch
    commits the same books and writes the same reports, to the byte, as with
    memory to spare. (Under 48 MB it stops in eligibility, with the sentence
    of test_hostile_inputs; the margin is 2x.)"""
    inputs = generate(tmp_path / "in", members=20_000, settlements=200_000, seed=5)
    peaks: dict[str, int] = {}
    reports: dict[str, dict[str, object]] = {}
    for limit in ("96MB", "2GB"):
        ws = init_workspace(tmp_path / f"ws-{limit}")
        config = ws / "twopay.toml"
        text = config.read_text().replace('memory_limit = "2GB"', f'memory_limit = "{limit}"')
        text = text.replace("threads = 0", "threads = 1")
        assert f'memory_limit = "{limit}"' in text and "\nthreads = 1" in text
        config.write_text(text)
        with TempWatcher(ws / ".twopay-tmp") as spill:
            result = run(ws, inputs, "--max-quarantine-rate", "1")
        assert result.exit_code == 0, result.output
        balance(result, 200_000)
        peaks[limit] = spill.peak
        out = ws / "reports" / PERIOD
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        for stamp in ("started_at", "finished_at"):
            summary.pop(stamp)
        reports[limit] = {
            "summary": summary,
            **{p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))},
        }
    assert peaks["96MB"] > 0, peaks  # it did not fit: it spilled
    assert len(reports["96MB"]) == 7  # summary and the six CSVs
    assert reports["96MB"] == reports["2GB"]


# -- a workbook no memory could hold --------------------------------------------------


def stray_cell_workbook(path: Path) -> Path:
    """A valid settlement sheet, plus one cell typed into XFD1048576, the last
    cell of a sheet: the used range is then 17 billion cells."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    ws = wb.add_worksheet()
    ws.write_row(
        0, 0, ["结算流水号", "身份证号", "姓名", "就诊类型", "结算日期", "医疗费总额", "自付一"]
    )
    ws.write_row(1, 0, ["S1", "110105199804090173", "刘洋", "门诊", "2024-01-15", "100", "80"])
    ws.write_string(1048575, 16383, "x")
    wb.close()
    path.write_bytes(buf.getvalue())
    with zipfile.ZipFile(path) as z:  # the file really says so
        assert b'r="XFD1048576"' in z.read("xl/worksheets/sheet1.xml")
    return path


def test_a_stray_cell_at_the_end_of_the_sheet_is_refused_not_a_crash(tmp_path: Path) -> None:
    # In a child process: a reader that tried to allocate the range would
    # abort the whole interpreter (SIGABRT), not raise.
    ws = init_workspace(tmp_path / "ws")
    book = stray_cell_workbook(tmp_path / "结算明细.xlsx")
    roster = Path(__file__).resolve().parents[1] / "sample_data" / "roster.csv"
    done = subprocess.run(
        [sys.executable, "-m", "twopay.cli", "run", "-w", str(ws), "--period", PERIOD,
         "--settlements", str(book), "--roster", str(roster)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "1000"},
    )  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert "XFD1048576" in message and book.name in message
    assert committed(ws) == 0
