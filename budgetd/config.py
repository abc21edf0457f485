"""Configuration: one TOML file, `BUDGETD_<SECTION>_<KEY>` environment overrides, defaults for all.

An unknown key is an error that names it.
"""

import os
import re
import socket
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Literal

import msgspec

from budgetd.durations import parse_duration
from budgetd.model import LOCAL_PROVIDERS, SOURCES, BudgetInvalid, BudgetSpec, check_budget
from budgetd.paths import default_config_path, default_data_dir, default_socket_path
from budgetd.periods import zone
from budgetd.protocol import PriceOverride
from budgetd.validation import in_words


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    pass


class DaemonConfig(Section):
    socket: str = ""  # "" = the default path
    data_dir: str = ""
    durability: Literal["full", "normal"] = "full"
    socket_mode: int = 0o600
    max_frame_bytes: int = 1 << 20
    max_connections: int = 10_000
    ask_timeout_s: float = 10.0
    max_ledger_mb: float = 0  # 0 = as large as the disk allows; at the cap writes get `unavailable`
    keep_idempotency_keys: str = "7d"  # a retried write is recognised this long
    keep_usage: str = ""  # "" = every record forever; else older records are compacted into the rollups


class HttpToken(Section):
    token: str | None = None
    token_env: str | None = None
    role: Literal["read", "write", "admin"] = "read"
    components: list[str] | None = None


class HttpConfig(Section):
    listen: str = "127.0.0.1:8013"
    max_body_bytes: int = 1 << 20
    tokens: list[HttpToken] = []


class AdmissionConfig(Section):
    default_output_tokens: int = 4096
    default_ttl_s: float = 300.0
    max_reservation_usd: float | None = None
    max_clock_skew: str = "5m"  # how far ahead of the daemon's clock a recorded call's `ts` may be
    max_open_holds: int = 100_000  # reservations open at once: past it a reserve is answered `busy`
    max_holds_per_component: int = 10_000
    max_counters_per_budget: int = 100_000  # keys a "*" budget keeps at once: past it new keys get `busy`


class FallbackRates(Section):
    input: float = 15.0
    output: float = 75.0


class PricingConfig(Section):
    sources: list[str] = msgspec.field(
        default_factory=lambda: ["litellm_bundled", "litellm", "llm_prices", "openrouter", "corrections"]
    )
    primary: str = "litellm"
    refresh_interval: str = "6h"
    unknown_model: Literal["fallback", "deny", "zero"] = "fallback"
    fallback_per_mtok: FallbackRates = FallbackRates()
    max_per_mtok: float = 1000.0
    max_unconfirmed_change: float = 0.5
    tolerance: float = 0.1
    urls: dict[str, str] = {}
    aliases: dict[str, str] = {}
    overrides: list[PriceOverride] = []
    bundled_file: str = ""  # "" = the file inside the installed litellm
    fetch_timeout: str = "20s"
    max_feed_bytes: int = 20 << 20
    retries: int = 2


class TiersConfig(Section):
    models: dict[str, str] = {}
    providers: dict[str, str] = msgspec.field(default_factory=lambda: dict.fromkeys(sorted(LOCAL_PROVIDERS),
                                                                                "lightweight"))
    lightweight_below_per_mtok: float = 1.0
    midweight_below_per_mtok: float = 10.0


class Webhook(Section):
    url: str
    secret: str | None = None
    secret_env: str | None = None
    kinds: list[str] | None = None
    attempts: int = 5
    timeout: str = "5s"


class AlertsConfig(Section):
    anomaly_factor: float = 3.0
    webhooks: list[Webhook] = []


class AssistantConfig(Section):
    model: str = ""          # a litellm model string, e.g. "openai/gpt-4o-mini" or "ollama/llama3.1"
    api_base: str = ""       # e.g. http://localhost:11434 for Ollama, any OpenAI-compatible URL
    api_key_env: str = ""    # the environment variable that holds the key
    timeout: str = "60s"
    max_output_tokens: int = 800


class HermesConfig(Section):
    url: str = ""
    heartbeat: str = "30s"


class ReportsConfig(Section):
    # Zones whose local days get a rollup of their own, so day/week/month reports in them stay fast over
    # long ranges (UTC always has one; so do the zones of the budgets in this file).
    timezones: list[str] = []


class BackupConfig(Section):
    dir: str = ""  # "" = no periodic backups
    every: str = "1d"
    keep: int = 7  # the newest this many backups in `dir` are kept


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    debug: list[str] = []


class FleetConfig(Section):
    dsn: str = ""  # "" = this host alone (SQLite); else the PostgreSQL database the ledger lives in
    node: str = ""  # this node's name in the fleet, unique in it ("" = the host's name)
    sync_interval: str = "0.5s"  # how often a node reads the others' spend, holds and budget changes


class Config(Section):
    daemon: DaemonConfig = DaemonConfig()
    http: HttpConfig = HttpConfig()
    admission: AdmissionConfig = AdmissionConfig()
    pricing: PricingConfig = PricingConfig()
    tiers: TiersConfig = TiersConfig()
    budgets: list[BudgetSpec] = []
    alerts: AlertsConfig = AlertsConfig()
    assistant: AssistantConfig = AssistantConfig()
    hermes: HermesConfig = HermesConfig()
    reports: ReportsConfig = ReportsConfig()
    backup: BackupConfig = BackupConfig()
    log: LogConfig = LogConfig()
    fleet: FleetConfig = FleetConfig()

    @property
    def socket_path(self) -> Path:
        return Path(self.daemon.socket).expanduser() if self.daemon.socket else default_socket_path()

    @property
    def report_zones(self) -> list[str]:
        """UTC, the configured report zones, then the zones of the configured budgets."""
        return list(dict.fromkeys(["UTC", *self.reports.timezones, *(b.timezone for b in self.budgets)]))

    @property
    def node_name(self) -> str:
        """This daemon's name in its fleet."""
        return self.fleet.node or socket.gethostname()

    @property
    def data_path(self) -> Path:
        return Path(self.daemon.data_dir).expanduser() if self.daemon.data_dir else default_data_dir()


def dsn_shown(dsn: str) -> str:
    """A database URL without its password, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        password = parts.password
    except ValueError:
        return "(a fleet.dsn that is not a URL)"
    if password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1))
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(name in ("password", "sslpassword") for name, _ in query):
        masked = [(n, "***" if n in ("password", "sslpassword") else v) for n, v in query]
        parts = parts._replace(query=urllib.parse.urlencode(masked, safe="*"))
    return urllib.parse.urlunsplit(parts)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the source."""


_SECTIONS = {name for name in Config.__struct_fields__ if name != "budgets"}


def load(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the file (if any) and the environment, and validate them together."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    source = "defaults"
    explicit = path is not None
    file = Path(path).expanduser() if path is not None else default_config_path()
    if explicit or file.is_file():
        source = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    from_env = _apply_env(data, environ)
    if "BUDGET_PORT" in environ and "BUDGETD_HTTP_LISTEN" not in environ:
        port = environ["BUDGET_PORT"]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"BUDGET_PORT must be a port number, got {port!r}")
        host = str(data.get("http", {}).get("listen", "127.0.0.1:8013")).rsplit(":", 1)[0] or "127.0.0.1"
        data.setdefault("http", {})["listen"] = f"{host}:{port}"
        from_env["http.listen"] = "BUDGET_PORT"

    def where(key: str) -> str:
        variable = from_env.get(re.sub(r"\[.*", "", key))
        return f"environment variable {variable}" if variable else source

    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        path, words = in_words(exc, Config)
        if words.startswith("unknown field"):
            words = "unknown key; check its spelling (README, \"Configuration\", lists every key)"
        key = re.sub(r"\[\d+\]", lambda m: f"[{int(m[0][1:-1]) + 1}]", path[2:])  # TOML counts from 1
        raise ConfigError(f"{where(key)}: {key or 'the config'}: {words}") from None
    _check(config, where)
    return config


def host_port(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets; no host means 127.0.0.1), or ValueError saying what to give."""
    example = "give HOST:PORT, such as 127.0.0.1:8013"
    if "://" in listen or "/" in listen:
        raise ValueError(f"listen address {listen!r} is a URL or a path; {example}")
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT with a port from 1 to 65535; {example}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """Put the BUDGETD_SECTION_KEY variables into `data`; answer which variable set each `section.key`."""
    applied = {}
    for name, raw in environ.items():
        if not name.startswith("BUDGETD_"):
            continue
        rest = name[len("BUDGETD_"):].lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            continue  # BUDGETD_SOCKET, BUDGETD_TOKEN_* ... belong to other readers
        key = rest[len(section) + 1:]
        section_type = Config.__annotations__[section]
        if key not in section_type.__struct_fields__:
            raise ConfigError(f"environment variable {name}: unknown key {section}.{key}")
        data.setdefault(section, {})[key] = _env_value(raw)
        applied[f"{section}.{key}"] = name
    return applied


def _env_value(raw: str) -> Any:
    """TOML literals for lists, tables, numbers and booleans; anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _check(config: Config, where: Callable[[str], str]) -> None:
    """Each problem is said with where its key was set (`where(key)`: the file, or an environment variable)."""
    names = [b.name for b in config.budgets]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigError(f"{where('budgets')}: budget names must be unique; repeated: {', '.join(sorted(duplicates))}")
    for i, budget in enumerate(config.budgets):
        try:
            check_budget(budget, f"budgets[{i}]")
        except BudgetInvalid as exc:
            raise ConfigError(f"{where('budgets')}: {exc} (at {exc.field})") from None
    unknown = [s for s in config.pricing.sources if s not in SOURCES]
    if unknown:
        raise ConfigError(f"{where('pricing.sources')}: pricing.sources names unknown sources {unknown}; "
                          f"known: {', '.join(SOURCES)}")
    for i, hook in enumerate(config.alerts.webhooks):
        if not hook.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where('alerts.webhooks')}: alerts.webhooks[{i}].url must be an http(s) URL, "
                              f"got {hook.url!r}")
        if hook.secret_env and hook.secret_env not in os.environ:
            raise ConfigError(f"{where('alerts.webhooks')}: alerts.webhooks[{i}].secret_env names "
                              f"{hook.secret_env}, which is not set")
        _duration(hook.timeout, f"alerts.webhooks[{i}].timeout", where)
    if config.assistant.api_key_env and config.assistant.api_key_env not in os.environ:
        raise ConfigError(f"{where('assistant.api_key_env')}: assistant.api_key_env names "
                          f"{config.assistant.api_key_env}, which is not set")
    _duration(config.assistant.timeout, "assistant.timeout", where)
    _duration(config.hermes.heartbeat, "hermes.heartbeat", where)
    _duration(config.admission.max_clock_skew, "admission.max_clock_skew", where)
    for key in ("refresh_interval", "fetch_timeout"):
        _duration(getattr(config.pricing, key), f"pricing.{key}", where)
    for i, name in enumerate(config.reports.timezones):
        try:
            zone(name)
        except ValueError as exc:
            raise ConfigError(f"{where('reports.timezones')}: reports.timezones[{i}]: {exc}") from None
    _duration(config.daemon.keep_idempotency_keys, "daemon.keep_idempotency_keys", where)
    _duration(config.backup.every, "backup.every", where)
    if config.backup.keep < 1:
        raise ConfigError(f"{where('backup.keep')}: backup.keep must be 1 or more")
    if config.daemon.keep_usage:
        if _duration(config.daemon.keep_usage, "daemon.keep_usage", where) < 35 * 86400:
            raise ConfigError(f"{where('daemon.keep_usage')}: daemon.keep_usage must be at least 35d, so that "
                              "every calendar window a budget counts keeps its records")
    if config.daemon.max_ledger_mb < 0:
        raise ConfigError(f"{where('daemon.max_ledger_mb')}: daemon.max_ledger_mb must be 0 (no cap) or more")
    if config.daemon.max_frame_bytes < 1024:
        raise ConfigError(f"{where('daemon.max_frame_bytes')}: daemon.max_frame_bytes must be at least 1024")
    if config.fleet.dsn and not config.fleet.dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{where('fleet.dsn')}: fleet.dsn must be a PostgreSQL URL "
                          "(postgresql://user@host/database), or empty for a single host")
    if config.fleet.node and not _NODE_NAME.match(config.fleet.node):
        raise ConfigError(f"{where('fleet.node')}: fleet.node must be 1 to 63 ASCII letters, digits, '.', '_' or '-'")
    if not 0.05 <= _duration(config.fleet.sync_interval, "fleet.sync_interval", where) <= 60:
        raise ConfigError(f"{where('fleet.sync_interval')}: fleet.sync_interval must be between 50ms and 60s")
    if config.pricing.unknown_model not in ("fallback", "deny", "zero"):
        raise ConfigError(f"{where('pricing.unknown_model')}: pricing.unknown_model must be fallback, deny or zero")


_NODE_NAME = re.compile(r"\A[A-Za-z0-9._-]{1,63}\Z")


def _duration(text: str, key: str, where: Callable[[str], str]) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{where(key)}: {key}: {exc}") from None
