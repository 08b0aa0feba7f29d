# The two commands of the README. Each sets up .venv on first use (scripts/install.sh).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	PYTHON=$(PY) bash scripts/install.sh
	touch $@

demo: install
	$(PY) -m hat_basicsr.demo

test: install
	$(PY) -m pytest -q
