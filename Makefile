# Set-up and the entry commands of the README. Everything installs into .venv in the repository root.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Test processes: most tests wait on subprocesses (trials, SLURM, sweeps), so 2 keep 2 cores busy; a file's tests
# stay in one process (--dist loadfile) and share its module fixtures.
TEST_WORKERS ?= 2

.PHONY: install demo test test-fast services lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded defaults: Table 6's branch ablation on a deep, narrow RepVGG with sequential seeds
# (digits, local launcher, wandb offline). One thread per trial, so its figures are the README's on any core count.
demo: install
	$(PY) -m repvgg_search.sweep +sweep=ablation_deep launcher.threads_per_trial=1 sweep.poll_s=0.5

# The whole suite. Tests that need a system service (SLURM, PostgreSQL, Chromium) skip with a reason unless
# `make services` started it; CI runs `make services` first and sets REPVGG_REQUIRE_ALL=1 (a skip fails there).
test: install
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The quick tier: everything not marked slow (no training runs, no subprocess sweeps).
test-fast: install
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

# Installs and starts system services as root on Debian (apt packages, a single-node SLURM cluster, PostgreSQL,
# headless Chromium); elsewhere it says what it did not start.
services:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then scripts/services_up.sh; \
	else echo "not root on Debian: SLURM/PostgreSQL/Chromium not started; tests that need them will skip"; fi

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Every benchmark script, one after another (each prints its own ratios).
bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
