# Set-up and the two entry commands of the README. Everything installs into .venv in the repository root.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test services lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded defaults: the paper's ablation sweep (11 variants, digits, local, wandb offline).
demo: install
	$(PY) -m repvgg_search.sweep +sweep=ablation

# Starts the services the tests need (a single-node SLURM cluster, PostgreSQL) where it can (root on Debian);
# elsewhere the tests that need them skip with a reason. CI sets REPVGG_REQUIRE_ALL=1, turning skips into failures.
services:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then scripts/services_up.sh; \
	else echo "not root on Debian: SLURM/PostgreSQL not started; tests that need them will skip"; fi

test: install services
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/deploy_speed.py
