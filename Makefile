# The whole set-up on a fresh machine: `make reproduce` (the study on the phantom, course profile,
# plus the book) and `make test` (the test suite, notebooks included). Both create .venv and
# install the project's pinned dependencies first; nothing is reinstalled when pyproject.toml
# has not changed.
PYTHON  ?= python3
PROFILE ?= course
# CPU threads for torch (empty: torch's default, one per core); e.g. `make reproduce THREADS=1`.
THREADS ?=
RUN_OPTS := $(if $(THREADS),--threads $(THREADS))
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# nbval's and the pipeline test's run folder; emptied before every `make test`.
TEST_RUN := runs/test-smoke

# Extra training seeds for `make seeds` (the main run uses the profile's own seed).
SEEDS   ?= 1 2

.PHONY: install reproduce run book test unit notebooks bench seeds clean help browser

help:
	@echo "make reproduce   run notebooks 00-08 on the phantom (PROFILE=$(PROFILE)) and build the book"
	@echo "make test        unit tests + the smoke study through papermill + every notebook under nbval"
	@echo "make unit        the fast unit tests only (skips tests marked slow)"
	@echo "make run|book    only the pipeline / only the book (PROFILE=smoke|course|paper)"
	@echo "make bench       speed benchmarks (print numbers)"
	@echo "make seeds       notebooks 00-05 again with training seeds SEEDS=\"$(SEEDS)\", then DSC mean ± sd over seeds"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[book,test]"
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/tofmra run --profile $(PROFILE) $(RUN_OPTS) --book

run: $(STAMP)
	$(BIN)/tofmra run --profile $(PROFILE) $(RUN_OPTS)

book: $(STAMP)
	$(BIN)/tofmra book --profile $(PROFILE)

# Headless Chromium and its driver for tests/test_pipeline_book_browser.py (Debian packages); nothing happens
# when both are present, and without apt-get the browser test is skipped, with its reason.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "make browser: no apt-get here; install chromium and chromedriver to run the book's browser test"; fi

test: $(STAMP) browser
	rm -rf $(TEST_RUN)
	TOFMRA_RUN_DIR=$(CURDIR)/$(TEST_RUN) $(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

notebooks: $(STAMP)
	rm -rf $(TEST_RUN)
	TOFMRA_RUN_DIR=$(CURDIR)/$(TEST_RUN) $(BIN)/python -m pytest notebooks

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Notebooks 00-05 once per extra training seed (same data), then notebook 05's DSCs over all seeds
# with the main run (`make reproduce` first): the spread that says which GAN order is a finding.
seeds: $(STAMP)
	for s in $(SEEDS); do $(BIN)/tofmra run --profile $(PROFILE) $(RUN_OPTS) --seed $$s --out runs/$(PROFILE)-seed-$$s --only 00,01,02,03,04,05 || exit 1; done
	$(BIN)/tofmra report --run runs/$(PROFILE) --seeds $(foreach s,$(SEEDS),runs/$(PROFILE)-seed-$(s)) | tee runs/$(PROFILE)-seeds.md

clean:
	rm -rf runs/smoke $(TEST_RUN)
