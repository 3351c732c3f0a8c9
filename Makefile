# Easel: the two quick-start commands are `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.easel-installed
LOCK   := requirements.lock
AUX_LOCK := requirements-annotators.lock
LATEST ?= .venv-latest
HOST   ?= 127.0.0.1
PORT   ?= 8765
WHEEL_VENV ?= .venv-wheel
SID_ROOT   ?= /var/cache/easel/editors-sid
KRITA_TESTS  = $(wildcard tests/editors/test_krita_*.py)
GIMP_TESTS   = $(wildcard tests/editors/test_gimp*.py)

.PHONY: setup serve test test-latest lock test-editors test-krita test-gimp lint bench clean \
        wheel-smoke test-editors-newest test-krita-newest test-gimp-newest bench-full soak

setup: $(STAMP)

# Dev/CI install exactly the locked set (requirements.lock, made by `make lock`); the package's own
# requirements stay ranges, so users installing it get their CUDA torch. constraints.txt pins the
# CPU build of torch for dev/CI. $(AUX_LOCK) goes in with --no-deps (why: its header).
$(STAMP): pyproject.toml constraints.txt $(LOCK) $(AUX_LOCK)
	@echo "easel: setting up $(VENV) with the locked dependencies (the first time takes a few minutes: torch and diffusers)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r $(LOCK)
	$(PY) -m pip install --no-deps -r $(AUX_LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@echo "easel: $(VENV) is ready"
	touch $(STAMP)

# Refresh the lock: the newest releases pyproject.toml's ranges allow (torch held by constraints.txt).
lock:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet pip-tools
	$(VENV)-lock/bin/pip-compile --quiet --upgrade --extra dev --extra ray --extra openvino -c constraints.txt --strip-extras --allow-unsafe \
	    --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	rm -rf $(VENV)-lock

# The same suite on the newest releases the ranges allow, in a separate venv; then what differs from
# the lock. Not part of .ci/run: an upstream release must not block unrelated work.
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev,ray,openvino]'
	grep -v '^#' $(AUX_LOCK) | sed 's/==.*//' | xargs $(LATEST)/bin/pip install --quiet --no-deps --upgrade  # their newest too
	HF_HUB_OFFLINE=1 $(LATEST)/bin/python -m pytest -q -m "not editor" -p no:cacheprovider tests; \
	    rc=$$?; $(LATEST)/bin/python .ci/lock_diff.py $(LOCK) $(AUX_LOCK); exit $$rc

serve: $(STAMP)
	$(VENV)/bin/easel serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not editor" tests

# The wheel as painters get it: built, installed (not editable, locked versions) into a clean
# $(WHEEL_VENV), its CLI run from outside the checkout against a real `easel serve` (.ci/wheel_smoke.sh).
wheel-smoke: $(STAMP)
	WHEEL_VENV=$(WHEEL_VENV) BUILD_PY=$(PY) PYTHON=$(PYTHON) bash .ci/wheel_smoke.sh

# Real editors (docs/krita.md, docs/gimp.md). The oldest supported: Debian 12's Krita 5.1.5 on this
# machine (.ci/install_krita.sh), GIMP 3.0.4 in a trixie chroot (.ci/install_gimp.sh). The newest
# Debian ships: Krita and GIMP in a sid chroot (.ci/install_sid_editors.sh). The plugins come from
# this checkout, or from the wheel with EASEL_PLUGIN_INSTALLER=$(WHEEL_VENV)/bin/easel (CI).
test-editors: test-krita test-gimp
test-editors-newest: test-krita-newest test-gimp-newest

test-krita: $(STAMP)
	EASEL_KRITA_ROOT= HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m editor $(KRITA_TESTS)

test-gimp: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m editor $(GIMP_TESTS)

test-krita-newest: $(STAMP)
	EASEL_KRITA_ROOT=$(SID_ROOT) HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m editor $(KRITA_TESTS)

test-gimp-newest: $(STAMP)
	EASEL_GIMP_ROOT=$(SID_ROOT) HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m editor $(GIMP_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check server tests plugin_krita plugin_gimp bench setup.py .ci

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench

# Full-size SD1.5 (random weights, cached in ~/.cache/easel-bench) on the CPU: Easel vs raw diffusers, the
# speed options, cold start, and ComfyUI when $$EASEL_BENCH_COMFYUI names an install (docs/performance.md).
bench-full: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench.full $(BENCH_FULL_ARGS)

# Soak test, not in `make test`: a real easel serve under random clients that submit, cancel, drop their
# socket and fetch on reconnect; exits non-zero on a lost result, a slow answer, RSS growth or unfairness
# (docs/performance.md, "Soak test"). E.g. make soak SOAK_ARGS="--minutes 1 --clients 4".
SOAK_ARGS ?= --minutes 10 --clients 8
soak: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(LATEST) $(WHEEL_VENV) .pytest_cache
