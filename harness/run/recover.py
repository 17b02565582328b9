"""A run whose harness was killed (SIGKILL, power loss) leaves samples but no summary.json.

The runner writes the run's metadata (and the machine's) to `run.json` before the load starts;
from it, the resolved `scenario.yaml` and the samples on disk, `harness report` rebuilds a
summary marked partial and interrupted (with a note saying so), so the partial run can still be
read, reported and compared.
"""
from __future__ import annotations

from pathlib import Path

from harness.analysis import summarize
from harness.errors import UserError
from harness.results import layout, meta
from harness.results import summary as summary_mod
from harness.results.samples import read_samples
from harness.results.summary import Summary
from harness.scenario.plan import plan_from_scenario

KILLED_NOTE = ("the harness ended without writing a summary (killed?); this summary was rebuilt "
               "from the samples on disk by `harness report`")


def rebuild_summary(run_dir: Path) -> Summary:
    """Summarise a run folder that has samples but no summary.json, and write it (marked partial)."""
    run_dir = Path(run_dir)
    for name in (layout.META, layout.SCENARIO):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir}: no summary.json and no {name} to rebuild it from "
                            "(the run was stopped before its load started?)")
    try:
        run_meta = meta.read_meta(run_dir)
        scenario = meta.read_scenario(run_dir)
    except (OSError, UserError) as exc:
        raise UserError(f"{run_dir}: no summary.json, and the run's metadata is unreadable: "
                        f"{str(exc).splitlines()[0]}") from None
    df = read_samples(run_dir)
    if df.empty:
        raise UserError(f"{run_dir}: no samples (samples-*.csv) to report on")
    environment = run_meta.pop("environment", None)
    result = summarize.build(run_dir, meta=run_meta, plan=plan_from_scenario(scenario),
                             thresholds=scenario.parsed_thresholds, max_in_flight=scenario.load.max_in_flight,
                             stopped_at=float(df["intended"].max()), interrupted=True, reasons=[],
                             notes=[KILLED_NOTE],
                             goodput=scenario.goodput_slo)
    if environment is not None:  # the machine of the run, not of the report
        result["environment"] = environment
    summary_mod.write(run_dir, result)
    return result
