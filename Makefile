# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/budget daemon $(ARGS)

test: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/python -m coverage run -m pytest -q $(PYTEST_ARGS)
	$(BIN)/python -m coverage combine -q || true
	$(BIN)/python -m coverage report --skip-covered --sort=cover | tail -n 25

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

soak: $(STAMP)
	$(BIN)/python -m tests.soak $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .coverage .coverage.*
