"""TLS for tether-agent: the CA it trusts and the client certificate it shows a wss:// daemon.

Only the standard library's :mod:`ssl`, so the agent stays light. The files are named at
enrollment (``tether-agent enroll --ca FILE --cert FILE --cert-key FILE``) and kept beside the
identity in the journal, so ``tether-agent run`` (a systemd unit without flags) uses the
same ones; ``run``'s own flags win for that process. They are read once, when the
session loop starts: a renewed certificate takes a restart of the agent.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from tether.protocol.endpoints import connect_failure


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files for a wss:// daemon; ``""`` is "not given"."""

    ca: str = ""
    """CA certificates to trust instead of the system's store (a private CA)."""
    cert: str = ""
    """Client certificate chain, for a daemon with ``tls_client_ca``."""
    key: str = ""
    """The private key of ``cert``, without a passphrase."""

    def __bool__(self) -> bool:
        return bool(self.ca or self.cert or self.key)

    def absolute(self) -> TLSFiles:
        """The same files named from ``/``, to be found again from another working directory."""
        return TLSFiles(*(str(Path(p).absolute()) if p else "" for p in (self.ca, self.cert, self.key)))


class TLSFileError(Exception):
    """A TLS file cannot be used: it says which file and why."""


def client_context(server: str, files: TLSFiles) -> ssl.SSLContext | None:
    """The ``ssl`` argument for connecting to ``server``: ``None`` for ws://, a context
    verifying the daemon's certificate (TLS 1.2 at least) for wss://.

    Raises :class:`TLSFileError` for files given with a ws:// URL, a certificate without
    its key (or the reverse), or a file that cannot be read or loaded.
    """
    if not server.startswith("wss://"):
        if files:
            raise TLSFileError(f"--ca, --cert and --cert-key are for wss:// URLs; {server} is not one")
        return None
    if bool(files.cert) != bool(files.key):
        raise TLSFileError("--cert and --cert-key go together: a client certificate needs its private key")
    _check_readable(files.ca, "CA file (--ca)")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca or None)
    except ssl.SSLError as exc:
        raise TLSFileError(f"CA file (--ca) {files.ca} holds no usable PEM certificate: {exc.reason or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.cert:
        cert, key = files.cert, files.key
        _check_readable(cert, "client certificate (--cert)")
        _check_readable(key, "client key (--cert-key)")
        try:
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except _EncryptedKey:
            raise TLSFileError(f"client key (--cert-key) {key} is encrypted with a passphrase; "
                               "tether-agent needs it without one") from None
        except ssl.SSLError as exc:
            raise TLSFileError(f"client certificate (--cert) {cert} and key (--cert-key) {key} do not load as a "
                               f"PEM certificate and its key: {exc.reason or exc}") from None
    return context


def explain(exc: BaseException, server: str) -> str | None:
    """What to do about a failed connection whose reason may be TLS; else ``None``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the daemon's certificate was not accepted ({exc.verify_message}); if a private CA signed "
                "it, trust that CA with --ca FILE")
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if not isinstance(exc.__cause__, EOFError):
        described = connect_failure(exc, server, "the server URL (tether-agent set-server URL)")  # refused, unresolvable, a plain daemon under wss:// ...
        return None if described == (str(exc) or type(exc).__name__) else described
    if server.startswith("wss://"):
        # TLS 1.3: a daemon that refuses the client certificate says so after the
        # handshake, and the alert may be lost; all the agent sees is the close.
        return ("the daemon closed the connection before answering; if it requires client "
                "certificates, check that --cert is signed by its tls_client_ca")
    return "the daemon closed the connection before answering; if it serves TLS, use a wss:// URL"


def _check_readable(path: str, what: str) -> None:
    """OpenSSL's own error for a missing file is a bare errno; this one names the file."""
    if not path:
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise TLSFileError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    """Called only for an encrypted key; without this callback OpenSSL would prompt on
    the terminal, and nobody is at one under systemd."""
    raise _EncryptedKey
