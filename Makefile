# Two commands do all set-up on a fresh machine with Python 3.11+:
#   make serve   create .venv, install pbx-bridge, run it on SQLite in this folder
#   make test    create .venv, install pbx-bridge with its test tools, run the test suite
PYTHON ?= python3
VENV ?= .venv

.PHONY: serve test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

# `make serve` reads pbx-bridge.toml in this folder when it exists and PBX_BRIDGE_CONFIG is unset.
SERVE_CONFIG = $(if $(PBX_BRIDGE_CONFIG),,$(if $(wildcard pbx-bridge.toml),--config pbx-bridge.toml))

serve: $(VENV)/.installed
	$(VENV)/bin/pbx-bridge $(SERVE_CONFIG) serve

test: $(VENV)/.installed-test
	$(VENV)/bin/pytest
