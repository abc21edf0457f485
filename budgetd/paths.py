"""Default locations (XDG), shared by the daemon and every client. Standard library only."""

import os
from pathlib import Path


def _runtime_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "budgetd" if xdg else Path(f"/tmp/budgetd-{os.getuid()}")


def default_socket_path() -> Path:
    """`$XDG_RUNTIME_DIR/budgetd/budgetd.sock`, else `/tmp/budgetd-$UID/budgetd.sock`."""
    return _runtime_dir() / "budgetd.sock"


def client_socket_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """What a client connects to: the argument, else `BUDGETD_SOCKET`, else
    `BUDGETD_DAEMON_SOCKET` (the daemon's own override), else the default."""
    for candidate in (explicit, os.environ.get("BUDGETD_SOCKET"), os.environ.get("BUDGETD_DAEMON_SOCKET")):
        if candidate:
            return Path(candidate).expanduser()
    return default_socket_path()


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "budgetd" / "budgetd.toml"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "budgetd"
