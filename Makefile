# Set-up, demo and tests. `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VDR := $(BIN)/vdr
STAMP := $(VENV)/.installed
DEMO_INDEX := .vdr-demo

.PHONY: setup browser demo test lint bench clean

setup: $(STAMP)

# The system tool the demo needs (poppler renders PDFs), then torch and torchvision, pinned
# (pip takes them from this machine's disk when it can); colpali-engine with --no-deps because
# it pins torch<2.14 (its runtime deps are ours, in pyproject.toml); then the project itself
# with its dev extras. Chromium, for the browser test only, is installed by `make test`.
$(STAMP): pyproject.toml Makefile
	@command -v pdftoppm >/dev/null && command -v pdftotext >/dev/null || \
	  $(call apt_install,poppler-utils,poppler renders PDFs)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-deps colpali-engine==0.3.18
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# apt_install(package, why): install a Debian package, with sudo unless root.
apt_install = { echo "installing $(1) ($(2))"; \
  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(1); }

browser:
	@[ -x /usr/bin/chromium ] || $(call apt_install,chromium,the browser test drives it)

# The main job on the embedded default: index the sample PDFs, search, write a heatmap.
demo: setup
	$(VDR) index samples/pdfs --index $(DEMO_INDEX)
	$(VDR) search "quarterly generation per site" --index $(DEMO_INDEX) -k 3
	$(VDR) search "harbour dredging permit" --index $(DEMO_INDEX) -k 3
	page=$$($(VDR) search "harbour dredging permit" --index $(DEMO_INDEX) -k 1 --json \
	  | $(BIN)/python -c "import json, sys; print(json.load(sys.stdin)[0]['page_id'])") && \
	$(VDR) heatmap "harbour dredging permit" --page $$page --index $(DEMO_INDEX) -o demo-heatmap.png

lint: setup
	$(BIN)/ruff check .

test: setup browser lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benches/index_throughput.py

clean:
	rm -rf $(DEMO_INDEX) demo-heatmap.png .pytest_cache
