#!/usr/bin/env bash
# Start what the test suite needs: the single-node SLURM cluster, PostgreSQL, and a headless Chromium.
# Exits non-zero if any fails. The last line printed is the PostgreSQL URL.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/slurm_up.sh"
"$here/chromium_up.sh"
"$here/postgres_up.sh"
