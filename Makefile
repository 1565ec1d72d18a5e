# Two commands: `make serve` and `make test`. Both bootstrap .venv from constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint peers bench crash fuzz lock clean help

help:
	@echo "make serve   - start the bridge on the embedded default (SQLite, ./var)"
	@echo "make test    - run the whole test suite (installs dcmtk and orthanc when missing and apt is available)"
	@echo "make lint    - ruff, mypy and the import contracts (lint-imports)"
	@echo "make bench   - run the benchmarks in bench/"
	@echo "make crash   - the kill -9 tests at full size (10,000 HL7 messages, 4,000 objects, 5 kills)"
	@echo "make fuzz    - the fuzz tests at full size (100,000 HL7 messages, 200 requests per API operation)"
	@echo "make lock    - refresh constraints.txt from pyproject.toml"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

serve: $(STAMP)
	$(BIN)/bridge serve $(if $(CONFIG),--config $(CONFIG),)

# Real peers for the tests (Debian's dcmtk, orthanc, orthanc-dicomweb), installed when missing.
peers:
	@bash scripts/install-peers.sh

test: $(STAMP) peers
	$(BIN)/pytest $(PYTEST_ARGS)

# The crash tests of the suite, longer: more messages and objects, more kills.
crash: $(STAMP) peers
	BRIDGE_CRASH_MESSAGES=10000 BRIDGE_CRASH_OBJECTS=4000 BRIDGE_CRASH_KILLS=5 \
		$(BIN)/pytest -p no:cacheprovider tests/integration/test_crash_hl7.py \
		tests/integration/test_crash_cstore.py $(PYTEST_ARGS)

# The fuzz tests of the suite, longer (the seeds stay fixed: a failure replays).
fuzz: $(STAMP) peers
	BRIDGE_FUZZ_MESSAGES=100000 BRIDGE_FUZZ_EXAMPLES=200 \
		$(BIN)/pytest -p no:cacheprovider tests/integration/test_hl7_fuzz.py \
		tests/integration/test_api_fuzz.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/mypy bridge
	$(BIN)/lint-imports --no-cache

bench: $(STAMP) peers
	$(BIN)/python bench/hl7_ingest.py
	$(BIN)/python bench/mwl_query.py
	$(BIN)/python bench/store_ingest.py --postgres
	$(BIN)/python bench/store_memory.py --references
	$(BIN)/python bench/index_growth.py --postgres
	$(BIN)/python bench/fhir_intake.py
	$(BIN)/python bench/fhir_publish.py
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/storage_migration.py
	$(BIN)/python bench/legacy_import.py
	$(BIN)/python bench/access_filter.py
	$(BIN)/python bench/access_filter.py --postgres
	$(BIN)/python bench/deid.py
	$(BIN)/python bench/rendered.py

lock:
	rm -rf /tmp/bridge-lock && $(PYTHON) -m venv /tmp/bridge-lock
	/tmp/bridge-lock/bin/pip install -q -e '.[dev]'
	/tmp/bridge-lock/bin/pip freeze --exclude-editable | grep -v '^bridge' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
