"""HTTPS on the bundled server (given or self-signed certificates) and X-Request-ID echo and logging."""
from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys

import pytest
import requests
from cryptography import x509

from target_server.cli import tls_files_problem
from target_server.config import ServerConfig
from target_server.requestlog import access_line
from target_server.tls import self_signed
from tests.support.server_fixtures import ARTICLE_INPUT, REPO, make_client, server_env, start_server


def test_self_signed_names_loopback_and_keeps_the_key_private(tmp_path):
    cert, key = self_signed(tmp_path / "tls")
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert key.stat().st_mode & 0o077 == 0
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)  # a matching pair


@pytest.mark.parametrize("settings_,fragment", [
    ({"certfile": "c.pem", "keyfile": "k.pem"}, "needs tls: true"),
    ({"tls": True, "certfile": "c.pem"}, "together"),
    ({"tls": True, "keyfile": "k.pem"}, "together"),
])
def test_tls_settings_are_checked_together(settings_, fragment):
    assert any(fragment in p for p in ServerConfig(**settings_).problems())


def test_tls_knobs_reach_the_command_line():
    argv = ServerConfig(tls=True, certfile="/c.pem", keyfile="/k.pem", access_log=True).to_argv()
    assert "--tls" in argv and "--access-log" in argv
    assert argv[argv.index("--certfile") + 1] == "/c.pem" and argv[argv.index("--keyfile") + 1] == "/k.pem"


def test_unusable_certificate_files_are_named(tmp_path):
    cert, key = self_signed(tmp_path)
    assert tls_files_problem(str(cert), str(key)) is None
    assert str(tmp_path / "nope.pem") in (tls_files_problem(str(tmp_path / "nope.pem"), str(key)) or "")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert "not a usable PEM" in (tls_files_problem(str(garbage), str(key)) or "")
    other_cert, _ = self_signed(tmp_path / "other")
    assert "matching key" in (tls_files_problem(str(other_cert), str(key)) or "")


def test_access_line_quotes_the_request_id():
    line = access_line("127.0.0.1", "POST", "/predict", 200, "25", 0.000412, 'run-0-"7"')
    assert line == '127.0.0.1 "POST /predict" 200 25 0.412ms rid="run-0-\\"7\\""'
    assert access_line("127.0.0.1", "GET", "/", 404, "-", 0.001, None).endswith("rid=-")


def test_request_id_is_echoed_on_every_kind_of_answer():
    client = make_client(model="linear")
    ok = client.post("/predict", json={"inputs": ARTICLE_INPUT}, headers={"X-Request-ID": "r-1"})
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "r-1"
    bad = client.post("/v2/models/linear/infer", data=b"{", content_type="application/json",
                      headers={"X-Request-ID": "r-2"})
    assert bad.status_code == 400 and bad.headers["X-Request-ID"] == "r-2"
    assert client.get("/v2/health/live", headers={"X-Request-ID": "r-3"}).headers["X-Request-ID"] == "r-3"
    assert "X-Request-ID" not in client.post("/predict", json={"inputs": ARTICLE_INPUT}).headers


def _strict_context(cafile) -> ssl.SSLContext:
    """What a careful client does: verify the chain and the host name, in OpenSSL's strict mode."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_https_with_given_files_keep_alive_request_ids_and_access_log(tmp_path):
    cert, key = self_signed(tmp_path)
    argv = ["--worker-class", "gthread", "--threads", "2", "--tls", "--certfile", str(cert), "--keyfile", str(key),
            "--access-log"]
    with start_server(argv, verify=str(cert)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        port = int(server.url.rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=_strict_context(cert), timeout=10)
        for i in range(3):  # one TLS connection, kept alive across requests
            conn.request("POST", "/predict", body=b'{"inputs": [[1, 2, 3]]}',
                         headers={"Content-Type": "application/json", "X-Request-ID": f"run-0-{i}"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("X-Request-ID") == f"run-0-{i}"
            assert json.loads(resp.read()) == {"predictions": [[pytest.approx(0.6)]]}
        conn.close()
        with pytest.raises(requests.exceptions.SSLError):  # nobody's CA trusts a throwaway certificate
            requests.get(server.url + "/v2/health/live", timeout=5)
        server.stop()
        log = server.err.text()
    assert log.count('"POST /predict" 200 ') == 3
    for i in range(3):
        assert f'rid="run-0-{i}"' in log
    assert '"GET /v2/health/ready" 200' in log  # readiness probes are logged too, without an id


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_self_signed_at_start_and_plain_http_is_not_served():
    with start_server(["--tls"], verify=False) as server:
        assert server.url.startswith("https://")
        resp = requests.post(server.url + "/predict", json={"inputs": ARTICLE_INPUT}, verify=False, timeout=10)
        assert resp.json() == {"predictions": [[pytest.approx(0.6)]]}
        pem = ssl.get_server_certificate(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        served = x509.load_pem_x509_certificate(pem.encode())
        assert "self-signed" in served.subject.rfc4514_string()
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(server.url.replace("https://", "http://") + "/v2/health/live", timeout=5)


@pytest.mark.e2e
def test_missing_certificate_file_exits_2_naming_it(tmp_path):
    cert, key = self_signed(tmp_path)
    missing = tmp_path / "missing.pem"
    proc = subprocess.run([sys.executable, "-m", "target_server", "--port", "0", "--tls",
                           "--certfile", str(missing), "--keyfile", str(key)],
                          cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr


def test_scenario_schema_takes_the_new_knobs():
    """`target.server` is generated from the knobs: tls, certfile, keyfile, framework, access_log."""
    from harness.scenario.schema import ServerSettings

    settings_ = ServerSettings(tls=True, framework="fastapi", access_log=True)
    config = settings_.to_config(host="127.0.0.1", port=0)
    assert (config.tls, config.framework, config.access_log) == (True, "fastapi", True)
    with pytest.raises(ValueError, match="needs tls"):
        ServerSettings(certfile="c.pem", keyfile="k.pem")
    with pytest.raises(ValueError, match="framework"):
        ServerSettings(framework="django")
