"""`python -m repvgg_search.search SWEEP_DIR` (console script `repvgg-search-worker`): one more worker on an existing
search, started by hand."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from .. import files
from ..errors import exit_on_bad_input
from .plan import SEARCH_JSON, SearchPlan, prepare_study
from .settings import SearchError
from .storage import check_storage
from .worker import worker_loop


def main(argv: list[str] | None = None) -> int:
    """`python -m repvgg_search.search SWEEP_DIR`: one more worker on an existing search."""
    parser = argparse.ArgumentParser(prog="python -m repvgg_search.search", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the search's sweep folder (holds search.json)")
    parser.add_argument("--storage", help="the RDB URL with its password (search.json keeps it masked)")
    parser.add_argument("--worker", type=int, default=os.getpid(), help="worker index (seeds its sampler stream)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exit_on_bad_input(_work)(args.sweep_dir, args.storage, args.worker)  # bad input: exit 2; a full disk: 1
    return 0


def _work(sweep_dir: Path, storage: str | None, worker: int) -> None:
    data = files.read_json(sweep_dir / SEARCH_JSON)
    if data is None:
        raise SearchError(f"{sweep_dir} holds no search (no {SEARCH_JSON}); start it with the sweep command")
    plan = SearchPlan.from_json(data, storage)
    if plan.is_rdb and "***" in plan.storage:
        raise SearchError(f"the study lives in {plan.storage}: pass --storage with the full URL")
    check_storage(plan.storage, plan.settings)
    prepare_study(plan)  # creates it when this worker comes first; refuses a study of another definition
    print(json.dumps(worker_loop(plan, worker)))
