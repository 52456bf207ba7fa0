#!/usr/bin/env bash
# Prepare, on a machine with network, the wheels a fresh GPU machine needs besides what it has (torch, torchvision,
# numpy, pandas, matplotlib, tqdm, rich, pyyaml, cloudpickle, scikit-learn; see ../shared/DESIGN.md): pure-Python
# wheels for Python 3.12 downloaded from PyPI, and those published only as sources (antlr4 4.9.3, fvcore, iopath)
# built here. They land in wheels/gpu/ (git-ignored); carry that folder with the tree to the GPU machine, where
# scripts/gpu_check.sh installs them without network.
#   scripts/gpu_wheels.sh [python version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
OUT=${OUT:-wheels/gpu}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
# Pure-Python packages (py3-none-any wheels), pinned to what this project's own environment runs.
pure=(hydra-core omegaconf submitit optuna alembic SQLAlchemy colorlog Mako MarkupSafe yacs termcolor tabulate
      portalocker pytest pluggy iniconfig pytest-timeout typing_extensions packaging webdataset braceexpand)
specs=()
for name in "${pure[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
  specs+=("${name}${version:+==$version}")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --implementation py \
  --platform any --dest "$OUT" "${specs[@]}" 2>/dev/null \
  || "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --dest "$OUT" "${specs[@]}"
# Published as sources only: build their wheels here (pure Python, so they install on any platform).
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" antlr4-python3-runtime==4.9.3 fvcore==0.1.5.post20221221 iopath
ls "$OUT"
du -sh "$OUT"
