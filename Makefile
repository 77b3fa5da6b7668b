# Every target sets itself up: it creates .venv with the python3 on PATH and
# installs the project into it, again only when pyproject.toml has changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE := examples/transactions.csv

.PHONY: run test bench install clean example-data

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rewardpilot run $(EXAMPLE) --demo-wallets

# Three pytest-xdist workers: most tests wait on subprocesses and servers, so three
# overlap well even on 2 cores. PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= 3

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

example-data: $(STAMP)
	$(BIN)/python scripts/make_example_data.py --rows 3000 --seed 7 --output $(EXAMPLE)

# The embedded server is stopped first: deleting its data directory under it
# would leave it running with nothing left to find it by.
clean:
	if [ -x $(BIN)/rewardpilot ]; then $(BIN)/rewardpilot server stop; fi
	rm -rf $(VENV) .rewardpilot .pytest_cache
