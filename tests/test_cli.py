"""The `budget` command against a real daemon: tables, --json, exit codes, clear errors."""

import json

from conftest import run_cli


def test_record_usage_status_prices(shared_daemon):
    s = shared_daemon.socket
    r = run_cli("record", "--component", "cli", "--model", "gpt-4o", "--input", "1000", "--output", "500",
                "--context", "sess-1", "--task", "summarise", socket=s)
    assert r.returncode == 0, r.stderr
    assert "recorded #" in r.stdout and "$0.0075" in r.stdout

    r = run_cli("record", "--component", "cli", "--model", "gpt-4o", "--input", "10", "--json", socket=s)
    recorded = json.loads(r.stdout)
    assert recorded["cost_usd"] == 25_000 / 1e9 and recorded["model"] == "gpt-4o"

    r = run_cli("usage", "--component", "cli", "--json", socket=s)
    records = json.loads(r.stdout)["records"]
    assert [x["input_tokens"] for x in records[:2]] == [10, 1000]
    assert records[1]["context_id"] == "sess-1" and records[1]["task_type"] == "summarise"

    r = run_cli("usage", "--component", "cli", socket=s)
    assert r.returncode == 0 and "gpt-4o" in r.stdout and "$0.0075" in r.stdout

    r = run_cli("status", socket=s)
    assert r.returncode == 0 and "budgetd" in r.stdout and "prices" in r.stdout
    status = json.loads(run_cli("status", "--json", socket=s).stdout)
    assert status["totals"]["requests"] >= 2
    assert {a["name"] for a in status["daemon"]["actors"]} >= {"ledger", "allocator", "prices"}

    r = run_cli("prices", "show", "claude-sonnet-4-5", socket=s)
    assert r.returncode == 0 and "$3 / Mtok" in r.stdout and "$15 / Mtok" in r.stdout
    shown = {line[2:18].strip(): line[19:] for line in r.stdout.splitlines()[1:]}
    assert shown["cache write 1h"] == "$6 / Mtok" and shown["web search"] == "$0.01 per query"
    assert shown["batch"] == "in $1.5  out $7.5  cache read $0.15  cache write $1.875 / Mtok"
    assert shown["source"] == "litellm_bundled (version 1)"
    listed = json.loads(run_cli("prices", "list", "--search", "gpt-5", "--json", socket=s).stdout)
    assert {p["model"] for p in listed["prices"]} == {"gpt-5", "gpt-5-mini"}


def test_usage_pages_with_a_cursor(shared_daemon):
    s = shared_daemon.socket
    for i in range(5):
        run_cli("record", "--component", "pager", "--model", "gpt-4o-mini", "--input", str(i), socket=s)
    first = json.loads(run_cli("usage", "--component", "pager", "--limit", "3", "--json", socket=s).stdout)
    assert len(first["records"]) == 3 and first["next"]
    second = json.loads(run_cli("usage", "--component", "pager", "--limit", "3", "--after", first["next"],
                                "--json", socket=s).stdout)
    assert [r["input_tokens"] for r in first["records"] + second["records"]] == [4, 3, 2, 1, 0]
    assert second["next"] is None


#: msgspec's and argparse's own words that must never reach a person.
_RAW = ("Traceback", "Expected `", "regex", "$.", "Invalid enum", "(at ", "not_found:", "invalid:")


def test_errors_are_clear_in_one_style_and_exit_non_zero(shared_daemon, tmp_path):
    s = shared_daemon.socket
    refused = [  # (arguments, status, what stderr must say)
        (("prices", "show", "no-such-model-anywhere"), 1, "budget: no price for model 'no-such-model-anywhere'"),
        (("budgets", "show", "nope"), 1, "budget: no budget named 'nope'; see `budget budgets list`"),
        (("budgets", "delete", "nope"), 1, "budget: no budget named 'nope'; see `budget budgets list`"),
        (("budgets", "set", "Bad/Name", "--period", "daily", "--policy", "warn"), 1,
         "budget: budget.name: must be lowercase letters, digits, '.', '_' and '-', starting with a letter"),
        (("budgets", "set", "ok", "--period", "daily", "--policy", "warn", "--scope", "colour=x"), 2,
         "argument --scope: 'colour' is not a dim; use one of component, model, provider"),
        (("usage", "--filter", "colour=x"), 2, "argument --filter: 'colour' is not a dim"),
        (("report", "--by", "colour"), 2, "'colour' is not a dim; use any of component, model, provider, tier"),
        (("reserve", "--component", "a", "--model", "gpt-4o", "--input", "1", "--ttl", "0"), 2,
         "argument --ttl: '0' must be more than 0"),
        (("record", "--component", "x", "--model", "m", "--input", "-5"), 2, "must be 0 or more"),
        (("record", "--component", "x" * 200, "--model", "m"), 1,
         "budget: usage.component: must be at most 128 characters long"),
        (("usage", "--after", "not-a-cursor"), 1, "budget: `after` must be the `next` cursor"),
    ]
    for arguments, status, said in refused:
        r = run_cli(*arguments, socket=s)
        assert r.returncode == status and said in r.stderr, (arguments, r.stderr)
        assert not any(raw in r.stderr for raw in _RAW), (arguments, r.stderr)
    r = run_cli("status", socket=tmp_path / "nobody.sock")
    assert r.returncode == 1
    assert "no budgetd answers" in r.stderr and "budget daemon" in r.stderr and "Traceback" not in r.stderr


def test_a_command_without_its_action_shows_the_actions(shared_daemon):
    for arguments, listed in (((), ("daemon", "status", "record", "budgets")),
                              (("budgets",), ("list", "show", "set", "delete")),
                              (("prices",), ("list", "show", "refresh", "set", "unset", "history")),
                              (("import",), ("rhetor", "apollo"))):
        r = run_cli(*arguments, socket=shared_daemon.socket)
        assert r.returncode == 2 and "required" not in r.stderr, (arguments, r.stderr)
        assert all(f"    {name} " in r.stderr for name in listed), (arguments, r.stderr)


def test_the_daemon_says_what_to_give_for_a_listen_url(tmp_path):
    r = run_cli("daemon", "--http", "http://127.0.0.1:8099", "--socket", str(tmp_path / "s.sock"),
                "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1 and "http:/127" not in r.stderr
    assert "'http://127.0.0.1:8099' is a URL or a path; give HOST:PORT, such as 127.0.0.1:8013" in r.stderr
    r = run_cli("mcp", "--http", "http://127.0.0.1:8099")
    assert r.returncode == 1 and "give HOST:PORT" in r.stderr and "Traceback" not in r.stderr


def test_daemon_reports_a_bad_config_without_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[pricing]\nunknown_model = 'sometimes'\n")
    r = run_cli("daemon", "--config", str(config), "--socket", str(tmp_path / "s.sock"),
                "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1 and "pricing.unknown_model" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("daemon", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    r = run_cli("daemon", "--config", str(empty), "--socket", str(tmp_path / "s.sock"), "--data-dir",
                str(tmp_path / "data"), env={"BUDGETD_DAEMON_DURABILITY": "maybe"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("budget: environment variable BUDGETD_DAEMON_DURABILITY: daemon.durability: 'maybe' "
                               "is not one of full, normal"), r.stderr


def test_budgets_check_reserve_commit_route(daemon):
    s = daemon.socket
    r = run_cli("budgets", "set", "team", "--period", "daily", "--limit-usd", "0.01", "--policy", "hard",
                "--scope", "component=*", "--timezone", "Europe/Berlin", "--threshold", "0.5", "--threshold", "0.9",
                socket=s)
    assert r.returncode == 0, r.stderr
    listed = json.loads(run_cli("budgets", "list", "--json", socket=s).stdout)
    assert listed[0]["name"] == "team" and listed[0]["scope"]["component"] == "*"
    assert listed[0]["thresholds"] == [0.5, 0.9]

    ok = run_cli("check", "--component", "cli", "--model", "gpt-4o-mini", "--input", "1000", socket=s)
    assert ok.returncode == 0 and "allowed" in ok.stdout
    denied = run_cli("check", "--component", "cli", "--model", "claude-opus-4-5", "--input", "100000", socket=s)
    assert denied.returncode == 3 and "DENIED" in denied.stdout and "budget team" in denied.stdout

    hold = json.loads(run_cli("reserve", "--component", "cli", "--model", "gpt-4o-mini", "--input", "1000",
                              "--max-output", "100", "--json", socket=s).stdout)
    assert hold["allowed"] and hold["reservation_id"]
    shown = run_cli("budgets", "show", "team", socket=s)
    assert "component=cli" in shown.stdout and "hard" in shown.stdout
    committed = run_cli("commit", hold["reservation_id"], "--input", "900", "--output", "50", socket=s)
    assert committed.returncode == 0 and "committed" in committed.stdout
    again = run_cli("commit", hold["reservation_id"], "--input", "900", "--output", "50", socket=s)
    assert again.returncode == 0 and "duplicate" in again.stdout
    released = run_cli("release", hold["reservation_id"], socket=s)
    assert "was not held" in released.stdout
    keyed = [run_cli("reserve", "--component", "cli", "--model", "gpt-4o-mini", "--input", "10",
                     "--idempotency-key", "cli-once", socket=s) for _ in range(2)]
    assert "duplicate" not in keyed[0].stdout and "[duplicate: the first answer" in keyed[1].stdout

    route = json.loads(run_cli("route", "--component", "cli", "--model", "gpt-4o", "--input", "1000",
                               "--need", "vision", "--json", socket=s).stdout)
    assert route["choice"] and all(a["model"] for a in route["alternatives"])
    human = run_cli("route", "--component", "cli", "--model", "gpt-4o", "--input", "1000", socket=s)
    assert "choice:" in human.stdout

    bad = run_cli("budgets", "set", "oops", "--period", "daily", "--policy", "hard", socket=s)
    assert bad.returncode == 1 and "no limit" in bad.stderr
    bad = run_cli("budgets", "set", "oops", "--period", "daily", "--policy", "hard", "--limit-usd", "1",
                  "--scope", "colour=red", socket=s)
    assert bad.returncode == 2 and "colour" in bad.stderr and "Traceback" not in bad.stderr
    assert run_cli("budgets", "delete", "team", socket=s).returncode == 0
    missing = run_cli("budgets", "delete", "team", socket=s)
    assert missing.returncode == 1 and "no budget named 'team'" in missing.stderr
    assert run_cli("budgets", "show", "team", socket=s).returncode == 1


def test_make_run_defaults_socket_and_data_in_xdg_dirs(tmp_path):
    """`budget daemon` with no flags: the default socket and ledger paths, found by the CLI."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import FIXTURES, _env, free_port

    env = _env()
    env.update(BUDGET_PORT=str(free_port()),  # the default 127.0.0.1:8013 may be taken (by `make run`)
               XDG_RUNTIME_DIR=str(tmp_path / "run"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), BUDGETD_PRICING_SOURCES='["litellm_bundled"]',
               BUDGETD_PRICING_BUNDLED_FILE=str(FIXTURES / "litellm_prices.json"))
    daemon = subprocess.Popen([sys.executable, "-m", "budgetd", "daemon"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        socket_path = tmp_path / "run" / "budgetd" / "budgetd.sock"
        deadline = time.monotonic() + 30
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        status = subprocess.run([sys.executable, "-m", "budgetd", "status"], env=env, capture_output=True,
                                text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert str(socket_path) in status.stdout
        assert (tmp_path / "data" / "budgetd" / "ledger.db").exists()
    finally:
        daemon.send_signal(signal.SIGINT)
        assert daemon.wait(30) == 0
    assert not socket_path.exists()
    assert os.stat(tmp_path / "run" / "budgetd").st_mode & 0o777 == 0o700
