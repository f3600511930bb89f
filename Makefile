# orch: the two commands a newcomer needs are `make demo` and `make test`;
# both run `make setup` first, which is idempotent and fast when all is there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ORCH := $(VENV)/bin/orch
DEMO_SWEEP ?= optimizer=SGD,adam model=lstm,bi_lstm

.PHONY: setup venv docker base-image demo-data demo test faults bench lint clean

setup: venv docker base-image-quiet demo-data

# The demo's datasets (gitignored, like a real project's data); rewrites nothing that is right.
demo-data:
	@$(PYTHON) scripts/demo-data.py

# The package's bytecode written now, as a regular install writes it: where
# PYTHONDONTWRITEBYTECODE is set, every `orch` and every resident driver would otherwise
# compile orch's modules again at each start.
venv: $(VENV)/.installed
	@$(PY) -m compileall -q orchestrator

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing orch into $(VENV) (log: $(VENV)/install.log)"
	@{ $(VENV)/bin/pip install --upgrade pip && $(VENV)/bin/pip install -e '.[dev,ray]'; } \
		> $(VENV)/install.log 2>&1 || { tail -n 30 $(VENV)/install.log; exit 1; }
	@touch $@

docker:
	@bash scripts/ensure-docker.sh

# Prints the base image ID (sha256:...) as its last line.
base-image: venv docker
	@$(PY) images/build_base.py

base-image-quiet: venv docker
	@$(PY) images/build_base.py > /dev/null

demo: setup
	@$(ORCH) sweep -p . --jobs 2 --base-image "$$($(PY) images/build_base.py 2>/dev/null | tail -n 1)" $(DEMO_SWEEP)

test: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider

faults: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider -m faults tests/faults tests/test_bad_input.py tests/test_security.py

bench: setup
	$(PY) bench/run.py

lint: venv
	$(VENV)/bin/ruff check orchestrator tests bench
	$(VENV)/bin/mypy --strict orchestrator
	$(VENV)/bin/vulture

clean:
	rm -rf .orch build *.egg-info
