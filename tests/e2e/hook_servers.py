"""Real targets for hooks, on 127.0.0.1: an HTTPS server with a certificate no system trusts
(made by trustme), and an SMTP server (aiosmtpd) with STARTTLS and a login."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Received:
    """What a server was sent, waited on with a bounded wait."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[list[Any]], bool], timeout: float = 30.0, what: str = "") -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {len(self.items)}")
                self._cond.wait(left)
            return list(self.items)


class WebTarget:
    """An HTTPS server answering every POST with ``answer`` (status, JSON body) after ``delay``."""

    def __init__(self, ca: trustme.CA, port: int = 0, cert: trustme.LeafCert | None = None) -> None:
        self.cert = cert or ca.issue_cert("127.0.0.1")
        self.received = Received()
        self.answer: tuple[int, Any] = (200, {"result": "success"})
        self.delay = 0.0
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                target.received.add({"headers": dict(self.headers), "body": body})
                if target.delay:
                    time.sleep(target.delay)
                status, answer = target.answer
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.cert.configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}/hook"
        self.fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(self.cert.cert_chain_pems[0].bytes().decode())
                                          ).hexdigest()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailTarget:
    """An SMTP server on 127.0.0.1 with STARTTLS required and a login (user ``tether``,
    password ``mailpass``); what it was sent is in :attr:`received`."""

    USER, PASSWORD = "tether", "mailpass"

    def __init__(self, ca: trustme.CA, tmp: Path) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.received = Received()
        cert = ca.issue_cert("127.0.0.1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.ca_file = tmp / "smtp-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        received = self.received

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                received.add({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "data": envelope.content.decode(errors="replace"),
                              "login": getattr(session, "login_data", None)})
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and auth_data.login == self.USER.encode() and \
                auth_data.password == self.PASSWORD.encode()
            return AuthResult(success=ok, handled=False)

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=True, authenticator=authenticate, auth_required=True)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
