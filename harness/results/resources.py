"""resources.csv: CPU, RSS and threads per process and role, on the run's clock.

Roles: `server` (the bundled server's master), `server_worker` (its workers), `generator`
(threadpool generator processes or Locust processes), `harness` (the harness itself) and
`system` (the whole machine: psutil's CPU % over all cores and memory used, pid 0).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from harness.results import layout

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["t", "role", "pid", "cpu_percent", "rss_bytes", "threads"]
HEADER = ",".join(COLUMNS) + "\n"
SERVER_ROLES = ("server", "server_worker")


def format_line(t: float, role: str, pid: int, cpu_percent: float, rss_bytes: int, threads: int) -> str:
    return f"{t:.3f},{role},{pid},{cpu_percent:.1f},{rss_bytes},{threads}\n"


def read_resources(run_dir: Path) -> pd.DataFrame:
    """Every complete row of the run's resources.csv (an empty frame with the columns without one)."""
    import pandas as pd

    data = layout.complete_lines(Path(run_dir) / layout.RESOURCES)
    if data.count(b"\n") < 1:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(io.BytesIO(data))
