# The two commands of the README: `make run` and `make test`.
VENV := .venv
ARGS ?=

.PHONY: setup run test lint unit bench clean

setup:
	@scripts/setup.sh

run: setup
	$(VENV)/bin/fleetdeck up $(ARGS)

test: setup lint
	$(VENV)/bin/python -m pytest -q $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/python -m pytest -q tests/unit

clean:
	rm -rf .fleetdeck .pytest_cache .mypy_cache .ruff_cache
