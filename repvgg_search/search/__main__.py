"""`python -m repvgg_search.search SWEEP_DIR`: one more worker on an existing search."""

import sys

from .cli import main

sys.exit(main())
