"""A lean HTTP/1.1 client for load generation: one persistent connection, prebuilt request bytes.

`requests` spends ~1 ms of Python per call; this client spends tens of microseconds, so the
generator measures the server rather than itself. It handles Content-Length, chunked and
read-until-close bodies, `Connection: close`, HTTP/1.0, per-request deadlines, and one silent
reconnect when a reused keep-alive connection turns out to be closed by the server. Everything
that goes wrong becomes a `RequestFailed` with a short kind used in the sample rows.

The hot path is two system calls per request (one send, one recv) on a blocking socket: the
deadline is enforced by the kernel (SO_RCVTIMEO / SO_SNDTIMEO, which also bounds connect()),
re-armed to the time left only when a request needs more calls, instead of Python's timeout
mode, which costs a poll() and an ioctl() per call. Receives go into one preallocated buffer per
connection (a fresh 256 KiB `recv()` is an mmap/munmap per call); header names are folded once
per spelling; reconnects skip getaddrinfo. Each saved microsecond is CPU the server under test
keeps when both share a machine.

Over HTTPS (a `tls` context) the socket is wrapped with the standard `ssl` module right after the
TCP connect, so the handshake is part of connecting: `warm_up` pays it before the first request,
a reconnect inside `request` pays it in that request's latency. A TLS socket uses Python's timeout
mode instead of kernel timeouts: OpenSSL retries a read that SO_RCVTIMEO interrupted, so the
kernel timeout would never end it.

A streamed response (server-sent events) is read through a body sink (`request(sink=...)`): the
sink learns the status when the headers are in and gets each piece of the body as it arrives,
chunked framing removed, so it can time tokens; the first byte's time is set on it too.
"""
from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import NamedTuple, Protocol, cast

from harness.engines.tls import describe
from harness.results.samples import CLOSED, CONNECT, PROTOCOL, RESET, TIMEOUT, TLS, TOO_LARGE

MAX_HEADER_BYTES = 65536
DEFAULT_MAX_BODY = 16 * 1024 * 1024
RECV_BYTES = 65536
# a send/recv may outlast the request's deadline by at most max(DEADLINE_SLACK, 1% of the time
# left when the kernel timeout was last armed): closer to the deadline it is re-armed to the rest
DEADLINE_SLACK = 0.002


# what a response header means to the client; names are matched case-insensitively, ignoring
# surrounding blanks, and each spelling seen is remembered so later responses skip the folding
_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _SERVER_TIMING = 1, 2, 3, 4
_KINDS = {b"content-length": _CONTENT_LENGTH, b"transfer-encoding": _TRANSFER_ENCODING,
          b"connection": _CONNECTION, b"server-timing": _SERVER_TIMING}
_SEEN_NAMES: dict[bytes, int] = {}  # header name as received -> kind (0: not needed)
_SEEN_LIMIT = 1024


def _header_kind(name: bytes) -> int:
    kind = _KINDS.get(name.strip().lower(), 0)
    if len(_SEEN_NAMES) < _SEEN_LIMIT:
        _SEEN_NAMES[name] = kind
    return kind


class RequestFailed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Response(NamedTuple):  # a tuple: three times cheaper to build than a frozen dataclass
    status: int
    body_bytes: int
    server_timing: bytes | None
    keep_alive: bool
    body: bytes | None = None  # the body itself, only when the request asked to keep it


class BodySink(Protocol):
    """Where a streamed body goes, piece by piece (harness.engines.sse.OpenAIStream)."""

    first_byte: float | None

    def head(self, status: int) -> None: ...

    def append(self, piece: bytes) -> None: ...


class _Parts(Protocol):
    def append(self, piece: bytes) -> None: ...


class _Stale(Exception):
    """The reused connection was closed by the server before answering: reconnect and resend."""


class Connection:
    def __init__(self, host: str, port: int, *, max_body: int = DEFAULT_MAX_BODY,
                 tls: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        self.host = host
        self.port = port
        self.max_body = max_body
        self.tls = tls  # None: plain HTTP
        self.server_name = server_name or host  # SNI and the name the certificate must match
        self.sock: socket.socket | None = None
        self.used = False
        self._address: tuple | None = None  # (family, type, proto, sockaddr) that connected last
        self._armed = 0.0  # the kernel send/receive timeout set on self.sock, seconds
        self._rearm_below = 0.0  # re-arm when less time than this is left
        self._buf = bytearray(RECV_BYTES)
        self._keep = False  # keep the body of the response being read (a checked request)
        self._sink: BodySink | None = None  # ... or hand it to this sink as it arrives (a stream)
        self._view = memoryview(self._buf)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def warm_up(self, timeout: float) -> None:
        """Open the connection ahead of the first request; failures are left to request() to report."""
        try:
            self._connect(time.monotonic() + timeout)
        except RequestFailed:
            pass

    def _connect(self, deadline: float) -> socket.socket:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestFailed(TIMEOUT, "deadline passed before connecting")
        try:
            if self._address is None:  # resolve once; later connects skip getaddrinfo
                sock = socket.create_connection((self.host, self.port), timeout=remaining)
                try:
                    self._address = (sock.family, sock.type, sock.proto, sock.getpeername())
                    sock.settimeout(None)  # blocking from here on; deadlines are kernel timeouts (_arm)
                    self._arm(sock, deadline - time.monotonic())
                except BaseException:
                    sock.close()
                    raise
            else:  # a blocking connect bounded by SO_SNDTIMEO: no poll(), no ioctl()
                family, type_, proto, sockaddr = self._address
                # the C socket type: the same calls without socket.socket's Python-level layer
                sock = cast(socket.socket, socket.SocketType(family, type_, proto))  # same calls used
                try:
                    self._arm(sock, remaining)
                    sock.connect(sockaddr)
                except BaseException:
                    sock.close()
                    raise
        except (TimeoutError, BlockingIOError):  # BlockingIOError: EINPROGRESS when SO_SNDTIMEO expired
            raise RequestFailed(TIMEOUT, "connect timed out") from None
        except OSError as exc:
            raise RequestFailed(CONNECT, exc.strerror or str(exc)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self._handshake(sock, deadline)
        self.sock, self.used = sock, False
        return sock

    def _handshake(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        """Wrap a connected socket in TLS within the deadline; failures are of kind tls."""
        assert self.tls is not None
        try:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            wrapped = self.tls.wrap_socket(sock, server_hostname=self.server_name)
        except ssl.SSLError as exc:
            sock.close()
            raise RequestFailed(TLS, describe(exc)) from None
        except TimeoutError:
            sock.close()
            raise RequestFailed(TIMEOUT, "TLS handshake timed out") from None
        except OSError as exc:
            sock.close()
            raise RequestFailed(RESET, f"during the TLS handshake: {exc.strerror or exc}") from None
        self._arm(wrapped, deadline - time.monotonic())
        return wrapped

    def _arm(self, sock: socket.socket, seconds: float) -> None:
        """Make each send/recv on `sock` give up after `seconds` (EAGAIN, mapped to TIMEOUT)."""
        seconds = max(seconds, 1e-3)  # 0 would mean "never"
        if isinstance(sock, ssl.SSLSocket):  # timeout mode (see the module docstring)
            sock.settimeout(seconds)
            self._armed = seconds
            self._rearm_below = seconds - max(DEADLINE_SLACK, 0.01 * seconds)
            return
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self._armed = seconds
        self._rearm_below = seconds - max(DEADLINE_SLACK, 0.01 * seconds)

    def request(self, raw: bytes, timeout: float, keep_body: bool = False,
                sink: BodySink | None = None) -> Response:
        """Send prebuilt request bytes and read the whole response within `timeout` seconds.

        The body is counted, not kept, unless `keep_body` (a response check needs it) or a `sink`
        takes it piece by piece (a stream; the sink may raise RequestFailed to end it)."""
        deadline = time.monotonic() + timeout
        self._keep = keep_body
        self._sink = sink
        for attempt in (0, 1):
            sock = self.sock
            if sock is None:
                sock = self._connect(deadline)
            elif self._armed != timeout:  # a reused socket: restore the full per-request timeout
                self._arm(sock, timeout)
            reused = self.used
            try:
                response = self._exchange(sock, raw, deadline, reused)
            except _Stale:
                self.close()
                if attempt == 0:
                    continue
                raise RequestFailed(CLOSED, "server closed the connection without answering") from None
            except RequestFailed:
                self.close()
                raise
            self.used = True
            if not response.keep_alive:
                self.close()
            return response
        raise AssertionError("unreachable")

    def _recv_into(self, sock: socket.socket, deadline: float) -> int:
        """Receive into the connection's buffer; the byte count (0 when the server closed)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestFailed(TIMEOUT, "no complete response before the deadline")
        if remaining < self._rearm_below:
            self._arm(sock, remaining)
        try:
            return sock.recv_into(self._buf)
        except (BlockingIOError, TimeoutError):  # the kernel (or, over TLS, Python's) receive timeout expired
            raise RequestFailed(TIMEOUT, "no complete response before the deadline") from None
        except ConnectionResetError:
            raise RequestFailed(RESET, "connection reset by the server") from None
        except ssl.SSLError as exc:  # e.g. an alert: the server refused the client certificate
            raise RequestFailed(TLS, describe(exc)) from None
        except OSError as exc:
            raise RequestFailed(RESET, exc.strerror or str(exc)) from None

    def _recv(self, sock: socket.socket, deadline: float) -> bytes:
        return self._view[:self._recv_into(sock, deadline)].tobytes()

    def _send_rest(self, sock: socket.socket, raw: bytes, sent: int, deadline: float) -> None:
        """Finish a request larger than the socket buffer, re-arming to the time left each time."""
        while sent < len(raw):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BlockingIOError()
            if remaining < self._rearm_below:
                self._arm(sock, remaining)
            sent += sock.send(memoryview(raw)[sent:])

    def _exchange(self, sock: socket.socket, raw: bytes, deadline: float, reused: bool) -> Response:
        try:
            sent = sock.send(raw)  # one call unless the request outgrows the socket buffer
            if sent < len(raw):
                self._send_rest(sock, raw, sent, deadline)
        except (BlockingIOError, TimeoutError):  # the kernel (or, over TLS, Python's) send timeout expired
            raise RequestFailed(TIMEOUT, "sending the request timed out") from None
        except (BrokenPipeError, ConnectionResetError):
            if reused:
                raise _Stale() from None
            raise RequestFailed(RESET, "connection reset while sending") from None
        except ssl.SSLError as exc:  # on a fresh connection an EOF here is a refused client certificate
            if reused and isinstance(exc, ssl.SSLEOFError):
                raise _Stale() from None
            raise RequestFailed(TLS, describe(exc)) from None
        except OSError as exc:
            raise RequestFailed(RESET, exc.strerror or str(exc)) from None

        try:
            got = self._recv_into(sock, deadline)
        except RequestFailed as exc:
            if reused and exc.kind == RESET:
                raise _Stale() from None
            raise
        if not got:
            if reused:
                raise _Stale()
            raise RequestFailed(CLOSED, "server closed the connection without answering")
        if self._sink is not None:
            self._sink.first_byte = time.monotonic()
        buf = self._view[:got].tobytes()
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise RequestFailed(PROTOCOL, "response headers larger than 64 KiB")
            data = self._recv(sock, deadline)
            if not data:
                raise RequestFailed(CLOSED, "connection closed inside the response headers")
            buf += data
            end = buf.find(b"\r\n\r\n")
        return self._read_body(sock, buf, end, deadline)

    def _read_body(self, sock: socket.socket, buf: bytes, end: int, deadline: float) -> Response:
        head = buf[:end]
        body_at = end + 4
        if not head.startswith(b"HTTP/1.") or len(head) < 12 or head[12:13] not in (b" ", b"\r", b""):
            raise RequestFailed(PROTOCOL, f"malformed status line {head[:40]!r}")
        try:
            status = int(head[9:12])
        except ValueError:
            raise RequestFailed(PROTOCOL, f"malformed status code in {head[:40]!r}") from None
        if not 100 <= status <= 599:
            raise RequestFailed(PROTOCOL, f"status code {status} out of range")
        keep_alive = head[5:8] == b"1.1"
        length = -1
        chunked = False
        timing = None
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise RequestFailed(PROTOCOL, f"malformed header line {line[:40]!r}")
            kind = _SEEN_NAMES.get(name)
            if kind is None:
                kind = _header_kind(name)
            if not kind:
                continue
            if kind == _CONTENT_LENGTH:
                try:
                    length = int(value)
                except ValueError:
                    raise RequestFailed(PROTOCOL, f"bad Content-Length {value[:20]!r}") from None
                if length < 0:
                    raise RequestFailed(PROTOCOL, "negative Content-Length")
            elif kind == _TRANSFER_ENCODING:
                chunked = b"chunked" in value.lower()
            elif kind == _CONNECTION:
                token = value.strip().lower()
                if token == b"close":
                    keep_alive = False
                elif token == b"keep-alive":
                    keep_alive = True
            else:
                timing = value.strip()
        sink = self._sink
        parts: _Parts | None = sink if sink is not None else [] if self._keep else None  # where the body goes
        if sink is not None:
            sink.head(status)
        if status < 200 or status in (204, 304):
            return Response(status, 0, timing, keep_alive, None if parts is None or sink else b"")
        if chunked:
            size = self._read_chunked(sock, buf[body_at:], deadline, parts)
        elif length >= 0:
            if length > self.max_body:
                raise RequestFailed(TOO_LARGE, f"body of {length} bytes exceeds {self.max_body}")
            size = len(buf) - body_at
            if parts is not None:
                parts.append(buf[body_at:])
            while size < length:
                got = self._recv_into(sock, deadline)
                if not got:
                    raise RequestFailed(CLOSED, f"body truncated at {size} of {length} bytes")
                size += got
                if parts is not None:
                    parts.append(self._view[:got].tobytes())
            if size > length:
                raise RequestFailed(PROTOCOL, f"{size - length} bytes beyond Content-Length")
        else:
            size = len(buf) - body_at
            if parts is not None:
                parts.append(buf[body_at:])
            keep_alive = False
            while True:
                got = self._recv_into(sock, deadline)
                if not got:
                    break
                size += got
                if size > self.max_body:
                    raise RequestFailed(TOO_LARGE, f"body exceeds {self.max_body} bytes")
                if parts is not None:
                    parts.append(self._view[:got].tobytes())
        return Response(status, size, timing, keep_alive,
                        b"".join(parts) if isinstance(parts, list) else None)

    def _read_chunked(self, sock: socket.socket, buf: bytes, deadline: float, parts: _Parts | None) -> int:
        total = 0
        pos = 0
        while True:
            line_end = buf.find(b"\r\n", pos)
            while line_end < 0:
                if len(buf) - pos > 1024:
                    raise RequestFailed(PROTOCOL, "chunk size line too long")
                buf = self._more(sock, buf, deadline)
                line_end = buf.find(b"\r\n", pos)
            size_text = buf[pos:line_end].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise RequestFailed(PROTOCOL, f"bad chunk size {size_text[:20]!r}") from None
            pos = line_end + 2
            if size == 0:
                # trailers end with an empty line
                while buf.find(b"\r\n", pos) < 0:
                    buf = self._more(sock, buf, deadline)
                while True:
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        buf = self._more(sock, buf, deadline)
                        continue
                    if nl == pos:
                        return total
                    pos = nl + 2
            total += size
            if total > self.max_body:
                raise RequestFailed(TOO_LARGE, f"chunked body exceeds {self.max_body} bytes")
            while len(buf) < pos + size + 2:
                buf = self._more(sock, buf, deadline)
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise RequestFailed(PROTOCOL, "chunk not followed by CRLF")
            if parts is not None:
                parts.append(buf[pos:pos + size])
            pos += size + 2
            if pos > 65536:  # drop consumed bytes so long streams stay cheap
                buf, pos = buf[pos:], 0

    def _more(self, sock: socket.socket, buf: bytes, deadline: float) -> bytes:
        data = self._recv(sock, deadline)
        if not data:
            raise RequestFailed(CLOSED, "connection closed inside a chunked body")
        return buf + data


def request_bytes(method: str, host: str, port: int, path: str, body: bytes,
                  headers: dict[str, str]) -> bytes:
    """One complete HTTP/1.1 request, built once and sent as is on every iteration."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: inference-harness/0.1",
             "Accept: */*"]
    names = {k.lower() for k in headers}
    if method != "GET" or body:
        if "content-type" not in names:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
