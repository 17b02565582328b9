"""Statistics on sample frames with known answers; sample files survive torn lines and gzip."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import stats as analysis
from harness.analysis import validity
from harness.results.samples import COLUMNS, NOT_SENT, SampleWriter, read_samples
from tests.support.cli import complete_rows, wait_until


def frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame([(*r, *[None] * (len(COLUMNS) - len(r))) for r in rows], columns=COLUMNS)
    return df.astype({"error": "string"})


def ok_rows(latencies_ms: list[float], start: float = 0.0, gap: float = 0.01) -> list[tuple]:
    rows = []
    for i, lat in enumerate(latencies_ms):
        t = start + i * gap
        rows.append((t, t, t + lat / 1000.0, 200, "", 10, 0, 0, None, None, None))
    return rows


def test_exact_percentiles_from_raw_samples() -> None:
    latencies = list(range(1, 1001))  # 1..1000 ms
    figures = analysis.window_figures(frame(ok_rows(latencies)), seconds=10.0)
    lat = figures["latency_ms"]
    assert lat["p50"] == pytest.approx(np.percentile(latencies, 50))
    assert lat["p99"] == pytest.approx(np.percentile(latencies, 99))
    assert lat["p999"] == pytest.approx(np.percentile(latencies, 99.9))
    assert lat["max"] == 1000 and lat["min"] == 1 and lat["mean"] == pytest.approx(500.5)
    assert figures["requests"] == 1000 and figures["rps"] == 100.0 and figures["error_rate"] == 0


def test_latency_counts_from_the_intended_send_time() -> None:
    # intended at 0, left 0.9 s late (generator or slot wait), answered 10 ms later: latency 910 ms
    df = frame([(0.0, 0.9, 0.91, 200, "", 1, 0, 0, None, None, None)])
    figures = analysis.window_figures(df, 1.0)
    assert figures["latency_ms"]["p50"] == pytest.approx(910.0)
    assert figures["service_ms"]["p50"] == pytest.approx(10.0)
    assert figures["send_lag_ms"]["p50"] == pytest.approx(900.0)


def test_errors_by_kind_and_accounting() -> None:
    rows = ok_rows([5.0] * 6)
    rows += [(1.0, 1.0, 1.5, 0, "timeout", 0, 0, 0, None, None, None),
             (1.1, 1.1, 1.2, 503, "http", 30, 0, 0, None, None, None),
             (1.2, 1.2, 1.2, 0, "connect", 0, 0, 0, None, None, None),
             (1.3, None, None, 0, NOT_SENT, 0, 0, 0, None, None, None)]
    df = frame(rows)
    figures = analysis.window_figures(df, 2.0)
    assert figures["requests"] == 9 and figures["errors"] == 3 and figures["not_sent"] == 1
    assert figures["errors_by_kind"] == {"timeout": 1, "http": 1, "connect": 1}
    assert figures["status_counts"] == {"200": 6, "503": 1}
    acc = analysis.accounting(df)
    assert acc == {"planned": 10, "completed": 6, "failed": 2, "timed_out": 1, "not_sent": 1}
    assert acc["planned"] == acc["completed"] + acc["failed"] + acc["timed_out"] + acc["not_sent"]


def test_warmup_is_excluded() -> None:
    df = frame(ok_rows([100.0] * 100, start=0.0) + ok_rows([1.0] * 100, start=5.0))
    window = analysis.measured(df, warmup=5.0, until=10.0)
    assert analysis.window_figures(window, 5.0)["latency_ms"]["max"] == pytest.approx(1.0)


def test_sample_writer_round_trip_torn_line_and_gzip(tmp_path: Path) -> None:
    writer = SampleWriter(tmp_path / "samples-0.csv", flush_interval=0.01)
    for row in ok_rows([2.0] * 500):
        writer.append(row)
    writer.append((9.0, None, None, 0, NOT_SENT, 0, 1, 0, None, None, None))
    writer.close()
    with open(tmp_path / "samples-0.csv", "ab") as f:
        f.write(b"9.5,9.5,9.6,200,,1")  # a line torn by SIGKILL mid-write
    df = read_samples(tmp_path)
    assert len(df) == 501 and df["error"].iloc[-1] == NOT_SENT and np.isnan(df["start"].iloc[-1])
    assert df["name"].isna().all() and df["request_id"].isna().all()  # unnamed rows: no name, not ""
    raw = (tmp_path / "samples-0.csv").read_bytes()
    (tmp_path / "samples-0.csv").unlink()
    (tmp_path / "samples-0.csv.gz").write_bytes(gzip.compress(raw))
    assert len(read_samples(tmp_path)) == 501


def test_generator_files_are_merged_in_time_order(tmp_path: Path) -> None:
    for gen in (0, 1):
        writer = SampleWriter(tmp_path / f"samples-{gen}.csv")
        for i in range(10):
            t = i * 0.1 + gen * 0.05
            writer.append((t, t, t + 0.001, 200, "", 1, 0, gen, 0.1, 0.5, 0.9))
        writer.close()
    df = read_samples(tmp_path)
    assert len(df) == 20 and df["intended"].is_monotonic_increasing
    assert set(df["gen"]) == {0, 1}
    split = analysis.server_timing_split(df)
    assert split["infer_ms_p50"] == pytest.approx(0.5) and split["server_ms_p50"] == pytest.approx(0.9)
    assert split["outside_server_ms_p50"] == pytest.approx(1.0 - 0.9)  # 1 ms on the wire, 0.9 in the server


def test_max_in_flight_from_intervals() -> None:
    df = frame([(0, 0.0, 1.0, 200, "", 1, 0, 0, None, None, None),
                (0, 0.5, 1.5, 200, "", 1, 0, 0, None, None, None),
                (0, 0.7, 0.8, 200, "", 1, 0, 0, None, None, None),
                (0, 1.0, 2.0, 200, "", 1, 0, 0, None, None, None)])  # starts exactly when the first ends
    assert validity.max_in_flight(df) == 3


def test_open_model_verdicts() -> None:
    # lag with free slots: the generator could not keep its schedule -> invalid
    late = frame([(i * 0.01, i * 0.01 + 0.05, i * 0.01 + 0.051, 200, "", 1, 0, 0, None, None, None)
                  for i in range(200)])
    verdict = validity.Verdict()
    validity.judge_open_model(late, slots=64, verdict=verdict)
    assert not verdict.valid and "late" in verdict.reasons[0]
    # many not sent -> invalid
    rows = ok_rows([1.0] * 50) + [(2.0 + i * 0.01, None, None, 0, NOT_SENT, 0, 0, 0, None, None, None)
                                  for i in range(50)]
    verdict = validity.Verdict()
    validity.judge_open_model(frame(rows), slots=64, verdict=verdict)
    assert any("not sent" in r for r in verdict.reasons)
    # on time -> valid
    verdict = validity.Verdict()
    validity.judge_open_model(frame(ok_rows([1.0] * 100)), slots=64, verdict=verdict)
    assert verdict.valid


def test_generator_cpu_verdict() -> None:
    resources = pd.DataFrame({"t": [1.0, 1.5, 2.0, 1.0, 1.5, 2.0], "role": ["generator"] * 3 + ["server"] * 3,
                              "pid": [7, 7, 7, 9, 9, 9], "cpu_percent": [97.0, 99.0, 98.0, 180, 190, 199],
                              "rss_bytes": [1] * 6, "threads": [1] * 6})
    verdict = validity.Verdict()
    validity.judge_generator_cpu(resources, 0.0, 3.0, verdict)
    assert len(verdict.reasons) == 1 and "generator process 7" in verdict.reasons[0]


def test_failed_request_rows_round_trip_and_a_bad_row_costs_no_other(tmp_path: Path) -> None:
    """Every row shape the engines write (answered, failed, not sent) survives the writer; a
    malformed row (a bug) is skipped alone instead of stopping the writer thread."""
    writer = SampleWriter(tmp_path / "samples-0.csv", flush_interval=0.01)
    writer.append((0.0, 0.0, 0.01, 200, "", 10, 0, 0, b"queue;dur=1, infer;dur=2, total;dur=4", None, None))
    writer.append((0.1, 0.1, 1.1, 0, "timeout", 0, 0, 0, None, None, None))
    writer.append((0.2, 0.2, 0.3, 0, "bad", 0))  # malformed
    writer.append((0.3, None, None, 0, NOT_SENT, 0, 0, 0, None, None, None))
    wait_until(lambda: complete_rows(tmp_path / "samples-0.csv") >= 3, 10,
               "the background thread to flush while the writer is open")
    writer.append((0.4, 0.4, 0.5, 503, "http", 5, 0, 0, None, None, None))
    writer.close()
    df = read_samples(tmp_path)
    assert list(df["error"]) == ["", "timeout", NOT_SENT, "http"] and writer.unwritable == 1
    assert (df["srv_queue_ms"].iloc[0], df["srv_infer_ms"].iloc[0], df["srv_total_ms"].iloc[0]) == (1.0, 2.0, 4.0)
