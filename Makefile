# Two commands: `make serve` and `make test`. Both bootstrap .venv from constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint peers bench lock clean help

help:
	@echo "make serve   - start the bridge on the embedded default (SQLite, ./var)"
	@echo "make test    - run the whole test suite (installs dcmtk when missing and apt is available)"
	@echo "make lint    - ruff and mypy"
	@echo "make bench   - run the benchmarks in bench/"
	@echo "make lock    - refresh constraints.txt from pyproject.toml"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

serve: $(STAMP)
	$(BIN)/bridge serve $(if $(CONFIG),--config $(CONFIG),)

# Real peers for the tests: Debian's dcmtk (findscu, storescu, wlmscpfs, ...).
peers:
	@if ! command -v findscu >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing dcmtk with apt-get"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dcmtk >/dev/null; \
	  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
	    sudo -n apt-get update -q >/dev/null && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dcmtk >/dev/null \
	      || echo "dcmtk is missing and could not be installed; tests that need it will skip (or fail in CI)"; \
	  else \
	    echo "dcmtk is missing; tests that need it will skip (or fail in CI)"; \
	  fi; \
	fi

test: $(STAMP) peers
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/mypy bridge

bench: $(STAMP) peers
	$(BIN)/python bench/hl7_ingest.py
	$(BIN)/python bench/mwl_query.py

lock:
	rm -rf /tmp/bridge-lock && $(PYTHON) -m venv /tmp/bridge-lock
	/tmp/bridge-lock/bin/pip install -q -e '.[dev]'
	/tmp/bridge-lock/bin/pip freeze --exclude-editable | grep -v '^bridge' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
