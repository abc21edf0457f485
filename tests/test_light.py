"""Things that must stay light: imports without side effects, config parsing, debug switches."""

import json
import logging
import os
import subprocess
import sys

import pytest

from budgetd import config, debug

HEAVY = ("litellm", "textual", "httpx", "mcp", "aiosqlite", "starlette", "uvicorn", "sqlite3")


def test_client_protocol_and_model_load_only_msgspec_and_anyio(tmp_path):
    code = (
        "import sys, json, os;"
        "import budgetd.client, budgetd.protocol, budgetd.model;"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    # Without coverage's subprocess hook, which itself loads sqlite3.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True,
                         env=env)
    assert json.loads(out.stdout) == []
    assert list(tmp_path.iterdir()) == [], "importing must not create files"


def test_importing_every_module_has_no_side_effects(tmp_path):
    code = (
        "import budgetd.daemon, budgetd.cli, budgetd.config, budgetd.debug, budgetd.server.ops,"
        " budgetd.server.unix, actors.ledger, actors.allocator, actors.prices, actors.runtime,"
        " actors.sources.litellm, actors.sources.litellm_bundled; import sys;"
        "print('litellm' in sys.modules)"
    )
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         check=True)
    assert out.stdout.strip() == "False"
    assert list(tmp_path.iterdir()) == []


def test_config_env_overrides_and_unknown_keys(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('[daemon]\ndurability = "normal"\n[tiers]\nmodels = { "gpt-4o" = "lightweight" }\n')
    c = config.load(file, environ={"BUDGETD_DAEMON_DURABILITY": "full", "BUDGETD_ADMISSION_DEFAULT_TTL_S": "60",
                                   "BUDGETD_PRICING_SOURCES": '["litellm_bundled"]', "BUDGETD_SOCKET": "/x"})
    assert c.daemon.durability == "full"  # the environment wins over the file
    assert c.admission.default_ttl_s == 60.0
    assert c.pricing.sources == ["litellm_bundled"]
    assert c.tiers.models == {"gpt-4o": "lightweight"}
    with pytest.raises(config.ConfigError, match="BUDGETD_ADMISSION_TTL"):
        config.load(file, environ={"BUDGETD_ADMISSION_TTL": "3"})
    file.write_text("[alerts]\nanomaly_factr = 2\n")
    with pytest.raises(config.ConfigError, match=r"alerts.anomaly_factr: unknown key; .*README, \"Configuration\""):
        config.load(file, environ={})
    file.write_text("[fleet]\nnode = 'a b'\n")
    with pytest.raises(config.ConfigError, match=r"^environment variable BUDGETD_FLEET_SYNC_INTERVAL: fleet\.sync"):
        config.load(file, environ={"BUDGETD_FLEET_SYNC_INTERVAL": "1h", "BUDGETD_FLEET_NODE": "a"})
    with pytest.raises(config.ConfigError, match=r"c\.toml: fleet\.node must be"):
        config.load(file, environ={})  # the file's own value is the file's
    file.write_text("[daemon\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(file, environ={})
    assert config.load(environ={"BUDGET_PORT": "9100"}).http.listen == "127.0.0.1:9100"
    with pytest.raises(config.ConfigError, match="BUDGET_PORT"):
        config.load(environ={"BUDGET_PORT": "http"})


def test_defaults_follow_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "conf"))
    c = config.load()
    assert c.socket_path == tmp_path / "run" / "budgetd" / "budgetd.sock"
    assert c.data_path == tmp_path / "data" / "budgetd"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert str(config.load().socket_path).startswith("/tmp/budgetd-")


def test_debug_log_is_off_by_default_and_hides_arguments(caplog, monkeypatch):
    monkeypatch.delenv("BUDGETD_DEBUG", raising=False)
    calls = []

    class Loud:
        def __str__(self):
            calls.append("formatted")
            return "secret"

    @debug.log_function("ledger")
    def add(a, b):
        return a + b

    @debug.log_function("ledger")
    async def add_async(a, b):
        return a + b

    debug.configure([])
    with caplog.at_level(logging.DEBUG, logger="budgetd.debug"):
        debug.debug_log("ledger", "value %s", Loud())
        assert add(1, 2) == 3
    assert calls == [] and caplog.records == []

    debug.configure(["ledger"])
    with caplog.at_level(logging.DEBUG, logger="budgetd.debug"):
        debug.debug_log("ledger", "value %s", Loud())
        debug.debug_log("allocator", "not this one")
        assert add("sk-secret-key", "x") == "sk-secret-keyx"
    text = caplog.text
    assert "value secret" in text and "not this one" not in text
    assert "add" in text and "sk-secret-key" not in text, "argument values stay out of the log"

    caplog.clear()
    debug.configure(["ledger"], log_args=True)
    with caplog.at_level(logging.DEBUG, logger="budgetd.debug"):
        add("visible", "x")
    assert "visible" in caplog.text
    debug.configure([])


@pytest.mark.anyio
async def test_debug_wraps_async_functions(caplog):
    @debug.log_function("allocator")
    async def double(x):
        return 2 * x

    debug.configure(["all"])
    with caplog.at_level(logging.DEBUG, logger="budgetd.debug"):
        assert await double(4) == 8
    debug.configure([])
    assert "double" in caplog.text and "ms" in caplog.text
