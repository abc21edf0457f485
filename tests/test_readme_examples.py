"""The outputs the README shows under its `$ budget ...` lines are what the commands print today:
docs/examples.py runs them, in order, against a daemon of their own, and `make readme` writes what they
printed into the README."""

import importlib.util

from conftest import ROOT


def _examples():
    spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "docs" / "examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_shows_what_its_commands_print():
    examples = _examples()
    readme = (ROOT / "README.md").read_text()
    assert len(list(examples.example_lines(readme))) > 10, "the README's examples were not found"
    difference = examples.difference(readme, examples.generate(readme))
    assert not difference, "\n" + difference
