# Two commands for a fresh machine:
#   make baseline   set up .venv and materialize the `baseline` variant on the bundled sample (nasdaq|baseline)
#   make test       run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
DAGSTER := $(VENV)/bin/dagster
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DATASET ?= nasdaq
VARIANT ?= baseline
# Shell runs log at INFO: the per-epoch progress lines without Dagster's DEBUG event flood.
# `make materialize LOG_LEVEL=DEBUG` brings every event back.
LOG_LEVEL ?= INFO
RUN_CONFIG = '{"loggers": {"console": {"config": {"log_level": "$(LOG_LEVEL)"}}}}'
# Dagster 1.13 flags its `asset materialize` command as superseded by the `dg` CLI on every call;
# it is still the documented shell entry point, so that one warning is kept off the screen.
export PYTHONWARNINGS = ignore:Function `asset_materialize_command` is superseded

.PHONY: setup settings-check baseline materialize score walk-forward ingest test test-ui ui ui-stop leaderboard clean-outputs workers workers-stop

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

# Without an NVIDIA driver, take the CPU torch wheel first: an unpinned `torch` would pull a
# multi-GB CUDA build. With one, pip resolves the project's unpinned `torch` to a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev,ui,deploy,distributed]'
	touch $@

# The gpu pool's slots are created here, at instance.yaml's default limit: on a brand-new instance
# Dagster creates a default-limit pool lazily, and two runs claiming it at the same moment can each
# create a slot (a race in its set-up) and train at once. `dagster instance concurrency set gpu N`
# changes it later (README "Nightly retrains").
$(DAGSTER_HOME)/dagster.yaml: instance.yaml | $(VENV)/.installed
	mkdir -p $(DAGSTER_HOME)
	cp instance.yaml $@
	$(DAGSTER) instance concurrency set gpu $$($(PY) -c "import yaml; print(yaml.safe_load(open('instance.yaml'))['concurrency']['pools']['default_limit'])") >/dev/null

baseline: DATASET = nasdaq
baseline: VARIANT = baseline
baseline: materialize

# One (dataset, variant) cell: ingest landed candles, then raw → … → latest signal, and the
# leaderboard (walk-forward has its own target). A refused model is a successful run: the last
# lines give the verdict and the exit code is 0. A broken run (bad input, crash) exits non-zero
# and ends with the failing step's own error, read from the run's event log.
materialize: setup settings-check
	@start=$$(date +%s); \
	$(DAGSTER) asset materialize -m patx_dagster --select '*latest_signal,variant_leaderboard' \
		--partition '$(DATASET)|$(VARIANT)' --config-json $(RUN_CONFIG); \
	$(VENV)/bin/patx verdict $(DATASET) $(VARIANT) --run-exit-code $$? --since $$start

# Score one cell without retraining: ingest, latest signal, the ledger (resolution, the monitor's
# decision, new rows) and the track record. Ends with one verdict line, like `make materialize`.
score: setup settings-check
	@start=$$(date +%s); \
	$(DAGSTER) asset materialize -m patx_dagster --select 'ingested_candles,latest_signal,signal_ledger,track_record' \
		--partition '$(DATASET)|$(VARIANT)' --config-json $(RUN_CONFIG); \
	$(VENV)/bin/patx verdict $(DATASET) $(VARIANT) --score --run-exit-code $$? --since $$start

walk-forward: setup settings-check
	$(DAGSTER) asset materialize -m patx_dagster --select '*walk_forward' \
		--partition '$(DATASET)|$(VARIANT)' --config-json $(RUN_CONFIG)
	@echo "report: $${PATX_DATA_DIR:-data}/$(DATASET)/reports/$(VARIANT)/walk_forward.md"

ingest: setup settings-check
	$(DAGSTER) asset materialize -m patx_dagster --select ingested_candles --config-json $(RUN_CONFIG)

leaderboard: setup settings-check
	$(DAGSTER) asset materialize -m patx_dagster --select variant_leaderboard --config-json $(RUN_CONFIG)
	@echo "leaderboard: $${PATX_DATA_DIR:-data}/leaderboard.md"

# Steps on Celery workers instead of in process (deploy/README.md "One box"): a local redis-server
# on 127.0.0.1 and a `cpu` and a `gpu` worker, in the background; it prints their PIDs.
# Then run with PATX_EXECUTOR=celery (e.g. `PATX_EXECUTOR=celery make walk-forward VARIANT=smoke`).
workers: setup
	$(PY) -m patx_dagster.workers start

workers-stop:
	$(PY) -m patx_dagster.workers stop

# `make ui-stop` (from any shell) ends every process of it: see patx_dagster/ui.py.
UI_PORT ?= 3000
ui: setup settings-check
	$(PY) -m patx_dagster.ui start -- -h 127.0.0.1 -p $(UI_PORT)

ui-stop:
	$(PY) -m patx_dagster.ui stop

# Dagster imports both settings files with the code location: a typo there would fail every target
# behind pages of tracebacks. This prints the file, table, field and near match in one line instead,
# through $(error) so that it is make's last line (a failing recipe line would be followed by make's
# own "*** [target] Error 2"). Make expands a recipe, here the check, only once `setup` has built the venv.
settings-check: setup
	$(eval SETTINGS_PROBLEM := $(shell $(VENV)/bin/patx check 2>&1))
	$(if $(SETTINGS_PROBLEM),$(error $(SETTINGS_PROBLEM)))
	@:

# On every core by default (pytest-xdist); `make test TEST_WORKERS=0` runs the suite in one
# process, in file order (for a debugger, or to read one test's output in order).
TEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# Everything patx wrote under ./data (the tracked raw samples and data/README.md stay).
clean-outputs:
	find data -mindepth 1 -maxdepth 1 ! -name raw ! -name README.md -exec rm -rf {} +
