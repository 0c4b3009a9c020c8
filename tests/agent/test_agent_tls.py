"""The agent's TLS files: what a wss:// connection trusts and shows, every bad file named,
and the files kept at enrollment for ``run`` (whose own flags win)."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from websockets.exceptions import InvalidMessage

from tether.agent import Identity, Journal
from tether.agent.cli import CliError, _tls_files, main
from tether.agent.tls import TLSFileError, TLSFiles, client_context, explain


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    leaf, other = ca.issue_cert("agent.example"), ca.issue_cert("other.example")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "other_key", "encrypted_key", "junk")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    other.private_key_pem.write_to_path(str(paths["other_key"]))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    paths["encrypted_key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    paths["junk"].write_text("junk\n")
    return {name: str(path) for name, path in paths.items()}


def test_ws_urls_need_no_context_and_refuse_tls_files(pem: dict[str, str]) -> None:
    assert client_context("ws://d:1", TLSFiles()) is None
    with pytest.raises(TLSFileError, match=r"--ca, --cert and --cert-key are for wss:// URLs; ws://d:1 is not one"):
        client_context("ws://d:1", TLSFiles(ca=pem["ca"]))


def test_wss_verifies_the_daemon_against_the_given_ca_or_the_system_store(pem: dict[str, str]) -> None:
    for files in (TLSFiles(), TLSFiles(ca=pem["ca"])):
        context = client_context("wss://d:1", files)
        assert context is not None
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    only_ours = client_context("wss://d:1", TLSFiles(ca=pem["ca"]))
    assert only_ours is not None and only_ours.cert_store_stats()["x509_ca"] == 1  # instead of the system's
    assert client_context("wss://d:1", TLSFiles(ca=pem["ca"], cert=pem["cert"], key=pem["key"])) is not None


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"ca": "absent"}, "CA file (--ca) {absent}: cannot read it: No such file or directory"),
        ({"ca": "junk"}, "CA file (--ca) {junk} holds no usable PEM certificate"),
        ({"cert": "cert"}, "--cert and --cert-key go together"),
        ({"key": "key"}, "--cert and --cert-key go together"),
        ({"cert": "absent", "key": "key"}, "client certificate (--cert) {absent}: cannot read it"),
        ({"cert": "cert", "key": "absent"}, "client key (--cert-key) {absent}: cannot read it"),
        ({"cert": "cert", "key": "other_key"},
         "client certificate (--cert) {cert} and key (--cert-key) {other_key} do not load"),
        ({"cert": "cert", "key": "encrypted_key"}, "client key (--cert-key) {encrypted_key} is encrypted"),
        ({"cert": "junk", "key": "key"}, "client certificate (--cert) {junk} and key (--cert-key) {key} do not load"),
    ],
)
def test_every_bad_file_is_named(pem: dict[str, str], tmp_path: Path, files: dict[str, str], words: str) -> None:
    where = {**pem, "absent": str(tmp_path / "absent.pem")}
    with pytest.raises(TLSFileError) as caught:
        client_context("wss://d:1", TLSFiles(**{k: where[v] for k, v in files.items()}))
    assert words.format(**where) in str(caught.value)


def test_failures_explained_as_tls_say_what_to_do() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "self-signed certificate"
    assert "trust that CA with --ca FILE" in (explain(verify, "wss://d:1") or "")
    closed = InvalidMessage("did not receive a valid HTTP response")
    closed.__cause__ = EOFError("connection closed while reading HTTP status line")
    assert "tls_client_ca" in (explain(closed, "wss://d:1") or "")
    assert "use a wss:// URL" in (explain(closed, "ws://d:1") or "")
    assert "is tetherd running and listening on d:1?" in (  # not TLS: what to check instead (16.8)
        explain(ConnectionRefusedError(111, "Connection refused"), "wss://d:1") or "")
    assert explain(OSError("something else"), "wss://d:1") is None


def options(ca: str | None = None, cert: str | None = None, cert_key: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(ca=ca, cert=cert, cert_key=cert_key)


def test_run_flags_replace_the_enrolled_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    enrolled = Identity("wss://d:1", "a1", "t", tls=TLSFiles("/pki/ca.pem", "/pki/agent.pem", "/pki/agent.key"))
    assert _tls_files(options(), enrolled) is None  # the client falls back to the enrolled ones
    assert _tls_files(options(ca="new-ca.pem"), enrolled) == TLSFiles(
        str(tmp_path / "new-ca.pem"), "/pki/agent.pem", "/pki/agent.key")
    assert _tls_files(options(cert="/n/c.pem", cert_key="/n/c.key"), enrolled) == TLSFiles(
        "/pki/ca.pem", "/n/c.pem", "/n/c.key")
    with pytest.raises(CliError, match="--cert and --cert-key go together"):
        _tls_files(options(cert="/n/c.pem"), enrolled)


def test_enroll_refuses_half_a_client_certificate_before_connecting(
    tmp_path: Path, pem: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["enroll", "--server", "wss://127.0.0.1:9", "--key", "K", "--state-dir", str(tmp_path / "s"),
                 "--cert", pem["cert"]])
    assert code == 1
    assert "error: --cert and --cert-key go together" in capsys.readouterr().err


def test_status_shows_the_enrolled_tls_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    with Journal.in_state_dir(state) as journal:
        journal.set_identity(Identity("wss://d:1", "a1", "t", tls=TLSFiles("/pki/ca.pem", "/pki/a.pem", "/pki/a.key")))
    assert main(["status", "--state-dir", str(state)]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()[:4]] == [
        ["agent_id", "a1"], ["server", "wss://d:1"], ["ca", "/pki/ca.pem"], ["cert", "/pki/a.pem"]]
