# Two commands for a newcomer: `make deploy`, then `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is named after the dependency files' hash, so editing a pin reinstalls.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.txt requirements-dev.txt constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
# make runs this checkout's package, even when .venv is another checkout's (its editable install
# points there): a copy of the tree must never deploy or revert with the original's code.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
# pytest-xdist workers, each with its own PostgreSQL servers. 3 on the 2-core CI machines: much of
# a test is spent waiting on the Pulumi CLI, a server or a lock, so a third worker fills the cores
# (the whole suite, warm: 11 min 41 s on 3 workers against 13 min 24 s on 2; 4 workers were slower).
WORKERS ?= 3
# The checked code: the package, the Pulumi program, the scripts, the tools script, benches, tests.
CODE   := x402db scripts tests bench tools __main__.py
# The database of status, smoke, plan and revert: DATABASE_URL, else the embedded server's. A stopped
# server stops the recipe with its own one line (what to do), not a second about a missing database.
DB_URL  = url=$${DATABASE_URL:-$$($(BIN)/python scripts/local_db.py url)} || exit $$?; DATABASE_URL=$$url

.PHONY: help venv deploy plan test test-fast lint fmt typecheck lock shipped-downs smoke status start stop revert bench clean-local pulumi-tools
.DEFAULT_GOAL := help

help:                        ## list the targets; ARGS="..." passes options to the script a target runs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):[^#]*## /\1\t/' | \
	  awk -F'\t' '{ gsub(/\$$\$$/, "$$", $$2); printf "  make %-13s %s\n", $$1, $$2 }'

# The package is installed editable: scripts/*.py and the console commands run this checkout's code.
# pip's own progress at a terminal; in CI (or a pipe) one line before and one after, with the time.
$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned dependencies into $(VENV) with pip (first run: about a minute)"
	@if [ -t 1 ] && [ -z "$$CI" ]; then quiet=; else quiet=--quiet; fi; start=$$(date +%s); \
	  $(BIN)/python -m pip install $$quiet --disable-pip-version-check -r requirements-dev.txt && \
	  echo "installed the dependencies in $$(( $$(date +%s) - start )) s"
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)               ## create or update .venv (the package, editable, with the pins of constraints.txt)

deploy: venv                 ## deploy to $$DATABASE_URL (named first; asks at a terminal, ARGS=--yes does not), else to an embedded PostgreSQL under .local/
	@$(BIN)/python scripts/deploy_local.py $(ARGS)

plan: venv                   ## what `make deploy` would run, lock and refuse, changing nothing ($$DATABASE_URL, else local); ARGS="--down" for a revert
	@$(DB_URL) $(BIN)/python scripts/migrate.py plan $(ARGS)

pulumi-tools:                ## find or build the real Pulumi CLI and plugins (cached outside the checkout); last line PULUMI_BIN=<dir>
	@$(PYTHON) tools/pulumi/pulumi_tools.py $(ARGS)

test: venv                   ## the whole suite, against real PostgreSQL 18 (and 15 when installed), the real Pulumi engine, and the Node keyring's
	@if command -v node >/dev/null; then echo "node --test clients/node/"; node --test --test-reporter=dot clients/node/ && echo; \
	  else echo "note: node is not installed; the Node keyring's tests are skipped (.ci/run installs it)"; fi
	@bin=$${PULUMI_BIN:-$$($(PYTHON) tools/pulumi/pulumi_tools.py --optional | tail -n 1 | sed -n 's/^PULUMI_BIN=//p')}; \
	  PULUMI_BIN=$$bin X402_NODE_TESTS_DONE=$$(command -v node >/dev/null && echo 1) $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS) $(ARGS)

test-fast: venv              ## the tier that needs no server, no Pulumi and no node (well under a minute)
	@$(BIN)/python -m pytest -n $(WORKERS) -m unit -q $(PYTEST_ARGS) $(ARGS)

lint: venv                   ## ruff: formatting and lint rules (pyproject.toml), changing nothing
	@$(BIN)/ruff format --check $(CODE)
	@$(BIN)/ruff check $(CODE)

fmt: venv                    ## ruff: format and apply the safe lint fixes
	@$(BIN)/ruff format $(CODE)
	@$(BIN)/ruff check --fix $(CODE)

typecheck: venv              ## mypy, with the settings in pyproject.toml
	@$(BIN)/mypy $(ARGS)

shipped-downs: venv          ## regenerate x402db/migrate/shipped_downs.json from git's history of sql/*.down.sql
	@$(BIN)/python -m x402db.migrate.shipped --write $(ARGS)

lock:                        ## re-resolve pyproject.toml's dependencies into constraints.txt (needs PyPI)
	@tmp=$$(mktemp -d) && $(PYTHON) -m venv $$tmp && $$tmp/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' && \
	  { sed -n '1,3p' constraints.txt; $$tmp/bin/python -m pip freeze --exclude-editable | grep -v -i '^x402db'; } > constraints.txt.new && \
	  mv constraints.txt.new constraints.txt && rm -rf $$tmp && echo "constraints.txt: re-resolved; review with git diff"

smoke: venv                  ## verify the local (or $$DATABASE_URL) database
	@$(DB_URL) $(BIN)/python scripts/smoke.py $(ARGS)

status: venv                 ## the ledger of the local (or $$DATABASE_URL) database
	@$(DB_URL) $(BIN)/python scripts/migrate.py status $(ARGS)

start: venv                  ## start the embedded PostgreSQL without deploying; prints its DATABASE_URL
	@$(BIN)/python scripts/local_db.py start $(ARGS)

stop: venv                   ## stop the embedded PostgreSQL
	@$(BIN)/python scripts/local_db.py stop $(ARGS)

revert: venv                 ## revert every migration on the local (or $$DATABASE_URL) database, named first (refuses to drop rows)
	@$(DB_URL) $(BIN)/python scripts/migrate.py down --to base $(ARGS)

bench: venv                  ## every bench/bench_*.py: figures next to their baselines, as ratios
	@for b in bench/bench_*.py; do $(BIN)/python $$b $(ARGS) || exit 1; done

clean-local: venv            ## delete the local database (after stopping it), wherever its data lives
	@$(BIN)/python scripts/local_db.py delete $(ARGS)
	rm -rf .local
