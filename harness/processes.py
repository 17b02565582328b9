"""Ending a child started in its own session (`start_new_session=True`): its whole process group."""
from __future__ import annotations

import os
import signal
import subprocess


def end_process_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the group (servers stop their workers gracefully), wait up to `grace` s, then SIGKILL
    whatever is left in it (children a wedged parent left behind). Safe to call twice."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
