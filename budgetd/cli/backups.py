"""`budget backup` asks the running daemon for a copy of its ledger; `budget restore` puts one back, daemon stopped."""

import argparse
from pathlib import Path

from budgetd.cli._arguments import client
from budgetd.cli._errors import CliError
from budgetd.cli._output import emit
from budgetd.render import count


def cmd_backup(args: argparse.Namespace) -> int:
    dest = Path(args.path).expanduser()
    if not dest.is_absolute():
        dest = dest.resolve()  # relative to here; the daemon takes absolute paths only
    with client(args, retries=1) as c:
        result = c.backup(str(dest), force=args.force)
    emit(args, result, lambda r: f"backup of {count(r.records)} records written to {r.path} "
                                 f"({r.bytes / 1e6:.1f} MB in {r.duration_s:g}s), verified")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    # No daemon to ask: the restore works on the data directory itself, so the ledger's code loads here.
    from budgetd import config as config_module
    from budgetd.restore import RestoreError, restore

    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as exc:
        raise CliError(str(exc)) from None
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else config.data_path
    source = Path(args.path).expanduser()
    try:
        restored = restore(source, data_dir)
    except RestoreError as exc:
        raise CliError(str(exc)) from None
    print(f"restored {count(restored.records)} records (schema {restored.version}) from {source} into "
          f"{restored.ledger}" + (f"; the previous ledger is kept as {restored.kept}" if restored.kept else ""))
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("backup", help="an online, consistent, verified copy of the ledger", parents=[common])
    p.add_argument("path", help="where the daemon writes it (outside its data directory)")
    p.add_argument("--force", action="store_true", help="replace the file at PATH if there is one")
    p.set_defaults(func=cmd_backup)

    p = commands.add_parser("restore", help="replace the ledger with a backup (daemon stopped; verified first)",
                            parents=[common])
    p.add_argument("path", help="a file made by `budget backup`")
    p.add_argument("--config", help="the daemon's TOML config (for its data_dir)")
    p.add_argument("--data-dir", help="the daemon's data directory")
    p.set_defaults(func=cmd_restore)
