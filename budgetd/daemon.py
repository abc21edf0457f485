"""The supervisor of the whole daemon: builds actors and doors, handles signals, shuts down cleanly.

Shutdown order matters: stop accepting, let requests in flight finish, then
close the allocator (it drains into the ledger), then the ledger (it commits
everything it acknowledged or holds), then the rest, and remove the socket.
"""

import fcntl
import importlib.util
import logging
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from actors.allocator import AdmissionRules, Allocator
from actors.ledger import Ledger, LedgerError, LedgerReader
from actors.prices import Prices, load_book
from actors.runtime import Supervisor
from actors.sources import litellm_bundled
from budgetd import debug
from budgetd.config import Config
from budgetd.model import PriceEntry, SourceStatus
from budgetd.pricing import TierRules, UnpricedPolicy
from budgetd.protocol import utcnow
from budgetd.server.ops import Ops
from budgetd.server.unix import SocketServer, prepare_socket_path

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


def _lock_data_dir(data_dir: Path) -> Any:
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
    def __init__(self, config: Config) -> None:
        self.config = config
        self.socket_path = config.socket_path
        self.data_dir = config.data_path
        self._stop = anyio.Event()
        self.server: SocketServer | None = None

    def stop(self) -> None:
        self._stop.set()

    def _initial_book(self, tiers: TierRules) -> tuple[Any, list[SourceStatus]]:
        pricing = self.config.pricing
        path = Path(pricing.bundled_file).expanduser() if pricing.bundled_file else None
        try:
            entries, refused = litellm_bundled.load(tiers, path)
            status = SourceStatus(source=litellm_bundled.NAME, models=len(entries), last_success=utcnow())
        except (OSError, ValueError) as exc:
            log.error("bundled prices unavailable: %s", exc)
            entries, refused = [], []
            status = SourceStatus(source=litellm_bundled.NAME, models=0, last_error=str(exc))
        for note in refused[:20]:
            log.warning("price refused: %s", note)
        overrides = [
            _with_tier(PriceEntry(**msgspec.structs.asdict(o), source="override"), tiers)
            for o in pricing.overrides
        ]
        return load_book(entries, overrides, 1, dict(pricing.aliases)), [status]

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        debug.configure(config.log.debug)
        _raise_fd_limit()
        data_lock = _lock_data_dir(self.data_dir)
        try:
            socket_lock = prepare_socket_path(self.socket_path)
        except Exception:
            data_lock.close()
            raise
        try:
            await self._run(task_status)
        finally:
            socket_lock.close()
            data_lock.close()

    async def _run(self, task_status: TaskStatus[None]) -> None:
        config = self.config
        tiers = tier_rules(config)
        book, sources = await anyio.to_thread.run_sync(self._initial_book, tiers)
        unpriced = UnpricedPolicy(
            config.pricing.unknown_model,
            config.pricing.fallback_per_mtok.input,
            config.pricing.fallback_per_mtok.output,
        )
        db_path = self.data_dir / "ledger.db"
        sup = Supervisor()
        ledger = sup.ref("ledger", 16_384)
        reader = sup.ref("ledger-reader", 1024)
        prices = sup.ref("prices", 1024)
        allocator = sup.ref("allocator", 16_384)
        ops = Ops(config, sup.refs, str(self.socket_path))
        self.server = server = SocketServer(
            self.socket_path, ops, config.daemon.socket_mode, config.daemon.max_frame_bytes,
            config.daemon.max_connections,
        )
        async with anyio.create_task_group() as tg:
            try:
                await tg.start(sup.supervise, ledger, lambda: Ledger(db_path, config.daemon.durability))
            except LedgerError as exc:
                raise StartupError(str(exc)) from None
            await tg.start(sup.supervise, reader, lambda: LedgerReader(db_path))
            await tg.start(sup.supervise, prices, lambda: Prices(book, sources, allocator))
            admission = AdmissionRules(
                config.admission.default_output_tokens, config.admission.default_ttl_s,
                config.admission.max_reservation_usd,
            )
            await tg.start(sup.supervise, allocator, lambda: Allocator(
                ledger, book, tiers, unpriced, admission, config.budgets, config.daemon.ask_timeout_s,
            ))
            await tg.start(server.serve)
            log.info(
                "budgetd ready: socket %s, ledger %s, %d prices (%s)",
                self.socket_path, db_path, len(book), ", ".join(s.source for s in sources),
            )
            if config.http.listen:
                log.info("HTTP is not served by this version; clients use the Unix socket")
            task_status.started()
            await self._stop.wait()
            log.info("shutting down: finishing requests in flight")
            server.shutdown()
            for ref in (allocator, ledger, reader, prices):
                ref.close()
                with anyio.move_on_after(30):
                    await ref.finished.wait()
            log.info("budgetd stopped; every acknowledged write is committed")


def _with_tier(entry: PriceEntry, tiers: TierRules) -> PriceEntry:
    if entry.tier is not None:
        return entry
    tier = tiers.tier_of(entry.model, entry.provider, entry.input_per_mtok, entry.output_per_mtok)
    return msgspec.structs.replace(entry, tier=tier)


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


def run(config: Config) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    logging.basicConfig(
        level=getattr(logging, config.log.level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    daemon = Daemon(config)
    options = {"use_uvloop": True} if importlib.util.find_spec("uvloop") else {}
    try:
        anyio.run(_serve_until_signal, daemon, backend="asyncio", backend_options=options)
    except BaseExceptionGroup as group:
        raise _sole_cause(group) from None


def _sole_cause(group: BaseExceptionGroup) -> BaseException:
    """Unwrap task-group nesting so a start-up refusal reads as itself, not as a traceback."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group
