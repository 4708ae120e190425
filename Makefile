# together-dash: `make run` sets everything up and runs the dashboard; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PORT ?= 8000
SIMULATOR_PORT ?= 8001
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test test-faults audit bench bench-scale bench-soak bench-peers setup venv npm deps collectstatic migrate lint lock clean

# ---- set-up ---------------------------------------------------------------------------------------
# requirements.txt and requirements-dev.txt are locks compiled from the .in files (`make lock`): every
# package, transitive ones too, pinned with its hashes, and pip refuses anything that does not match.
# requirements-dev.txt holds the runtime set as well, at the same versions. pip itself is pinned there
# too, so it is not upgraded unpinned beforehand: the venv's own pip installs the runtime lock.
$(VENV)/.stamp-runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.txt
	touch $@

$(VENV)/.stamp-dev: requirements-dev.txt requirements.txt $(VENV)/.stamp-runtime
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

# Recompile the locks after editing requirements.in or requirements-dev.in. pip-compile keeps every pin
# already in a lock that still satisfies the inputs, so only what was edited moves; add --upgrade-package
# NAME to PIP_COMPILE_ARGS to move one more. pip-tools runs from a virtualenv of its own.
PIP_COMPILE = .venv-piptools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links $(PIP_COMPILE_ARGS)
.venv-piptools/.stamp:
	test -x .venv-piptools/bin/python || $(PYTHON) -m venv .venv-piptools
	.venv-piptools/bin/python -m pip install --quiet pip-tools==7.6.2
	touch $@

lock: .venv-piptools/.stamp
	$(PIP_COMPILE) --output-file=requirements.txt requirements.in
	$(PIP_COMPILE) --output-file=requirements-dev.txt requirements-dev.in

# npm packages: Chart.js for the pages; oidc-provider (a devDependency), which the single sign-on tests
# run as a real identity provider with the machine's Node.js (Debian's nodejs, 20 or later; no new package).
node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

venv: $(VENV)/.stamp-runtime
npm: node_modules/.stamp
deps: venv npm

# The tool virtualenvs (.venv-sdk1, .venv-sdk2 and .venv-litellm below, .venv-piptools above) install one pinned
# package each without hashes: they are kept apart from .venv and are not part of what together-dash runs on.
# The together 1.5.x SDK in its own virtualenv: the dataset validator's verdicts are tested against its check_file.
.venv-sdk1/.stamp:
	test -x .venv-sdk1/bin/python || $(PYTHON) -m venv .venv-sdk1
	.venv-sdk1/bin/python -m pip install --quiet together==1.5.34
	touch $@

# The together 2.x SDK in its own virtualenv: many apps still run it (base URL with /v1), and the main
# virtualenv holds today's 3.x. tests/proxy/test_sdk2.py drives it through the proxy.
.venv-sdk2/.stamp:
	test -x .venv-sdk2/bin/python || $(PYTHON) -m venv .venv-sdk2
	.venv-sdk2/bin/python -m pip install --quiet together==2.42.0
	touch $@

# LiteLLM's proxy in its own virtualenv, pinned: `make bench-peers` measures it against ours.
.venv-litellm/.stamp:
	test -x .venv-litellm/bin/python || $(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/python -m pip install --quiet 'litellm[proxy]==1.108.7'
	touch $@

# Debian's Chromium drives the browser tests (Playwright's own browser download does not work offline).
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# Debian's Prometheus scrapes a real server in tests/metrics, and its promtool checks deploy/prometheus/.
/usr/bin/prometheus:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  prometheus >/dev/null

collectstatic: deps
	$(PY) manage.py collectstatic --noinput --verbosity 0

migrate: venv
	$(PY) manage.py migrate --noinput --verbosity 0

setup: deps migrate collectstatic

# ---- run ------------------------------------------------------------------------------------------
# With no TOGETHER_API_KEY the simulator is started too and the app points at it (demo mode).
run: setup
	@if [ -z "$$TOGETHER_API_KEY" ]; then \
	  echo "No TOGETHER_API_KEY set: demo mode against the local simulator on port $(SIMULATOR_PORT)."; \
	  export DEMO_MODE=true TOGETHER_BASE_URL=http://127.0.0.1:$(SIMULATOR_PORT)/v1; \
	  $(PY) manage.py bootstrap && \
	  WEB_PORT=$(PORT) SIMULATOR_PORT=$(SIMULATOR_PORT) exec $(BIN)/honcho -f Procfile.demo start; \
	else \
	  $(PY) manage.py bootstrap && \
	  WEB_PORT=$(PORT) exec $(BIN)/honcho -f Procfile start; \
	fi

# ---- tests ----------------------------------------------------------------------------------------
test: deps $(VENV)/.stamp-dev /usr/bin/chromium /usr/bin/prometheus collectstatic .venv-sdk1/.stamp .venv-sdk2/.stamp
	# Tests keep generated secrets and broker folders in a scratch folder, not the developer's ./var.
	TOGETHER_DASH_VAR_DIR=$$(mktemp -d) $(BIN)/pytest -m "not faults" $(PYTEST_ARGS)

# The fault-injection suite (tests/faults/): it restarts PostgreSQL and Redis, kills workers and stops
# SMTP, so it runs on its own against the machine's PostgreSQL and Redis. Override the URLs to move it,
# e.g. to a scratch cluster of its own (`pg_createcluster 15 faults -p 5433`; found by its port).
FAULTS_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
FAULTS_REDIS_URL ?= redis://127.0.0.1:6379
FAULTS_ENV = TOGETHER_DASH_VAR_DIR=$$(mktemp -d) DATABASE_URL=$(FAULTS_DATABASE_URL) \
  CELERY_BROKER_URL=$(FAULTS_REDIS_URL)/0 CACHE_URL=$(FAULTS_REDIS_URL)/1
test-faults: deps $(VENV)/.stamp-dev
	$(FAULTS_ENV) $(BIN)/pytest -m faults tests/faults $(PYTEST_ARGS)

bench: deps $(VENV)/.stamp-dev .venv-litellm/.stamp
	$(PY) bench/run_all.py

# Our proxy and LiteLLM's against the same simulator, in the same run (bench/results/proxy_peers.json).
bench-peers: deps $(VENV)/.stamp-dev .venv-litellm/.stamp
	$(PY) bench/proxy_peers.py

# Dashboard at 10 thousand and 10 million request logs (scratch PostgreSQL databases, kept for reruns).
bench-scale: deps $(VENV)/.stamp-dev
	$(PY) bench/dashboard_scale.py $(BENCH_ARGS)

# Five minutes of proxy load at its highest sustainable rate beside 20 viewers and 5,000 ingest rows/s
# (scratch PostgreSQL database together_dash_soak, Redis databases 14 and 15): a table, a JSON, a PNG.
bench-soak: deps $(VENV)/.stamp-dev
	$(PY) bench/soak.py $(BENCH_ARGS)

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check together_dash tests bench

# Known vulnerabilities in the pinned packages and everything they pull in, from PyPI's advisories
# (PIP_AUDIT_SERVICE=osv for OSV's). --strict fails when a package could not be checked at all, so an
# unreachable service is never mistaken for a clean result. Accepted findings: .pip-audit-ignore.
PIP_AUDIT_SERVICE ?= pypi
audit: $(VENV)/.stamp-dev
	$(BIN)/pip-audit --strict --progress-spinner off --vulnerability-service $(PIP_AUDIT_SERVICE) \
	  -r requirements.txt -r requirements-dev.txt \
	  $$(grep -oE '^[A-Za-z0-9-]+' .pip-audit-ignore | sed 's/^/--ignore-vuln /')

clean:
	rm -rf $(VENV) .venv-sdk1 .venv-sdk2 .venv-litellm .venv-piptools node_modules staticfiles var
