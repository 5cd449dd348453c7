"""A workspace folder (spec section 6): settings, rules, ledger, overrides, reports."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from twopay.errors import UsageError, WorkspaceLocked, writing_to
from twopay.ledger.schema import ensure_schema

CONFIG_NAME = "twopay.toml"
LEDGER_NAME = "twopay.duckdb"
LOCK_NAME = "twopay.lock"

DEFAULT_CONFIG = """\
# twopay workspace settings
lang = "zh"                      # zh or en: language of reasons and reports

[run]
max_quarantine_rate = 0.05       # above it a run commits nothing (exit 3)
bands = [3000, 10000]            # subsidy bands per person-time, yuan (spec 7)

[duckdb]
memory_limit = "2GB"             # DuckDB spills to temp_directory beyond it
temp_directory = ".twopay-tmp"   # relative to the workspace
threads = 0                      # 0: all cores

# Extra header aliases, per canonical column, for every input file:
[aliases]
# settlement_id = ["流水号"]
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSettings(_Strict):
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)
    bands: list[float] = Field(default_factory=lambda: [3000.0, 10000.0])

    @field_validator("bands")
    @classmethod
    def _bands_ascending(cls, bands: list[float]) -> list[float]:
        """The edges of the subsidy bands (spec 7): at least one, positive,
        finite and strictly ascending."""
        if not bands:
            raise ValueError("give at least one band edge, e.g. [3000, 10000]")
        if any(not math.isfinite(b) or b <= 0 for b in bands):
            raise ValueError("band edges must be positive amounts in yuan")
        if any(a >= b for a, b in itertools.pairwise(bands)):
            raise ValueError("band edges must be in ascending order, each once")
        return bands


class DuckDBSettings(_Strict):
    memory_limit: str = "2GB"
    temp_directory: str = ".twopay-tmp"
    threads: int = Field(0, ge=0)

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit_readable(cls, value: str) -> str:
        """An amount DuckDB understands ("2GB", "512MiB"), checked here so
        that a typo is a config error naming the key, not an internal error
        when the ledger is opened."""
        try:
            duckdb.connect(":memory:", config={"memory_limit": value}).close()
        except duckdb.Error:
            raise ValueError('expected an amount of memory such as "2GB" or "512MB"') from None
        return value


class Settings(_Strict):
    lang: Literal["zh", "en"] = "zh"
    run: RunSettings = Field(default_factory=RunSettings)
    duckdb: DuckDBSettings = Field(default_factory=DuckDBSettings)
    aliases: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("aliases")
    @classmethod
    def _aliases_name_columns(cls, aliases: dict[str, list[str]]) -> dict[str, list[str]]:
        """Each key is a canonical column of some input; each alias is a
        header no other column of a file kind with that column already has
        (else it is silently ignored or steals that column's header)."""
        from twopay.io.schemas import KINDS, header_key

        columns = {c.name for k in KINDS.values() for c in k.columns}
        for key, names in aliases.items():
            if key not in columns:
                raise ValueError(
                    f"`{key}` is not a column twopay reads; use the canonical (English) "
                    f'column name as the key, e.g. settlement_id = ["流水号"]'
                )
            for alias in names:
                if not header_key(alias):
                    raise ValueError(f"the alias of `{key}` is empty")
                for kind in KINDS.values():
                    if not any(c.name == key for c in kind.columns):
                        continue
                    for col in kind.columns:
                        taken = {header_key(h) for h in (col.name, *col.aliases)}
                        taken |= {header_key(h) for h in aliases.get(col.name, [])}
                        if col.name != key and header_key(alias) in taken:
                            raise ValueError(
                                f"the alias {alias!r} of `{key}` already names the column "
                                f"`{col.name}` of the {kind.name} file"
                            )
        return aliases


def shipped_rules_dir() -> Path:
    return Path(str(resources.files("twopay") / "defaults" / "rules"))


@dataclass(frozen=True)
class Workspace:
    root: Path
    settings: Settings

    @property
    def rules_dir(self) -> Path:
        return self.root / "rules"

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_NAME

    @property
    def overrides_path(self) -> Path:
        return self.root / "overrides.csv"

    @property
    def temp_dir(self) -> Path:
        path = Path(self.settings.duckdb.temp_directory)
        return path if path.is_absolute() else self.root / path

    def reports_dir(self, period: str) -> Path:
        return self.root / "reports" / period

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        if read_only and not self.ledger_path.exists():
            raise UsageError(f"{self.root}: no ledger yet; run a batch first.")
        try:
            self.temp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{self.root / CONFIG_NAME}: key `duckdb.temp_directory`: cannot use "
                f"{self.temp_dir} as a folder ({exc.strerror})."
            ) from None
        config: dict[str, str | int] = {
            "memory_limit": self.settings.duckdb.memory_limit,
            "temp_directory": str(self.temp_dir),
            # Every order that matters is an explicit ORDER BY (or row_key):
            # not keeping scan order lets DuckDB stream and use less memory.
            "preserve_insertion_order": False,
        }
        if self.settings.duckdb.threads:
            config["threads"] = self.settings.duckdb.threads
        try:
            con = duckdb.connect(str(self.ledger_path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise WorkspaceLocked(
                    f"{self.ledger_path}: the ledger is open in another process ({_holder(self)})."
                ) from None
            raise UsageError(f"{self.ledger_path}: cannot open the ledger ({exc}).") from None
        con.execute("SET enable_progress_bar = false")  # twopay draws its own progress
        if not read_only:
            ensure_schema(con)
        return con

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """One writer at a time (spec 6); a lock left by a dead process is taken over."""
        path = self.root / LOCK_NAME
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now().isoformat(timespec="seconds"),
            "command": command,
        }
        for _attempt in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder and not _alive(holder):
                    path.unlink(missing_ok=True)
                    continue
                if holder is None:
                    # empty or unreadable: a writer killed as it took the lock
                    raise WorkspaceLocked(
                        f"{self.root}: the lock file {path} names no process (a run was "
                        "killed as it started?); if no twopay run is going on, delete it and "
                        "run again."
                    ) from None
                raise WorkspaceLocked(
                    f"{self.root}: the workspace is locked by {_describe(holder)}; "
                    "wait for it to finish."
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            break
        else:  # pragma: no cover - lost a race twice
            raise WorkspaceLocked(f"{self.root}: the workspace is locked; try again.")
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _alive(holder: dict[str, object]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: assume alive
    try:
        pid = int(holder.get("pid", 0))  # type: ignore[call-overload]
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    # a killed process its parent has not reaped yet (a zombie) holds nothing
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _describe(holder: dict[str, object] | None) -> str:
    if not holder:
        return "another process"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} "
        f"({holder.get('command')}, started {holder.get('started')})"
    )


def _holder(ws: Workspace) -> str:
    """Who has the ledger open: the lock's writer, unless that is this very
    process (a run holds the lock while it opens the ledger: then the other
    process is a reader, `twopay why` or `query`, or another program)."""
    holder = _read_lock(ws.root / LOCK_NAME)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        return "a reader such as `twopay why` or `twopay query`, or another program"
    return _describe(holder)


def find_root(given: str | Path | None) -> Path:
    if given is not None:
        return Path(given)
    env = os.environ.get("TWOPAY_WORKSPACE")
    return Path(env) if env else Path.cwd()


def open_workspace(given: str | Path | None) -> Workspace:
    root = find_root(given)
    config = root / CONFIG_NAME
    if not config.is_file():
        raise UsageError(
            f"{root}: not a twopay workspace (no {CONFIG_NAME}); create one with `twopay init {root}`."
        )
    try:
        # utf-8-sig: Notepad saves UTF-8 with a byte-order mark (as load_rule_file)
        data = tomllib.loads(config.read_bytes().decode("utf-8-sig"))
        settings = Settings.model_validate(data)
    except OSError as exc:
        raise UsageError(f"{config}: cannot read the settings file ({exc.strerror}).") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{config}: byte {exc.start} is not UTF-8; save the settings file as UTF-8 "
            "(Notepad: Save as, Encoding UTF-8)."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{config}: not valid TOML: {exc}.") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise UsageError(f"{config}: key `{key}`: {msg}.") from None
    return Workspace(root=root, settings=settings)


def init_workspace(root: Path, *, rules_from: Path | None = None) -> Workspace:
    """Create a workspace with the shipped default rules and an empty ledger."""
    config = root / CONFIG_NAME
    if config.exists():
        raise UsageError(f"{root}: already a twopay workspace ({CONFIG_NAME} exists).")
    with writing_to(str(root)):
        root.mkdir(parents=True, exist_ok=True)
        config.write_text(DEFAULT_CONFIG, encoding="utf-8")
        rules = root / "rules"
        rules.mkdir(exist_ok=True)
        for src in sorted((rules_from or shipped_rules_dir()).glob("*.toml")):
            shutil.copyfile(src, rules / src.name)
        (root / "reports").mkdir(exist_ok=True)
        overrides = root / "overrides.csv"
        if not overrides.exists():
            overrides.write_text(
                "settlement_id,decision,member_id,note,decided_by\n", encoding="utf-8"
            )
    ws = open_workspace(root)
    ws.connect().close()
    return ws
