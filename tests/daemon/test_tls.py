"""tetherd's TLS settings: the keys fit together, every file problem names the file, and
the context serves TLS 1.2+ with client certificates optional at the TLS level (consoles
log in with a token on the same port) when ``tls_client_ca`` is set."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from tether.daemon import config
from tether.daemon.cli import _url
from tether.daemon.config import Config, ConfigError
from tether.daemon.tls import server_context


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> dict[str, str]:
    leaf = ca.issue_cert("127.0.0.1")
    other = ca.issue_cert("other.example")
    paths = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca", "other_key", "encrypted_key", "junk")}
    paths["cert"].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other.private_key_pem.write_to_path(str(paths["other_key"]))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    paths["encrypted_key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    paths["junk"].write_text("not a certificate\n")
    return {name: str(path) for name, path in paths.items()}


def load(tmp_path: Path, **settings: str) -> Config:
    f = tmp_path / "tetherd.toml"
    f.write_text("".join(f'{k} = "{v}"\n' for k, v in settings.items()))
    return config.load(f, {})


# -- the settings ------------------------------------------------------------------------------


def test_tls_is_off_by_default_and_the_url_says_ws() -> None:
    c = Config()
    assert (c.tls_cert, c.tls_key, c.tls_client_ca) == ("", "", "")
    assert server_context(c) is None
    assert _url(c) == "ws://127.0.0.1:8765"


def test_init_writes_the_tls_keys_commented_out() -> None:
    text = config.default_file_text()
    for key in ("tls_cert", "tls_key", "tls_client_ca"):
        assert f'# {key} = ""' in text


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"tls_cert": "c.pem"}, r"tls_cert is set but tls_key is not in .*tetherd.toml: TLS needs both"),
        ({"tls_key": "k.pem"}, r"tls_key is set but tls_cert is not in .*tetherd.toml"),
        ({"tls_client_ca": "ca.pem"}, r"tls_client_ca is set but tls_cert and tls_key are not"),
        ({"tls_cert": "c.pem", "tls_client_ca": "ca.pem"}, r"tls_cert is set but tls_key is not"),
    ],
)
def test_settings_that_do_not_fit_together_are_refused(tmp_path: Path, settings: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load(tmp_path, **settings)


def test_a_typo_in_a_tls_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key `tls_crt` .*\(did you mean `tls_cert`\?\)"):
        load(tmp_path, tls_crt="c.pem")


# -- the files -------------------------------------------------------------------------------


def test_certificate_and_key_make_a_tls_12_server_context(tmp_path: Path, files: dict[str, str]) -> None:
    c = load(tmp_path, tls_cert=files["cert"], tls_key=files["key"])
    context = server_context(c)
    assert context is not None
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # no client CA: nobody is asked for a certificate
    assert _url(c) == "wss://127.0.0.1:8765"


def test_a_client_ca_makes_client_certificates_optional_at_the_tls_level(tmp_path: Path, files: dict[str, str]) -> None:
    context = server_context(load(tmp_path, tls_cert=files["cert"], tls_key=files["key"], tls_client_ca=files["ca"]))
    assert context is not None
    assert context.verify_mode == ssl.CERT_OPTIONAL  # required of agents later, by the server
    assert context.cert_store_stats()["x509_ca"] == 1


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"tls_cert": "absent", "tls_key": "key"}, "tls_cert {absent}: cannot read it: No such file or directory"),
        ({"tls_cert": "cert", "tls_key": "absent"}, "tls_key {absent}: cannot read it: No such file or directory"),
        ({"tls_cert": "dir", "tls_key": "key"}, "tls_cert {dir}: cannot read it: Is a directory"),
        ({"tls_cert": "key", "tls_key": "key"}, "tls_cert {key} does not hold a PEM certificate chain"),
        ({"tls_cert": "cert", "tls_key": "cert"}, "tls_key {cert} does not hold a PEM private key"),
        ({"tls_cert": "cert", "tls_key": "other_key"},
         "tls_cert {cert} and tls_key {other_key} do not load as a certificate and its key: "
         "the key is not the certificate's key"),
        ({"tls_cert": "cert", "tls_key": "encrypted_key"},
         "tls_key {encrypted_key} is encrypted with a passphrase; tetherd needs the key without one"),
        ({"tls_cert": "cert", "tls_key": "key", "tls_client_ca": "junk"},
         "tls_client_ca {junk} does not hold PEM CA certificates"),
        ({"tls_cert": "cert", "tls_key": "key", "tls_client_ca": "absent"},
         "tls_client_ca {absent}: cannot read it: No such file or directory"),
    ],
)
def test_every_file_problem_names_the_setting_and_the_file(
    tmp_path: Path, files: dict[str, str], settings: dict[str, str], words: str
) -> None:
    where = {**files, "absent": str(tmp_path / "absent.pem"), "dir": str(tmp_path)}
    c = load(tmp_path, **{k: where[v] for k, v in settings.items()})
    with pytest.raises(ConfigError) as caught:
        server_context(c)
    assert words.format(**where) in str(caught.value)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str]:
    """A TLS handshake between the two contexts, in memory (no socket): the version and the
    suite agreed; ``ssl.SSLError`` if they agree on none."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_out, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(to_server, s_out, server_side=True)
    c = client.wrap_bio(to_client, c_out, server_side=False, server_hostname="127.0.0.1")
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, end in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        to_server.write(c_out.read())
        to_client.write(s_out.read())
        if all(done.values()):
            cipher = c.cipher()
            assert cipher is not None
            return cipher[1], cipher[0]
    raise AssertionError("the handshake did not finish")


def assert_tls12_agrees(server: ssl.SSLContext, cafile: str, suites: str, agreed: str | None) -> None:
    """A TLS 1.2 client offering only ``suites`` agrees on ``agreed`` with ``server``, or
    (None) on nothing."""
    client = ssl.create_default_context(cafile=cafile)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(suites)
    if agreed is None:
        with pytest.raises(ssl.SSLError):
            handshake(server, client)
    else:
        assert handshake(server, client) == ("TLSv1.2", agreed)


@pytest.mark.parametrize(("suites", "agreed"), [
    ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA", None),  # CBC
])
def test_tls_12_offers_only_forward_secret_aead_suites(
    tmp_path: Path, files: dict[str, str], suites: str, agreed: str | None
) -> None:
    context = server_context(load(tmp_path, tls_cert=files["cert"], tls_key=files["key"]))
    assert context is not None
    assert_tls12_agrees(context, files["ca"], suites, agreed)
    modern = ssl.create_default_context(cafile=files["ca"])  # TLS 1.3 is unaffected
    assert handshake(context, modern)[0] == "TLSv1.3"


@pytest.mark.parametrize(("suites", "agreed"), [
    ("ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
    ("AES128-GCM-SHA256:AES256-GCM-SHA384", None),  # RSA key exchange: no forward secrecy
    ("AES128-SHA256:ECDHE-RSA-AES128-SHA256", None),  # CBC
])
def test_tls_12_with_an_rsa_certificate_offers_only_forward_secret_aead_suites(tmp_path: Path, suites: str, agreed: str | None) -> None:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)
    cert, key, cafile = tmp_path / "rsa.pem", tmp_path / "rsa.key", tmp_path / "rsa-ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(cafile))
    context = server_context(load(tmp_path, tls_cert=str(cert), tls_key=str(key)))
    assert context is not None
    assert_tls12_agrees(context, str(cafile), suites, agreed)
