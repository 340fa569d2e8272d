# The project's stable entry points. `make serve` and `make test` are the README's two commands.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test bench lint clean

install: $(STAMP)

# Re-runs only when the lock or the package metadata changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-input -r requirements.lock
	$(BIN)/pip install --quiet --no-input --no-deps --no-build-isolation -e .
	touch $@

serve: install
	$(BIN)/mlws serve

# Prometheus (a Debian package) for the monitoring tests; a non-root machine without it
# gets a warning here, and those tests skip outside CI.
test: install
	-bash scripts/install-system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: install
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) models/onnx results .pytest_cache
