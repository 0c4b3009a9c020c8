"""tetherd configuration: one TOML file parsed into a frozen Struct.

Every setting has a default, so ``tetherd serve`` runs with no file at all. Unknown keys
are refused by name, with a suggestion, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from ..protocol.alerts import DEFAULT_CHECKSUM, check_checksum_fields
from ..protocol.frames import DEFAULT_WINDOW, MAX_IDS


class ConfigError(Exception):
    pass


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8765"
    """HOST:PORT for agents, consoles and the HTTP endpoints (/healthz, /metrics). Port 0 picks one."""
    data_dir: str = "./tether-data"
    """Holds tether.sqlite (the whole state) and tetherd.toml."""
    window: int = DEFAULT_WINDOW
    """Unacknowledged deliveries kept in flight per agent session (32 by measurement:
    docs/performance.md, "window 32")."""
    handshake_timeout: float = 10.0
    """Seconds a new connection has to complete the WebSocket handshake and send hello."""
    max_frame_bytes: int = 1_048_576
    """Larger frames close the session with 1009 (message too big)."""
    ping_interval: float = 20.0
    """WebSocket keepalive pings; a peer that does not answer within ping_timeout is dropped."""
    ping_timeout: float = 20.0
    synchronous: Literal["normal", "full"] = "full"
    """SQLite durability: "full" survives power loss; "normal" (WAL) survives a crash of tetherd."""
    max_batch: int = 4096
    """Most store operations committed in one group commit."""
    min_interval: float = 10.0
    """Seconds: the shortest wait between a polling command's runs (XSOAR's 10 s floor; a
    shorter one asked for is raised to it) and the shortest recurring-schedule period."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Re-read on SIGHUP."""

    # -- TLS (DESIGN "Security"; README "TLS"): read at start, a change takes a restart --
    tls_cert: str = ""
    """PEM certificate chain (the server's certificate first) to serve wss:// with; "" (the
    default) serves plain ws://. Needs tls_key."""
    tls_key: str = ""
    """PEM private key of tls_cert, without a passphrase."""
    tls_client_ca: str = ""
    """PEM CA certificates: when set, agents must present a client certificate signed by one
    of them (consoles still log in with a token and no certificate)."""
    bind_client_certificates: bool = False
    """With tls_client_ca: an agent is bound to the client certificate it enrolled with (its
    SHA-256 is kept; agents enrolled before are bound at their next login) and its sessions
    must show that one; enrolling again, with its token, binds it to a new certificate."""

    # -- HTTP side (issue 15, finding 12) ------------------------------------------------
    allowed_origins: tuple[str, ...] = ()
    """Browser origins (``https://console.example``) whose WebSocket upgrades are accepted.
    Clients that send no Origin header (agents, tetherctl) always are; a web page from any
    other origin is refused (403), so a page a user visits cannot reach tetherd through
    their browser."""
    metrics_token: str = ""
    """When set, ``GET /metrics`` needs ``Authorization: Bearer <metrics_token>`` (401
    otherwise); ``/healthz`` stays open."""

    # -- limits (issue 6: hostile peers, storage faults) ----------------------------------
    max_sessions_per_address: int = 256
    """Open connections allowed from one IP address; more are refused with 4029 and a
    retry_after. 0 turns the limit off. Agents behind one NAT share an address: raise it."""
    max_connections: int = 0
    """Connections open at once, from every address, counted from TCP accept; past it a new
    one is closed at once. 0: derived from tetherd's fd limit (which it raises to the hard
    limit at start), keeping a tenth of it, and at least 100, for itself."""
    session_limit_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Networks the per-address limit does not apply to: a TLS-terminating proxy on the same
    host makes every connection come from loopback."""
    login_throttle_exempt: tuple[str, ...] = ()
    """Networks whose failed logins and enrollments are not throttled. Behind a proxy on the
    same host every client has the proxy's address: one guesser would slow everyone's
    logins, so exempt the proxy (and throttle at it) there."""
    max_frames_per_second: float = 50_000.0
    """Frames one session may send per second, on average (each frame inside a batch
    counts). Past the burst, tetherd stops reading that session until its budget refills,
    tells it once with error 1429 and a retry_after, and loses none of its frames."""
    frame_burst: int = 50_000
    """Frames a session may send at once above the average rate."""
    bad_frame_cost: int = 100
    """A frame answered with an error (malformed, unknown, forbidden ...) counts as this
    many: a peer sending garbage is slowed long before a well-behaved one."""
    max_requests_in_flight: int = 256
    """Console requests one session may have unanswered; tetherd reads no more until one ends."""
    max_database_mb: int = 0
    """Cap on the database file, in MiB (0: none but the disk). When it is reached, new work
    is refused with 1503 while reads and sessions go on; raise it and send SIGHUP."""


    # -- alerts (issue 19 item 6) ---------------------------------------------------------
    alert_checksum: tuple[str, ...] = DEFAULT_CHECKSUM
    """The fields two alerts must share to be one (of agent, kind, name, path, hash,
    severity, message). Read at start: a change applies to alerts received after a restart."""
    alerts_per_minute: float = 60.0
    """Alerts one agent may have stored per minute, on average; past its burst, the rest are
    counted (``tetherctl alerts`` shows how many), not stored."""
    alert_burst: int = 120
    """Alerts one agent may have stored at once above that rate."""

    # -- automation hooks (issue 20; README "Automation hooks") ------------------------------
    smtp_host: str = ""
    """The SMTP server email hooks send through ("": email hooks fail, saying so)."""
    smtp_port: int = 587
    smtp_security: Literal["starttls", "tls"] = "starttls"
    """"starttls" (usually port 587) or "tls" (implicit TLS, usually port 465); never plain text."""
    smtp_username: str = ""
    """Log in with smtp_username and smtp_password ("": no login). Neither is ever logged."""
    smtp_password: str = ""
    smtp_from: str = ""
    """The From address ("": tetherd@HOSTNAME)."""
    smtp_ca: str = ""
    """A PEM CA file to trust for the SMTP server's certificate ("": the system's CAs)."""
    hook_concurrency: int = 4
    """Runs of one hook at once: a slow target never holds up the other hooks."""
    hook_outbox_max: int = 100_000
    """After-hook runs kept waiting at most; past it new ones are dropped and counted (logged
    and in /metrics), and a backlog past a tenth of it is logged."""
    hook_retry_for: float = 86_400.0
    """Seconds an after-hook run is retried (with backoff) before it is given up (recorded)."""

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def database(self) -> Path:
        return Path(self.data_dir) / "tether.sqlite"


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen must be HOST:PORT (e.g. 127.0.0.1:8765), not {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


FIELDS = Config.__struct_fields__


def from_mapping(data: dict[str, Any], source: str = "tetherd.toml") -> Config:
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = re.search(r"unknown field `([^`]+)`", text)
        if unknown:
            key = unknown.group(1)
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else f" (known keys: {', '.join(FIELDS)})"
            raise ConfigError(f"unknown key `{key}` in {source}{hint}") from None
        raise ConfigError(f"invalid value in {source}: {text}") from None
    split_listen(config.listen)
    if not 1 <= config.window <= MAX_IDS:
        raise ConfigError(f"window must be at least 1 and at most {MAX_IDS} (what one ack may name) in {source}")
    if not 0 < config.min_interval <= 86_400:
        raise ConfigError(f"min_interval must be more than 0 and at most 86400 seconds in {source}")
    _check_limits(config, source)
    for origin in config.allowed_origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(f"allowed_origins: {origin!r} is not an origin (scheme://host[:port], e.g. "
                              f"\"https://console.example\", no path) in {source}")
    _check_tls(config, source)
    try:
        check_checksum_fields(list(config.alert_checksum))
    except ValueError as exc:
        raise ConfigError(f"{exc} in {source}") from None
    if not 0 < config.alerts_per_minute < float("inf") or config.alert_burst < 1:
        raise ConfigError(f"alerts_per_minute must be a positive number and alert_burst at least 1 in {source}")
    if config.hook_concurrency < 1 or config.hook_outbox_max < 1 or not config.hook_retry_for > 0:
        raise ConfigError(f"hook_concurrency and hook_outbox_max must be at least 1, hook_retry_for more than 0, "
                          f"in {source}")
    return config


def _check_tls(config: Config, source: str) -> None:
    """The settings fit together; the files themselves are read by ``tls.server_context``."""
    if bool(config.tls_cert) != bool(config.tls_key):
        given, missing = ("tls_cert", "tls_key") if config.tls_cert else ("tls_key", "tls_cert")
        raise ConfigError(f"{given} is set but {missing} is not in {source}: TLS needs both the "
                          "certificate chain and its private key")
    if config.bind_client_certificates and not config.tls_client_ca:
        raise ConfigError(f"bind_client_certificates is set but tls_client_ca is not in {source}: agents are "
                          "bound to the client certificates tls_client_ca asks them for")
    if config.tls_client_ca and not config.tls_cert:
        raise ConfigError(f"tls_client_ca is set but tls_cert and tls_key are not in {source}: "
                          "client certificates are part of TLS, so tetherd must serve wss:// first")

def _check_limits(config: Config, source: str) -> None:
    for name in ("max_sessions_per_address", "max_database_mb", "max_connections"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must be 0 (no limit) or more in {source}")
    for name in ("frame_burst", "bad_frame_cost", "max_requests_in_flight"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1 in {source}")
    if not config.max_frames_per_second > 0 or config.max_frames_per_second == float("inf"):
        raise ConfigError(f"max_frames_per_second must be a positive number in {source}")
    for name in ("session_limit_exempt", "login_throttle_exempt"):
        for network in getattr(config, name):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{name}: {network!r} is not a network (e.g. \"10.0.0.0/8\") in {source}") from None


def exempt_networks(config: Config) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in config.session_limit_exempt]


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_mapping(data, source)


def default_file_text() -> str:
    """The config file ``tetherd init`` writes: every key, commented out, with its default."""
    lines = ["# tetherd configuration. Every key is optional; the value shown is the default.", ""]
    defaults = Config()
    for name in FIELDS:
        value = getattr(defaults, name)
        lines.append(f"# {name} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
