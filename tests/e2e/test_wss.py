"""TLS end to end: tetherd serving wss:// with a certificate from a CA made in the test
(trustme), real agents and tetherctl trusting that CA with --ca, and agents required to
show a client certificate when tetherd has ``tls_client_ca``."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from harness import BIN, TEST_SETTINGS, AgentProc, Tetherd
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tether.agent.journal import Journal
from tether.protocol import MSGPACK, PROTOCOL_VERSION, Error, ErrorCode, Hello, decode_from_daemon


@dataclass(frozen=True)
class PKI:
    """PEM files: a CA, tetherd's certificate for 127.0.0.1, an agent's client certificate
    from the same CA, and a stranger's from another CA."""

    ca: str
    server_cert: str
    server_key: str
    agent_cert: str
    agent_key: str
    other_ca: str
    stranger_cert: str
    stranger_key: str
    thief_cert: str
    thief_key: str
    """Another client certificate from the same CA as the agent's."""


def _write_leaf(leaf: trustme.LeafCert, directory: Path, name: str) -> tuple[str, str]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    server = _write_leaf(ca.issue_cert("127.0.0.1"), directory, "tetherd")
    agent = _write_leaf(ca.issue_cert("agent-1.example"), directory, "agent")
    stranger = _write_leaf(other.issue_cert("stranger.example"), directory, "stranger")
    thief = _write_leaf(ca.issue_cert("agent-2.example"), directory, "thief")
    return PKI(str(directory / "ca.pem"), *server, *agent, str(directory / "other-ca.pem"), *stranger, *thief)


def _tetherd(tmp_path: Path, env: dict[str, str], **tls: str) -> Iterator[Tetherd]:
    daemon = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, **tls})
    try:
        daemon.start()
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill(signal.SIGKILL)


@pytest.fixture
def wss(tmp_path: Path, env: dict[str, str], pki: PKI) -> Iterator[Tetherd]:
    """tetherd on wss://, no client certificates asked for."""
    yield from _tetherd(tmp_path, env, tls_cert=pki.server_cert, tls_key=pki.server_key)


@pytest.fixture
def mtls(tmp_path: Path, env: dict[str, str], pki: PKI) -> Iterator[Tetherd]:
    """tetherd on wss:// whose agents must show a certificate signed by the test CA."""
    yield from _tetherd(tmp_path, env, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca)


@pytest.fixture
def agents(tmp_path: Path, env: dict[str, str]) -> Iterator[list[AgentProc]]:
    made: list[AgentProc] = []
    yield made
    for agent in made:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill(signal.SIGKILL)


def _agent(name: str, tmp_path: Path, tetherd: Tetherd, env: dict[str, str], agents: list[AgentProc]) -> AgentProc:
    agent = AgentProc(name, tmp_path, tetherd, env)
    agents.append(agent)
    return agent


def _run_task(tetherd: Tetherd, agent: AgentProc, *ctl_tls: str) -> None:
    """A task for ``agent``, created and waited for with tetherctl: done, and run once."""
    _, created = tetherd.ctl(*ctl_tls, "task", "record --n 1", "--agent", agent.agent_id)
    rc, view = tetherd.ctl(*ctl_tls, "wait", str(created["task_id"]), "--timeout", "30")
    assert rc == 0, view
    (delivery,) = view["deliveries"]
    assert delivery["state"] == "done" and delivery["result"] == {"recorded": {"n": "1"}}
    assert [r["task_id"] for r in agent.runs()] == [created["task_id"]]


def _ctl(tetherd: Tetherd, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    return subprocess.run([str(BIN / "tetherctl"), *args], capture_output=True, text=True, env=env, timeout=60)


# -- wss:// with a private CA ----------------------------------------------------------------


REPORT = {
    "test_agent_enrolls_and_runs_a_task_over_wss_with_a_private_ca": (
        "an agent and tetherctl over wss:// with a private CA", "enrolled, task done, tetherctl answered"),
    "test_clients_that_do_not_trust_the_ca_fail_with_a_clear_message": (
        "clients that do not trust the daemon's CA; a ws:// URL to a TLS port",
        "refused with a message saying to pass --ca (or use wss://); nothing sent"),
    "test_agents_must_show_a_client_certificate_signed_by_the_client_ca": (
        "with tls_client_ca: an agent without a client certificate, one from another CA",
        "refused 4010 / the TLS handshake fails; a console without one and an agent with the right one work"),
    "test_an_agent_bound_to_its_client_certificate_refuses_its_stolen_token_with_another": (
        "bind_client_certificates: an agent's stolen token shown with another certificate of the same CA",
        "refused 4010 (bound to another certificate); the agent with its own certificate keeps working"),
    "test_agents_enrolled_before_the_binding_are_bound_at_their_next_login": (
        "bind_client_certificates turned on for agents enrolled without it",
        "bound to the certificate of their first login after it; another certificate refused 4010"),
    "test_tls_config_errors_exit_2_with_the_file_named": (
        "TLS config errors: cert without key, missing or bad files", "tetherd exits 2 naming the file"),
}


@pytest.fixture(autouse=True)
def _report(request: pytest.FixtureRequest, fault_log: Callable[..., None]) -> None:
    fault, invariant = REPORT[request.node.originalname]
    fault_log("TLS", fault, 1, invariant)


def test_agent_enrolls_and_runs_a_task_over_wss_with_a_private_ca(
    wss: Tetherd, pki: PKI, tmp_path: Path, env: dict[str, str], agents: list[AgentProc]
) -> None:
    assert wss.url.startswith("wss://127.0.0.1:")
    assert wss.log is not None and "tls=on" in wss.log.text()
    agent = _agent("a", tmp_path, wss, env, agents)
    agent.enroll(extra=("--ca", pki.ca))
    agent.start()  # no TLS flags: run uses the CA stored at enrollment
    _run_task(wss, agent, "--ca", pki.ca)
    # tetherctl takes the CA from the environment too
    listed = subprocess.run([str(BIN / "tetherctl"), "agents", "--json"], capture_output=True, text=True, timeout=60,
                            env={**wss.env, "TETHER_URL": wss.url, "TETHER_TOKEN": wss.admin_token,
                                 "TETHER_CA": pki.ca})
    assert listed.returncode == 0, listed.stderr
    assert [a["agent_id"] for a in json.loads(listed.stdout)] == [agent.agent_id]


def test_clients_that_do_not_trust_the_ca_fail_with_a_clear_message(
    wss: Tetherd, pki: PKI, tmp_path: Path, env: dict[str, str], agents: list[AgentProc]
) -> None:
    ctl = _ctl(wss, "agents")
    assert ctl.returncode == 3
    assert "the daemon's certificate was not accepted (unable to get local issuer certificate)" in ctl.stderr
    assert "--ca FILE" in ctl.stderr and "Traceback" not in ctl.stderr

    stranger = _agent("stranger", tmp_path, wss, env, agents)
    refused = stranger.enroll(check=False)  # the system's store: knows nothing of the test CA
    assert refused.returncode == 1
    assert f"error: cannot reach {wss.url}" in refused.stderr and "trust that CA with --ca FILE" in refused.stderr
    assert "Traceback" not in refused.stderr

    missing = stranger.enroll(check=False, extra=("--ca", str(tmp_path / "nope.pem")))
    assert missing.returncode == 1
    assert f"error: CA file (--ca) {tmp_path / 'nope.pem'}: cannot read it: No such file or directory" in missing.stderr

    # An enrolled agent that is later given the wrong CA keeps retrying, saying why.
    agent = _agent("a", tmp_path, wss, env, agents)
    agent.enroll(extra=("--ca", pki.ca))
    agent.start("--ca", pki.other_ca, "--backoff-base", "0.05", "--backoff-cap", "0.2", wait=False)
    assert agent.log is not None
    agent.log.wait_for(r"event=connect_failed .*certificate verify failed.*hint=.*trust that CA with --ca FILE")
    again = agent.log.mark()
    agent.log.wait_for(r"event=connect_failed", start=again)
    assert agent.proc is not None and agent.proc.poll() is None
    assert agent.kill(signal.SIGTERM) == 0


# -- client certificates for agents ------------------------------------------------------------


def test_agents_must_show_a_client_certificate_signed_by_the_client_ca(
    mtls: Tetherd, pki: PKI, tmp_path: Path, env: dict[str, str], agents: list[AgentProc]
) -> None:
    assert mtls.log is not None and "tls=on_agent_client_certs" in mtls.log.text()
    # No client certificate: refused by the daemon with 4010, saying what is missing.
    bare = _agent("bare", tmp_path, mtls, env, agents)
    refused = bare.enroll(check=False, extra=("--ca", pki.ca))
    assert refused.returncode == 1
    assert "enrollment refused: unauthorized (4010)" in refused.stderr
    assert "requires agents to present a client certificate" in refused.stderr

    # A certificate from another CA: the TLS handshake fails.
    stranger = _agent("stranger", tmp_path, mtls, env, agents)
    failed = stranger.enroll(check=False, extra=("--ca", pki.ca, "--cert", pki.stranger_cert,
                                                  "--cert-key", pki.stranger_key))
    assert failed.returncode == 1 and f"error: cannot reach {mtls.url}" in failed.stderr
    assert "enrollment refused" not in failed.stderr  # never got as far as the enroll frame

    # The right certificate: enroll, run, and a task done.
    agent = _agent("a", tmp_path, mtls, env, agents)
    agent.enroll(extra=("--ca", pki.ca, "--cert", pki.agent_cert, "--cert-key", pki.agent_key))
    agent.start()
    _run_task(mtls, agent, "--ca", pki.ca)  # a console needs no certificate

    # Only that agent was let in (enrollments refused before the key was looked at).
    listed = _ctl(mtls, "--ca", pki.ca, "agents", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [a["agent_id"] for a in json.loads(listed.stdout)] == [agent.agent_id]

    # The agent session's hello is held to the same rule: the enrolled agent's own
    # credentials, over a connection without a client certificate, are refused.
    with Journal.in_state_dir(agent.state_dir) as journal:
        identity = journal.identity()
    assert identity is not None and identity.tls.cert == pki.agent_cert
    code, frame = asyncio.run(_hello_without_certificate(mtls.url, pki.ca, identity.agent_id, identity.token))
    assert code == ErrorCode.UNAUTHORIZED
    assert isinstance(frame, Error) and frame.code == ErrorCode.UNAUTHORIZED
    assert "client certificate" in frame.message


def test_an_agent_bound_to_its_client_certificate_refuses_its_stolen_token_with_another(
    pki: PKI, tmp_path: Path, env: dict[str, str], agents: list[AgentProc]
) -> None:
    for mtls in _tetherd(tmp_path, env, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca,
                         bind_client_certificates=True):
        agent = _agent("a", tmp_path, mtls, env, agents)
        agent.enroll(extra=("--ca", pki.ca, "--cert", pki.agent_cert, "--cert-key", pki.agent_key))
        agent.start()
        identity = agent.identity()
        # A thief with the agent's id and token, and a certificate of the same CA: refused.
        code, frame = asyncio.run(_hello_with(mtls.url, pki, identity["agent_id"], identity["token"],
                                              pki.thief_cert, pki.thief_key))
        assert code == ErrorCode.UNAUTHORIZED and isinstance(frame, Error)
        assert "bound to another client certificate" in frame.message
        _run_task(mtls, agent, "--ca", pki.ca)  # the agent itself is not disturbed
        # A renewed certificate: enrolling again (proved by the token) binds the agent to it.
        agent.kill(signal.SIGTERM)
        agent.enroll(extra=("--ca", pki.ca, "--cert", pki.thief_cert, "--cert-key", pki.thief_key))
        assert agent.identity() == identity  # the same agent
        code, frame = asyncio.run(_hello_with(mtls.url, pki, identity["agent_id"], identity["token"],
                                              pki.agent_cert, pki.agent_key))
        assert code == ErrorCode.UNAUTHORIZED  # the old certificate no longer
        agent.start()
        _, created = mtls.ctl("--ca", pki.ca, "task", "record --n 2", "--agent", agent.agent_id)
        assert mtls.ctl("--ca", pki.ca, "wait", str(created["task_id"]), "--timeout", "30")[0] == 0


def test_agents_enrolled_before_the_binding_are_bound_at_their_next_login(
    pki: PKI, tmp_path: Path, env: dict[str, str], agents: list[AgentProc]
) -> None:
    tls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca}
    before = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, **tls})
    before.start()
    agent = _agent("a", tmp_path, before, env, agents)
    agent.enroll(extra=("--ca", pki.ca, "--cert", pki.agent_cert, "--cert-key", pki.agent_key))
    before.kill(signal.SIGTERM)
    bound = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, **tls, "bind_client_certificates": True})
    bound.admin_token, bound.enroll_key = before.admin_token, before.enroll_key  # printed at the first start only
    bound.start()
    try:
        identity = agent.identity()
        agent.tetherd = bound
        agent.start("--server", bound.url)
        assert bound.log is not None
        bound.log.wait_for(rf"event=agent_certificate_bound agent_id={identity['agent_id']}")
        code, frame = asyncio.run(_hello_with(bound.url, pki, identity["agent_id"], identity["token"],
                                              pki.thief_cert, pki.thief_key))
        assert code == ErrorCode.UNAUTHORIZED and isinstance(frame, Error)
        assert "bound to another client certificate" in frame.message
        _run_task(bound, agent, "--ca", pki.ca)
    finally:
        bound.kill(signal.SIGKILL)


async def _hello_with(url: str, pki: PKI, agent_id: str, token: str, cert: str, key: str) -> tuple[int | None, object]:
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(cert, key)
    async with connect(url, ssl=context) as ws:
        await ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, token=token, agent_id=agent_id)))
        frame = decode_from_daemon(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return ws.close_code, frame


async def _hello_without_certificate(url: str, ca: str, agent_id: str, token: str) -> tuple[int | None, object]:
    context = ssl.create_default_context(cafile=ca)
    async with connect(url, ssl=context) as ws:
        await ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, token=token, agent_id=agent_id,
                                           hostname="h", platform="p")))
        frame = decode_from_daemon(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return ws.close_code, frame


# -- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "CERT"}, "tls_cert is set but tls_key is not in"),
        ({"tls_cert": "CERT", "tls_key": "MISSING"}, "tls_key MISSING: cannot read it: No such file or directory"),
        ({"tls_cert": "CERT", "tls_key": "KEY", "tls_client_ca": "KEY"},
         "tls_client_ca KEY does not hold PEM CA certificates"),
    ],
    ids=["cert-without-key", "missing-key-file", "client-ca-not-a-certificate"],
)
def test_tls_config_errors_exit_2_with_the_file_named(
    settings: dict[str, str], message: str, pki: PKI, tmp_path: Path, env: dict[str, str]
) -> None:
    files = {"CERT": pki.server_cert, "KEY": pki.server_key, "MISSING": str(tmp_path / "absent.key")}
    config = tmp_path / "tetherd.toml"
    config.write_text("".join(f"{k} = {json.dumps(files[v])}\n" for k, v in settings.items()))
    data = tmp_path / "data"
    proc = subprocess.run([str(BIN / "tetherd"), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                           "--config", str(config)], capture_output=True, text=True, env=env, timeout=60)
    for name, path in files.items():
        message = message.replace(name, path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("tetherd: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not data.exists()  # failed before the data directory (and its first admin token) was made
