# unioncard: the two commands are `make demo` and `make test` (see README.md).
# Both install what they need: Debian packages (as root) and a virtual environment.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian's own Python (python3-venv): the interpreter the units run under, readable by
# the service user (a python3 from pyenv under /root would not be)
PYTHON ?= /usr/bin/python3
DATA ?= demo-data

# Debian packages the product needs at run time, and to build pyscard from source.
DEB_RUN := pcscd vsmartcard-vpcd libpcsclite-dev swig gcc python3-dev python3-venv tzdata
# ... and what the test suite needs on top: a browser for the cashier page, PostgreSQL.
DEB_TEST := chromium chromium-driver fonts-wqy-microhei postgresql

.PHONY: help demo serve screenshots test test-fast test-kill test-faults soak lint typecheck bench translations deps deps-test venv clean

help:
	@echo "make demo   - install everything and run unioncard end to end (SQLite, virtual card reader)"
	@echo "make test   - install everything and run lint, type checks and the whole test suite"
	@echo "make test-fast - the pure and in-process tests only (no pcscd, PostgreSQL, browser)"
	@echo "make test-kill - 1,000 checkouts with the daemon killed at random moments"
	@echo "make soak   - an hour of mixed load, faults and kills; one line of counts"
	@echo "make bench  - measure the performance goals (QUICK=1 for a short run)"
	@echo "make translations - update and compile the Simplified Chinese catalogue"

deps:
	@bash -c 'missing=""; for p in $(DEB_RUN); do dpkg-query -W -f="\$${Status}" $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi'

deps-test: deps
	@bash -c 'missing=""; for p in $(DEB_TEST); do dpkg-query -W -f="\$${Status}" $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-binary pyscard --config-settings editable_mode=compat -e '.[dev]'
	@touch $@

venv: deps $(VENV)/.installed

demo: venv
	$(VENV)/bin/unioncard demo --data $(DATA)
	@$(PY) -m tests.privacy $(DATA)  # issue 16: no card number in any file the demo wrote

serve: venv
	$(VENV)/bin/unioncard demo --data $(DATA) --serve

# the README's screenshots of the cashier page (Chinese and English), taken by the
# browser test with an emulated card through pcscd, and of the union's console
screenshots: deps-test venv
	UNIONCARD_SCREENSHOTS=docs $(PY) -m pytest -q -p no:randomly tests/test_web.py tests/test_console_flow.py -k chromium

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

test: deps-test venv lint typecheck
	$(PY) tests/services.py postgres
	$(PY) -m pytest $(PYTEST_ARGS)

# The long form of the SIGKILL test: 1,000 checkouts through the daemon's till API,
# killed at random moments (about 17 minutes here; the short form is in `make test`).
test-kill: deps-test venv
	UNIONCARD_KILL_CHECKOUTS=1000 $(PY) -m pytest -q -s tests/test_kill.py

# The long form of the sync's fault trials: 200 trials on SQLite and 200 on PostgreSQL of
# proxy faults, the sync SIGKILLed and the central service SIGKILLed mid-ingest, each
# checked for every journaled entry held once (tests/test_sync_faults.py; about 15
# minutes here; the short form is in `make test`). UNIONCARD_FAULT_SEED=S repeats a run.
test-faults: deps-test venv
	$(PY) tests/services.py postgres
	UNIONCARD_FAULT_TRIALS=200 $(PY) -m pytest -q -s tests/test_faultproxy.py tests/test_sync_faults.py

# The soak (issue 16): an hour of mixed load on loopback against one central service
# (SQLite) and three terminal daemons: checkouts, voids and refunds through the till API,
# syncs through the fault proxy, roster and policy updates, SIGKILLs of daemons and
# syncs; it ends with one line of counts and fails on a lost, duplicated or unexplained
# entry (tests/soak.py; 60 minutes plus about one of setup and checks; the 2-minute
# form is tests/test_soak.py in `make test`). SOAK_ARGS="--db postgres --seed S" etc.
soak: deps-test venv
	$(PY) -m tests.soak --minutes 60 $(SOAK_ARGS)

# The fast lane while editing: no devices, no database server, no browser, no subprocess.
test-fast: venv
	$(PY) -m pytest -q -n 2 -m "not pcsc and not postgres and not browser and not slow" $(PYTEST_ARGS)

bench: deps-test venv
	-$(PY) tests/services.py postgres  # the PostgreSQL figures say so when it is not there
	$(PY) -m bench $(if $(QUICK),--quick,)

# The Simplified Chinese catalogue, terminal/translations/zh/LC_MESSAGES/messages.po: extract
# every message id from the code and the templates (babel.cfg) into a temporary template,
# merge it into messages.po (new ids come in untranslated, changed ones fuzzy: translate
# them there, keeping each %(name)s), then compile messages.mo. Commit both files;
# tests/test_messages.py fails on an id that is missing, untranslated or fuzzy, and on a
# messages.mo that is not messages.po compiled.
translations: venv
	@pot=$$(mktemp --suffix=.pot) && trap 'rm -f "$$pot"' EXIT && \
	  $(VENV)/bin/pybabel -q extract -F babel.cfg --add-location=file --sort-output --no-wrap \
	    -c TRANSLATORS: --project=unioncard -o "$$pot" . && \
	  $(VENV)/bin/pybabel update -i "$$pot" -d terminal/translations -l zh --no-wrap \
	    --ignore-obsolete --ignore-pot-creation-date --no-fuzzy-matching
	@pot=$$(mktemp --suffix=.pot) && trap 'rm -f "$$pot"' EXIT && \
	  $(VENV)/bin/pybabel -q extract -F babel-central.cfg --add-location=file --sort-output \
	    --no-wrap -c TRANSLATORS: --project=unioncard-console -o "$$pot" . && \
	  if [ -f central/translations/zh/LC_MESSAGES/messages.po ]; then \
	    $(VENV)/bin/pybabel update -i "$$pot" -d central/translations -l zh --no-wrap \
	      --ignore-obsolete --ignore-pot-creation-date --no-fuzzy-matching; \
	  else $(VENV)/bin/pybabel init -i "$$pot" -d central/translations -l zh --no-wrap; fi
	$(VENV)/bin/pybabel compile -d terminal/translations --statistics
	$(VENV)/bin/pybabel compile -d central/translations --statistics

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
