# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# EPICS PVA/CA discovery stays on this host for everything make starts (tests, demo, bench)
export EPICS_PVA_AUTO_ADDR_LIST := NO
export EPICS_PVA_ADDR_LIST := 127.0.0.1
export EPICS_PVAS_INTF_ADDR_LIST := 127.0.0.1
export EPICS_PVAS_AUTO_BEACON_ADDR_LIST := NO
export EPICS_PVAS_BEACON_ADDR_LIST := 127.0.0.1
export EPICS_CA_AUTO_ADDR_LIST := NO
export EPICS_CA_ADDR_LIST := 127.0.0.1

.PHONY: install demo test lint bench models fuzz clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m cdistream demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m cdistream bench --json bench.json --plot latency.png

# 10,000 mutated messages per detector format through every decoder and a live service
fuzz: $(STAMP)
	CDISTREAM_FUZZ=10000 $(PY) -m pytest tests/test_fuzz.py

lint: $(STAMP)
	$(PY) -m ruff check cdistream training sim_detector tests

# Regenerate models/ (about two hours on 2 CPU cores); see models/MODEL_CARD.md.
models: $(STAMP)
	$(PY) -m training all

clean:
	rm -rf $(VENV) data .pytest_cache
