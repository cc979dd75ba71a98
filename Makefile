# Every target that needs the virtualenv depends on the stamp, so `make demo` and
# `make test` set the project up themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench simulate lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/billtrail demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The seeded whole-system simulation: RUNS seeds from SEED (default: a new seed each
# time, printed in the summary; the same seed replays the same run), the longer world
# (SIZE=ci: the one `make test` runs), on SQLite (SIM_BACKEND=postgres or all: also
# or only on the PostgreSQL of `make test`).
SEED ?= $(shell date +%s)
RUNS ?= 5
SIZE ?= longer
SIM_BACKEND ?= sqlite
simulate: install
	BILLTRAIL_SIM_SEED=$(SEED) BILLTRAIL_SIM_RUNS=$(RUNS) BILLTRAIL_SIM_SIZE=$(SIZE) \
	$(BIN)/python -m pytest tests/simulation -p no:cacheprovider -q \
		-k "longer_runs and $(if $(filter all,$(SIM_BACKEND)),(sqlite or postgres),$(SIM_BACKEND))" \
		$(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

lock: install
	$(BIN)/python -m pip freeze --exclude-editable | sed '1i # Exact versions of everything `make install` puts in .venv (runtime and dev).\n# Regenerate with `make lock` after changing pyproject.toml.' > constraints.txt

clean:
	rm -rf $(VENV) var/demo .pytest_cache .mypy_cache .ruff_cache
