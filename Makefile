# make run   - set up .venv and run the main job (the tutorial's pipeline demo)
# make test  - set up .venv and run lint, types and every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install run test lint unit bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) "$(TORCH_SPEC)" -e ".[dev,torch,plot]"
	touch $(STAMP)

run: install
	$(VENV)/bin/pipesim run

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest -q -m "not runtime and not browser"

test: lint
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run.py

bench-quick: install
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
