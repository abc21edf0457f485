"""The README shows what budgetd does today: its configuration reference is exactly the defaults, and the
outputs it shows are what the commands print (see tests/test_readme_examples.py for the command outputs)."""

import json
import re
import tomllib

import msgspec

from budgetd import config
from conftest import ROOT, RawConn

README = (ROOT / "README.md").read_text()


def _block_after(heading: str, fence: str) -> str:
    section = README.split(heading, 1)[1]
    return section.split(f"```{fence}\n", 1)[1].split("```", 1)[0]


def test_the_configuration_reference_is_every_key_at_its_default(tmp_path):
    reference = _block_after("## Configuration", "toml")
    file = tmp_path / "reference.toml"
    file.write_text(reference)
    assert msgspec.to_builtins(config.load(file, environ={})) == msgspec.to_builtins(config.Config())
    # The feeds' URLs it names are theirs.
    from actors.sources import litellm, llm_prices, openrouter

    shown_urls = dict(re.findall(r'^# (\w+) = "(https://[^"]+)"$', reference, re.M))
    assert shown_urls == {"litellm": litellm.URL, "llm_prices": llm_prices.URL, "openrouter": openrouter.URL}
    # Every section of the config is in the reference, and every key of each section.
    data = tomllib.loads(reference)
    for section, kind in config.Config.__annotations__.items():
        if section == "budgets":
            continue
        assert section in data, f"[{section}] is missing from the README's configuration reference"
        # A key without a TOML default (none) is shown commented out, with an example.
        shown = set(data[section]) | set(re.findall(r"^# (\w+) = ", reference, re.M))
        missing = set(kind.__struct_fields__) - shown - {"tokens", "webhooks", "overrides"}
        assert not missing, f"[{section}] keys missing from the README: {sorted(missing)}"


def test_the_wire_examples_are_what_the_daemon_answers(daemon):
    wire = _block_after("## The wire protocol", "")
    pairs = re.findall(r"→ (\{.*\})\n← (\{.*\})", wire)
    assert pairs
    with RawConn(daemon.socket) as conn:
        for sent, shown in pairs:
            answer = conn.call(json.loads(sent))
            if ", ...}" in shown:  # an elided result: the fields it shows are the daemon's
                result = json.loads(shown.replace(", ...}", "}"))
                assert {k: answer["result"][k] for k in result["result"]} == result["result"], answer
                assert {k: v for k, v in answer.items() if k != "result"} == {k: v for k, v in result.items()
                                                                               if k != "result"}
            else:
                assert answer == json.loads(shown), answer
