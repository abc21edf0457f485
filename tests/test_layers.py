"""The layering of the house, enforced: every import of every module (lazy ones inside functions too) is
read from the source and checked against the layers, lowest first:

    core     budgetd's types, wire protocol, clock, pricing arithmetic, config ... (no actor, no door)
    actors   the actors and their runtime
    daemon   the supervisor and the front doors (socket, HTTP), Hermes, restore
    surfaces the client library, the CLI, the MCP bridge, the dashboard, the integrations

A module may import its own layer and the layers below it. On top of that: actors never import the
client; the client, the dashboard, the MCP bridge and the integrations talk to the daemon only
through the client library (never an actor or a door); the CLI reaches the daemon's side only
through `budgetd.daemon`, `budgetd.restore` and `budgetd.fleet`.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("budgetd", "actors", "tui")

SURFACES = ("budgetd.client", "budgetd.cli", "budgetd.__main__", "budgetd.mcp_bridge", "budgetd.integrations",
            "budgetd.demo", "tui")
DAEMON = ("budgetd.daemon", "budgetd.server", "budgetd.hermes", "budgetd.restore", "budgetd.fleet")
LAYERS = {"core": 0, "actors": 1, "daemon": 2, "surfaces": 3}


def layer(module: str) -> str:
    if module == "actors" or module.startswith("actors."):
        return "actors"
    if any(module == p or module.startswith(p + ".") for p in DAEMON):
        return "daemon"
    if any(module == p or module.startswith(p + ".") for p in SURFACES):
        return "surfaces"
    return "core"


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Every module of ours that `name` imports, wherever in the file the import is."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    ours = modules()
    return {m for m in out if m.split(".")[0] in PACKAGES and m in ours}


def test_every_import_respects_the_layers():
    problems = []
    for name, path in sorted(modules().items()):
        mine = layer(name)
        for target in sorted(imports_of(name, path)):
            theirs = layer(target)
            if LAYERS[theirs] > LAYERS[mine]:
                problems.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("surface", ["budgetd.client", "budgetd.mcp_bridge", "budgetd.integrations", "tui",
                                     "budgetd.demo"])
def test_surfaces_reach_the_daemon_only_through_the_client(surface):
    problems = [f"{name} imports {target}"
                for name, path in modules().items() if name == surface or name.startswith(surface + ".")
                for target in imports_of(name, path) if layer(target) in ("actors", "daemon")]
    assert not problems, "\n".join(problems)


def test_the_cli_reaches_the_daemon_side_only_through_daemon_restore_and_fleet():
    allowed = ("budgetd.daemon", "budgetd.restore", "budgetd.fleet")
    problems = [f"{name} imports {target}"
                for name, path in modules().items() if name.startswith("budgetd.cli")
                for target in imports_of(name, path)
                if layer(target) in ("actors", "daemon") and not target.startswith(allowed)]
    assert not problems, "\n".join(problems)


def test_actors_never_import_the_client():
    problems = [f"{name} imports {target}" for name, path in modules().items() if layer(name) == "actors"
                for target in imports_of(name, path) if target.startswith("budgetd.client")]
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_violation(tmp_path):
    """The rule is not vacuous: a core module that imports an actor is reported."""
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from actors.ledger import Ledger\n")
    assert "actors.ledger" in imports_of("budgetd.bad", path)
    assert LAYERS[layer("actors.ledger")] > LAYERS[layer("budgetd.bad")]
