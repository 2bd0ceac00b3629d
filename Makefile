# The project's commands. `make demo` and `make test` are the README's two set-up commands:
# each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test check lint typecheck imports protos bench clean

# An editable install leaves the project's modules uncompiled, and where
# PYTHONDONTWRITEBYTECODE is set every `tms` command and sidecar would compile them at
# each start (~35 ms): compile once, as `pip install .` does. Python checks each .pyc against
# its source's time and size, so an edited module is read from its source again.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m compileall -q tms_core tms_console sidecar
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tms demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	# The benchmarks are run by hand, so a call a refactor broke shows only here.
	$(BIN)/mypy --explicit-package-bases --follow-imports=silent benchmarks

imports: $(STAMP)
	$(BIN)/lint-imports

check: lint typecheck imports test

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP)
	$(BIN)/python benchmarks/time_to_ready.py --rounds 7
	$(BIN)/python benchmarks/router_overhead.py
	$(BIN)/python benchmarks/placement_sim.py
	$(BIN)/python benchmarks/console_events.py --rounds 7
	$(BIN)/python benchmarks/notebook_infer.py --rounds 5 --calls 200
	$(BIN)/python benchmarks/autoscaling.py --rounds 5

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
