# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both install the exact versions in requirements.lock; `make lock` refreshes it (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed-stamp
# The lock constrains every install, the isolated build of our own package included.
PIP    := PIP_CONSTRAINT=$(CURDIR)/$(LOCK) PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip

.PHONY: run test bench soak readme lock clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/budget daemon $(ARGS)

# Two workers (most tests wait on daemon processes, so two keep both cores busy). Coverage data goes
# to a directory of this run's own, so two suites can run at once; the summary is printed whether the
# tests passed or not, and the exit status is pytest's.
TEST_WORKERS ?= 2
test: $(STAMP)
	@data=$$(mktemp -d); \
	COVERAGE_FILE=$$data/.coverage $(BIN)/python -m coverage run -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); status=$$?; \
	COVERAGE_FILE=$$data/.coverage $(BIN)/python -m coverage combine -q $$data >/dev/null 2>&1; \
	COVERAGE_FILE=$$data/.coverage $(BIN)/python -m coverage report --skip-covered --sort=cover | tail -n 25; \
	rm -rf $$data; exit $$status

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

soak: $(STAMP)
	$(BIN)/python -m tests.soak $(ARGS)

# Run the README's `$ budget ...` examples against a daemon of their own and write what they print
# under them (tests/test_readme_examples.py fails when the README differs).
readme: $(STAMP)
	$(BIN)/python docs/examples.py

# Resolve the newest versions pyproject.toml allows, in a fresh environment, and write them to the lock.
# Then run `make test` (it reinstalls from the new lock) before committing the lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[test]' hatchling  # hatchling: our build backend, pinned too
	{ echo "# The exact versions \`make run\` and \`make test\` install. Refresh with \`make lock\`, then \`make test\`."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -i -E '^(wheel|setuptools)=='; } > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .lock-venv build *.egg-info .coverage .coverage.*
