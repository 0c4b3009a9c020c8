"""``tetherd``: run and administer the daemon.

    tetherd serve    run the daemon (initialises the data directory on first run)
    tetherd init     create the data directory, database and config; print credentials
    tetherd migrate  show (default) or apply (--no-dry-run) pending schema migrations
    tetherd key      enrollment keys for agents
    tetherd token    admin tokens for tetherctl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sqlite3
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from tether.protocol.logfmt import LogfmtFormatter

from .. import __version__
from ..protocol import flags
from ..protocol.errors import ProtocolError
from ..protocol.methods import Method, parse_params
from . import config as config_mod
from . import datadir, housekeeping
from .config import Config, ConfigError

EPILOG = """\
files:
  DATA_DIR/tether.sqlite  all state (SQLite, WAL: also tether.sqlite-wal and -shm)
  DATA_DIR/tetherd.toml   the optional config (every key has a default; written, commented out, at first start)
  DATA_DIR/tetherd.lock   held by the one tetherd serving DATA_DIR

environment:
  TETHER_DATA_DIR  default for --data-dir (else ./tether-data, from the current directory)

exit codes:
  0  ok (serve: stopped by SIGTERM or SIGINT)
  1  the database cannot be used (not tether's, newer than this tetherd, a failed migration),
     or init of a directory already initialised
  2  bad input: an option, the config, a TLS file, a data directory that cannot be used or is
     in use, an address tetherd cannot listen on
"""


def _setup_logging(level: str, json_lines: bool = False) -> None:
    """One line per event on stderr, values quoted (tether.protocol.logfmt): logfmt, or with
    ``--json`` a JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(json_lines=json_lines))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("tether.websockets").setLevel(logging.WARNING)


def _data_dir(args: argparse.Namespace) -> str:
    return args.data_dir or os.environ.get("TETHER_DATA_DIR") or Config().data_dir


def _config(args: argparse.Namespace) -> Config:
    data_dir = _data_dir(args)
    path = Path(args.config) if getattr(args, "config", None) else None
    if path is None and (Path(data_dir) / "tetherd.toml").exists():
        path = Path(data_dir) / "tetherd.toml"
    overrides: dict[str, Any] = {"listen": getattr(args, "listen", None)}
    if args.data_dir or os.environ.get("TETHER_DATA_DIR") or path is None:
        overrides["data_dir"] = data_dir
    config = config_mod.load(path, overrides)
    return msgspec.structs.replace(config, data_dir=os.path.abspath(config.data_dir))


def _url(config: Config) -> str:
    host = config.host
    scheme = "wss" if config.tls_cert else "ws"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{config.port}"


def _write_default_config(config: Config) -> None:
    path = Path(config.data_dir) / "tetherd.toml"
    if not path.exists():
        path.write_text(config_mod.default_file_text())


async def _open_store(config: Config) -> Any:
    from .store.sqlite import SQLiteStore

    store = SQLiteStore(config.database, synchronous=config.synchronous, max_batch=config.max_batch,
                        max_database_mb=config.max_database_mb)
    await store.open()
    return store


def _credentials_text(creds: dict[str, str], as_json: bool) -> str:
    if as_json:
        return json.dumps(creds)
    return (
        f"tetherd initialised {creds['data_dir']}\n"
        f"  admin token:    {creds['admin_token']}\n"
        f"  enrollment key: {creds['enroll_key']}\n"
        f"  url:            {creds['url']}\n"
        "Keep the admin token: it is shown only this once (tetherd stores a hash).\n"
        "Revoke the enrollment key once your agents are enrolled (tetherctl key list, tetherctl key revoke ID).\n"
        "  export TETHER_URL={url} TETHER_TOKEN={token}".format(url=creds["url"], token=creds["admin_token"])
    )


def _print_credentials(creds: dict[str, str], as_json: bool) -> None:
    print(_credentials_text(creds, as_json), flush=True)


def stdout_is_the_journal() -> bool:
    """Whether stdout goes to systemd's journal: systemd sets ``JOURNAL_STREAM`` to the
    device and inode of the stream it connected (systemd.exec(5)), so a redirected stdout
    (a terminal, a pipe, a file) does not count."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return bool(stream) and stream == f"{st.st_dev}:{st.st_ino}"


def _hand_over_credentials(creds: dict[str, str], as_json: bool, log: logging.Logger) -> None:
    """Show the first start's credentials once. Under systemd they would land in the journal,
    which every member of systemd-journal (adm) can read for weeks: they go to a 0600 file
    in the data directory instead, and the log says where."""
    if not stdout_is_the_journal():
        _print_credentials(creds, as_json)
        return
    path = Path(creds["data_dir"]) / datadir.CREDENTIALS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(_credentials_text(creds, as_json) + "\n")
    log.warning("event=credentials_written path=%s note=%s", path,
                "the first admin token and enrollment key (not logged): read it, then delete it")


def _bootstrap_bounds(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """The first enrollment key's bounds from ``--key-uses`` / ``--key-expires-in``."""
    expires_in = getattr(args, "key_expires_in", None)
    return {"key_uses": getattr(args, "key_uses", None),
            "key_expires_at": None if expires_in is None else now + expires_in}


async def _init(config: Config, bounds: dict[str, Any]) -> dict[str, str] | None:
    store = await _open_store(config)
    try:
        first = (await store.bootstrap(time.time(), **bounds)).result
    finally:
        await store.close()
    _write_default_config(config)
    if first is None:
        return None
    return {"admin_token": first[0], "enroll_key": first[1], "url": _url(config), "data_dir": config.data_dir}


# -- commands ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    config = _config(args)
    data_lock = datadir.lock(datadir.prepare(Path(config.data_dir)), "init")
    try:
        creds = asyncio.run(_init(config, _bootstrap_bounds(args, time.time())))
    finally:
        if data_lock is not None:
            data_lock.close()
    if creds is None:
        print(f"tetherd: {config.data_dir} is already initialised; its credentials were shown then.\n"
              "Make new ones with `tetherd token create` and `tetherd key create`.", file=sys.stderr)
        return 1
    _print_credentials(creds, args.json)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    _setup_logging(config.log_level, args.json)
    try:
        import uvloop
    except ImportError:  # Windows, or a platform without uvloop: plain asyncio
        return asyncio.run(_serve(config, args.json, lambda: _config(args), _bootstrap_bounds(args, time.time())))
    return uvloop.run(_serve(config, args.json, lambda: _config(args), _bootstrap_bounds(args, time.time())))


RELOADABLE = ("max_database_mb", "log_level")
"""Settings SIGHUP applies to a running tetherd; the others take a restart."""


async def _reload(store: Any, config: Config, read: Callable[[], Config], log: logging.Logger) -> Config:
    """SIGHUP: read the config file again and apply what can change while running."""
    try:
        new = read()
    except ConfigError as exc:
        log.error("event=reload_failed error=%s kept=running_settings", str(exc))
        return config
    if new.max_database_mb != config.max_database_mb:
        pages = await store.set_max_database_mb(new.max_database_mb)
        log.info("event=reloaded setting=max_database_mb value=%d max_pages=%d", new.max_database_mb, pages)
    if new.log_level != config.log_level:
        logging.getLogger().setLevel(getattr(logging, new.log_level.upper()))
        log.info("event=reloaded setting=log_level value=%s", new.log_level)
    ignored = [name for name in config_mod.FIELDS if name not in RELOADABLE
               and getattr(new, name) != getattr(config, name)]
    if ignored:
        log.warning("event=reload_needs_restart settings=%s", ",".join(ignored))
    return msgspec.structs.replace(config, **{name: getattr(new, name) for name in RELOADABLE})


async def _serve(config: Config, as_json: bool, read_config: Callable[[], Config] | None = None,
                 bounds: dict[str, Any] | None = None) -> int:
    from .tls import server_context

    log = logging.getLogger("tether.daemon")
    tls = server_context(config)  # a bad certificate file fails here, before the data directory is touched
    data_lock = datadir.lock(datadir.prepare(Path(config.data_dir)), "serve")
    try:
        return await _serve_locked(config, as_json, read_config, tls, log, bounds or {})
    finally:
        if data_lock is not None:
            data_lock.close()


async def _serve_locked(config: Config, as_json: bool, read_config: Callable[[], Config] | None,
                        tls: Any, log: logging.Logger, bounds: dict[str, Any]) -> int:
    import anyio

    from .clock import SystemClock
    from .hook_actions import Smtp
    from .hooks import Hooks
    from .notify import notify, watchdog, watchdog_interval
    from .operations import Operations
    from .server import Daemon

    store = await _open_store(config)
    operations = Operations(store, SystemClock())
    operations.configure_alerts(config.alert_checksum, config.alerts_per_minute, config.alert_burst)
    hooks = Hooks(operations, scripts=Path(config.data_dir) / "scripts", smtp=Smtp(
        config.smtp_host, config.smtp_port, config.smtp_security, config.smtp_username, config.smtp_password,
        config.smtp_from, config.smtp_ca), concurrency=config.hook_concurrency, outbox_max=config.hook_outbox_max,
        retry_for=config.hook_retry_for)
    await hooks.load()
    for name, missed in await operations.load():
        log.info("event=schedule_missed name=%s firings=%d", name, missed)
    housekeeping.tune()
    open_files = _raise_open_files()
    daemon = Daemon(config, operations, open_files=open_files)
    try:
        await daemon.start(tls)
    except OSError as exc:
        await store.close()
        print(f"tetherd: {_cannot_listen(config.listen, exc)}", file=sys.stderr)
        return 2
    # Credentials are made only once tetherd listens: a first start that cannot bind
    # leaves none unshown behind it (the next start makes and prints them).
    first = (await store.bootstrap(operations.clock.time(), **bounds)).result
    if first is not None:
        _write_default_config(config)
        _hand_over_credentials(
            {"admin_token": first[0], "enroll_key": first[1], "url": daemon.url, "data_dir": config.data_dir},
            as_json, log,
        )
    async with anyio.create_task_group() as tg:
        tg.start_soon(operations.timers.run, operations.fire)
        tg.start_soon(hooks.run)
        tg.start_soon(housekeeping.collect_closed, operations.stats, operations.clock)
        interval = watchdog_interval()
        if interval:
            tg.start_soon(watchdog, interval)
        hup = getattr(signal, "SIGHUP", None)  # not on Windows
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, *([hup] if hup else [])) as signals:
            # Said once SIGTERM drains: a stop right after READY still drains.
            log.info("event=listening url=%s data_dir=%s version=%s window=%d tls=%s max_connections=%s "
                     "open_files=%s per_address=%d", daemon.url, config.data_dir, __version__, config.window,
                     _tls_summary(config), daemon.limits.total_limit or "none", open_files or "unknown",
                     config.max_sessions_per_address)
            notify("READY=1")
            async for signum in signals:
                if signum == hup:
                    if read_config is not None:
                        config = await _reload(store, config, read_config, log)
                    continue
                log.info("event=draining signal=%s", signal.Signals(signum).name)
                break
        notify("STOPPING=1")
        await daemon.drain()
        tg.cancel_scope.cancel()
    await store.close()
    log.info("event=stopped")
    return 0


def _raise_open_files() -> int:
    """Raise the soft limit on open files to the hard one (every connection is one), and
    return it; 0 where there is no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 0


def _cannot_listen(listen: str, exc: OSError) -> str:
    """Why tetherd cannot listen, and what to do about it."""
    import errno

    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {listen}: the address is already in use (another tetherd, or another "
                "program); stop it, or listen elsewhere with --listen HOST:PORT (or `listen` in tetherd.toml)")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {listen}: permission denied (ports below 1024 need privileges); "
                "use --listen HOST:PORT with a port of 1024 or more")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {listen}: no such address on this host; check --listen HOST:PORT"
    return f"cannot listen on {listen}: {exc.strerror or exc}"


def _tls_summary(config: Config) -> str:
    if not config.tls_cert:
        return "off"
    return "on_agent_client_certs" if config.tls_client_ca else "on"


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _config(args)
    data_dir = datadir.prepare(Path(config.data_dir), create=not args.dry_run)
    data_lock = None if args.dry_run else datadir.lock(data_dir, "migrate")
    try:
        report: dict[str, Any] = {"database": str(config.database), "dry_run": args.dry_run, "pending": [],
                                  "applied": False}
        code = _migrate(config.database, args.dry_run, report, (lambda line: None) if args.json else print)
        if args.json and code == 0:
            print(json.dumps(report))
        return code
    finally:
        if data_lock is not None:
            data_lock.close()


def _migrate(path: Path, dry_run: bool, report: dict[str, Any], say: Callable[[str], None]) -> int:
    """Show or apply the pending migrations; ``report`` gets what ``--json`` prints."""
    from .store import StoreError
    from .store.schema import LATEST, apply_migrations, open_checked, pending_migrations

    report["schema_version"] = LATEST
    report["existed"] = True
    if not path.exists():
        verb = "would create" if dry_run else "creating"
        say(f"no database at {path}; {verb} it at schema version {LATEST}")
        report["existed"] = False
        if dry_run:
            return 0
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        conn = open_checked(path)
    except StoreError as exc:
        print(f"tetherd: {exc}", file=sys.stderr)
        return 1
    try:
        pending = pending_migrations(conn)
        report["pending"] = [{"version": version, "what": what} for version, what in pending]
        if not pending:
            say(f"{path} is up to date (schema version {LATEST})")
            return 0
        for version, what in pending:
            say(f"{'would apply' if dry_run else 'applying'} migration {version}: {what}")
        if dry_run:
            say("dry run: nothing changed. Apply with: tetherd migrate --no-dry-run")
        else:
            apply_migrations(conn)
            report["applied"] = True
            say(f"{path} is now at schema version {LATEST}")
    except (StoreError, sqlite3.Error) as exc:
        print(f"tetherd: migration failed, database unchanged: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


def _with_store(config: Config, use: Callable[[Any], Awaitable[Any]]) -> Any:
    """Open the store (alongside a running tetherd: SQLite WAL allows it), use it, close it."""
    datadir.prepare(Path(config.data_dir))

    async def run() -> Any:
        store = await _open_store(config)
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_create(args: argparse.Namespace) -> int:
    """``tetherd key create`` / ``tetherd token create``: the request ``tetherctl key|token
    create`` sends (the same flags: :data:`tether.protocol.flags.CREDENTIALS`), served on the
    data directory directly (also while tetherd runs) by the daemon's own handler: the same
    checks, the same operation, the same record and the same output."""
    credential = flags.CREDENTIALS[args.command]
    params = credential.params(args)
    parse_params(credential.method.name, params)  # refused before the data directory is touched
    view = _with_store(_config(args), lambda store: _request_offline(store, credential.method, params))
    if args.json:
        print(json.dumps(msgspec.to_builtins(view)))
    else:
        print(getattr(view, credential.secret))
        print(credential.created(getattr(view, credential.secret + "_id")), file=sys.stderr)
    return 0


async def _request_offline(store: Any, method: Method, params: dict[str, Any]) -> Any:
    """Serve one console request on ``store`` as a running tetherd would (an admin's, its
    events dropped): no daemon runs, so its operation's effects reach only the store."""
    from .clock import SystemClock
    from .operations import Operations
    from .rpc import ConsoleRPC

    async def no_events(topic: str, data: Any) -> None:
        pass

    return await ConsoleRPC(Operations(store, SystemClock())).call(method.name, params, no_events)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tetherd", description="tether daemon: reliable tasking for fleets of agents.",
        epilog=EPILOG, formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"tetherd {__version__}")
    parser.add_argument("--json", action="store_true", help="print JSON (serve: log JSON lines); also after COMMAND")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: Any, name: str, summary: str, description: str, *examples: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=summary, description=textwrap.fill(description, 88), epilog=flags.examples(*examples),
            formatter_class=formatter)
        p.add_argument("--data-dir", metavar="D",
                       help="data directory (default: $TETHER_DATA_DIR, else ./tether-data from the current directory)")
        p.add_argument("--config", metavar="FILE", help="config file (default: DATA_DIR/tetherd.toml if present)")
        # SUPPRESS: `tetherd --json init` and `tetherd init --json` both work.
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        return p

    def first_key(p: argparse.ArgumentParser) -> None:
        p.add_argument("--key-uses", type=flags.positive_int, metavar="N",
                       help="the first enrollment key enrolls at most N agents (default: unlimited)")
        p.add_argument("--key-expires-in", type=flags.duration, metavar="DURATION",
                       help=f"the first enrollment key expires after DURATION: {flags.DURATION} (default: never)")

    p = command(sub, "serve", "run the daemon",
                "Run tetherd in the foreground. On first run it creates the data directory and prints an admin "
                "token and an enrollment key (--key-uses / --key-expires-in bound that key; they are used only by "
                "the start that creates it). SIGTERM drains: stop accepting, flush the store, close sessions "
                "(1001). With --json, the credentials are one JSON line and the log is JSON lines.",
                "tetherd serve                                   # ./tether-data, 127.0.0.1:8765",
                "tetherd serve --data-dir /var/lib/tether --listen 0.0.0.0:8765 --key-uses 20")
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8765; port 0 picks one)")
    first_key(p)
    p.set_defaults(func=cmd_serve)

    p = command(sub, "init", "create the data directory and print credentials",
                "Create DATA_DIR, the SQLite database and a commented tetherd.toml, and print the first admin token "
                "and enrollment key. JSON: {\"admin_token\", \"enroll_key\", \"url\", \"data_dir\"}.",
                "tetherd init --data-dir /var/lib/tether",
                "tetherd init --key-uses 10 --key-expires-in 7d --json")
    p.add_argument("--listen", metavar="HOST:PORT", help="address the printed url names")
    first_key(p)
    p.set_defaults(func=cmd_init)

    p = command(sub, "migrate", "show or apply schema migrations",
                "Show the schema migrations the database needs (--dry-run, the default) or apply them "
                "(--no-dry-run, which takes the data directory's lock: stop tetherd first).",
                "tetherd migrate --data-dir /var/lib/tether                # what would change",
                "tetherd migrate --data-dir /var/lib/tether --no-dry-run   # apply it")
    p.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=True,
                   help="only show what would change (default); --no-dry-run applies")
    p.set_defaults(func=cmd_migrate)

    key = sub.add_parser("key", help="enrollment keys (create)").add_subparsers(
        dest="key_command", required=True, metavar="ACTION")
    p = command(key, "create", "make an enrollment key",
                "Make an enrollment key (AAAAA-AAAAA-AAAAA-AAAAA-AAAAA) in the data directory directly (also while "
                "tetherd runs); the same flags as `tetherctl key create`. It prints the key alone on stdout, once.",
                "tetherd key create --tag web --uses 50 --expires-in 7d",
                "sudo -u tether tetherd key create --data-dir /var/lib/tether")
    flags.CREDENTIALS["key"].add_flags(p)
    p.set_defaults(func=cmd_create)

    token = sub.add_parser("token", help="admin tokens for tetherctl (create)").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")
    p = command(token, "create", "make an admin token for tetherctl",
                "Make an admin token in the data directory directly (also while tetherd runs); the same flags and "
                "default role as `tetherctl token create`. It prints the token alone on stdout, once.",
                "tetherd token create --role admin --label alice",
                "sudo -u tether tetherd token create --data-dir /var/lib/tether --role admin")
    flags.CREDENTIALS["token"].add_flags(p)
    p.set_defaults(func=cmd_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # the database, its WAL, the config and the lock: this user's only
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, datadir.DataDirError) as exc:
        print(f"tetherd: {exc}", file=sys.stderr)
        return 2
    except ProtocolError as exc:  # bad input the shared checks refused (tether.protocol.console)
        print(f"tetherd: {exc.code.slug} ({int(exc.code)}): {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from .store import StoreError

        if isinstance(exc, StoreError):
            print(f"tetherd: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
