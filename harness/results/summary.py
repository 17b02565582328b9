"""summary.json: the versioned, complete result of a run (built by analysis.summarize).

`Summary` names every top-level key; nested blocks (latency, stages, resources) are plain
mappings documented where they are built. Readers refuse schema versions they do not know.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from harness.errors import EXIT_INTERRUPTED
from harness.results import layout

# summary.json's schema_version. History: 1 = the first published layout (the keys of Summary;
# later additions are new keys, which version-1 readers ignore).
SCHEMA_VERSION = 1
SUMMARY_FILE = layout.SUMMARY


class Summary(TypedDict, total=False):
    schema_version: int
    # what ran (from the run's metadata, also in run.json)
    name: str
    scenario_file: str
    started_at: str
    engine: str
    load_model: str
    arrival: str | None
    generator_processes: int
    target: dict[str, Any]
    t0_monotonic: float  # the run's time 0 on this machine's CLOCK_MONOTONIC (samples are seconds from it)
    # the measured window
    duration_s: float
    warmup_s: float
    measured_s: float
    # headline figures (analysis.stats.window_figures)
    requests: int
    ok: int
    errors: int
    error_rate: float
    errors_by_kind: dict[str, int]
    status_counts: dict[str, int]
    not_sent: int
    rps: float | None
    ok_rps: float | None
    latency_ms: dict[str, float | None]
    service_ms: dict[str, float | None]
    send_lag_ms: dict[str, float | None]
    stages: list[dict[str, Any]]
    accounting: dict[str, int]
    server_timing: dict[str, float | None] | None
    # what was sent (analysis.summarize.sent_figures): present only for named requests / a dataset
    by_name: dict[str, dict[str, Any]]
    dataset: dict[str, Any]
    # a generative run (target.api; analysis.tokens): token figures, and goodput under its objectives
    tokens: dict[str, Any]
    goodput: dict[str, Any]
    # resources (analysis.summarize.resource_figures)
    server: dict[str, Any]
    generator: dict[str, Any]
    system_cpu_percent_mean: float | None
    # trends (analysis.trends.summary_blocks): a ramp's knee and saturation, a soak's verdict and fits
    knee: dict[str, Any]
    soak: dict[str, Any]
    gpu: dict[str, Any]  # results.gpu.gpu_figures: per device utilization, memory, power (with NVML)
    # verdicts
    valid: bool
    invalid_reasons: list[str]
    notes: list[str]
    partial: bool
    interrupted: bool
    environment: dict[str, Any]
    thresholds: list[dict[str, Any]]
    passed: bool
    exit_code: int


@dataclass(frozen=True)
class RunResult:
    """What one run ended with: its exit code and summary (None when it was interrupted before
    the load started, so nothing was measured)."""

    exit_code: int
    summary: Summary | None

    @property
    def interrupted(self) -> bool:
        return self.exit_code == EXIT_INTERRUPTED


def write(run_dir: Path, summary: Summary) -> Path:
    doc = {k: v for k, v in summary.items() if k != "schema_version"}
    return layout.write_json(Path(run_dir) / SUMMARY_FILE, doc, SCHEMA_VERSION)


def read(path: Path) -> Summary:
    """Read a summary.json (or a run folder's), refusing schema versions this harness does not know."""
    from harness.errors import UserError

    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        doc = layout.read_json(path, (SCHEMA_VERSION,), "summary")
    except FileNotFoundError:
        raise UserError(f"{path}: no such summary") from None
    return Summary(schema_version=SCHEMA_VERSION, **doc)  # type: ignore[typeddict-item]
