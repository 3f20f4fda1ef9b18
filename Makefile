# Two commands matter: `make demo` and `make test`. Everything else is a step they share.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser demo test lint test-fast bench bench-reliability serve worker clean

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e clients/python -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

# Browser tests drive Debian's Chromium; install it once when it is missing.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

demo: install
	$(PY) -m app.cli demo

lint: install
	$(PY) -m ruff check app workers proxy_models strategies migrations tests bench examples clients
	$(PY) -m mypy
	$(PY) -m mypy clients/python/mixlab_client
	$(VENV)/bin/lint-imports

test: install browser lint
	$(VENV)/bin/pytest -q -ra tests

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow and not browser" tests

bench: install
	for b in bench/*.py; do $(PY) $$b --quick || exit 1; done

# Kills workers 20 times and restarts Redis and PostgreSQL twice each, on its own instances (minutes).
bench-reliability: install
	$(PY) bench/reliability.py

serve: install
	$(PY) -m app.cli serve

worker: install
	$(PY) -m app.cli worker

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache artifacts
