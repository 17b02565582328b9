"""An HTTPS server on 127.0.0.1 for client tests, with certificates from a CA made in the test (trustme).

`Pki` writes a CA, a server certificate (127.0.0.1 and localhost, or other names, or expired) and a
client certificate to a folder; `TlsServer` answers every request with a keep-alive JSON 200 and
records each request's path and whether the client showed a certificate, counting handshakes.
"""
from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

BODY = b'{"predictions": [[0.5]]}'


@dataclass
class Pki:
    """Files of a test CA: ca.pem, server.pem (cert + key), client.pem (cert + key), other-ca.pem."""

    folder: Path

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        trustme.CA().cert_pem.write_to_path(str(self.other_ca_file))
        self.server_cert = self.issue("server.pem", "127.0.0.1", "localhost")
        client = self.ca.issue_cert("harness-client@example.org")
        client.private_key_and_cert_chain_pem.write_to_path(str(self.client_file))

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def other_ca_file(self) -> Path:
        return self.folder / "other-ca.pem"

    @property
    def client_file(self) -> Path:
        return self.folder / "client.pem"

    def issue(self, name: str, *hosts: str, expired: bool = False) -> Path:
        now = datetime.datetime.now(datetime.timezone.utc)
        window = {"not_before": now - datetime.timedelta(days=10),
                  "not_after": now - datetime.timedelta(days=1)} if expired else {}
        leaf = self.ca.issue_cert(*hosts, **window)
        path = self.folder / name
        leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path


class TlsServer:
    """A threaded HTTPS server; `require_client_cert` makes it refuse clients without one from the CA;
    `later_cert` is shown from the second connection on (the first one being the harness's check)."""

    def __init__(self, pki: Pki, cert: Path | None = None, *, require_client_cert: bool = False,
                 later_cert: Path | None = None) -> None:
        def server_context(path: Path) -> ssl.SSLContext:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(path))
            if require_client_cert:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(str(pki.ca_file))
            return context

        first = server_context(cert or pki.server_cert)
        later = server_context(later_cert) if later_cert is not None else first
        self.accepted = 0
        self.handshakes = 0
        self.paths: list[str] = []
        self.client_certs: list[bool] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                assert isinstance(self.request, ssl.SSLSocket)
                self.request.settimeout(10)
                self.request.do_handshake()  # in the connection's thread, not the accept loop
                outer.handshakes += 1
                super().setup()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                outer.client_certs.append(bool(self.request.getpeercert()))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def get_request(self) -> tuple[socket.socket, object]:
                sock, addr = super().get_request()
                context = first if outer.accepted == 0 else later
                outer.accepted += 1
                return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # failed handshakes are what several tests are about

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> TlsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
