"""Report analysis on synthetic frames with known answers: windows, percentiles, in flight,
Little's law, knee, soak verdicts, resource series, and the Prometheus scraper and readers."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import server_metrics, trends, windows
from harness.analysis import stats as analysis
from harness.results.metrics import read_metrics
from harness.results.resources import SERVER_ROLES
from harness.results.samples import COLUMNS, NOT_SENT
from harness.run import scrape
from harness.scenario.plan import LoadPlan
from tests.support.rawserver import dead_port


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame([(*r, *[None] * (len(COLUMNS) - len(r))) for r in rows],
                        columns=COLUMNS).astype({"error": "string"})


def steady(rate: float, seconds: float, latency_s: float, offset: float = 0.0) -> list[tuple]:
    """Requests every 1/rate s, each taking latency_s, answered 200 with Server-Timing."""
    return [(offset + i / rate, offset + i / rate, offset + i / rate + latency_s, 200, "", 10, 0, 0, 0.5, 1.0, 2.0)
            for i in range(int(rate * seconds))]


def test_grouped_quantiles_match_numpy_per_group() -> None:
    rng = np.random.default_rng(3)
    groups, values = rng.integers(0, 40, 20_000), rng.lognormal(0, 1, 20_000)
    got = windows.grouped_quantiles(groups, values, 42, [0.5, 0.9, 0.99, 1.0])
    for g in range(40):
        assert got[:, g] == pytest.approx(np.percentile(values[groups == g], [50, 90, 99, 100]))
    assert np.isnan(got[:, 40:]).all()


def test_windows_percentiles_errors_and_offered_load() -> None:
    # second 0: latencies 1..100 ms; second 1: 101..200 ms, plus one timeout, one 503, one not sent
    rows = [(i / 100, i / 100, i / 100 + (i + 1) / 1000, 200, "", 1, 0, 0, None, None, None) for i in range(100)]
    rows += [(1 + i / 100, 1 + i / 100, 1 + i / 100 + (101 + i) / 1000, 200, "", 1, 0, 0, None, None, None)
             for i in range(100)]
    rows += [(1.5, 1.5, 11.5, 0, "timeout", 0, 0, 0, None, None, None), (1.6, 1.6, 1.61, 503, "http", 5, 0, 0, None, None, None),
             (1.7, None, None, 0, NOT_SENT, 0, 0, 0, None, None, None)]
    plan = LoadPlan.from_stages("open", [(1, 100), (1, 100)], start=100)
    win = windows.windows(frame(rows), 1.0, plan)
    assert list(win["t"]) == [0.0, 1.0]
    assert list(win["requests"]) == [100, 102] and list(win["errors"]) == [0, 2]
    assert list(win["errors_timeout"]) == [0, 1] and list(win["errors_http"]) == [0, 1]
    assert list(win["not_sent"]) == [0, 1] and list(win["offered"]) == pytest.approx([100.0, 100.0])
    assert win["p50_ms"][0] == pytest.approx(np.percentile(np.arange(1, 101), 50))
    assert win["p99_ms"][0] == pytest.approx(np.percentile(np.arange(1, 101), 99))
    second = np.append(np.arange(101, 201), 10.0)  # the 503 answered in 10 ms counts as latency too
    assert win["p95_ms"][1] == pytest.approx(np.percentile(second, 95))
    assert win["max_ms"][1] == pytest.approx(200.0)
    assert windows.per_second(frame(rows), plan)["second"].tolist() == [0, 1]


def test_closed_model_offered_load_counts_whole_users() -> None:
    plan = LoadPlan.from_stages("closed", [(4, 4)])  # 0 -> 4 users over 4 s: user k runs from t = k
    assert windows.offered_load(plan, np.arange(5.0)) == pytest.approx([0, 1, 2, 3])
    assert windows.offered_load(plan, np.array([0.0, 2.0, 4.0])) == pytest.approx([0.5, 2.5])


def test_poisson_offered_load_is_the_plans_own_schedule() -> None:
    plan = LoadPlan.from_stages("open", [(20, 50)], start=50, arrival="poisson", seed=3)
    edges = np.arange(21.0)
    offered = windows.offered_load(plan, edges)
    assert offered.sum() == plan.planned_count() and offered.std() > 0
    assert windows.target_load(plan, edges) == pytest.approx([50.0] * 20)


def test_in_flight_is_the_exact_time_average() -> None:
    # 100 req/s, 50 ms each: 5 in flight; a single 2.5 s request adds 1 in flight for its span
    rows = steady(100, 4, 0.05) + [(0.5, 0.5, 3.0, 200, "", 1, 0, 0, None, None, None)]
    win = windows.windows(frame(rows), 1.0, until=4.0)
    assert win["in_flight"].tolist() == pytest.approx([5.4, 6.0, 6.0, 5.0])
    assert windows.time_in_flight(np.array([0.0, 0.5]), np.array([1.0, 2.0]), np.array([0.0, 1.0, 2.0])) == \
        pytest.approx([1.5, 1.0])


def test_littles_law_holds_for_a_sound_measurement_and_catches_lost_samples() -> None:
    plan = LoadPlan.from_stages("open", [(10, 100)], start=100)
    rows = steady(100, 10, 0.05)
    good = windows.little_check(windows.windows(frame(rows), 1.0, plan), "open")
    assert good["consistent"] and good["within"] == good["windows"] == 10
    assert good["median_ratio"] == pytest.approx(1.0, abs=0.02)
    lost = windows.little_check(windows.windows(frame(rows[::2]), 1.0, plan), "open")  # half the rows lost
    assert not lost["consistent"] and lost["median_ratio"] == pytest.approx(0.5, abs=0.02)
    stall = [(t, s, e + 0.5 if 3 <= t < 4 else e, *rest) for t, s, e, *rest in rows]  # a 0.5 s stall
    stalled = windows.little_check(windows.windows(frame(stall), 1.0, plan), "open")
    assert stalled["skipped"] == 2 and stalled["windows"] == 8 and stalled["consistent"]

    # closed model: 5 users back to back, 50 ms per request -> 100 req/s x 0.05 s = 5 users
    closed = LoadPlan.from_stages("closed", [(10, 5)], start=5)
    users = [(t, t, t + 0.05, 200, "", 1, 0, 0, None, None, None)
             for u in range(5) for t in np.arange(0, 10, 0.05) + u * 0.01]
    assert windows.little_check(windows.windows(frame(users), 1.0, closed), "closed")["consistent"]
    idle = [r for r in users if int(r[0] * 20) % 4]  # users idle a quarter of the time: generator overhead
    check = windows.little_check(windows.windows(frame(idle), 1.0, closed), "closed")
    assert not check["consistent"] and check["median_ratio"] == pytest.approx(0.75, abs=0.03)


def level_windows(p95_by_level: dict[float, float], seconds: int = 5, errors: dict[float, int] | None = None,
                  served: dict[float, float] | None = None) -> pd.DataFrame:
    rows = []
    for n, (offered, p95) in enumerate(p95_by_level.items()):
        for s in range(seconds):
            ok = (served or {}).get(offered, offered)
            err = (errors or {}).get(offered, 0)
            rows.append({"t": n * seconds + s, "target": offered, "requests": ok + err, "errors": err,
                         "rps": ok + err, "ok_rps": ok, "p50_ms": p95 / 2, "p95_ms": p95, "p99_ms": p95 * 1.5})
    return pd.DataFrame(rows)


def test_knee_is_the_last_level_before_latency_bends_for_good() -> None:
    p95 = {100: 5, 200: 5.5, 300: 12, 400: 6, 500: 6.5, 600: 9, 700: 30, 800: 80}  # 300: one noisy level
    served = {700: 690, 800: 700}
    result = trends.knee(level_windows(p95, served=served), "open")
    assert result["knee"]["offered"] == 600 and result["bend"]["offered"] == 700
    assert result["saturation_rps"] == 700
    assert "knee at 600 req/s" in result["text"] and "6.0x the lowest load" in result["text"]
    assert "Rule" not in result["text"] and "2x" in result["rule"]


def test_knee_by_errors_delivery_and_the_cases_without_one() -> None:
    errors = trends.knee(level_windows({10: 5, 20: 5, 30: 5, 40: 5}, errors={40: 5}), "closed")
    assert errors["knee"]["offered"] == 30 and "failed" in errors["text"]
    delivery = trends.knee(level_windows({100: 5, 200: 5, 300: 5}, served={300: 200}), "open")
    assert delivery["knee"]["offered"] == 200 and "only 200 of 300" in delivery["text"]
    flat = trends.knee(level_windows({100: 5, 200: 5, 300: 5}), "open")
    assert flat["knee"] is None and flat["text"].startswith("no knee up to 300")
    assert trends.knee(level_windows({100: 5, 200: 50}), "open") is None  # two levels: no ramp
    many = trends.load_levels(level_windows({float(x): 5 for x in range(1, 41)}, seconds=1), "open")
    assert len(many) == trends.LEVEL_BINS


def soak_inputs(rss_mb_per_hour: float, p50_growth: float, hours: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    end = hours * 3600
    t = np.arange(0, end, 0.5)
    rss = 500 + rss_mb_per_hour * t / 3600 + rng.normal(0, 0.5, t.size)
    series = pd.DataFrame({"t": t, "server_rss_mb": rss})
    workers = pd.DataFrame({"t": np.concatenate([t, t]), "pid": [1] * t.size + [2] * t.size,
                            "rss_bytes": np.concatenate([rss / 2, rss / 2]) * 2**20})
    ct = np.arange(0, end, end / 20)
    p50 = 2.0 * (1 + p50_growth * ct / end) + rng.normal(0, 0.01, ct.size)
    chunks = pd.DataFrame({"t": ct, "requests": 1000, "p50_ms": p50, "p99_ms": p50 * 3})
    return chunks, series, workers


def test_soak_verdicts_with_the_leak_slope() -> None:
    leak = trends.soak(*soak_inputs(rss_mb_per_hour=100, p50_growth=0))
    assert leak["verdict"] == "leaking"
    assert leak["rss_mb_per_hour"] == pytest.approx(100, rel=0.02)
    assert any("MB/h" in e for e in leak["evidence"]) and any(e.startswith("worker 1") for e in leak["evidence"])
    drift = trends.soak(*soak_inputs(rss_mb_per_hour=0, p50_growth=1.0))
    assert drift["verdict"] == "drifting" and drift["p50_ms_per_hour"] == pytest.approx(2.0, rel=0.05)
    stable = trends.soak(*soak_inputs(rss_mb_per_hour=2, p50_growth=0.02))
    assert stable["verdict"] == "stable"
    assert trends.is_soak(pd.DataFrame({"target": [200.0] * 120})) and \
        not trends.is_soak(pd.DataFrame({"target": np.linspace(100, 300, 120)}))
    assert not trends.is_soak(pd.DataFrame({"target": [200.0] * 30}))


def test_resource_series_cpu_seconds_and_efficiency() -> None:
    ticks = np.arange(0.5, 10.01, 0.5)
    rows = []
    for t in ticks:
        rows += [(t, "system", 0, 50.0, 1, 0), (t, "server", 1, 10.0, 20 * 2**20, 2),
                 (t, "server_worker", 2, 90.0, 100 * 2**20, 1), (t, "generator", 3, 30.0, 50 * 2**20, 9)]
    res = pd.DataFrame(rows, columns=["t", "role", "pid", "cpu_percent", "rss_bytes", "threads"])
    series = analysis.resource_series(res)
    assert series["server_cpu"].tolist() == pytest.approx([100.0] * len(ticks))
    assert series["server_rss_mb"].iloc[0] == pytest.approx(120.0)
    assert series["generator_cpu"].iloc[0] == 30.0 and series["system_cpu"].iloc[0] == 50.0
    used = analysis.cpu_seconds(res, SERVER_ROLES, np.array([0.0, 5.0, 10.0]))
    assert used == pytest.approx([5.0, 5.0])  # one core busy, 5 s each
    assert analysis.requests_per_cpu_second(5000, float(used.sum())) == 500.0
    assert analysis.requests_per_cpu_second(10, 0.0) is None


def test_percentile_spectrum_and_histogram() -> None:
    latency = np.arange(1, 10_001, dtype=float)
    spectrum = analysis.percentile_spectrum(latency)
    assert spectrum["latency_ms"].is_monotonic_increasing
    assert spectrum["inverse_tail"].iloc[-1] == pytest.approx(10_000)
    assert spectrum["percentile"].iloc[0] == 0.0
    counts, edges, log = analysis.latency_histogram(latency)
    assert counts.sum() == latency.size and log and edges[0] == 1.0


EXPOSITION = """# HELP inference_requests_total x
# TYPE inference_requests_total counter
inference_requests_total{endpoint="/predict",status="200"} %d
inference_requests_total{endpoint="/predict",status="503"} %d
# TYPE inference_batch_rows histogram
inference_batch_rows_bucket{le="1.0"} %d
inference_batch_rows_bucket{le="4.0"} %d
inference_batch_rows_bucket{le="+Inf"} %d
inference_batch_rows_sum %d
inference_batch_rows_count %d
"""


def test_metrics_readers_rates_means_and_buckets(tmp_path: Path) -> None:
    lines = ["t,name,labels,value"]
    scrapes = [(0, 0, 0, 0, 0), (100, 10, 50, 100, 200), (300, 10, 50, 200, 600)]
    for t, (ok, bad, b1, b4, rows_sum) in enumerate(scrapes):
        for name, labels, value in scrape.parse_exposition(EXPOSITION % (ok, bad, b1, b4, b4, rows_sum, b4)):
            lines.append(f'{t},{name},"{labels.replace(chr(34), chr(34) * 2)}",{value}')
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    metrics = read_metrics(tmp_path)
    rates = server_metrics.counter_rates(metrics, "inference_requests_total", "status")
    assert rates["200"].tolist() == [100.0, 200.0] and rates["503"].tolist() == [10.0, 0.0]
    assert server_metrics.histogram_means(metrics, "inference_batch_rows").tolist() == [2.0, 4.0]
    counts = server_metrics.histogram_counts(metrics, "inference_batch_rows")
    assert counts.to_dict() == {1.0: 50.0, 4.0: 150.0, float("inf"): 0.0}
    assert read_metrics(tmp_path / "nowhere").empty


class MetricsHandler(BaseHTTPRequestHandler):
    served = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.server.missing:  # type: ignore[attr-defined]
            self.send_error(404)
            return
        MetricsHandler.served += 1
        body = (EXPOSITION % (MetricsHandler.served, 0, 1, 1, 1, 1, 1)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler)
    server.missing = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("metrics_server", [False], indirect=True)
def test_scraper_appends_rows_on_the_run_clock(metrics_server: str, tmp_path: Path) -> None:
    logged: list[str] = []
    scraper = scrape.MetricsScraper(metrics_server, tmp_path / "metrics.csv", time.monotonic(), log=logged.append,
                                    interval=0.05)
    scraper.start()
    deadline = time.monotonic() + 10
    while scraper.scrapes < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    scraper.stop()
    metrics = read_metrics(tmp_path)
    assert scraper.scrapes >= 3 and not logged
    assert metrics["t"].is_monotonic_increasing and (metrics["t"] >= 0).all()
    assert set(metrics["name"]) >= {"inference_requests_total", "inference_batch_rows_bucket"}


@pytest.mark.parametrize("metrics_server", [True], indirect=True)
def test_scraper_gives_up_quietly_without_metrics(metrics_server: str, tmp_path: Path) -> None:
    logged: list[str] = []
    scraper = scrape.MetricsScraper(metrics_server, tmp_path / "metrics.csv", time.monotonic(), log=logged.append,
                                    interval=0.05)
    scraper.start()
    scraper._thread.join(timeout=10)
    scraper.stop()
    assert len(logged) == 1 and "404" in logged[0] and not (tmp_path / "metrics.csv").exists()
    unreachable = scrape.MetricsScraper(f"http://127.0.0.1:{dead_port()}/metrics", tmp_path / "m2.csv", time.monotonic(),
                                        log=logged.append, interval=0.05)
    unreachable.start()
    unreachable._thread.join(timeout=10)
    unreachable.stop()
    assert len(logged) == 2 and not (tmp_path / "m2.csv").exists()


def test_summary_json_carries_the_knee_and_the_soak_verdict_as_gateable_figures(tmp_path: Path) -> None:
    from harness.results import figures
    from tests.support.fake_runs import fake_run

    ramp = json.loads((fake_run(tmp_path / "ramp", seed=1) / "summary.json").read_text())
    assert ramp["knee"]["unit"] == "users" and "knee_users" in ramp["knee"] and ramp["knee"]["rule"] == trends.KNEE_RULE
    assert figures.value(ramp, "saturation_rps") == ramp["knee"]["saturation_rps"] > 0
    assert "soak" not in ramp  # a 20 s ramp is no soak

    leak = fake_run(tmp_path / "leak", seconds=90, steady=True, server_rss=(300.0, 0.5),
                    thresholds=["soak_verdict != leaking", "rss_growth_mb_per_h < 50"])
    summary = json.loads((leak / "summary.json").read_text())
    soak = summary["soak"]
    assert soak["verdict"] == "leaking" and soak["rss_mb_per_hour"] == pytest.approx(1800, rel=0.05)
    assert soak["rss_r2"] > 0.9 and soak["workers"][0]["pid"] == 4242 and soak["rule"] == trends.SOAK_RULE
    assert {"p50_drift", "p99_drift", "p50_ms_per_hour", "p99_ms_per_hour"} <= soak.keys()
    assert [t["passed"] for t in summary["thresholds"]] == [False, False]
    assert summary["exit_code"] == 1 and "knee" not in summary  # steady: one load level, no ramp

    flat = fake_run(tmp_path / "flat", seconds=90, steady=True, server_rss=(300.0, 0.0),
                    thresholds=["soak_verdict != leaking"])
    summary = json.loads((flat / "summary.json").read_text())
    assert summary["soak"]["verdict"] == "stable" and summary["exit_code"] == 0
