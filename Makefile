# Two commands do all set-up on a fresh machine with Python 3.11+:
#   make serve   create .venv, install pbx-bridge, run it on SQLite in this folder
#   make test    create .venv, install pbx-bridge with its test tools, run the test suite
PYTHON ?= python3
VENV ?= .venv

.PHONY: serve test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/pbx-bridge serve

test: $(VENV)/.installed
	$(VENV)/bin/pytest
