# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint format typecheck pytest bench chaos clean setup

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devtools.run

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two test processes (a module stays on one, with its workers and servers); then the
# broker-facing tests again on RabbitMQ when one is reachable (one line says which), in one
# process because its chaos run restarts RabbitMQ. Then the shipped alerting rules, with
# promtool when it is installed (one line says whether that leg ran).
pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile
	$(BIN)/python -m tests.amqp_leg
	$(BIN)/python -m tests.promtool_leg

test: check pytest

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The whole bench on Redis, then its pipeline section on RabbitMQ when one is reachable.
bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench --only pipeline --broker amqp --budget-s 240
	$(BIN)/python -m bench.users_import
	$(BIN)/python -m bench.explain

BROKER ?= redis
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --long --broker $(BROKER)

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
