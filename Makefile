# Two commands for a newcomer: `make deploy`, then `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is named after the requirements' hash, so editing a pin reinstalls.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt constraints.txt 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: venv deploy plan test smoke status stop revert bench clean-local pulumi-tools

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

deploy: venv                 ## deploy to $$DATABASE_URL, else to an embedded PostgreSQL under .local/
	@$(BIN)/python scripts/deploy_local.py

plan: venv                   ## what `make deploy` would run, lock and refuse, changing nothing ($$DATABASE_URL, else local); ARGS="--down" for a revert
	@DATABASE_URL=$${DATABASE_URL:-$$($(BIN)/python scripts/local_db.py url)} $(BIN)/python scripts/migrate.py plan $(ARGS)

pulumi-tools:                ## find or build the real Pulumi CLI and plugins (cached outside the checkout); last line PULUMI_BIN=<dir>
	@$(PYTHON) tools/pulumi/pulumi_tools.py $(ARGS)

test: venv                   ## the whole suite, against real PostgreSQL 18 (and 15 when installed), the real Pulumi engine, and the Node keyring's
	@if command -v node >/dev/null; then echo "node --test clients/node/"; node --test --test-reporter=dot clients/node/ && echo; \
	  else echo "note: node is not installed; the Node keyring's tests are skipped (.ci/run installs it)"; fi
	@bin=$${PULUMI_BIN:-$$($(PYTHON) tools/pulumi/pulumi_tools.py --optional | tail -n 1 | sed -n 's/^PULUMI_BIN=//p')}; \
	  PULUMI_BIN=$$bin X402_NODE_TESTS_DONE=$$(command -v node >/dev/null && echo 1) $(BIN)/python -m pytest $(PYTEST_ARGS)

smoke: venv                  ## verify the local (or $$DATABASE_URL) database
	@DATABASE_URL=$${DATABASE_URL:-$$($(BIN)/python scripts/local_db.py url)} $(BIN)/python scripts/smoke.py

status: venv
	@DATABASE_URL=$${DATABASE_URL:-$$($(BIN)/python scripts/local_db.py url)} $(BIN)/python scripts/migrate.py status

stop: venv                   ## stop the embedded PostgreSQL
	@$(BIN)/python scripts/local_db.py stop

revert: venv                 ## revert every migration on the local database (refuses to drop rows)
	@$(BIN)/python scripts/local_db.py revert $(ARGS)

bench: venv
	@for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean-local: venv            ## delete the local database (after stopping it), wherever its data lives
	@$(BIN)/python scripts/local_db.py delete
	rm -rf .local
