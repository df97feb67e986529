# Two commands for a fresh machine:
#   make baseline   set up .venv and materialize the `baseline` variant on the bundled sample
#   make test       run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
DAGSTER := $(VENV)/bin/dagster
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
VARIANT ?= baseline

.PHONY: setup baseline materialize test test-ui ui leaderboard clean-outputs

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

# Without an NVIDIA driver, take the CPU torch wheel first: an unpinned `torch` would pull a
# multi-GB CUDA build. With one, pip resolves the project's unpinned `torch` to a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev,ui,deploy]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

baseline: VARIANT = baseline
baseline: materialize

# A failed precision gate fails the run (the check is blocking) but still writes the report:
# print its verdict and succeed; any other failure (bad input, crash) exits non-zero.
materialize: setup
	@start=$$(date +%s); \
	$(DAGSTER) asset materialize -m patx_dagster --select '*' --partition $(VARIANT); \
	$(PY) -m patx_core.summary $(VARIANT) --run-exit-code $$? --since $$start

leaderboard: setup
	$(DAGSTER) asset materialize -m patx_dagster --select variant_leaderboard

ui: setup
	$(DAGSTER) dev -h 127.0.0.1 -p 3000

test: setup
	$(PY) -m pytest -q

clean-outputs:
	rm -rf data/checkpoints data/reports data/models data/signals data/work
