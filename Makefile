# Two commands on a fresh machine: `make quickstart` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-fast venv bench clean system-deps gpu-check

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required; set PYTHON=...)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(PY) tune_runner.py studies/quickstart.yaml
	$(PY) -m analysis.report --tracking-uri sqlite:///mlflow.db --experiment quickstart --latest-launch

test: $(STAMP)
	$(PY) -m pytest

# The tests that start neither Ray nor a server (tracking, database): a quick loop while you work.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not ray and not servers"

bench: $(STAMP)
	$(PY) benchmarks/step_cost.py

clean:
	rm -rf runs .pytest_cache .hypothesis

system-deps:
	bash scripts/ci_system_deps.sh

gpu-check: $(STAMP)
	bash scripts/gpu_check.sh
