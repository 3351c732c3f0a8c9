# Easel: the two quick-start commands are `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.easel-installed
HOST   ?= 127.0.0.1
PORT   ?= 8765

.PHONY: setup serve test test-editors test-krita test-gimp lint bench clean

setup: $(STAMP)

# constraints.txt pins the CPU build of torch for dev/CI; users installing the package get a loose torch.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install --quiet torch==2.13.0
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/easel serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not editor" tests

test-editors: test-krita test-gimp

test-krita: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m editor tests/editors/test_krita.py

test-gimp: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m editor tests/editors/test_gimp.py

lint: $(STAMP)
	$(VENV)/bin/ruff check server tests plugin_krita plugin_gimp bench

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache
