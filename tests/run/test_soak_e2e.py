"""A soak against a bundled server made to leak: the verdict lands in summary.json and fails the run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import assert_all_gone, harness

LEAKING_SOAK = """
name: leaking-soak
target:
  server: {model: sleep, sleep_ms: 5, worker_class: gthread, threads: 2, leak_kb_per_request: 16}
load:
  start: 2
  stages: [{duration: 68s, target: 2}]
  warmup: 3s
thresholds:
  - error_rate < 0.01
  - soak_verdict != leaking
"""


@pytest.mark.e2e
def test_a_leaking_server_fails_the_soak_verdict_threshold(tmp_path: Path) -> None:
    scenario = tmp_path / "soak.yaml"
    scenario.write_text(LEAKING_SOAK)
    out = tmp_path / "run"
    result = harness("run", str(scenario), "--out", str(out), timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    soak = summary["soak"]
    # ~2 x 150 req/s x 65 s x 16 KiB is several hundred MB: a steady line, far past the leak limit
    assert soak["verdict"] == "leaking" and soak["rss_r2"] > 0.9, soak
    assert soak["rss_growth_mb"] > soak["leak_limit_mb"] and soak["workers"][0]["rss_mb_per_hour"] > 0
    judged = {t["expression"]: t for t in summary["thresholds"]}
    assert judged["soak_verdict != leaking"] == {**judged["soak_verdict != leaking"], "observed": "leaking",
                                                 "passed": False}
    assert judged["error_rate < 0.01"]["passed"]
    assert "soak        LEAKING" in result.stdout and "soak_verdict != leaking" in result.stdout
    assert_all_gone(out)
