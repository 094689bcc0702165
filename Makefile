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

.PHONY: demo test install bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]' 2>&1 | $(QUIET_PIP)
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(SGMA) profile --backbone pvt_v2_b2 --modalities rgb,dsm,nir --num-classes 6 --size 512

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/fusion_forms.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
