"""Error types. Each carries the exit code of spec section 8; the CLI turns them
into one sentence (no traceback unless --debug)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class TwopayError(Exception):
    """Base of every error a user can cause. ``exit_code`` follows spec section 8."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(TwopayError):
    """Usage, config or input-schema error (exit 2)."""

    exit_code = 2


class RuleFileError(UsageError):
    """A rule file that does not validate (exit 2), naming file and key."""


class InputSchemaError(UsageError):
    """An input file whose columns cannot serve (exit 2), naming file and column."""


class DataQualityError(TwopayError):
    """Finished with a data-quality or reconciliation problem (exit 3)."""

    exit_code = 3


class BatchConflict(TwopayError):
    """A period already committed with other inputs (exit 4)."""

    exit_code = 4


class WorkspaceLocked(TwopayError):
    """Another run holds the workspace (exit 5)."""

    exit_code = 5


class BooksDoNotBalance(TwopayError):
    """Internal inconsistency: counts or amounts do not balance (exit 1)."""

    exit_code = 1


def oom_advice(threads: int | None = None) -> str:
    """What to change when DuckDB runs out of memory (``threads``: the
    workspace's setting, when known; one thread is not told to use one)."""
    fewer = (
        ""
        if threads == 1
        else "set [duckdb] threads = 1 (each thread holds its own working memory), or "
    )
    return f"raise [duckdb] memory_limit in twopay.toml, or {fewer}give temp_directory more room."


class Interrupted(TwopayError):
    """Ctrl-C (or SIGINT) during a run (exit 1): the message says whether the
    batch made it into the ledger before it stopped."""

    exit_code = 1


class OutOfMemory(TwopayError):
    """DuckDB ran out of memory within the workspace's memory_limit (exit 1):
    not the data's fault and not a bug; the message says where and what to
    change."""

    exit_code = 1


class DiskFull(TwopayError):
    """The disk under the ledger, temp_directory or the reports is full (exit 1)."""

    exit_code = 1


def disk_full(exc: BaseException) -> bool:
    """A full disk or quota, from Python (OSError) or DuckDB (its message)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


@contextmanager
def writing_to(what: str) -> Iterator[None]:
    """Files written where the user said (``what`` names it): an OSError there
    that is not a full disk (a folder under a file, one not writable) is the
    user's path, exit 2 naming it, not an internal error."""
    try:
        yield
    except OSError as exc:
        if disk_full(exc):
            raise
        raise UsageError(f"{what}: cannot write there ({exc.strerror}: {exc.filename}).") from None
