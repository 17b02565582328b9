"""A run whose harness was killed (SIGKILL, power loss) leaves samples but no summary.json.

The runner writes the run's metadata (and the machine's) to `run.json` before the load starts;
from it, the resolved `scenario.yaml` and the samples on disk, `harness report` rebuilds a
summary marked partial and interrupted (with a note saying so), so the partial run can still be
read, reported and compared.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.analysis import stats as analysis
from harness.results import summary as summary_mod
from harness.errors import UserError
from harness.scenario.plan import plan_from_scenario
from harness.scenario.schema import Scenario

META_FILE = "run.json"
KILLED_NOTE = ("the harness ended without writing a summary (killed?); this summary was rebuilt "
               "from the samples on disk by `harness report`")


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    """The run's metadata and the machine it ran on, as they were when the load started."""
    doc = {**meta, "environment": summary_mod.environment()}
    (Path(run_dir) / META_FILE).write_text(json.dumps(doc, indent=2, default=str) + "\n")


def rebuild_summary(run_dir: Path) -> dict[str, Any]:
    """Summarise a run folder that has samples but no summary.json, and write it (marked partial)."""
    run_dir = Path(run_dir)
    try:
        meta = json.loads((run_dir / META_FILE).read_text())
        scenario = Scenario.model_validate(yaml.safe_load((run_dir / "scenario.yaml").read_text()))
    except FileNotFoundError as exc:
        raise UserError(f"{run_dir}: no summary.json and no {Path(exc.filename).name} to rebuild it from "
                        "(the run was stopped before its load started?)") from None
    except (OSError, ValueError, yaml.YAMLError, ValidationError) as exc:
        raise UserError(f"{run_dir}: no summary.json, and the run's metadata is unreadable: "
                        f"{str(exc).splitlines()[0]}") from None
    df = analysis.load_samples(run_dir)
    if df.empty:
        raise UserError(f"{run_dir}: no samples (samples-*.csv) to report on")
    environment = meta.pop("environment", None)
    result = summary_mod.build(run_dir, meta=meta, plan=plan_from_scenario(scenario),
                               thresholds=scenario.parsed_thresholds, max_in_flight=scenario.load.max_in_flight,
                               stopped_at=float(df["intended"].max()), interrupted=True, reasons=[],
                               notes=[KILLED_NOTE])
    if environment is not None:  # the machine of the run, not of the report
        result["environment"] = environment
    summary_mod.write(run_dir, result)
    return result
