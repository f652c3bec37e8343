# Every target creates .venv itself; `make demo` and `make test` work on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck bench bench-full fuzz clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	scripts/system-deps

demo: $(STAMP)
	$(PY) -m gatekeeper.demo

test: system-deps $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# make bench: every bench/ script in its quick mode (a few minutes; sizes still reach 1 M entries).
bench: system-deps $(STAMP)
	$(PY) bench/run_all.py --quick

# make bench-full: the full sizes (about 12 minutes on 2 cores).
bench-full: system-deps $(STAMP)
	$(PY) bench/run_all.py

# make fuzz: the hostile-input suite with many more examples (~50 min), then atheris
# coverage-guided runs of the same parser targets (~30 min).
fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,fuzz]'
	GK_FUZZ_EXAMPLES=$${GK_FUZZ_EXAMPLES:-20000} $(PY) -m pytest -q --timeout=3600 tests/test_hostile_parsers.py tests/test_hostile_config.py tests/test_hostile_proofs.py tests/test_hostile_http.py tests/test_action.py tests/test_bundle.py tests/test_verify_core.py
	for t in $$($(PY) fuzz/atheris_fuzz.py --list | cut -d' ' -f2-); do \
		$(PY) fuzz/atheris_fuzz.py $$t -max_total_time=60 -timeout=10 -artifact_prefix=fuzz/ || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis build *.egg-info
