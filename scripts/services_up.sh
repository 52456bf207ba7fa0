#!/usr/bin/env bash
# Start the services the test suite needs: the single-node SLURM cluster, then PostgreSQL.
# Exits non-zero if either fails. The last line printed is the PostgreSQL URL.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/slurm_up.sh"
"$here/postgres_up.sh"
