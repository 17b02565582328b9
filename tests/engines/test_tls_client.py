"""The lean client over TLS against real HTTPS servers on 127.0.0.1 (certificates from a test CA)."""
from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from harness.engines.http_client import Connection, RequestFailed, request_bytes
from harness.engines.locust_plan import classify
from harness.engines.tls import ClientTLS
from harness.errors import EXIT_BAD_INPUT, UserError
from harness.results.samples import TIMEOUT, TLS
from tests.support.cli import wait_until
from tests.support.rawserver import RawServer, read_request
from tests.support.tls_server import BODY, Pki, TlsServer


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def connection(server: TlsServer, tls: ClientTLS) -> Connection:
    return Connection("127.0.0.1", server.port, tls=tls.context(), server_name=tls.server_name)


def get(conn: Connection, path: str = "/predict") -> int:
    return conn.request(request_bytes("GET", "127.0.0.1", conn.port, path, b"", {}), 5.0).status


def failure(conn: Connection) -> RequestFailed:
    with pytest.raises(RequestFailed) as info:
        get(conn)
    conn.close()
    return info.value


def test_verified_keep_alive_reuses_one_handshake(pki: Pki) -> None:
    with TlsServer(pki) as server:
        conn = connection(server, ClientTLS(ca_file=str(pki.ca_file)))
        raw = request_bytes("POST", "127.0.0.1", server.port, "/predict", b'{"inputs": [[1.0]]}', {})
        responses = [conn.request(raw, 5.0) for _ in range(20)]
        conn.close()
    assert {r.status for r in responses} == {200}
    assert {r.body_bytes for r in responses} == {len(BODY)}
    assert server.handshakes == 1 and len(server.paths) == 20


def test_warm_up_does_the_handshake_before_the_first_request(pki: Pki) -> None:
    with TlsServer(pki) as server:
        conn = connection(server, ClientTLS(ca_file=str(pki.ca_file)))
        conn.warm_up(timeout=5.0)
        wait_until(lambda: server.handshakes == 1, 5, "the warm-up handshake")
        assert server.paths == []  # connected and handshaken, nothing sent yet
        assert get(conn) == 200
        conn.close()
    assert server.handshakes == 1


def test_a_reconnect_handshakes_again(pki: Pki) -> None:
    with TlsServer(pki) as server:
        conn = connection(server, ClientTLS(ca_file=str(pki.ca_file)))
        assert get(conn) == 200
        conn.close()  # as after a Connection: close answer
        assert get(conn) == 200
        conn.close()
    assert server.handshakes == 2


def test_unknown_ca_is_a_tls_error_and_verify_false_skips_the_check(pki: Pki) -> None:
    with TlsServer(pki) as server:
        error = failure(connection(server, ClientTLS(ca_file=str(pki.other_ca_file))))
        assert error.kind == TLS and "unknown CA" in error.detail
        error = failure(connection(server, ClientTLS()))  # the system's CAs do not know the test CA
        assert error.kind == TLS and "unknown CA" in error.detail
        conn = connection(server, ClientTLS(verify=False, ca_file=str(pki.other_ca_file)))
        assert get(conn) == 200
        conn.close()


def test_wrong_host_and_expired_certificates(pki: Pki) -> None:
    with TlsServer(pki, pki.issue("elsewhere.pem", "elsewhere.example")) as server:
        error = failure(connection(server, ClientTLS(ca_file=str(pki.ca_file))))
        assert error.kind == TLS and "another host" in error.detail
    with TlsServer(pki, pki.issue("expired.pem", "127.0.0.1", expired=True)) as server:
        error = failure(connection(server, ClientTLS(ca_file=str(pki.ca_file))))
        assert error.kind == TLS and "expired" in error.detail


def test_server_name_is_sent_and_checked_instead_of_the_host(pki: Pki) -> None:
    with TlsServer(pki, pki.issue("named.pem", "inference.example")) as server:
        conn = connection(server, ClientTLS(ca_file=str(pki.ca_file), server_name="inference.example"))
        assert get(conn) == 200
        conn.close()
        error = failure(connection(server, ClientTLS(ca_file=str(pki.ca_file), server_name="other.example")))
        assert error.kind == TLS


def test_client_certificate_required_and_given(pki: Pki) -> None:
    with TlsServer(pki, require_client_cert=True) as server:
        error = failure(connection(server, ClientTLS(ca_file=str(pki.ca_file))))
        assert error.kind == TLS  # the server's alert, or the EOF it leaves when the reset beats it
        conn = connection(server, ClientTLS(ca_file=str(pki.ca_file), cert_file=str(pki.client_file)))
        assert get(conn) == 200 and get(conn) == 200
        conn.close()
    assert server.client_certs == [True, True]


def test_a_silent_tls_server_ends_as_a_timeout(pki: Pki) -> None:
    """Over TLS the deadline is Python's timeout mode (OpenSSL would retry past SO_RCVTIMEO)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert))

    def silent(sock: socket.socket) -> None:
        tls = context.wrap_socket(sock, server_side=True)
        read_request(tls)  # type: ignore[arg-type]
        time.sleep(3)

    with RawServer(silent) as server:
        conn = Connection("127.0.0.1", server.port, tls=ClientTLS(ca_file=str(pki.ca_file)).context())
        with pytest.raises(RequestFailed) as info:
            conn.request(request_bytes("GET", "127.0.0.1", server.port, "/", b"", {}), 0.3)
        conn.close()
    assert info.value.kind == TIMEOUT


@pytest.mark.parametrize("key", ["ca_file", "cert_file"])
def test_unusable_files_are_bad_input_naming_the_path(tmp_path: Path, key: str) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(UserError) as info:
        ClientTLS(**{key: str(missing)}).context()
    assert info.value.exit_code == EXIT_BAD_INPUT and str(missing) in str(info.value) and key in str(info.value)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(UserError) as info:
        ClientTLS(**{key: str(garbage)}).context()
    assert info.value.exit_code == EXIT_BAD_INPUT and str(garbage) in str(info.value)


def test_locust_rows_classify_tls_failures() -> None:
    assert classify(0, ssl.SSLCertVerificationError("certificate verify failed")) == TLS
    assert classify(0, ssl.SSLError("tlsv13 alert certificate required")) == TLS
    assert classify(0, TimeoutError("timed out")) == TIMEOUT
