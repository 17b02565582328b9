"""Target urls (schemes, base paths, the schema's errors) and the pre-run check of an HTTPS target."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import build_parser, tls_overrides
from harness.engines.tls import ClientTLS
from harness.errors import EXIT_BAD_INPUT, EXIT_INVALID_RUN, TargetUnusable, UserError
from harness.run.target import check_reachable, parse_url
from harness.scenario.loading import validate
from harness.scenario.overrides import apply_override
from harness.scenario.urls import TargetUrl, split_url
from tests.support.tls_server import Pki, TlsServer


@pytest.mark.parametrize(("url", "parts"), [
    ("http://127.0.0.1:8000", TargetUrl("http", "127.0.0.1", 8000, "")),
    ("https://127.0.0.1", TargetUrl("https", "127.0.0.1", 443, "")),
    ("http://localhost", TargetUrl("http", "localhost", 80, "")),
    ("https://api.example:8443/v1/", TargetUrl("https", "api.example", 8443, "/v1")),
    ("http://127.0.0.1:9000/a/b", TargetUrl("http", "127.0.0.1", 9000, "/a/b")),
    ("https://h/", TargetUrl("https", "h", 443, "")),
])
def test_split_url(url: str, parts: TargetUrl) -> None:
    assert split_url(url) == parts


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://h", "must look like"), ("127.0.0.1:8000", "must look like"), ("https://", "must look like"),
    ("https://u:p@h", "user or password"), ("http://h/?x=1", "query or fragment"),
    ("http://h/#top", "query or fragment"), ("http://h:99999", "bad port"), ("http://h:0", "bad port"),
    ("http://h/a b", "spaces"),
])
def test_bad_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        split_url(url)


def scenario(target: dict) -> dict:
    return {"name": "t", "target": target, "load": {"stages": [{"duration": "1s", "target": 1}]}}


def problems(target: dict) -> list[str]:
    with pytest.raises(UserError) as info:
        validate(scenario(target), base_dir=Path("."), source="s.yaml")
    assert info.value.exit_code == EXIT_BAD_INPUT
    return info.value.messages


def test_schema_accepts_https_and_base_paths() -> None:
    doc = scenario({"url": "https://127.0.0.1:8443/api", "tls": {"verify": False, "server_name": "x.example"}})
    target = validate(doc, base_dir=Path("."), source="s.yaml").target
    assert target.tls.verify is False and target.tls.server_name == "x.example"
    assert parse_url(target.url or "").url == "https://127.0.0.1:8443/api"
    assert parse_url("http://127.0.0.1:8000/x").tls is None


def test_schema_errors_are_located() -> None:
    assert any(m.startswith("s.yaml: target.url:") and "must look like" in m
               for m in problems({"url": "ftp://127.0.0.1"}))
    assert any("tls.ca_file needs an https:// url" in m
               for m in problems({"url": "http://127.0.0.1:8000", "tls": {"ca_file": "ca.pem"}}))
    assert any("key_file needs cert_file" in m
               for m in problems({"url": "https://127.0.0.1", "tls": {"key_file": "k.pem"}}))
    assert any("target.tls.verfy" in m for m in problems({"url": "https://127.0.0.1", "tls": {"verfy": False}}))
    missing = problems({"url": "https://127.0.0.1", "tls": {"ca_file": "/nonexistent/ca.pem"}})
    assert any("target.tls.ca_file: cannot read /nonexistent/ca.pem" in m for m in missing)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def unusable(url: str, tls: ClientTLS) -> str:
    with pytest.raises(TargetUnusable) as info:
        check_reachable(parse_url(url, tls))
    assert info.value.exit_code == EXIT_INVALID_RUN and len(info.value.messages) == 1
    assert "\n" not in info.value.messages[0]
    return info.value.messages[0]


def test_certificate_problems_in_one_line(pki: Pki) -> None:
    trust = ClientTLS(ca_file=str(pki.ca_file))
    with TlsServer(pki) as server:
        check_reachable(parse_url(server.url, trust))  # fine
        assert "unknown CA" in unusable(server.url, ClientTLS(ca_file=str(pki.other_ca_file)))
        check_reachable(parse_url(server.url, ClientTLS(verify=False)))
    with TlsServer(pki, pki.issue("elsewhere.pem", "elsewhere.example")) as server:
        assert "for another host" in unusable(server.url, trust)
    with TlsServer(pki, pki.issue("expired.pem", "127.0.0.1", expired=True)) as server:
        assert "has expired" in unusable(server.url, trust)
    with TlsServer(pki, require_client_cert=True) as server:
        assert "client certificate" in unusable(server.url, trust)
        check_reachable(parse_url(server.url, ClientTLS(ca_file=str(pki.ca_file), cert_file=str(pki.client_file))))


@pytest.mark.parametrize("command", ["run", "ui"])
def test_insecure_is_verify_false_after_the_sets(command: str) -> None:
    args = build_parser().parse_args([command, "s.yaml", "--set", "target.tls.verify=true", "--insecure"])
    assert tls_overrides(args) == ["target.tls.verify=false"]
    assert tls_overrides(build_parser().parse_args([command, "s.yaml"])) == []
    doc = scenario({"url": "https://127.0.0.1:8443"})
    for override in ["target.tls.verify=true", *tls_overrides(args)]:
        apply_override(doc, override)
    assert validate(doc, base_dir=Path("."), source="s.yaml").target.tls.verify is False
