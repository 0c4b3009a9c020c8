"""TLS on tetherd's one port: the server's context, and the client-certificate rule for agents.

DESIGN "Security": ``wss`` with a certificate and key from the config, optional client
certificates. Agents, consoles and the HTTP endpoints share the port, and consoles prove
who they are with an admin token, not a certificate. So a configured ``tls_client_ca``
makes a client certificate *optional* in the TLS handshake (``CERT_OPTIONAL``: one that
is presented must chain to that CA, or the handshake fails) and *required* of agents:
:func:`client_certificate_refusal` is asked when the first frame says the peer is an
agent (``hello`` with role ``agent``, or ``enroll``), before its credentials are looked at.

The files are read once, at start: a renewed certificate takes a restart of tetherd.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from websockets.asyncio.server import ServerConnection

from ..protocol.errors import ErrorCode, ProtocolError
from .config import Config, ConfigError

CLIENT_CERTIFICATE_REQUIRED = (
    "this tetherd requires agents to present a client certificate signed by its tls_client_ca; "
    "run tether-agent with --cert FILE --cert-key FILE"
)


TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""The TLS 1.2 suites tetherd offers: forward secrecy (ECDHE) and AEAD (AES-GCM, ChaCha20-
Poly1305) only, as RFC 9325 recommends; no CBC, no RSA key exchange. (TLS 1.3's suites are
all AEAD with forward secrecy, and set apart by OpenSSL.)"""


def server_context(config: Config) -> ssl.SSLContext | None:
    """The context for ``serve(ssl=...)``, or ``None`` when TLS is off (no ``tls_cert``).

    TLS 1.2 at least, with :data:`TLS12_CIPHERS` only. Every problem with a file is a
    :class:`ConfigError` naming the file and the setting, raised before tetherd touches its
    data directory.
    """
    if not config.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    cert = _pem(config.tls_cert, "tls_cert", "CERTIFICATE-----", "a PEM certificate chain")
    key = _pem(config.tls_key, "tls_key", "PRIVATE KEY-----", "a PEM private key")
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKey:
        raise ConfigError(f"tls_key {key} is encrypted with a passphrase; tetherd needs the key without one "
                          "(e.g. openssl pkey -in KEY -out KEY.plain)") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"tls_cert {cert} and tls_key {key} do not load as a certificate and its key: "
                          f"{_reason(exc)}") from None
    if config.tls_client_ca:
        ca = _pem(config.tls_client_ca, "tls_client_ca", "CERTIFICATE-----", "PEM CA certificates")
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise ConfigError(f"tls_client_ca {ca} does not load as CA certificates: {_reason(exc)}") from None
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_certificate_refusal(ws: ServerConnection) -> ProtocolError | None:
    """Why an agent on this connection is refused for want of a client certificate, or ``None``.

    Decided by the connection itself: its TLS context asked for client certificates (that
    is, ``tls_client_ca`` was set when tetherd started) and the peer presented none. A
    certificate the TLS layer returns is one it verified: a bad one fails the handshake.
    """
    ssl_object = ws.transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket) or ssl_object.context.verify_mode == ssl.CERT_NONE:
        return None
    if ssl_object.getpeercert():
        return None
    return ProtocolError(ErrorCode.UNAUTHORIZED, CLIENT_CERTIFICATE_REQUIRED)


def client_certificate_sha256(ws: ServerConnection) -> bytes | None:
    """The SHA-256 of the (DER) client certificate the peer presented, or ``None``."""
    ssl_object = ws.transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).digest() if der else None


CERTIFICATE_NOT_BOUND = (
    "this agent is bound to another client certificate (bind_client_certificates); to bind it to a "
    "new one, enroll it again from its state directory (tether-agent enroll: it proves itself with its token)"
)


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    """The ``password`` callback: called only for an encrypted key, which tetherd (started
    by systemd, with nobody at a terminal) cannot use; without a callback OpenSSL would
    prompt on the terminal."""
    raise _EncryptedKey


def _pem(path: str, setting: str, marker: str, what: str) -> str:
    """``path`` if it can be read and looks like ``what``; else a ConfigError saying which."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: cannot read it: {exc.strerror or exc}") from None
    if marker not in text:
        raise ConfigError(f"{setting} {path} does not hold {what} (no '-----BEGIN ...{marker}' line)")
    return path


def _reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words where it is one a person meets setting up a certificate."""
    words = {
        "KEY_VALUES_MISMATCH": "the key is not the certificate's key",
        "NO_CERTIFICATE_OR_CRL_FOUND": "no certificate found in it",
        "CA_MD_TOO_WEAK": "a certificate is signed with a hash OpenSSL refuses as too weak",
        "EE_KEY_TOO_SMALL": "the key is too small for OpenSSL's security level",
    }
    return words.get(exc.reason or "", exc.reason or str(exc))
