"""The progress line's aggregation must not grow with the run: long runs report every second."""
from __future__ import annotations

import io
import time

from harness.engines.base import ProgressMessage
from harness.run.progress import RECENT_LATENCIES, Progress
from harness.scenario.plan import LoadPlan


def reports(n: int, per_report: int = 4096) -> list[ProgressMessage]:
    return [ProgressMessage(i % 2, i * per_report, 0, [0.001] * per_report) for i in range(n)]


def test_latencies_kept_for_the_line_are_bounded() -> None:
    plan = LoadPlan.from_stages("closed", [(600.0, 16)])
    stream = io.StringIO()  # not a terminal: prints every 5 s, so nothing is printed here
    progress = Progress(plan, time.monotonic(), stream=stream)
    progress.update(reports(200))
    assert len(progress.latencies) == RECENT_LATENCIES
    assert progress.sent == {0: 198 * 4096, 1: 199 * 4096}


def test_quiet_runs_keep_no_latencies() -> None:
    plan = LoadPlan.from_stages("closed", [(600.0, 16)])
    progress = Progress(plan, time.monotonic(), quiet=True)
    progress.update(reports(50))
    assert len(progress.latencies) == 0 and sum(progress.sent.values()) > 0
