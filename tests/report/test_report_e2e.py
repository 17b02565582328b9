"""The per-run report end to end: a real smoke run writes report.html (with Prometheus charts),
`report` re-renders it, bad folders exit 2, and one headless-Chromium screenshot is checked."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.workflows.single import report_after_run
from tests.support import ARTIFACTS, SMOKE
from tests.support.browser import chromium_path
from tests.support.cli import assert_all_gone, harness

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    result = harness("run", str(SMOKE), "--out", str(out), "--set", "load.stages[1].duration=2s")
    assert result.returncode == 0, result.stderr
    assert f"report: {out / 'report.html'}" in result.stdout
    assert_all_gone(out)
    return out


def test_run_writes_a_self_contained_report(smoke_run: Path) -> None:
    html = (smoke_run / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Run report: smoke" in html
    for section in ("Load and errors over time", "Latency over time", "Latency distribution",
                    "Knee and saturation", "Server and generator resources", "Server-Timing split",
                    "What the server&#x27;s /metrics said", "Little&#x27;s law"):
        assert section in html, section
    assert len(re.findall(r'<img class="chart" alt="[^"]*" src="data:image/png;base64,', html)) >= 7
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html and "<link" not in html
    assert "PASSED" in html and "VALID" in html and "model=linear workers=1" in html
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert f"{summary['requests']:,}" in html
    metrics = (smoke_run / "metrics.csv").read_text()
    assert "inference_requests_total" in metrics and "inference_batch_rows_bucket" in metrics


def test_report_command_re_renders_and_refuses_bad_folders(smoke_run: Path, tmp_path: Path) -> None:
    (smoke_run / "report.html").unlink()
    result = harness("report", str(smoke_run))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {smoke_run / 'report.html'}" and (smoke_run / "report.html").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(smoke_run / "summary.json", empty / "summary.json")
    future = tmp_path / "future"
    shutil.copytree(smoke_run, future)
    doc = json.loads((future / "summary.json").read_text())
    doc["schema_version"] = 99
    (future / "summary.json").write_text(json.dumps(doc))
    for folder, message in ((empty, "no samples"), (future, "schema_version 99 is not supported"),
                            (tmp_path / "missing", "no such run folder")):
        result = harness("report", str(folder))
        assert result.returncode == 2, (folder, result.stderr)
        assert message in result.stderr and result.stderr.startswith("error: ")
        assert "Traceback" not in result.stderr


def folder_state(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_a_failing_report_keeps_the_run(smoke_run: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A report that raises costs the run nothing: a warning with the command to retry, every file
    of the run folder byte for byte as it was, and the caller told to carry on."""
    import harness.report.run_page

    def broken(run_dir: Path) -> Path:
        (run_dir / "report.html").write_text("half a report")  # a renderer that fails part way
        raise RuntimeError("chart exploded")

    before = folder_state(smoke_run)
    monkeypatch.setattr(harness.report.run_page, "write_report", broken)
    try:
        assert report_after_run(smoke_run) is True
        after = folder_state(smoke_run)
    finally:
        (smoke_run / "report.html").write_bytes(before["report.html"])  # the next test screenshots it
    err = capsys.readouterr().err
    assert "warning: report not written (RuntimeError: chart exploded)" in err
    assert f"python -m harness report {smoke_run}" in err
    assert after.pop("report.html") == b"half a report"
    before.pop("report.html")
    assert after == before  # summary.json, samples, everything else untouched


def test_report_screenshot_in_headless_chromium(smoke_run: Path) -> None:
    browser = chromium_path()
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "report-smoke.png"
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={png}", "--window-size=1400,3000", (smoke_run / "report.html").as_uri()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=120)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # chromium's helper processes, if any are left
            except ProcessLookupError:
                pass
            proc.wait()
    assert png.exists(), "chromium wrote no screenshot"
    from PIL import Image

    image = Image.open(png).convert("RGB")
    assert image.size == (1400, 3000)
    small = image.resize((140, 300))
    colors = small.getcolors(maxcolors=140 * 300)
    non_white = sum(n for n, rgb in colors if min(rgb) < 235)
    assert non_white > 0.05 * 140 * 300, "the screenshot is blank"
    assert len(colors) > 50, "the screenshot has almost no colours: charts missing?"
