"""The client side of HTTPS, shared by both engines and the pre-run checks: settings and SSL contexts.

`ClientTLS` is plain data (it travels to generator processes and into the Locust plan file); each
process builds its own `ssl.SSLContext` from it, since contexts cannot be pickled. The same
settings mean the same thing everywhere: `verify` (certificate and host name checked), `ca_file`
(trusted instead of the system store), `cert_file`/`key_file` (a client certificate, for mTLS) and
`server_name` (the name sent as SNI and checked against the certificate, instead of the URL's host).
"""
from __future__ import annotations

import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError

# OpenSSL's verify codes for the certificate problems users meet most, in words
_EXPIRED = {9: "is not valid yet", 10: "has expired"}
_WRONG_HOST = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_UNKNOWN_CA = {2, 18, 19, 20, 21}  # issuer unknown, self-signed (leaf or in chain), unverifiable leaf


@dataclass(frozen=True)
class ClientTLS:
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ClientTLS:
        return cls(**doc)

    def context(self, factory: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
        """A client context for these settings; `factory` lets Locust use gevent's SSLContext.

        Raises UserError (exit 2) naming the file when a CA, certificate or key cannot be used."""
        ctx = factory(ssl.PROTOCOL_TLS_CLIENT)
        if self.verify:
            if self.ca_file:
                _load(lambda: ctx.load_verify_locations(cafile=self.ca_file), "ca_file", self.ca_file)
            else:
                ctx.load_default_certs()
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            what = "cert_file" if not self.key_file else "cert_file/key_file"
            where = self.cert_file if not self.key_file else f"{self.cert_file} / {self.key_file}"
            _load(lambda: ctx.load_cert_chain(self.cert_file, self.key_file), what, where)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def _load(action: Any, key: str, path: str) -> None:
    try:
        action()
    except FileNotFoundError:
        raise UserError(f"target.tls.{key}: cannot read {path}: no such file") from None
    except OSError as exc:  # ssl.SSLError included: not PEM, key does not match the certificate
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise UserError(f"target.tls.{key}: cannot use {path}: {reason}") from None


def file_problems(files: dict[str, Path]) -> list[str]:
    """Each unreadable file of `{scenario key: path}` with its path (checked before anything runs)."""
    problems = []
    for key, path in files.items():
        try:
            with path.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            problems.append(f"{key}: cannot read {path}: {exc.strerror or exc}")
    return problems


def describe(exc: ssl.SSLError) -> str:
    """One line for a TLS failure: what is wrong with the certificate, or OpenSSL's reason."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _EXPIRED:
            return f"the server's certificate {_EXPIRED[code]}"
        if code in _WRONG_HOST:
            return f"the server's certificate is for another host ({exc.verify_message})"
        if code in _UNKNOWN_CA:
            return (f"the server's certificate is signed by an unknown CA ({exc.verify_message}); "
                    "give target.tls.ca_file, or --insecure to skip verification")
        return f"certificate verify failed: {exc.verify_message}"
    reason = exc.reason or str(exc)
    if "CERTIFICATE_REQUIRED" in str(reason).upper():
        return "the server requires a client certificate (target.tls.cert_file, key_file)"
    return f"TLS error: {str(reason).lower().replace('_', ' ')}"
