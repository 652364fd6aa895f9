# ftops — the README's commands. Everything a fresh machine needs is installed from here.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# azure-functions 2.x needs Python 3.13: take the first interpreter that really runs (pyenv shims may not).
PYTHON313 ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do \
	  if $$p -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then echo $$p; break; fi; done)
STAMP := $(VENV)/.setup-stamp

.PHONY: setup browser shellcheck jq demo test test-unit test-integration test-e2e test-infra bench lint clean

setup: $(STAMP) node_modules/.bin/azurite browser shellcheck jq

# $(call apt_install,COMMAND,PACKAGE,WHY): the Debian package, with apt, when COMMAND is missing (root only; the
# package lists are refreshed only when apt does not know the package yet).
apt_install = @if command -v $(1) >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "$(1) is missing and this is not root: run 'sudo apt-get install -y $(2)' ($(3))"; exit 0; fi; \
	apt-cache policy $(2) | grep -q 'Candidate: [0-9]' || apt-get update; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y $(2)

# The console's browser tests drive Debian's chromium (Playwright with executable_path; never a browser download).
browser:
	$(call apt_install,chromium,chromium,the console's browser tests fail without it)

# Every shell script of the repository (infra/scripts/, .ci/run) is checked by Debian's shellcheck in make test
# (tests/unit/test_infra_tools.py): the azd hooks run under macOS's /bin/sh (bash 3.2 in POSIX mode) too.
shellcheck:
	$(call apt_install,shellcheck,shellcheck,the infra tests fail without it)

# The infra scripts shape JSON with jq; their tests run them against a fake az (tests/unit/fake_az.py).
jq:
	$(call apt_install,jq,jq,the infra script tests fail without it)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -n "$(PYTHON313)" || { echo "Python 3.13 not found: install python3.13 (azure-functions 2.x needs it)"; exit 1; }
	@test -x $(PY) || $(PYTHON313) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

demo: setup
	$(VENV)/bin/ftops demo

# In parallel (pytest-xdist): TEST_WORKERS processes, each with its own Azurite and emulator; an end-to-end
# module is one lane (tests/conftest.py). More workers than cores: most of a test's time is spent waiting on
# the servers it drives. The ten slowest tests are printed at the end.
TEST_WORKERS ?= 6
PARALLEL := -n $(TEST_WORKERS) --dist loadgroup

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q $(PARALLEL) --durations=10

test-unit: setup
	$(PY) -m pytest -q -m "not integration and not e2e"

test-integration: setup
	$(PY) -m pytest -q -m integration $(PARALLEL) --durations=10

test-e2e: setup
	$(PY) -m pytest -q -m e2e

# infra/ and azure.yaml: Bicep parses, contract with the code, checkov, shellcheck, every .ps1 parsed and compared with its
# .sh twin, the scripts against a fake az, azure-functions-doctor (also in make test)
test-infra: setup
	$(PY) -m pytest -q tests/unit/test_infra_settings.py tests/unit/test_infra_contract.py tests/unit/test_infra_tools.py \
	  tests/unit/test_app_registration_script.py tests/unit/test_cross_tenant_script.py

bench: setup
	$(PY) -m benchmarks

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache
