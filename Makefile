# sgma: two commands on a fresh machine.
#   make demo   creates .venv, installs sgma into it, runs the workflow on the built-in sample
#   make test   runs the test suite (< 5 minutes on 2 cores)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SGMA := $(VENV)/bin/sgma
DEMO ?= demo
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: demo test docs-test lint format install bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]' 2>&1 | $(QUIET_PIP)
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(SGMA) sample $(DEMO)/scene --size 1024
	$(SGMA) prepare $(DEMO)/scene --out $(DEMO)/data --tile 128 --stride 128
	$(SGMA) train recipes/sample.toml --data $(DEMO)/data --out $(DEMO)/run
	$(SGMA) evaluate $(DEMO)/run/checkpoints/best.pt --out $(DEMO)/report
	$(SGMA) predict $(DEMO)/scene --checkpoint $(DEMO)/run/checkpoints/best.pt --modalities rgb,sar \
		--out $(DEMO)/map_rgb_sar.tif --robustness --vectorize $(DEMO)/map_rgb_sar.gpkg
	@echo "demo outputs in $(DEMO)/: report/ (tables, plots), map_rgb_sar.tif (open in QGIS), run/ (logs, plots)"

test: $(VENV)/.installed
	$(PY) -m pytest -q

# every shell example of README.md and docs/*.md, run as written (docs/doc-examples.md)
docs-test: $(VENV)/.installed
	$(PY) -m pytest -q -m docs tests/test_docs.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sgma_cli tests benchmarks
	$(VENV)/bin/ruff format --check sgma_cli tests benchmarks

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix sgma_cli tests benchmarks
	$(VENV)/bin/ruff format sgma_cli tests benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/fusion_forms.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
