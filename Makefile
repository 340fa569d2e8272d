# The project's stable entry points. `make serve` and `make test` are the README's two commands.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test bench lint audit clean

install: $(STAMP)

# Re-runs only when the lock or the package metadata changes.
# pip is left verbose for the long step (a first install downloads PyTorch: minutes), so
# there is always a line saying what it is doing.
$(STAMP): requirements.lock pyproject.toml scripts/install-perf-analyzer.sh scripts/install-cuda-variants.sh
	@echo "==> [1/4] virtual environment $(VENV)"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "==> [2/4] pinned dependencies from requirements.lock (PyTorch CPU build; minutes the first time)"
	$(BIN)/pip install --no-input -r requirements.lock
# A venv that scripts/gpu-check.sh gave the CUDA builds keeps them: the lock's onnxruntime
# (the CPU build) has just been installed over onnxruntime-gpu.
	test ! -f $(VENV)/.cuda-variants || bash scripts/install-cuda-variants.sh $(VENV)
	@echo "==> [3/4] mlws itself (editable)"
	$(BIN)/pip install --quiet --no-input --no-deps --no-build-isolation -e .
	@echo "==> [4/4] Triton's perf_analyzer (a binary, with the C runtime it needs)"
	bash scripts/install-perf-analyzer.sh $(VENV)
	touch $@
	@echo "==> installed: $(BIN)/mlws"

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

# Known vulnerabilities in every locked dependency, from PyPI's advisory data (needs
# pypi.org's JSON API). pip-audit gets a venv of its own so that its dependencies never
# enter the lock; --strict fails when a package could not be checked, so an unreachable
# advisory source is an error, not a clean bill.
AUDIT_VENV := .audit-venv
audit:
	test -x $(AUDIT_VENV)/bin/pip-audit || ($(PY) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/pip install --quiet pip-audit)
	$(AUDIT_VENV)/bin/pip-audit --requirement requirements.lock --no-deps --disable-pip --vulnerability-service pypi --strict

clean:
	rm -rf $(VENV) $(AUDIT_VENV) models/onnx results .pytest_cache
