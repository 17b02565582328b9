"""HTTPS end to end, in both engines: the harness CLI against a TLS server with a CA made in the test
(verified, --insecure, wrong CA, client certificates) and against the bundled server with tls: true."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import EXIT_BAD_INPUT, EXIT_INVALID_RUN
from tests.support.cli import harness
from tests.support.tls_server import Pki, TlsServer

pytestmark = pytest.mark.e2e
ENGINES = ["threadpool", "locust"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def scenario(tmp_path: Path, engine: str, target: str, users: int = 2, scrape: bool = False) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(f"""name: tls-{engine}
engine: {engine}
target:
{target}
  scrape_metrics: {str(scrape).lower()}
load:
  stages: [{{duration: 0s, target: {users}}}, {{duration: 1.5s, target: {users}}}]
thresholds: [error_rate < 0.01]
""")
    return path


def tail(result: subprocess.CompletedProcess[str]) -> str:
    return f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def samples(run_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p, keep_default_na=False) for p in sorted(run_dir.glob("samples*.csv"))])


@pytest.mark.parametrize("engine", ENGINES)
def test_verified_https_with_a_base_path_reuses_connections(tmp_path: Path, pki: Pki, engine: str) -> None:
    with TlsServer(pki) as server:
        target = f"  url: {server.url}/api/v1/\n  endpoint: /predict\n  tls: {{ca_file: {pki.ca_file}}}"
        out = tmp_path / "run"
        result = harness("run", str(scenario(tmp_path, engine, target)), "--out", str(out))
        assert result.returncode == 0, tail(result)
    rows = samples(out)
    assert len(rows) > 10 and set(rows["error"]) == {""} and set(rows["status"]) == {200}
    assert set(server.paths) == {"/api/v1/predict"}
    assert server.handshakes <= 2 + 1  # one per user (plus the reachability check): keep-alive over TLS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["url"] == f"{server.url}/api/v1"


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_ca_stops_before_the_run_and_insecure_runs(tmp_path: Path, pki: Pki, engine: str) -> None:
    with TlsServer(pki) as server:
        target = f"  url: {server.url}\n  tls: {{ca_file: {pki.other_ca_file}}}"
        path = scenario(tmp_path, engine, target)
        refused = harness("run", str(path), "--out", str(tmp_path / "refused"))
        assert refused.returncode == EXIT_INVALID_RUN, tail(refused)
        assert "unknown CA" in refused.stderr and "Traceback" not in refused.stderr
        assert server.paths == []  # nothing was loaded
        out = tmp_path / "insecure"
        result = harness("run", str(path), "--out", str(out), "--insecure")
        assert result.returncode == 0, tail(result)
    assert set(samples(out)["error"]) == {""} and len(server.paths) > 10


@pytest.mark.parametrize("engine", ENGINES)
def test_client_certificate_required_and_given(tmp_path: Path, pki: Pki, engine: str) -> None:
    with TlsServer(pki, require_client_cert=True) as server:
        base = f"  url: {server.url}\n  tls: {{ca_file: {pki.ca_file}"
        without = harness("run", str(scenario(tmp_path, engine, base + "}")), "--out", str(tmp_path / "without"))
        assert without.returncode == EXIT_INVALID_RUN, tail(without)
        assert "client certificate" in without.stderr and "Traceback" not in without.stderr
        out = tmp_path / "with"
        given = scenario(tmp_path, engine, base + f", cert_file: {pki.client_file}}}")
        result = harness("run", str(given), "--out", str(out))
        assert result.returncode == 0, tail(result)
    assert set(samples(out)["error"]) == {""} and len(server.client_certs) > 10 and all(server.client_certs)


def test_unreadable_ca_file_is_bad_input_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    path = scenario(tmp_path, "threadpool", f"  url: https://127.0.0.1:9\n  tls: {{ca_file: {missing}}}")
    result = harness("run", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == EXIT_BAD_INPUT, tail(result)
    assert f"target.tls.ca_file: cannot read {missing}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_bundled_server_over_https(tmp_path: Path, engine: str) -> None:
    target = "  server: {model: linear, workers: 1, worker_class: gthread, threads: 4, tls: true}"
    out = tmp_path / "run"
    result = harness("run", str(scenario(tmp_path, engine, target, scrape=True)), "--out", str(out))
    assert result.returncode == 0, tail(result)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["url"].startswith("https://127.0.0.1:")
    assert (out / "metrics.csv").stat().st_size > 0  # /metrics scraped over HTTPS too
    rows = samples(out)
    assert len(rows) > 10 and set(rows["error"]) == {""} and set(rows["status"]) == {200}
    assert (out / "tls" / "server-cert.pem").is_file()  # made in the run folder and trusted as the CA


@pytest.mark.parametrize("engine", ENGINES)
def test_certificate_failures_during_the_run_are_tls_errors(tmp_path: Path, pki: Pki, engine: str) -> None:
    """The check before the run sees a good certificate; every load connection then meets one for
    another host: each request is a row of kind tls (so verification is really on in the engine)."""
    with TlsServer(pki, later_cert=pki.issue("elsewhere.pem", "elsewhere.example")) as server:
        target = f"  url: {server.url}\n  tls: {{ca_file: {pki.ca_file}}}"
        out = tmp_path / "run"
        result = harness("run", str(scenario(tmp_path, engine, target, users=1)), "--out", str(out))
        assert result.returncode == 1, tail(result)  # error_rate < 0.01 failed
    rows = samples(out)
    assert len(rows) > 0 and set(rows["error"]) == {"tls"} and set(rows["status"]) == {0}
    assert server.paths == []
