"""The supervisor of the whole daemon: builds actors and doors, handles signals, shuts down cleanly.

Shutdown order matters: stop accepting, let requests in flight finish, then
close the allocator (it drains into the ledger), then the ledger (it commits
everything it acknowledged or holds), then the rest, and remove the socket.
"""

import asyncio
import contextlib
import errno
import fcntl
import importlib.util
import logging
import os
import resource
import signal
import time
from pathlib import Path
from typing import Any, Callable

import anyio
from anyio.abc import TaskStatus

from actors.alerter import Alerter, WebhookSettings
from actors.allocator import AdmissionRules, Allocator
from actors.assistant import Assistant, AssistantSettings
from actors.bus import Bus
from actors.fleet import FleetSync
from actors.ledger import (
    BackupTo,
    Compact,
    ExpireKeys,
    FleetDatabaseError,
    Ledger,
    LedgerError,
    LedgerReader,
    PostgresReadStore,
    PostgresStore,
    SqliteReadStore,
    SqliteStore,
)

from actors.prices import GetPricesStatus, Prices, PricesSettings, Rules
from actors.runtime import Supervisor
from budgetd import debug, logs
from budgetd.clock import SYSTEM, Clock
from budgetd.config import Config, dsn_shown
from budgetd.durations import parse_duration
from budgetd.hermes import Hermes
from budgetd.pricing import TierRules, UnpricedPolicy
from budgetd.protocol import OpError
from budgetd.server.http import HttpDoor, HttpRefused, HttpServer, Token, parse_listen
from budgetd.server.ops import Ops
from budgetd.server.unix import SocketInUse, SocketServer, prepare_socket_path

log = logging.getLogger("budgetd")


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def tier_rules(config: Config) -> TierRules:
    t = config.tiers
    return TierRules(
        models=dict(t.models), providers=dict(t.providers),
        lightweight_below_per_mtok=t.lightweight_below_per_mtok,
        midweight_below_per_mtok=t.midweight_below_per_mtok,
    )


def http_tokens(config: Config) -> list[Token]:
    tokens = []
    for i, t in enumerate(config.http.tokens):
        secret = t.token or (os.environ.get(t.token_env) if t.token_env else None)
        if not secret:
            raise StartupError(f"http.tokens[{i}] has no token: set `token`, or `token_env` to a variable that is set")
        tokens.append(Token(secret, t.role, frozenset(t.components) if t.components is not None else None))
    return tokens


async def _expire_keys(ledger: Any, keep_s: float, clock: Clock) -> None:
    """Forget idempotency keys older than `keep_s`, a few times per `keep_s` (at most once a minute)."""
    while True:
        await anyio.sleep(min(60.0, max(0.5, keep_s / 4)))
        before = clock.now_us() - int(keep_s * 1_000_000)
        try:
            await ledger.ask(lambda reply: ExpireKeys(before=before, reply=reply), 30.0)
        except OpError:
            pass  # the ledger is busy or restarting: next round


async def _compact(ledger: Any, keep_s: float, clock: Clock) -> None:
    """At start, then every hour: records older than `keep_s` go; the rollups keep their sums."""
    while True:
        before = clock.now_us() - int(keep_s * 1_000_000)
        try:
            gone = await ledger.ask(lambda reply: Compact(before=before, reply=reply), 600.0)
            if gone:
                log.info("compacted %d records older than %s into the rollups", gone,
                         time.strftime("%Y-%m-%d %H:00 UTC", time.gmtime(before / 1e6)))
        except OpError:
            pass  # next round
        await anyio.sleep(3600)


async def _periodic_backups(reader: Any, directory: Path, every_s: float, keep: int, clock: Clock) -> None:
    """A verified backup into `directory` every `every_s`, keeping the newest `keep`."""
    while True:
        await anyio.sleep(every_s)
        dest = directory / f"ledger-{clock.now():%Y%m%d-%H%M%S}.db"
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            await reader.ask(lambda reply: BackupTo(path=str(dest), reply=reply), max(600.0, every_s))
        except (OpError, OSError) as exc:
            log.error("periodic backup to %s failed: %s", dest, getattr(exc, "message", exc))
            continue
        for old in sorted(directory.glob("ledger-*.db"))[:-keep]:
            old.unlink(missing_ok=True)
        log.info("backup written: %s", dest)


async def _flush_log_every(dedupe: logs.Deduplicate, every_s: float) -> None:
    while True:
        await anyio.sleep(every_s)
        dedupe.flush()


def lock_data_dir(data_dir: Path) -> Any:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = open(data_dir / "budgetd.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise StartupError(f"another budgetd is using the data directory {data_dir}; stop it or use --data-dir")
    return lock


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Daemon:
    def __init__(self, config: Config, clock: Clock = SYSTEM) -> None:
        self.config = config
        self.clock = clock
        self.socket_path = config.socket_path
        self.data_dir = config.data_path
        self._stop = anyio.Event()
        self.server: SocketServer | None = None
        self.ready = False  # every door listens
        self.dedupe: logs.Deduplicate | None = None  # the log's, summed up every few seconds
        self.failure: str | None = None  # why it stopped on its own, if it did

    def stop(self) -> None:
        self._stop.set()

    def _fail(self, why: str) -> None:
        """Stop, because going on could break a promise; `run` then answers why (the exit status is 1)."""
        log.error("stopping: %s", why)
        self.failure = why
        self.stop()

    def _stores(self, db_path: Path) -> tuple[Callable[[], Any], Callable[[], Any]]:
        """The ledger's writer and reader stores (made anew at each restart of their actor): the fleet's
        PostgreSQL database when `fleet.dsn` names one, else the SQLite file in the data directory."""
        config = self.config
        if config.fleet.dsn:
            dsn, node = config.fleet.dsn, config.node_name

            def lost(why: str) -> None:
                if self.ready:
                    self._fail(why)

            return (lambda: PostgresStore(dsn, config.report_zones, node, lost, db_path.with_name("spool.db"))), \
                (lambda: PostgresReadStore(dsn))
        return (lambda: SqliteStore(db_path, config.daemon.durability, config.report_zones,
                                    int(config.daemon.max_ledger_mb * 1024 * 1024))), \
            (lambda: SqliteReadStore(db_path))

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every actor and door, serve until `stop()`. A start-up failure raises StartupError."""
        debug.configure(self.config.log.debug)
        _raise_fd_limit()
        try:
            with contextlib.ExitStack() as held:
                held.enter_context(lock_data_dir(self.data_dir))
                held.enter_context(prepare_socket_path(self.socket_path))
                await self._run(task_status)
        except BaseException as exc:
            if self.ready:
                raise
            refusal = startup_refusal(_sole_cause(exc), self)
            if refusal is None:
                raise
            raise refusal from None

    async def _run(self, task_status: TaskStatus[None]) -> None:
        config, clock = self.config, self.clock
        tokens = http_tokens(config)
        listen = parse_listen(config.http.listen, tokens_configured=bool(tokens)) if config.http.listen else None
        tiers = tier_rules(config)
        pricing = config.pricing
        settings = PricesSettings(
            sources=list(pricing.sources), urls=dict(pricing.urls),
            rules=Rules(primary=pricing.primary, max_per_mtok=pricing.max_per_mtok,
                        max_unconfirmed_change=pricing.max_unconfirmed_change, tolerance=pricing.tolerance),
            refresh_interval_s=parse_duration(pricing.refresh_interval), aliases=dict(pricing.aliases),
            overrides=list(pricing.overrides),
            bundled_file=Path(pricing.bundled_file).expanduser() if pricing.bundled_file else None,
            fetch_timeout_s=parse_duration(pricing.fetch_timeout), max_feed_bytes=pricing.max_feed_bytes,
            retries=pricing.retries,
        )
        unpriced = UnpricedPolicy(
            config.pricing.unknown_model,
            config.pricing.fallback_per_mtok.input,
            config.pricing.fallback_per_mtok.output,
        )
        db_path = self.data_dir / "ledger.db"
        sup = Supervisor()
        bus = sup.ref("bus", 16_384)
        ledger = sup.ref("ledger", 16_384)
        reader = sup.ref("ledger-reader", 1024)
        prices = sup.ref("prices", 1024)
        allocator = sup.ref("allocator", 16_384)
        alerter = sup.ref("alerter", 16)
        assistant = sup.ref("assistant", 64)
        webhooks = [
            WebhookSettings(
                url=h.url, secret=h.secret or (os.environ.get(h.secret_env) if h.secret_env else None),
                kinds=frozenset(h.kinds) if h.kinds is not None else None, attempts=h.attempts,
                timeout_s=parse_duration(h.timeout),
            )
            for h in config.alerts.webhooks
        ]
        ops = Ops(config, sup.refs, str(self.socket_path), clock)
        self.server = server = SocketServer(
            self.socket_path, ops, config.daemon.socket_mode, config.daemon.max_frame_bytes,
            config.daemon.max_connections,
        )
        # Bound before any actor starts, so a busy port is refused at once.
        http = HttpServer(HttpDoor(ops, config.http.max_body_bytes, tokens).app, *listen) if listen else None
        timeout = config.daemon.ask_timeout_s
        async with anyio.create_task_group() as tg:
            await tg.start(sup.supervise, bus, lambda: Bus(clock, config.node_name if config.fleet.dsn else None))
            await tg.start(sup.supervise, alerter, lambda: Alerter(ledger, bus, webhooks, timeout, clock))
            store, read_store = self._stores(db_path)
            try:
                await tg.start(sup.supervise, ledger, lambda: Ledger(store(), bus, clock))
            except (LedgerError, FleetDatabaseError) as exc:
                raise StartupError(str(exc)) from None
            try:
                await tg.start(sup.supervise, reader, lambda: LedgerReader(read_store()))
            except (LedgerError, FleetDatabaseError) as exc:
                raise StartupError(str(exc)) from None
            await tg.start(sup.supervise, prices, lambda: Prices(ledger, allocator, settings, tiers, timeout, bus,
                                                                  clock, leading=not config.fleet.dsn))
            admission = AdmissionRules(
                config.admission.default_output_tokens, config.admission.default_ttl_s,
                config.admission.max_reservation_usd, parse_duration(config.admission.max_clock_skew),
                config.admission.max_open_holds, config.admission.max_holds_per_component,
                config.admission.max_counters_per_budget,
            )
            fleet = sup.ref("fleet", 64) if config.fleet.dsn else None
            await tg.start(sup.supervise, allocator, lambda: Allocator(
                ledger, prices, tiers, unpriced, admission, config.budgets, timeout, bus,
                config.alerts.anomaly_factor, clock, fleet=fleet,
            ))
            if fleet is not None:
                await tg.start(sup.supervise, fleet, lambda: FleetSync(
                    config.fleet.dsn, config.node_name, parse_duration(config.fleet.sync_interval), allocator, ledger,
                    prices, bus, clock))
            settings_ai = AssistantSettings(
                model=config.assistant.model, api_base=config.assistant.api_base,
                api_key_env=config.assistant.api_key_env, timeout_s=parse_duration(config.assistant.timeout),
                max_output_tokens=config.assistant.max_output_tokens,
            )
            await tg.start(sup.supervise, assistant, lambda: Assistant(
                reader, allocator, prices, settings_ai, timeout, clock))
            await tg.start(server.serve)
            if http is not None:
                await tg.start(http.serve)
            status = await prices.ask(lambda reply: GetPricesStatus(reply=reply), timeout)
            log.info(
                "budgetd ready: socket %s%s, ledger %s, %d prices (version %d; sources: %s)",
                self.socket_path, f", HTTP on http://{listen[0]}:{listen[1]}/api/v1" if listen else "",
                f"the fleet database {dsn_shown(config.fleet.dsn)}" if config.fleet.dsn else db_path,
                status.models, status.version, ", ".join(pricing.sources),
            )
            hermes = None
            hermes_url = config.hermes.url or os.environ.get("HERMES_URL", "")
            if hermes_url:
                endpoint = f"http://{listen[0]}:{listen[1]}" if listen else ""
                hermes = Hermes(hermes_url, endpoint, parse_duration(config.hermes.heartbeat))
                tg.start_soon(hermes.run)
            tg.start_soon(_expire_keys, ledger, parse_duration(config.daemon.keep_idempotency_keys), clock)
            if self.dedupe is not None:
                tg.start_soon(_flush_log_every, self.dedupe, 5.0)
            if config.daemon.keep_usage:
                tg.start_soon(_compact, ledger, parse_duration(config.daemon.keep_usage), clock)
            if config.backup.dir:
                tg.start_soon(_periodic_backups, reader, Path(config.backup.dir).expanduser(),
                              parse_duration(config.backup.every), config.backup.keep, clock)
            self.ready = True
            task_status.started()
            await self._stop.wait()
            log.info("shutting down: finishing requests in flight")
            if hermes is not None:
                await hermes.unregister()
            server.shutdown()
            if http is not None:
                with anyio.move_on_after(10):
                    await http.stop()
            for ref in (assistant, allocator, prices, alerter, ledger, reader, bus):
                ref.close()
                with anyio.move_on_after(30):
                    await ref.finished.wait()
            tg.cancel_scope.cancel()  # background tasks (Hermes) end with the actors
            log.info("budgetd stopped; every acknowledged write is committed")


async def _serve_until_signal(daemon: Daemon) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                async for _ in signals:
                    daemon.stop()

            tg.start_soon(watch)
            try:
                await daemon.serve()
            finally:
                tg.cancel_scope.cancel()


def run(config: Config, clock: Clock = SYSTEM) -> str | None:
    """Run the daemon in the foreground until SIGTERM or SIGINT; StartupError when it cannot start. Answers
    why it stopped on its own, if it did (None after a signal)."""
    dedupe = logs.configure(config.log.level)
    daemon = Daemon(config, clock)
    daemon.dedupe = dedupe
    options = {"use_uvloop": True} if importlib.util.find_spec("uvloop") else {}
    try:
        anyio.run(_serve_until_signal, daemon, backend="asyncio", backend_options=options)
    except BaseExceptionGroup as group:
        raise _sole_cause(group) from None
    finally:
        dedupe.flush()
    return daemon.failure


def startup_refusal(exc: BaseException, daemon: Daemon) -> StartupError | None:
    """A failure before the daemon was ready, as one line that says what to do; None for a bug."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, (HttpRefused, SocketInUse, LedgerError)):
        return StartupError(str(exc))
    if isinstance(exc, OSError):
        where = exc.filename or daemon.data_dir
        if exc.errno == errno.ENOSPC:
            return StartupError(f"the disk holding {where} is full; free some space and start budgetd again")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StartupError(f"cannot write {where} ({exc.strerror}); fix its permissions, or choose another "
                                "place with --data-dir or --socket")
        return StartupError(f"{exc.strerror or exc}: {where}; check --data-dir and --socket")
    return None


def _sole_cause(exc: BaseException) -> BaseException:
    """Unwrap task-group nesting so a start-up refusal reads as itself, not as a traceback."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(exc)
    causes = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return causes[0] if len(causes) == 1 else exc
