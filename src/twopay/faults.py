"""Crash-test hook for the ledger tests (spec 6: a batch commits or not at all)."""

from __future__ import annotations

import os
import signal
import time


def fault_point(stage: str) -> None:
    """Crash-test hook: TWOPAY_FAULT_AT=<stage> kills this process there with
    SIGKILL (or ``sleep:<stage>`` pauses it), so tests can interrupt a real
    run at a known point. Unset in normal use."""
    want = os.environ.get("TWOPAY_FAULT_AT")
    if not want:
        return
    if want == stage:
        os.kill(os.getpid(), signal.SIGKILL)
    if want == f"sleep:{stage}":
        time.sleep(float(os.environ.get("TWOPAY_FAULT_SLEEP", "5")))
